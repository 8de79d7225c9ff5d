// Helpers for the NetworkPolicy lab tests: the upstream cluster as manifests, policy
// manifests, probing every ordered pair of pods with real connections (TCP, UDP, and
// SCTP as raw packets), the same matrix from `twill policy matrix --json`, and a
// compact diff of two matrices. Probes and matrices take an address family: 'IPv4'
// (the default) uses each pod's `ip`, as the IPv4 tests always have; 'IPv6' uses a
// dual-stack pod's `ip6` (and `twill policy matrix --ip-family IPv6`).
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import type { NetworkPolicy, Protocol } from '../../policy/model.js';
import type { LabPod, LabState } from '../../lab/state.js';
import { labModel, labPolicies } from '../../lab/lab.js';
import { formatIPv6Address, parseIPv6Address } from '../../lib/ipv6.js';
import { e2eModel, modelYaml } from '../policy/fixture.js';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = join(ROOT, 'dist/cli/twill.js');
const PROBE = fileURLToPath(new URL('./probe.mjs', import.meta.url));
const SCTP = fileURLToPath(new URL('./sctp.py', import.meta.url));
const PYTHON = '/usr/bin/python3'; // scripts/ensure-deps.sh installs it

/** A lab name of this suite: namespaces tw<name>-*, i.e. twp1a2b-*; never the default lab. */
export const policyLabName = (): string => `p${randomBytes(2).toString('hex')}`;

const SOURCE_DIRS = ['dataplane', 'cni', 'policy', 'bench', 'cli', 'lab'];

function staleSources(dir: string): boolean {
  for (const e of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
    const rel = join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name !== 'node_modules' && e.name !== 'build' && staleSources(rel)) return true;
    } else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) {
      const out = join(ROOT, 'dist', rel.replace(/\.ts$/, '.js'));
      if (!existsSync(out) || statSync(out).mtimeMs < statSync(join(ROOT, rel)).mtimeMs) return true;
    }
  }
  return false;
}

/** Compiles the tree to dist/ (agents, the CLI and the workload run from there) when a source is newer than its output. */
export function ensureBuilt(): void {
  if (!SOURCE_DIRS.some(staleSources)) return;
  // tsc emits even when another part of the tree has type errors; dist/ is what we need
  spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: ROOT, stdio: 'ignore' });
}

export function tmpDir(): string {
  return mkdtempSync(join(tmpdir(), 'twill-policy-lab-'));
}

export function writeFile(dir: string, name: string, text: string): string {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
}

/** Namespaces x, y, z (label ns=<name>) and pods a, b, c (label pod=<name>) serving 80/81 TCP/UDP/SCTP, upstream port names. */
export function upstreamClusterYaml(): string {
  const m = e2eModel();
  const items = [
    ...m.namespaces.map((n) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: n.name, labels: { ns: n.name } } })),
    ...m.pods.map((p) => ({
      apiVersion: 'v1', kind: 'Pod', metadata: { namespace: p.namespace, name: p.name, labels: p.labels },
      spec: { containers: [{ name: 'cont-80-81', image: 'agnhost', ports: p.containerPorts }] },
    })),
  ];
  return stringify({ apiVersion: 'v1', kind: 'List', items });
}

export function policiesYaml(policies: NetworkPolicy[]): string {
  return policies.map((np) => stringify({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { namespace: np.namespace, name: np.name }, spec: np.spec })).join('---\n');
}

export const podKey = (p: { namespace: string; name: string }): string => `${p.namespace}/${p.name}`;

/** Runs a command, collecting stdout and stderr; kills it (by its PID) after timeoutMs. */
export function capture(cmd: string, args: string[], timeoutMs: number, input?: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    c.stdin.end(input ?? '');
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, out, err });
    });
  });
}

export type Outcome = 'echo' | 'refused' | 'timeout' | 'error';
export type Results = Record<string, Record<string, Record<string, Outcome>>>; // "TCP/80" → src pod → dst ip → outcome

/** Which of a pod's addresses traffic uses: 'IPv4' its `ip` (its first address, as the IPv4 tests use it), 'IPv6' its `ip6`. */
export type Family = 'IPv4' | 'IPv6';

/** The pod's address in `family`; throws for a pod without an IPv6 address when IPv6 is asked. */
export function addressOf(p: LabPod, family: Family = 'IPv4'): string {
  if (family === 'IPv4') return p.ip;
  if (!p.ip6) throw new Error(`pod ${podKey(p)} has no IPv6 address (not a dual-stack lab?)`);
  return p.ip6;
}

/** One spelling per address (RFC 5952 for IPv6), so addresses printed by other tools compare equal. */
const canonical = (ip: string): string => (ip.includes(':') ? formatIPv6Address(parseIPv6Address(ip)) : ip);

/** A child process that answers in lines on stdout: each line goes to the caller waiting for one, else it queues. */
class LineChild {
  private buf = '';
  private readonly lines: string[] = [];
  private waiting?: (l: string) => void;
  err = '';

  constructor(readonly c: ChildProcessWithoutNullStreams, private readonly what: string) {
    c.stdout.on('data', (d) => {
      this.buf += d;
      for (let i = this.buf.indexOf('\n'); i >= 0; i = this.buf.indexOf('\n')) {
        const l = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        if (this.waiting) {
          const w = this.waiting;
          this.waiting = undefined;
          w(l);
        } else this.lines.push(l);
      }
    });
    c.stderr.on('data', (d) => (this.err += d));
    c.on('close', (code) => this.waiting?.(`exit ${code}`));
  }

  /** The next line, or `exit <code>` once the process has ended. */
  line(timeoutMs: number): Promise<string> {
    if (this.lines.length) return Promise.resolve(this.lines.shift()!);
    if (this.c.exitCode !== null) return Promise.resolve(`exit ${this.c.exitCode}`);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => { this.waiting = undefined; reject(new Error(`${this.what} gave no answer in ${timeoutMs} ms: ${this.err}`)); }, timeoutMs);
      this.waiting = (l) => { clearTimeout(t); resolve(l); };
    });
  }
}

/**
 * TCP and UDP probes from every pod of a lab: one probe process per pod, started once
 * and fed one request per round, so a round costs no process start-up; each round
 * probes every target on every (port, protocol) at once.
 */
export class Prober {
  private readonly procs = new Map<LabPod, LineChild>();

  private constructor(private readonly pods: LabPod[]) {}

  static async start(pods: LabPod[]): Promise<Prober> {
    const p = new Prober(pods);
    try {
      await Promise.all(pods.map((pod) => p.spawn(pod)));
    } catch (e) {
      await p.close();
      throw e;
    }
    return p;
  }

  private spawn(pod: LabPod): Promise<void> {
    const c = spawn('ip', ['netns', 'exec', pod.netns, process.execPath, PROBE, '--serve'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const st = new LineChild(c, `probe process in ${podKey(pod)}`);
    this.procs.set(pod, st);
    return st.line(10_000).then((l) => {
      if (l !== 'ready') throw new Error(`probe process in ${podKey(pod)} did not start: ${l} ${st.err}`);
    });
  }

  /**
   * Probes from every pod to every other pod's address of `family`, or only to the
   * targets `only` names for a source ("ns/name" → IPs).
   */
  async probe(specs: [number, 'TCP' | 'UDP'][], timeoutMs = 600, only?: Map<string, string[]>, family: Family = 'IPv4'): Promise<Results> {
    const res: Results = {};
    for (const [port, proto] of specs) res[`${proto}/${port}`] = {};
    if (!specs.length) return res;
    await Promise.all(this.pods.map(async (src) => {
      const targets = only ? (only.get(podKey(src)) ?? []) : this.pods.filter((p) => p !== src).map((p) => addressOf(p, family));
      if (!targets.length) return;
      const st = this.procs.get(src)!;
      const answer = st.line(timeoutMs + 10_000);
      st.c.stdin.write(`${JSON.stringify({ targets, specs, timeoutMs, retryMs: 100 })}\n`);
      const l = await answer;
      let j: Record<string, Record<string, Outcome>>;
      try {
        j = JSON.parse(l) as Record<string, Record<string, Outcome>>;
      } catch {
        throw new Error(`probe from ${podKey(src)}: ${l} ${st.err}`);
      }
      for (const k of Object.keys(res)) res[k][podKey(src)] = j[k];
    }));
    return res;
  }

  /**
   * Waits until every pod answers every other on `specs` (the pods' echo servers are
   * started after the pod is wired, so the lab can be up a moment before they listen).
   */
  async waitAllAnswer(specs: [number, 'TCP' | 'UDP'][], withinMs = 30_000, family: Family = 'IPv4'): Promise<void> {
    const deadline = Date.now() + withinMs;
    for (;;) {
      const r = await this.probe(specs, 1000, undefined, family);
      const bad = Object.entries(r).flatMap(([k, bySrc]) => Object.entries(bySrc).flatMap(([src, byDst]) => Object.entries(byDst).filter(([, o]) => o !== 'echo').map(([ip, o]) => `${k} ${src}→${ip}: ${o}`)));
      if (!bad.length) return;
      if (Date.now() > deadline) throw new Error(`pods do not all answer without policies${family === 'IPv6' ? ' over IPv6' : ''}:\n${bad.join('\n')}`);
      await new Promise((res) => setTimeout(res, 200));
    }
  }

  /** Ends every probe process: stdin EOF, then SIGKILL by PID if one is still there. */
  async close(): Promise<void> {
    await Promise.all([...this.procs.values()].map(({ c }) => new Promise<void>((resolve) => {
      if (c.exitCode !== null || c.signalCode !== null) return resolve();
      const t = setTimeout(() => c.kill('SIGKILL'), 2000);
      c.once('close', () => { clearTimeout(t); resolve(); });
      c.stdin.end();
    })));
    this.procs.clear();
  }
}

/**
 * SCTP probes: an AF_PACKET capture in every pod, then every pod sends INIT chunks
 * (raw IP protocol 132, or IPv6 next header 132) to every other pod's address of
 * `family` on each port. Returns "SCTP/port" → src → dst ip → arrived.
 */
export async function probeSctp(pods: LabPod[], ports: number[], sends = 3, family: Family = 'IPv4'): Promise<Results> {
  const res: Results = {};
  for (const port of ports) res[`SCTP/${port}`] = {};
  if (!ports.length) return res;
  const token = 20000 + Math.floor(Math.random() * 40000);
  const caps = pods.map((dst) => {
    const c = spawn('ip', ['netns', 'exec', dst.netns, PYTHON, SCTP, 'capture', String(token), '15000', ...(family === 'IPv6' ? ['6'] : [])], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const ready = new Promise<void>((resolve, reject) => {
      c.stdout.on('data', (d) => {
        out += d;
        if (out.startsWith('ready\n')) resolve();
      });
      c.once('close', (code) => reject(new Error(`capture in ${podKey(dst)} exited ${code} before it was ready: ${err}`)));
    });
    c.stderr.on('data', (d) => (err += d));
    const done = new Promise<Record<string, number>>((resolve, reject) => {
      c.on('close', (code) => {
        const line = out.split('\n').filter(Boolean).pop() ?? '';
        try {
          resolve(JSON.parse(line) as Record<string, number>);
        } catch {
          reject(new Error(`capture in ${podKey(dst)} exited ${code}: ${err || out}`));
        }
      });
    });
    return { dst, c, ready, done };
  });
  try {
    await Promise.all(caps.map((x) => x.ready));
    await Promise.all(pods.map(async (src) => {
      const targets = pods.filter((p) => p !== src).map((p) => addressOf(p, family));
      const r = await capture('ip', ['netns', 'exec', src.netns, PYTHON, SCTP, 'send', String(token), String(sends), '100', ports.join(','), ...targets], 10_000);
      if (r.code !== 0) throw new Error(`SCTP send from ${podKey(src)} exited ${r.code}: ${r.err}`);
    }));
    await new Promise((r) => setTimeout(r, 200)); // the last INITs in flight
  } finally {
    for (const x of caps) x.c.stdin.end(); // EOF: print what arrived and exit
  }
  const captured = await Promise.all(caps.map((x) => x.done));
  // "ip/port" → count, with the capture's spelling of an IPv6 source made canonical
  const seen = family === 'IPv4' ? captured : captured.map((c) => Object.fromEntries(Object.entries(c).map(([k, n]) => {
    const at = k.lastIndexOf('/');
    return [`${canonical(k.slice(0, at))}${k.slice(at)}`, n];
  })));
  for (const port of ports) {
    for (const src of pods) {
      res[`SCTP/${port}`][podKey(src)] = {};
      const from = family === 'IPv4' ? src.ip : canonical(addressOf(src, family));
      caps.forEach(({ dst }, k) => {
        if (dst === src) return;
        res[`SCTP/${port}`][podKey(src)][addressOf(dst, family)] = (seen[k][`${from}/${port}`] ?? 0) > 0 ? 'echo' : 'timeout';
      });
    }
  }
  return res;
}

/** Probes every ordered pair for every (port, protocol) over `family`: TCP/UDP (through the prober) and SCTP concurrently. */
export async function probeAll(prober: Prober, pods: LabPod[], specs: [number, Protocol][], timeoutMs = 600, family: Family = 'IPv4'): Promise<Results> {
  const l4 = specs.filter((s): s is [number, 'TCP' | 'UDP'] => s[1] !== 'SCTP');
  const sctp = specs.filter((s) => s[1] === 'SCTP').map((s) => s[0]);
  const [a, b] = await Promise.all([prober.probe(l4, timeoutMs, undefined, family), probeSctp(pods, sctp, 3, family)]);
  return { ...a, ...b };
}

/**
 * The observed matrix, rows = sources, in `order` ("ns/name"). '.' reached, 'X' not;
 * a TCP reset counts as reached only on a port the pod does not serve (the SYN got
 * there); on a served port, or on any other error, the cell is '?' (never expected).
 */
export function observedRows(s: LabState, order: string[], r: Results, port: number, proto: Protocol, served: (proto: Protocol, port: number) => boolean, family: Family = 'IPv4'): string[] {
  const pod = (k: string) => s.pods.find((p) => podKey(p) === k)!;
  const cell = (o: Outcome | undefined): string => {
    if (o === 'echo') return '.';
    if (o === 'timeout') return 'X';
    if (o === 'refused' && !served(proto, port)) return '.';
    return '?';
  };
  return order.map((src) => order.map((dst) => (src === dst ? '.' : cell(r[`${proto}/${port}`]?.[src]?.[addressOf(pod(dst), family)]))).join(''));
}

/**
 * Observed matrices (rows in `order`) for each expected (port, protocol, rows), over
 * `family` (each pod's address of that family). A pair
 * expected to connect that did not is probed once more with patience (2 s, more UDP
 * retries, twice the SCTP INITs) before it counts: on a machine shared with other
 * work, a probe process can be starved past a 600 ms timeout. A pair expected to be
 * denied that got through is never probed again: it got through.
 */
export async function observe(
  s: LabState, prober: Prober, order: string[], probes: [number, Protocol, string[]][], served: (proto: Protocol, port: number) => boolean, family: Family = 'IPv4',
): Promise<{ rows: string[][]; reprobed: number }> {
  const specs = probes.map(([port, proto]) => [port, proto] as [number, Protocol]);
  const first = await probeAll(prober, s.pods, specs, 600, family);
  let rows = probes.map(([port, proto]) => observedRows(s, order, first, port, proto, served, family));
  const byKey = new Map(s.pods.map((p) => [podKey(p), p]));
  let reprobed = 0;
  const l4 = new Map<string, [number, 'TCP' | 'UDP', Map<string, string[]>]>();
  const sctp = new Set<number>();
  probes.forEach(([port, proto, want], k) => {
    order.forEach((src, i) => order.forEach((dst, j) => {
      if (rows[k][i][j] === want[i][j] || want[i][j] !== '.') return;
      reprobed++;
      if (proto === 'SCTP') return void sctp.add(port);
      const key = `${proto}/${port}`;
      if (!l4.has(key)) l4.set(key, [port, proto, new Map()]);
      const only = l4.get(key)![2];
      only.set(src, [...(only.get(src) ?? []), addressOf(byKey.get(dst)!, family)]);
    }));
  });
  if (!reprobed) return { rows, reprobed };
  const again: Results = {};
  await Promise.all([
    ...[...l4.values()].map(async ([port, proto, only]) => Object.assign(again, await prober.probe([[port, proto]], 2000, only, family))),
    sctp.size ? probeSctp(s.pods, [...sctp], 6, family).then((r) => Object.assign(again, r)) : undefined,
  ]);
  for (const [key, bySrc] of Object.entries(again)) {
    for (const [src, byDst] of Object.entries(bySrc)) Object.assign(first[key][src], byDst);
  }
  rows = probes.map(([port, proto]) => observedRows(s, order, first, port, proto, served, family));
  return { rows, reprobed };
}

/**
 * The matrix `twill policy matrix --json` gives for the lab's pods (real IPs, both
 * families in status.podIPs) plus `policies`, rows in `order`; with 'IPv6', between the
 * pods' IPv6 addresses (`--ip-family IPv6`).
 */
export async function cliRows(s: LabState, dir: string, policies: NetworkPolicy[], port: number, proto: Protocol, order: string[], family: Family = 'IPv4'): Promise<string[]> {
  const { namespaces, pods } = labModel(s.name);
  const f = writeFile(dir, `matrix-${randomBytes(4).toString('hex')}.yaml`, modelYaml({ namespaces, pods, policies, nodeIps: [] }));
  const six = family === 'IPv6' ? ['--ip-family', 'IPv6', ...(s.clusterCIDR6 ? ['--cluster-cidr6', s.clusterCIDR6] : [])] : [];
  const r = await capture(process.execPath, [CLI, 'policy', 'matrix', '-f', f, '--port', String(port), '--protocol', proto, ...six, '--json'], 30_000);
  if (r.code !== 0) throw new Error(`twill policy matrix exited ${r.code}: ${r.err}`);
  const m = JSON.parse(r.out) as { family?: string; pods: string[]; allowed: boolean[][] };
  if (family === 'IPv6' && m.family !== 'IPv6') throw new Error(`twill policy matrix --ip-family IPv6 answered for ${m.family ?? 'IPv4'}`);
  const idx = order.map((k) => m.pods.indexOf(k));
  if (idx.some((i) => i < 0)) throw new Error(`twill policy matrix lacks pods: ${order.filter((_, k) => idx[k] < 0).join(', ')}`);
  return idx.map((i) => idx.map((j) => (m.allowed[i][j] ? '.' : 'X')).join(''));
}

/** A compact diff: the expected grid with wrong cells marked, and the wrong pairs listed. Empty when equal. */
export function diffRows(order: string[], got: string[], want: string[]): string {
  if (got.join('\n') === want.join('\n')) return '';
  const w = Math.max(...order.map((p) => p.length)) + 1;
  const lines = [`${''.padEnd(w)}${order.map((p) => p.padEnd(w)).join('')}   (expected/observed; ! marks a difference)`];
  const wrong: string[] = [];
  order.forEach((src, i) => {
    let row = src.padEnd(w);
    order.forEach((dst, j) => {
      const e = want[i][j];
      const g = got[i]?.[j] ?? ' ';
      row += (e === g ? e : `${e}/${g}!`).padEnd(w);
      if (e !== g) wrong.push(`${src}→${dst} expected ${e === '.' ? 'allowed' : 'denied'}, observed ${g === '.' ? 'allowed' : g === 'X' ? 'denied' : 'an error'}`);
    });
    lines.push(row.trimEnd());
  });
  return `${lines.join('\n')}\n${wrong.join('\n')}`;
}

const FLOW = fileURLToPath(new URL('./flow.mjs', import.meta.url));

export interface FlowSummary {
  ms: number;
  retrans: number; // TCP segments the source pod's kernel retransmitted while the flow ran
  udp?: { sent: number; echoed: [number, number][]; dup: number };
  tcp?: { sent: number; echoed: number; corrupt: boolean; errors: string[]; closedEarly: boolean; maxGapMs: number };
}
export interface FlowMark { mark: string; seq: number; tcpSent: number; t: number }

/** A steady UDP and/or TCP flow run by flow.mjs inside a pod (see there). */
export class Flow {
  private readonly p: LineChild;

  private constructor(c: ChildProcessWithoutNullStreams, readonly from: LabPod) {
    this.p = new LineChild(c, `flow from ${podKey(from)}`);
  }

  static async start(from: LabPod, cfg: { udp?: { ip: string; port: number; pps: number }; tcp?: { ip: string; port: number; chunk?: number; everyMs?: number } }): Promise<Flow> {
    const f = new Flow(spawn('ip', ['netns', 'exec', from.netns, process.execPath, FLOW, JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'pipe'] }), from);
    const l = await f.p.line(10_000);
    if (l !== 'ready') {
      f.kill();
      throw new Error(`flow from ${podKey(from)} did not start: ${l} ${f.p.err}`);
    }
    return f;
  }

  async mark(label: string): Promise<FlowMark> {
    const p = this.p.line(5000);
    this.p.c.stdin.write(`mark ${label}\n`);
    return JSON.parse(await p) as FlowMark;
  }

  async stop(): Promise<FlowSummary> {
    const p = this.p.line(10_000);
    this.p.c.stdin.write('stop\n');
    const l = await p;
    try {
      return JSON.parse(l) as FlowSummary;
    } catch {
      throw new Error(`flow from ${podKey(this.from)}: ${l} ${this.p.err}`);
    }
  }

  /** Stops the flow process (by its PID) if it is still running. */
  kill(): void {
    const { c } = this.p;
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
}

/** Sequence numbers in [lo, hi) that are (echoed = true) or are not (false) in the echoed ranges. */
export function seqsIn(echoed: [number, number][], lo: number, hi: number, want: boolean): number[] {
  const out: number[] = [];
  let k = 0;
  for (let s = lo; s < hi; s++) {
    while (k < echoed.length && echoed[k][1] < s) k++;
    const has = k < echoed.length && echoed[k][0] <= s && s <= echoed[k][1];
    if (has === want) out.push(s);
  }
  return out;
}

/**
 * TCP counters of a namespace's kernel (/proc/net/snmp and /proc/net/netstat, read inside it).
 * A retransmitted segment the receiver reports back as a duplicate (D-SACK) was not
 * lost: tail loss probes on a request/echo stream retransmit like that without any loss.
 */
export function tcpCounters(ns: string): { retrans: number; dsackRecvSegs: number; timeouts: number } {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'cat', '/proc/net/snmp', '/proc/net/netstat'], { encoding: 'utf8' });
  const lines = r.stdout.split('\n');
  const get = (prefix: string, key: string): number => {
    for (let i = 0; i + 1 < lines.length; i++) {
      if (!lines[i].startsWith(prefix) || !lines[i + 1].startsWith(prefix)) continue;
      const k = lines[i].split(/\s+/).indexOf(key);
      if (k > 0) return Number(lines[i + 1].split(/\s+/)[k]);
    }
    return 0;
  };
  return { retrans: get('Tcp:', 'RetransSegs'), dsackRecvSegs: get('TcpExt:', 'TCPDSACKRecvSegs'), timeouts: get('TcpExt:', 'TCPTimeouts') };
}

/** Runs a case's steps in lab `lab` (their problems, '' when none), then deletes every policy they left, whatever happened. */
export async function runPolicySteps(lab: string, dir: string, f: () => Promise<string[]>): Promise<string> {
  try {
    return (await f()).filter(Boolean).join('\n\n');
  } finally {
    const left = labModel(lab).policies;
    if (left.length) await labPolicies(lab, [writeFile(dir, 'cleanup.yaml', policiesYaml(left))], true);
  }
}
