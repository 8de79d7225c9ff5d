// Measurements over a running lab: the reachability matrix (ICMP, TCP and UDP
// between every pair of pods) and iperf3 / ping between two pods.
import { spawn, spawnSync } from 'node:child_process';
import { distFile } from '../dataplane/engine/paths.js';
import type { LabPod } from './state.js';

export interface Reach { icmp: boolean; tcp: boolean; udp: boolean }
export type Matrix = Record<string, Record<string, Reach>>;

function capture(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('close', (code) => { clearTimeout(t); resolve({ code, out }); });
  });
}

export async function ping(fromNs: string, ip: string, count = 1): Promise<boolean> {
  const r = await capture('ip', ['netns', 'exec', fromNs, 'ping', '-c', String(count), '-W', '1', '-q', ip], 5000);
  return r.code === 0;
}

export async function reachability(pods: LabPod[]): Promise<Matrix> {
  const m: Matrix = {};
  await Promise.all(pods.map(async (src) => {
    const targets = pods.filter((p) => p !== src).map((p) => p.ip);
    const r = await capture('ip', ['netns', 'exec', src.netns, process.execPath, distFile('cli/twill.js'), '_probe', ...targets], 15_000);
    const l4 = JSON.parse(r.out || '{}') as Record<string, { tcp: boolean; udp: boolean }>;
    m[src.name] = {};
    for (const dst of pods) {
      if (dst === src) continue;
      const icmp = await ping(src.netns, dst.ip);
      m[src.name][dst.name] = { icmp, tcp: !!l4[dst.ip]?.tcp, udp: !!l4[dst.ip]?.udp };
    }
  }));
  return m;
}

export function formatMatrix(pods: LabPod[], m: Matrix): string {
  const w = Math.max(...pods.map((p) => p.name.length), 8) + 2;
  const lines = ['from \\ to'.padEnd(w) + pods.map((p) => p.name.padEnd(w)).join('')];
  for (const s of pods) {
    let row = s.name.padEnd(w);
    for (const d of pods) {
      if (d === s) { row += '-'.padEnd(w); continue; }
      const r = m[s.name][d.name];
      row += `${r.icmp ? 'I' : '.'}${r.tcp ? 'T' : '.'}${r.udp ? 'U' : '.'}`.padEnd(w);
    }
    lines.push(row);
  }
  lines.push('(I = ping, T = TCP echo, U = UDP echo; "." = failed)');
  return lines.join('\n');
}

export function allReachable(m: Matrix): boolean {
  return Object.values(m).every((row) => Object.values(row).every((r) => r.icmp && r.tcp && r.udp));
}

/** iperf3 TCP from one namespace to a server in another; returns Gbps. */
export async function iperf(serverNs: string, serverIp: string, clientNs: string, seconds: number, streams = 1, port = 5299): Promise<number> {
  const srv = spawn('ip', ['netns', 'exec', serverNs, 'iperf3', '-s', '-1', '-p', String(port)], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 300));
    const r = await capture('ip', ['netns', 'exec', clientNs, 'iperf3', '-c', serverIp, '-p', String(port), '-t', String(seconds), '-P', String(streams), '-J'], (seconds + 15) * 1000);
    const j = JSON.parse(r.out) as { end?: { sum_received?: { bits_per_second: number } }; error?: string };
    if (!j.end?.sum_received) throw new Error(`iperf3: ${j.error ?? 'no result'}`);
    return j.end.sum_received.bits_per_second / 1e9;
  } finally {
    srv.kill('SIGKILL');
  }
}

/** ping RTT statistics in microseconds. */
export function pingStats(fromNs: string, ip: string, count = 200, intervalS = 0.005): { avgUs: number; loss: number } {
  const r = spawnSync('ip', ['netns', 'exec', fromNs, 'ping', '-c', String(count), '-i', String(intervalS), '-q', ip], { encoding: 'utf8' });
  const rtt = /= [\d.]+\/([\d.]+)\//.exec(r.stdout);
  const loss = /([\d.]+)% packet loss/.exec(r.stdout);
  return { avgUs: rtt ? Math.round(parseFloat(rtt[1]) * 1000) : NaN, loss: loss ? parseFloat(loss[1]) : 100 };
}
