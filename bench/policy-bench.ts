// NetworkPolicy benchmark (`npm run bench -- policy`):
//  - compile: 10,000 policies over 1,000 pods, then one policy changed and recompiled
//    incrementally (bench/policy-model.ts);
//  - apply → enforce: in a two-node lab holding those policies, the time from `lab apply`
//    of one change until the change holds on the wire, seen by real traffic: a UDP echo
//    flow at 1 kHz that the change denies (when it stops) and one it allows (when it
//    starts), next to the time `lab apply` itself takes to see every agent enforce it;
//  - throughput: cross-node iperf3 between the lab's two real pods, a flow the policies
//    allow, with the 10,000 policies in force and with none.
// The lab runs two real pods (ns0/p0 on node1, ns0/p1 on node2, as in the synthetic
// cluster); the other 998 pods of the cluster are in the datastore only (the policies
// are compiled against all of them, as a real cluster's would be).
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { labCommit, labDown, labPolicies, labUp } from '../lab/lab.js';
import { tcpThroughput } from '../lab/measure.js';
import { type LabPod } from '../lab/state.js';
import { makeBenchModel, runPolicyBench } from './policy-model.js';
import type { Change } from '../agent/sources/file.js';
import { podKey, type ClusterModel, type NetworkPolicy } from '../policy/model.js';

export interface PolicyLabBenchResult {
  compile_ms_10k_policies: number;
  recompile_one_ms: number;
  apply_to_enforce_ms: number;
  tcp_with_policies_gbps: number;
  tcp_without_policies_gbps: number;
  throughput_ratio: number;
}

const IPERF_PORT = 5201;
const PROBE_PORT = 53; // the synthetic pods' UDP "dns" port: their echo server listens there

// A UDP flow with sequence numbers from inside a pod: prints "ready", sends `pps`
// datagrams a second until "stop" on stdin, then prints each datagram's send time
// (epoch ms) and whether its echo came back.
const UDP_SEQ_FLOW = `
import dgram from 'node:dgram';
import { createInterface } from 'node:readline';
const [ip, port, pps] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const MAX = 1 << 18, sendT = new Float64Array(MAX), echoed = new Uint8Array(MAX);
let sent = 0;
const s = dgram.createSocket('udp4');
s.on('message', (m) => { if (m.length >= 8 && m.readUInt32BE(4) === 0x706f6c62) { const q = m.readUInt32BE(0); if (q < MAX) echoed[q] = 1; } });
s.on('error', () => {});
await new Promise((r) => s.connect(port, ip, r));
const t0 = performance.now();
const timer = setInterval(() => {
  const due = Math.min(MAX, Math.floor(((performance.now() - t0) * pps) / 1000));
  while (sent < due) { const b = Buffer.alloc(8); b.writeUInt32BE(sent, 0); b.writeUInt32BE(0x706f6c62, 4); sendT[sent] = performance.timeOrigin + performance.now(); s.send(b); sent++; }
}, 1);
process.stdout.write('ready\\n');
for await (const l of createInterface({ input: process.stdin })) if (l.trim() === 'stop') break;
clearInterval(timer);
await new Promise((r) => setTimeout(r, 300));
process.stdout.write(JSON.stringify({ t: Array.from(sendT.subarray(0, sent), (x) => Math.round(x * 100) / 100), e: Array.from(echoed.subarray(0, sent)) }) + '\\n');
process.exit(0);
`;

class SeqFlow {
  private out = '';
  private readonly c: ChildProcessWithoutNullStreams;
  private readonly ready: Promise<void>;

  constructor(from: LabPod, to: LabPod) {
    this.c = spawn('ip', ['netns', 'exec', from.netns, process.execPath, '--input-type=module', '-e', UDP_SEQ_FLOW, to.ip, String(PROBE_PORT), '1000'], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.c.stdout.on('data', (d) => (this.out += d));
    let err = '';
    this.c.stderr.on('data', (d) => (err += d));
    this.ready = new Promise((resolve, reject) => {
      const t = setInterval(() => { if (this.out.startsWith('ready\n')) { clearInterval(t); resolve(); } }, 5);
      this.c.once('close', (code) => { clearInterval(t); reject(new Error(`UDP flow from ${from.namespace}/${from.name} exited ${code}: ${err}`)); });
    });
  }

  started(): Promise<void> { return this.ready; }

  async stop(): Promise<{ t: number[]; e: number[] }> {
    const done = new Promise<void>((r) => this.c.once('close', () => r()));
    this.c.stdin.end('stop\n');
    await done;
    return JSON.parse(this.out.slice('ready\n'.length)) as { t: number[]; e: number[] };
  }

  kill(): void {
    if (this.c.exitCode === null && this.c.signalCode === null) this.c.kill('SIGKILL');
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const round1 = (x: number): number => Math.round(x * 10) / 10;

const sel = (app: string) => ({ matchLabels: { app } });
const realPods = { matchExpressions: [{ key: 'app', operator: 'In' as const, values: ['app0', 'app1'] }] };

/**
 * The policies the bench adds to the synthetic ones (in place of three of them, so there
 * are still N). The timed change is on egress: the synthetic policies may well allow the
 * two real pods every port of each other on ingress (rules without ports), but their
 * egress rules always name ports, so the real pods' egress is this bench's to decide.
 */
function benchPolicies(udpTo: 'app0' | 'app1'): NetworkPolicy[] {
  return [
    // the iperf3 flow p0 → p1 (TCP 5201), on p1's side
    { namespace: 'ns0', name: 'allow-iperf', spec: { podSelector: sel('app1'), ingress: [{ from: [{ podSelector: sel('app0') }], ports: [{ protocol: 'TCP', port: IPERF_PORT }] }] } },
    // the probe flows, on the receiving side: either way
    { namespace: 'ns0', name: 'udp-probe-in', spec: { podSelector: realPods, ingress: [{ from: [{ podSelector: realPods }], ports: [{ protocol: 'UDP', port: PROBE_PORT }] }] } },
    flip(udpTo),
  ];
}
/** The change applied and timed: the real pods' egress, iperf3 anywhere and UDP 53 to the pod labelled `to` only. */
function flip(to: 'app0' | 'app1'): NetworkPolicy {
  return {
    namespace: 'ns0', name: 'real-pods-egress',
    spec: { podSelector: realPods, policyTypes: ['Egress'], egress: [{ ports: [{ protocol: 'TCP', port: IPERF_PORT }] }, { to: [{ podSelector: sel(to) }], ports: [{ protocol: 'UDP', port: PROBE_PORT }] }] },
  };
}

const manifest = (policies: NetworkPolicy[]) =>
  JSON.stringify({ apiVersion: 'v1', kind: 'List', items: policies.map((np) => ({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { namespace: np.namespace, name: np.name }, spec: np.spec })) });

/**
 * quick: a smaller cluster in the lab (2,000 policies over 200 pods; the compile figures
 * stay 10k/1k), one throughput round of 2 s each way. rounds: throughput rounds (each
 * one run with and one without the policies, in ABBA order), 3 by default.
 */
export async function runPolicyLabBench(opts: { quick?: boolean; rounds?: number; print?: boolean; progress?: (m: string) => void } = {}): Promise<PolicyLabBenchResult> {
  const quick = !!opts.quick;
  const say = opts.progress ?? (() => undefined);
  const print = (m: string) => { if (opts.print !== false) process.stdout.write(m); };

  say('compiling 10,000 policies over 1,000 pods');
  const compile = await runPolicyBench({ print: false });

  // The synthetic cluster; quick mode keeps it smaller in the lab (the compile figures above are always 10k/1k).
  const shape = quick ? { namespaces: 4, podsPerNamespace: 50, policies: 2000, apps: 20 } : { namespaces: 10, podsPerNamespace: 100, policies: 10_000, apps: 20 };
  const model: ClusterModel = makeBenchModel(shape);
  const extra = benchPolicies('app1'); // p0 → p1 on UDP 53 to begin with
  // take the place of the last synthetic policies of ns0
  const policies = [...model.policies];
  let k = policies.length;
  for (const np of extra) {
    do k--; while (policies[k].namespace !== 'ns0');
    policies[k] = np;
  }

  const name = `p${randomBytes(2).toString('hex')}`;
  const dir = mkdtempSync(path.join(tmpdir(), 'twill-policy-bench-'));
  const flows: SeqFlow[] = [];
  // Ctrl-C: the lab goes down all the same
  const onSig = () => { for (const f of flows) f.kill(); void labDown(name).finally(() => process.exit(130)); };
  process.once('SIGINT', onSig);
  process.once('SIGTERM', onSig);
  try {
    // the two real pods: ns0/p0 (app0) and ns0/p1 (app1), with the synthetic pods' labels and ports
    const real = model.pods.filter((p) => p.namespace === 'ns0' && (p.name === 'p0' || p.name === 'p1'));
    const ns0 = model.namespaces.find((n) => n.name === 'ns0')!;
    const cluster = path.join(dir, 'cluster.yaml');
    writeFileSync(cluster, stringify({
      apiVersion: 'v1', kind: 'List', items: [
        { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'ns0', labels: ns0.labels } },
        ...real.map((p) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { namespace: p.namespace, name: p.name, labels: p.labels }, spec: { containers: [{ name: 'c', ports: p.containerPorts }] } })),
      ],
    }));
    say(`lab ${name}: 2 nodes, pods ns0/p0 and ns0/p1`);
    const s0 = await labUp({ name, nodes: 2, manifests: [cluster] });
    const p0 = s0.pods.find((p) => p.name === 'p0')!, p1 = s0.pods.find((p) => p.name === 'p1')!;
    if (p0.node === p1.node) throw new Error('the two pods are on one node: the bench measures across nodes');

    // the rest of the synthetic cluster, in the datastore only
    const have = new Set(s0.pods.map(podKey));
    await labCommit(s0, [
      ...model.namespaces.filter((n) => n.name !== 'ns0').map((object): Change => ({ put: 'namespace', object })),
      ...model.pods.filter((p) => !have.has(podKey(p))).map((object): Change => ({ put: 'pod', object })),
    ], 120_000);

    const seconds = quick ? 2 : 4;
    const rounds = opts.rounds ?? (quick ? 1 : 3);
    const without: number[] = [], withP: number[] = [];
    const enforce: { wire: number; denied: number; allowed: number; resolved: number }[] = [];

    // First load through `lab apply` (timed); later switches between none and all commit
    // to the datastore directly (no YAML parse), so more throughput samples fit in the time.
    const allFile = path.join(dir, 'policies.json');
    writeFileSync(allFile, manifest(policies));
    say(`lab apply of ${policies.length} policies`);
    const t = performance.now();
    await labPolicies(name, [allFile]);
    const loadMs = performance.now() - t;
    const setPolicies = async (all: boolean): Promise<void> => {
      await labCommit(s0, policies.map((np): Change => (all ? { put: 'policy', object: np } : { delete: 'policy', key: podKey(np) })), 120_000);
    };

    // apply → enforce, with real traffic: one change that denies p0 → p1 and allows p1 → p0 (then back)
    let flipTo: 'app0' | 'app1' = 'app1';
    for (let m = 0; m < (quick ? 1 : 4); m++) {
      const [src, dst] = flipTo === 'app1' ? [p0, p1] : [p1, p0]; // allowed now, denied after the change
      const toDeny = new SeqFlow(src, dst), toAllow = new SeqFlow(dst, src);
      flows.push(toDeny, toAllow);
      await Promise.all([toDeny.started(), toAllow.started()]);
      await new Promise((res) => setTimeout(res, 400));
      flipTo = flipTo === 'app0' ? 'app1' : 'app0';
      const f = path.join(dir, `flip-${m}.json`);
      writeFileSync(f, manifest([flip(flipTo)]));
      const t0 = performance.timeOrigin + performance.now();
      const res = await labPolicies(name, [f]);
      await new Promise((res2) => setTimeout(res2, 400));
      const [d, a] = await Promise.all([toDeny.stop(), toAllow.stop()]);
      const lastEcho = d.e.lastIndexOf(1);
      if (lastEcho < 0 || d.t[lastEcho] < t0 - 50) throw new Error(`apply → enforce: ${src.name} → ${dst.name} did not flow before the change`);
      if (lastEcho + 1 >= d.t.length) throw new Error(`apply → enforce: ${src.name} → ${dst.name} did not stop after the change`);
      const firstEcho = a.e.indexOf(1);
      if (firstEcho < 0) throw new Error(`apply → enforce: ${dst.name} → ${src.name} did not start after the change`);
      if (a.t[firstEcho] < t0) throw new Error(`apply → enforce: ${dst.name} → ${src.name} flowed before the change`);
      const denied = d.t[lastEcho + 1] - t0, allowed = a.t[firstEcho] - t0;
      enforce.push({ wire: Math.max(denied, allowed), denied, allowed, resolved: res.ms });
    }
    if (flipTo !== 'app1') await labCommit(s0, [{ put: 'policy', object: flip('app1') }]); // back to the set the iperf3 flow is allowed by

    // throughput: with and without, in ABBA order against drift (the machine may be shared)
    say('iperf3 warm-up (the engines\' hot paths are compiled by the JIT as traffic comes)');
    await tcpThroughput(p1, p0.netns, quick ? 1 : 2, 1, IPERF_PORT);
    let inForce = true;
    for (let r = 0; r < rounds; r++) {
      for (const wantPolicies of r % 2 === 0 ? [true, false] : [false, true]) {
        if (wantPolicies !== inForce) {
          say(wantPolicies ? `putting the ${policies.length} policies back` : 'removing every policy');
          await setPolicies(wantPolicies);
          inForce = wantPolicies;
        }
        say(`iperf3 ${p0.name} → ${p1.name}, ${wantPolicies ? `${policies.length} policies` : 'no policy'} (${seconds} s)`);
        (wantPolicies ? withP : without).push((await tcpThroughput(p1, p0.netns, seconds, 1, IPERF_PORT)).gbps);
      }
    }

    const out: PolicyLabBenchResult = {
      compile_ms_10k_policies: compile.compile_ms_10k_policies,
      recompile_one_ms: compile.recompile_one_ms,
      apply_to_enforce_ms: round1(median(enforce.map((e) => e.wire))),
      tcp_with_policies_gbps: Math.round(median(withP) * 1000) / 1000,
      tcp_without_policies_gbps: Math.round(median(without) * 1000) / 1000,
      throughput_ratio: Math.round((median(withP) / median(without)) * 1000) / 1000,
    };
    const rows: [string, string, string][] = [
      ['compile, 10,000 policies over 1,000 pods', `${out.compile_ms_10k_policies} ms`, 'bench/policy-model.ts, one PolicyCompiler'],
      ['recompile after one policy change', `${out.recompile_one_ms} ms`, 'incremental, same compiler'],
      ['recompile after one pod relabel', `${compile.relabel_pod_ms} ms`, ''],
      [`lab apply of ${policies.length} policies, until every agent enforces`, `${round1(loadMs)} ms`, `${shape.namespaces * shape.podsPerNamespace} pods in the datastore; the manifest's parse included`],
      ['apply → enforce one change, on the wire', `${out.apply_to_enforce_ms} ms`, `median of ${enforce.length}: max(first datagram denied, first allowed) after lab apply began`],
      ['  first datagram of the denied flow dropped', `${round1(median(enforce.map((e) => e.denied)))} ms`, 'UDP echo at 1 kHz, 1 ms resolution'],
      ['  first datagram of the allowed flow through', `${round1(median(enforce.map((e) => e.allowed)))} ms`, ''],
      ['  lab apply resolved (every agent enforces)', `${round1(median(enforce.map((e) => e.resolved)))} ms`, 'labPolicies, in process (the CLI adds its start-up)'],
      [`iperf3 TCP across nodes, no policy`, `${out.tcp_without_policies_gbps} Gbps`, `median of ${without.length} × ${seconds} s (${without.map((x) => x.toFixed(2)).join(', ')})`],
      [`iperf3 TCP across nodes, ${policies.length} policies`, `${out.tcp_with_policies_gbps} Gbps`, `median of ${withP.length} × ${seconds} s (${withP.map((x) => x.toFixed(2)).join(', ')}); the flow is allowed`],
      ['throughput with / without policies', `${out.throughput_ratio}`, 'target >= 0.95'],
    ];
    const w0 = Math.max(...rows.map((r) => r[0].length)), w1 = Math.max(...rows.map((r) => r[1].length));
    print(`\nNetworkPolicy bench${quick ? ' (quick: the lab holds a smaller cluster)' : ''}\n${rows.map(([a, b, c]) => `  ${a.padEnd(w0)}  ${b.padStart(w1)}  ${c}`.trimEnd()).join('\n')}\n${JSON.stringify(out)}\n`);
    return out;
  } finally {
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
    for (const f of flows) f.kill();
    await labDown(name);
    rmSync(dir, { recursive: true, force: true });
  }
}

// `node dist/bench/policy-bench.js [--quick] [--rounds N]` runs it directly
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const i = process.argv.indexOf('--rounds');
  const rounds = i > 0 ? Number(process.argv[i + 1]) : undefined;
  if (rounds !== undefined && !(Number.isInteger(rounds) && rounds > 0)) throw new Error('--rounds: a positive integer');
  await runPolicyLabBench({ quick: process.argv.includes('--quick'), rounds, progress: (m) => process.stderr.write(`  ${m}\n`) });
}
