// Helpers for the real-runtime tests of twill-cni (containerd, libcni, a chain
// with the reference plugins). Every namespace made here is named twt-rt-<random>
// (the labs' own are tw<lab>-*); every process started here is stopped by PID.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { request } from '../../agent/socket.js';
import { stopPid } from '../../lab/proc.js';
import { launchWorkload } from '../../lab/workload-process.js';
import { ROOT, PATH_ENV } from '../cni/helpers.js';

export { ROOT, PATH_ENV };

export const hex = (bytes: number) => randomBytes(bytes).toString('hex');
/** A lab name for one test file: r + 4 hex (namespaces tw<name>-node1, ...). */
export const labName = () => `r${hex(2)}`;

export interface Out { code: number; out: string; err: string }

/** Runs a command (never throws); the environment is PATH only unless given. */
export function sh(cmd: string, args: string[], o: { input?: string; timeout?: number; env?: Record<string, string> } = {}): Out {
  const r = spawnSync(cmd, args, { input: o.input, encoding: 'utf8', timeout: o.timeout ?? 30_000, env: o.env ?? { PATH: PATH_ENV } });
  return { code: r.status ?? -1, out: r.stdout ?? '', err: `${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

/** Runs a command inside a network namespace (nsenter: no remount of /sys). */
export function inNs(ns: string, cmd: string[], o: { input?: string; timeout?: number } = {}): Out {
  return sh('nsenter', [`--net=/var/run/netns/${ns}`, ...cmd], o);
}

/** Sends `msg` to a TCP echo server (busybox nc) from inside `ns`; returns what came back ('' on failure). */
export function tcpEcho(ns: string, host: string, port: number, msg: string, timeoutS = 3): string {
  const r = inNs(ns, ['busybox', 'nc', '-w', String(timeoutS), host, String(port)], { input: `${msg}\n`, timeout: (timeoutS + 3) * 1000 });
  return r.out.trim();
}

export function ping(ns: string, ip: string): boolean {
  return inNs(ns, ['ping', '-c', '1', '-W', '3', ip], { timeout: 10_000 }).code === 0;
}

/** Namespaces named twt-rt-<random><n>, created and deleted only through this. */
export class RtNamespaces {
  readonly run = hex(3);
  private n = 0;
  readonly made = new Set<string>();

  add(): { name: string; path: string } {
    const name = `twt-rt-${this.run}${(this.n++).toString(36)}`;
    const r = sh('ip', ['netns', 'add', name]);
    if (r.code !== 0) throw new Error(`ip netns add ${name}: ${r.err}`);
    this.made.add(name);
    return { name, path: `/var/run/netns/${name}` };
  }

  del(name: string): void {
    if (!this.made.has(name) || !name.startsWith('twt-rt-')) return;
    sh('ip', ['netns', 'del', name]);
    this.made.delete(name);
  }

  delAll(): void { for (const n of [...this.made]) this.del(n); }
}

/** Processes started by a test, stopped by PID (SIGTERM, then SIGKILL). */
export class Pids {
  readonly pids = new Set<number>();
  add(pid: number | undefined): number {
    if (!pid) throw new Error('process did not start');
    this.pids.add(pid);
    return pid;
  }
  async stop(pid: number): Promise<void> { await stopPid(pid); this.pids.delete(pid); }
  async stopAll(): Promise<void> { for (const p of [...this.pids]) await this.stop(p); }
}

/** Waits until the TCP echo at ip:8080 answers from inside `ns` (a lab pod's workload starts in the background). */
export async function waitForEcho(ns: string, ip: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (tcpEcho(ns, ip, 8080, 'up?', 1) === 'up?') return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing answers on ${ip}:8080 from ${ns}`);
}

/** Starts the lab's pod workload (TCP echo on 8080, UDP echo on 8081) inside `ns` and waits until it listens. */
export async function startWorkload(ns: string, pids: Pids): Promise<number> {
  return pids.add(await launchWorkload(ns));
}

// ---------------------------------------------------------------- IPAM and agent

export interface Held { ip: string; owner: string }

/** Addresses held in <dataDir>/<network> (an address dir with an owner file inside). */
export function ipamHeld(dataDir: string, network: string): Held[] {
  const d = path.join(dataDir, network);
  if (!existsSync(d)) return [];
  const out: Held[] = [];
  for (const name of readdirSync(d)) {
    if (!/^\d+\.\d+\.\d+\.\d+$/.test(name) && !/^[0-9a-f:]*:[0-9a-f:]*$/.test(name)) continue; // IPv4 or IPv6 (both share the dir)
    for (const owner of readdirSync(path.join(d, name))) out.push({ ip: name, owner });
  }
  return out;
}

export interface AgentPod { containerId: string; name: string; namespace: string; ip: string; ip6?: string; hostIf: string; netns: string }
export const agentPods = async (socket: string) => (await request(socket, { op: 'pods' })) as AgentPod[];

export function linkExists(ns: string, dev: string): boolean {
  return sh('ip', ['-n', ns, 'link', 'show', 'dev', dev]).code === 0;
}

// ---------------------------------------------------------------- the libcni driver

export const DRIVER_SRC = path.join(ROOT, 'test/cni-runtime/libcni-driver');
export const GOCODE = '/usr/share/gocode';

/** Builds the libcni driver offline (GOPATH mode, Debian's libcni source) into `dir`; the Go cache lives there too. */
export function buildDriver(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const out = path.join(dir, 'libcni-driver');
  const env = {
    PATH: PATH_ENV, HOME: dir, GO111MODULE: 'off', GOPATH: `${path.join(dir, 'gopath')}:${GOCODE}`,
    GOCACHE: path.join(dir, 'gocache'), GOFLAGS: '', CGO_ENABLED: '0',
  };
  const r = spawnSync('go', ['build', '-o', out, '.'], { cwd: DRIVER_SRC, env, encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`go build of the libcni driver failed: ${r.stderr}${r.error ?? ''}`);
  return out;
}

export interface DriverReq {
  op: 'validate' | 'add' | 'check' | 'del' | 'cached';
  conf: string;
  containerId?: string;
  netns?: string;
  ifname?: string;
  path: string[];
  cacheDir: string;
  args?: [string, string][];
  capabilityArgs?: Record<string, unknown>;
}
export interface DriverOut {
  code: number;
  err: string;
  json?: { cniVersion: string; result?: Record<string, unknown>; current?: Record<string, unknown>; capabilities?: string[] };
  ms: number;
}

/** Runs one libcni operation inside the node's netns (where the runtime, and so the plugins, run). */
export function libcni(driver: string, nodeNs: string, req: DriverReq): DriverOut {
  const t = performance.now();
  const r = spawnSync('nsenter', [`--net=/var/run/netns/${nodeNs}`, driver], {
    input: JSON.stringify(req), encoding: 'utf8', timeout: 60_000, env: { PATH: PATH_ENV },
  });
  let json: DriverOut['json'];
  try { json = r.stdout.trim() ? JSON.parse(r.stdout) : undefined; } catch { /* not JSON */ }
  return { code: r.status ?? -1, err: `${r.stderr ?? ''}${r.error ? String(r.error) : ''}`.trim(), json, ms: performance.now() - t };
}

/** One host-side interface of a result (no sandbox) and the pod's (sandbox set). */
export function resultIfaces(result: Record<string, unknown>): { host: { name: string; mac: string }[]; pod: { name: string; mac: string; sandbox: string }[] } {
  const ifs = (result.interfaces ?? []) as { name: string; mac: string; sandbox?: string }[];
  return { host: ifs.filter((i) => !i.sandbox), pod: ifs.filter((i) => i.sandbox) as { name: string; mac: string; sandbox: string }[] };
}

export function resultIP(result: Record<string, unknown>): string {
  const ips = (result.ips ?? []) as { address: string }[];
  if (!ips.length) throw new Error(`result has no ips: ${JSON.stringify(result)}`);
  return ips[0].address.split('/')[0];
}

/** True when `ip` lies in the a.b.c.0/24 pod CIDR. */
export function inCidr24(ip: string, cidr: string): boolean {
  return ip.split('.').slice(0, 3).join('.') === cidr.split('/')[0].split('.').slice(0, 3).join('.');
}

/**
 * What a private containerd (its socket `sock`, its files under `dir`) may leave
 * behind: shims that name the socket, and mounts under dir (innermost first).
 */
export async function sweepContainerd(dir: string, sock: string): Promise<void> {
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    let cmd = '';
    try { cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8'); } catch { continue; }
    if (cmd.startsWith('/usr/bin/containerd-shim') && cmd.includes(sock)) await stopPid(Number(p));
  }
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4]).filter((m) => m && m.startsWith(`${dir}/`));
  for (const m of mounts.reverse()) sh('umount', ['-l', m]);
}
