// Measurements over a running lab: the reachability matrix (ICMP, TCP and UDP
// between every pair of pods, then each pod to a Service and to the cluster DNS),
// iperf3 throughput and ping RTTs between two pods.
import { spawn } from 'node:child_process';
import { capture, untilOutput } from '../lib/sh.js';
import { distFile } from '../lib/paths.js';
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

/** The pod-to-pod matrix; with `svc`, two more columns: the echo Service through its ClusterIP, and the cluster DNS. */
export function formatMatrix(pods: LabPod[], m: Matrix, svc?: ServiceMatrix): string {
  const w = Math.max(...pods.map((p) => p.name.length), 8) + 2;
  const lines = ['from \\ to'.padEnd(w) + pods.map((p) => p.name.padEnd(w)).join('') + (svc ? `${'svc echo'.padEnd(w)}dns` : '')];
  for (const s of pods) {
    let row = s.name.padEnd(w);
    for (const d of pods) {
      if (d === s) { row += '-'.padEnd(w); continue; }
      const r = m[s.name][d.name];
      row += `${r.icmp ? 'I' : '.'}${r.tcp ? 'T' : '.'}${r.udp ? 'U' : '.'}`.padEnd(w);
    }
    const v = svc?.[s.name];
    if (v) row += `${v.tcp ? 'T' : '.'}${v.udp ? 'U' : '.'}`.padEnd(w) + (v.dns ? 'D' : '.');
    lines.push(row.trimEnd());
  }
  lines.push(`(I = ping, T = TCP echo, U = UDP echo${svc ? ', D = name resolved through the DNS Service' : ''}; "." = failed)`);
  return lines.join('\n');
}

export interface ServiceReach { tcp: boolean; udp: boolean; dns: boolean }
export type ServiceMatrix = Record<string, ServiceReach>;

// Run inside a pod: TCP and UDP echo through a ClusterIP on connected sockets, so a
// reply that does not come back from the ClusterIP (un-DNATed by the client's node) fails.
const SERVICE_PROBE = `
const net = require('net'), dgram = require('dgram'); const [ip, tp, up] = process.argv.slice(1);
const tcp = new Promise((res) => { const c = net.connect(+tp, ip); const t = setTimeout(() => { c.destroy(); res(false); }, 3000);
  c.on('connect', () => c.write('twill')); c.on('data', (d) => { clearTimeout(t); const from = c.remoteAddress; c.destroy(); res(String(d) === 'twill' && from === ip); }); c.on('error', () => { clearTimeout(t); res(false); }); });
const udp = new Promise((res) => { const u = dgram.createSocket(ip.includes(':') ? 'udp6' : 'udp4'); let iv; const t = setTimeout(() => { clearInterval(iv); u.close(); res(false); }, 3000);
  u.on('message', (m, r) => { clearTimeout(t); clearInterval(iv); u.close(); res(String(m) === 'twill' && r.address === ip); }); u.on('error', () => {});
  u.connect(+up, ip, () => { const send = () => u.send('twill', () => {}); send(); iv = setInterval(send, 300); }); });
Promise.all([tcp, udp]).then(([t, u]) => { console.log(JSON.stringify({ tcp: t, udp: u })); process.exit(0); });`;

/** Each pod to a Service (TCP and UDP echo through `clusterIP`) and to the cluster DNS (`name` must resolve to clusterIP, of its family). */
export async function serviceReachability(pods: LabPod[], clusterIP: string, name: string, tcpPort = 8080, udpPort = 8081): Promise<ServiceMatrix> {
  const out: ServiceMatrix = {};
  await Promise.all(pods.map(async (p) => {
    const [l4, dns] = await Promise.all([
      capture('ip', ['netns', 'exec', p.netns, process.execPath, '-e', SERVICE_PROBE, clusterIP, String(tcpPort), String(udpPort)], 10_000),
      resolveInPod(p.netns, name, undefined, clusterIP.includes(':') ? 6 : 4),
    ]);
    const r = JSON.parse(l4.out.trim() || '{}') as { tcp?: boolean; udp?: boolean };
    out[p.name] = { tcp: !!r.tcp, udp: !!r.udp, dns: dns.includes(clusterIP) };
  }));
  return out;
}

/** The addresses `getent hosts name` gives inside a pod (through its resolv.conf: the DNS Service), or of one family; [] when it fails. */
export async function resolveInPod(netns: string, name: string, timeoutMs = 8000, family?: 4 | 6): Promise<string[]> {
  const r = await capture('ip', ['netns', 'exec', netns, 'getent', family ? `ahostsv${family}` : 'hosts', name], timeoutMs);
  return r.code === 0 ? r.out.trim().split('\n').map((l) => l.split(/\s+/)[0]).filter(Boolean) : [];
}

export function allServicesReachable(m: ServiceMatrix): boolean {
  return Object.values(m).every((r) => r.tcp && r.udp && r.dns);
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
