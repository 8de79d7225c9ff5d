// Helpers for tests that run a lab: a unique lab name per file, agent counters,
// and kernel counters read inside a namespace.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { request } from '../../agent/socket.js';
import type { LabNode } from '../../lab/state.js';
import { untilOutput } from '../../lib/sh.js';

export const testLabName = () => `e${randomBytes(2).toString('hex')}`;

/** Resolves true once ok() holds, polling every 100 ms; false after ms. */
export async function until(ok: () => Promise<boolean> | boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await ok()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function counters(n: LabNode): Promise<Record<string, number>> {
  return (await request(n.socket, { op: 'counters' })) as Record<string, number>;
}

/** Runs a command in a namespace; never throws, returns exit code and output. */
export function sh(ns: string, cmd: string[], timeoutMs = 20_000): { code: number; out: string } {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8', timeout: timeoutMs });
  return { code: r.status ?? -1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

/** The kernel's count of IPv4 datagrams it forwarded in a namespace (/proc/net/snmp Ip: ForwDatagrams). */
export function kernelForwarded(ns: string): number {
  const lines = sh(ns, ['cat', '/proc/net/snmp']).out.split('\n').filter((l) => l.startsWith('Ip:'));
  const keys = lines[0].split(/\s+/), vals = lines[1].split(/\s+/);
  return Number(vals[keys.indexOf('ForwDatagrams')]);
}

export function linkStats(ns: string, dev: string): { txPackets: number; rxPackets: number } {
  const j = JSON.parse(sh(ns, ['ip', '-s', '-j', 'link', 'show', 'dev', dev]).out) as { stats64: { tx: { packets: number }; rx: { packets: number } } }[];
  return { txPackets: j[0].stats64.tx.packets, rxPackets: j[0].stats64.rx.packets };
}

/** One TCP echo round trip from `ns` to ip:8080 (the lab workload), within 2 s. */
export async function probeTcpFrom(ns: string, ip: string): Promise<boolean> {
  const r = sh(ns, [process.execPath, '-e', `
    const net = require('net'); const s = net.connect(8080, '${ip}');
    s.on('connect', () => s.write('x')); s.on('data', () => process.exit(0));
    s.on('error', () => process.exit(1)); setTimeout(() => process.exit(2), 2000);`]);
  return r.code === 0;
}

export function pingOk(ns: string, ip: string, extra: string[] = []): boolean {
  return sh(ns, ['ping', '-c', '1', '-W', '1', ...extra, ip]).code === 0;
}

/**
 * tcpdump on `iface` in namespace `ns`, `filter` packets arriving (-Q in), up to
 * `count`, written to a pcap in a fresh temp dir. stop() waits `graceMs` for the
 * count, then interrupts it; cleanup() kills it if needed and removes the dir.
 */
export function underlayCapture(ns: string, iface: string, filter: string, count: number) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'twt-cap-'));
  const file = path.join(dir, 'u.pcap');
  const cap = spawn('ip', ['netns', 'exec', ns, 'tcpdump', '-i', iface, '-w', file, '-c', String(count), '-s', '0', '-Q', 'in', filter], { stdio: ['ignore', 'ignore', 'pipe'] });
  const listening = untilOutput(cap.stderr, 'listening on', 'tcpdump');
  listening.catch(() => {}); // awaited through started()
  const done = new Promise<void>((r) => cap.on('close', () => r()));
  return {
    file,
    started: () => listening,
    async stop(graceMs: number): Promise<void> {
      const t = setTimeout(() => cap.kill('SIGINT'), graceMs);
      await done;
      clearTimeout(t);
    },
    cleanup(): void {
      if (cap.exitCode === null) cap.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface EchoReply { ok: boolean; from?: string; err?: string }

/**
 * One TCP and one UDP echo from `ns` to ip (tcpPort, udpPort) on CONNECTED sockets:
 * the kernel only delivers a reply that comes back from `ip` itself, so a Service
 * reply that skipped the client node's un-DNAT fails here. `from` is where the reply
 * came from; `err` the socket error code or "timeout".
 */
export function connectedEcho(ns: string, ip: string, tcpPort = 8080, udpPort = 8081, timeoutMs = 2000): { tcp: EchoReply; udp: EchoReply } {
  const r = sh(ns, [process.execPath, '-e', `
    const net = require('net'), dgram = require('dgram'); const ip = '${ip}', T = ${timeoutMs};
    const tcp = new Promise((res) => { const c = net.connect(${tcpPort}, ip); const t = setTimeout(() => { c.destroy(); res({ ok: false, err: 'timeout' }); }, T);
      c.on('connect', () => c.write('twill-svc')); c.on('error', (e) => { clearTimeout(t); res({ ok: false, err: e.code }); });
      c.on('data', (d) => { clearTimeout(t); const from = c.remoteAddress; c.destroy(); res({ ok: String(d) === 'twill-svc', from }); }); });
    const udp = new Promise((res) => { const u = dgram.createSocket(ip.includes(':') ? 'udp6' : 'udp4'); let iv; const t = setTimeout(() => { clearInterval(iv); u.close(); res({ ok: false, err: 'timeout' }); }, T);
      u.on('error', (e) => { clearTimeout(t); clearInterval(iv); res({ ok: false, err: e.code }); });
      u.on('message', (m, r) => { clearTimeout(t); clearInterval(iv); u.close(); res({ ok: String(m) === 'twill-svc', from: r.address }); });
      u.connect(${udpPort}, ip, () => { const send = () => u.send('twill-svc', () => {}); send(); iv = setInterval(send, 250); }); });
    Promise.all([tcp, udp]).then(([tcp, udp]) => { console.log(JSON.stringify({ tcp, udp })); process.exit(0); });`], timeoutMs + 10_000);
  try {
    return JSON.parse(r.out.trim().split('\n').pop() ?? '') as { tcp: EchoReply; udp: EchoReply };
  } catch {
    return { tcp: { ok: false, err: `probe failed: ${r.out.trim()}` }, udp: { ok: false, err: 'probe failed' } };
  }
}
