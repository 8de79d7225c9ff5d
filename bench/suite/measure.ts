// The bench's own measurements (TCP throughput and ping RTTs are lab/measure.ts's): TCP
// request/response latency, 64-byte UDP delivery (trafgen), the CPU and
// memory the dataplane used, twill's workers' own time, and the busy node's
// CPU-bound load. All traffic runs between pods in namespaces.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { capture } from '../../lib/sh.js';
import { launchWorkload } from '../../lab/workload-process.js';
import { loadState } from '../../lab/state.js';
import { request } from '../../agent/socket.js';

/** TCP request/response: one byte each way, `count` times in sequence; RTTs in microseconds, sorted. */
export async function tcpRrRtts(fromNs: string, ip: string, count: number, port = 8080): Promise<number[]> {
  const script = `
    const net = require('net'); const out = []; let t0 = 0n, n = 0;
    const s = net.connect(${port}, '${ip}', () => { s.setNoDelay(true); t0 = process.hrtime.bigint(); s.write('x'); });
    s.on('data', () => { out.push(Number(process.hrtime.bigint() - t0) / 1000);
      if (++n >= ${count}) { console.log(JSON.stringify(out)); s.destroy(); return; }
      t0 = process.hrtime.bigint(); s.write('x'); });
    s.on('error', (e) => { console.error(String(e)); process.exit(1); });`;
  const r = await capture('ip', ['netns', 'exec', fromNs, process.execPath, '-e', script], count * 20 + 15_000);
  const line = r.out.split('\n').find((l) => l.startsWith('['));
  if (!line) throw new Error(`tcp request/response failed: ${(r.out + r.err).trim()}`);
  return (JSON.parse(line) as number[]).sort((a, b) => a - b);
}

/** Starts the echo workload in a pod unless something already answers on 8080; returns its pid (0 if it was running). */
export async function ensureEchoServer(netns: string, ip: string): Promise<number> {
  const probe = spawnSync('ip', ['netns', 'exec', netns, process.execPath, '-e', `require('net').connect(8080,'${ip}').on('connect',()=>process.exit(0)).on('error',()=>process.exit(1))`]);
  if (probe.status === 0) return 0;
  return launchWorkload(netns);
}

function ifStats(netns: string, dev: string): { rx: number; tx: number } {
  const j = JSON.parse(spawnSync('ip', ['-n', netns, '-s', '-j', 'link', 'show', 'dev', dev], { encoding: 'utf8' }).stdout) as { stats64: { rx: { packets: number }; tx: { packets: number } } }[];
  return { rx: j[0].stats64.rx.packets, tx: j[0].stats64.tx.packets };
}

function macBytes(mac: string): string { return mac.split(':').map((b) => `0x${b}`).join(', '); }
function ipBytes(ip: string): string { return ip.split('.').join(', '); }

/**
 * 64-byte UDP payloads from one pod to another with trafgen (one core, as fast
 * as it goes), counted where they arrive: the receiver pod's eth0.
 */
export async function udp64(src: { netns: string; ip: string }, dst: { netns: string; ip: string }, seconds: number): Promise<{ pps: number; loss: number; offered: number }> {
  spawnSync('ip', ['netns', 'exec', src.netns, 'ping', '-c', '1', '-W', '1', dst.ip]); // resolve the gateway's MAC
  const routes = JSON.parse(spawnSync('ip', ['-n', src.netns, '-j', 'route', 'get', dst.ip], { encoding: 'utf8' }).stdout) as { gateway?: string; dev: string }[];
  const gw = routes[0].gateway ?? dst.ip;
  const neigh = JSON.parse(spawnSync('ip', ['-n', src.netns, '-j', 'neigh', 'show', gw], { encoding: 'utf8' }).stdout) as { lladdr?: string }[];
  const links = JSON.parse(spawnSync('ip', ['-n', src.netns, '-j', 'link', 'show', 'dev', 'eth0'], { encoding: 'utf8' }).stdout) as { address: string }[];
  if (!neigh[0]?.lladdr) throw new Error(`udp64: no neighbor entry for ${gw} in ${src.netns}`);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'twill-trafgen-'));
  const conf = path.join(dir, 'udp64.cfg');
  // Ethernet, IPv4 (checksum by trafgen), UDP to the discard-like port 9 (no checksum), 64 bytes of payload.
  writeFileSync(conf, `{ ${macBytes(neigh[0].lladdr)}, ${macBytes(links[0].address)}, 0x08, 0x00,
  0x45, 0x00, const16(92), const16(0), 0x40, 0x00, 64, 17, csumip(14, 33), ${ipBytes(src.ip)}, ${ipBytes(dst.ip)},
  const16(40000), const16(9), const16(72), const16(0), fill(0x41, 64) }\n`);
  try {
    const before = ifStats(dst.netns, 'eth0');
    const r = await capture('ip', ['netns', 'exec', src.netns, 'timeout', '-s', 'INT', String(seconds), 'trafgen', '--dev', 'eth0', '--conf', conf, '--cpus', '1', '--no-sock-mem', '-q'], (seconds + 10) * 1000);
    await new Promise((res) => setTimeout(res, 300)); // let the last packets land
    const got = ifStats(dst.netns, 'eth0').rx - before.rx;
    const sent = Number(/(\d+) packets outgoing/.exec(r.out + r.err)?.[1] ?? NaN);
    return { pps: got / seconds, offered: sent / seconds, loss: sent > 0 ? Math.max(0, 1 - got / sent) : NaN };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Busy CPU seconds of the whole machine (all cores) from /proc/stat. */
export function machineBusySeconds(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  return (user + nice + system + irq + softirq + (steal ?? 0)) / 100; // USER_HZ is 100 on Linux
}

/** Sum of resident memory (MB) of processes. */
export function rssMb(pids: number[]): number {
  let kb = 0;
  for (const pid of pids) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) kb += Number(m[1]);
    } catch { /* gone */ }
  }
  return kb / 1024;
}

/** A twill lab's workers' time, summed over its nodes (each agent's twill_worker_*_seconds_total): handling batches, and busy polling. */
export async function twillWorkerSeconds(lab: string): Promise<{ busy: number; spin: number }> {
  const s = loadState(lab);
  if (!s) throw new Error(`no twill lab "${lab}" is up`);
  let busy = 0, spin = 0;
  for (const n of s.nodes) {
    const text = String(await request(n.socket, { op: 'metrics' }));
    for (const m of text.matchAll(/^twill_worker_(busy|spin)_seconds_total\{[^}]*\} (\S+)$/gm)) {
      if (m[1] === 'busy') busy += Number(m[2]); else spin += Number(m[2]);
    }
  }
  return { busy, spin };
}

// One busy process: a JavaScript loop at normal priority that also ends by
// itself if the suite that started it is gone or overruns, so an interrupted
// run cannot leave the machine loaded.
const HOG = 'const p = process.ppid, end = Date.now() + Number(process.argv[1]); for (let i = 1; ; i++) if ((i & 0xffffff) === 0 && (process.ppid !== p || Date.now() > end)) process.exit(0);';

/**
 * The busy node's load: one CPU-bound process per CPU at normal priority, each
 * in a session of its own (so in its own scheduling group, as each pod's
 * container is in a cgroup of its own). Returns their pids; stop them with
 * stopBusyLoad.
 */
export function startBusyLoad(maxSeconds: number, count = os.availableParallelism()): number[] {
  const pids: number[] = [];
  for (let i = 0; i < count; i++) {
    const c = spawn(process.execPath, ['-e', HOG, String(maxSeconds * 1000)], { stdio: 'ignore', detached: true });
    c.unref();
    if (c.pid) pids.push(c.pid);
  }
  return pids;
}

/** Ends the busy load's processes, by pid. */
export function stopBusyLoad(pids: number[]): void {
  for (const pid of pids.splice(0)) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
  }
}
