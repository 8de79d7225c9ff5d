// Measurements over a running lab: the reachability matrix (ICMP, TCP and UDP
// between every pair of pods), iperf3 throughput and ping RTTs between two pods.
import { spawn } from 'node:child_process';
import { capture, untilOutput } from './sh.js';
import { distFile } from '../dataplane/engine/paths.js';
import type { LabPod } from './state.js';

export interface Reach { icmp: boolean; tcp: boolean; udp: boolean }
export type Matrix = Record<string, Record<string, Reach>>;

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

export function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** iperf3 TCP from clientNs to a server started in server.netns: Gbps received and bytes moved. */
export async function tcpThroughput(server: { netns: string; ip: string }, clientNs: string, seconds: number, streams = 1, port = 5399): Promise<{ gbps: number; bytes: number }> {
  const srv = spawn('ip', ['netns', 'exec', server.netns, 'iperf3', '-s', '-1', '-p', String(port), '--forceflush'], { stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    await untilOutput(srv.stdout, 'Server listening', 'iperf3 server');
    const r = await capture('ip', ['netns', 'exec', clientNs, 'iperf3', '-c', server.ip, '-p', String(port), '-t', String(seconds), '-P', String(streams), '-J'], (seconds + 20) * 1000);
    const j = JSON.parse(r.out.slice(r.out.indexOf('{'))) as { end?: { sum_received?: { bits_per_second: number; bytes: number } }; error?: string };
    if (!j.end?.sum_received) throw new Error(`iperf3: ${j.error ?? 'no result'}`);
    return { gbps: j.end.sum_received.bits_per_second / 1e9, bytes: j.end.sum_received.bytes };
  } finally {
    srv.kill('SIGKILL');
  }
}

/** ICMP echo RTTs in microseconds (ping -i 2 ms), sorted. */
export async function pingRtts(fromNs: string, ip: string, count: number): Promise<number[]> {
  const r = await capture('ip', ['netns', 'exec', fromNs, 'ping', '-c', String(count), '-i', '0.002', ip], count * 50 + 10_000);
  const rtts = [...r.out.matchAll(/time=([\d.]+) ms/g)].map((m) => parseFloat(m[1]) * 1000);
  return rtts.sort((a, b) => a - b);
}
