// Helpers for the overlay trust tests: hand-made VXLAN datagrams (written with
// the dataplane's own packet codecs, compiled under dist/) sent from inside a
// network namespace, plain UDP sent from a pod, and captures read back.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { distFile } from '../../lib/paths.js';
import { untilOutput } from '../../lib/sh.js';
import { sh } from './lab.js';

/** One inner IPv4/UDP packet in an Ethernet frame, to be carried in VXLAN. */
export interface InnerUdp {
  src: string; // inner IPv4 source
  dst: string; // inner IPv4 destination
  sport?: number; // default 40000
  dport: number;
  size?: number; // inner IPv4 total length; default 20 + 8 + 32
  df?: boolean; // don't-fragment on the inner header (default false)
  dstMac?: string; // inner Ethernet destination: the receiving node's VTEP MAC
  srcMac?: string; // inner Ethernet source (default 02:00:00:00:00:01)
  tag?: string; // text at the start of the UDP payload (the rest is zeros)
}

const mod = (rel: string) => pathToFileURL(distFile(rel)).href;

// Runs inside the namespace: builds every datagram, sends each once from an
// ephemeral port, prints how many the kernel took.
const SCRIPT = `
import dgram from 'node:dgram';
import { writeVxlan } from '${mod('dataplane/packet/vxlan.js')}';
import { writeEthernet, parseMac } from '${mod('dataplane/packet/ethernet.js')}';
import { writeIPv4Header } from '${mod('dataplane/packet/ipv4.js')}';
import { writeUdpHeader } from '${mod('dataplane/packet/udp.js')}';
import { l4Checksum4 } from '${mod('dataplane/packet/checksum.js')}';
import { parseIPv4Address as parseIPv4 } from '${mod('lib/ipv4.js')}';
const spec = JSON.parse(process.env.TWT_VXLAN);
const sock = dgram.createSocket('udp4');
let id = 1, sent = 0;
const errors = [];
for (const p of spec.packets) {
  const size = p.size ?? 60, src = parseIPv4(p.src), dst = parseIPv4(p.dst);
  const b = new Uint8Array(8 + 14 + size);
  writeVxlan(b, 0, spec.vni);
  writeEthernet(b, 8, parseMac(p.dstMac ?? '02:00:00:00:00:02'), parseMac(p.srcMac ?? '02:00:00:00:00:01'), 0x0800);
  const ip = 22, u = ip + 20, ulen = size - 20;
  writeIPv4Header(b, ip, size, id++, 64, 17, src, dst, !!p.df);
  if (p.tag) b.set(new TextEncoder().encode(p.tag), u + 8);
  writeUdpHeader(b, u, p.sport ?? 40000, p.dport, ulen, 0);
  const ck = l4Checksum4(b, u, ulen, src, dst, 17);
  b[u + 6] = ck >>> 8; b[u + 7] = ck & 0xff;
  await new Promise((res) => sock.send(b, spec.port, spec.to, (e) => { if (e) errors.push(String(e)); else sent++; res(); }));
}
sock.close();
console.log(JSON.stringify({ sent, errors }));
`;

/**
 * Sends each packet, VXLAN-encapsulated (flags 0x08, VNI `vni`), as one UDP
 * datagram from namespace `ns` to `to`:`port`. Throws unless the kernel took all.
 */
export function sendVxlan(ns: string, to: string, packets: InnerUdp[], o: { port?: number; vni?: number } = {}): void {
  const spec = { to, port: o.port ?? 8472, vni: o.vni ?? 1, packets };
  const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', SCRIPT], {
    encoding: 'utf8', timeout: 20_000, env: { ...process.env, TWT_VXLAN: JSON.stringify(spec) },
  });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  let res: { sent: number; errors: string[] };
  try {
    res = JSON.parse((r.stdout ?? '').trim().split('\n').pop() ?? '') as { sent: number; errors: string[] };
  } catch {
    throw new Error(`VXLAN sender in ${ns} failed (exit ${r.status}): ${out}`);
  }
  if (res.sent !== packets.length) throw new Error(`VXLAN sender in ${ns}: sent ${res.sent} of ${packets.length}: ${res.errors.join('; ')}`);
}

/** Plain UDP datagrams from namespace `ns` to ip:port, payload `tag` each. */
export function sendUdp(ns: string, ip: string, port: number, tags: string[], sport = 40001): void {
  const r = sh(ns, [process.execPath, '-e', `
    const s = require('dgram').createSocket('udp4'); const tags = ${JSON.stringify(tags)}; let left = tags.length;
    s.bind(${sport}, () => { for (const t of tags) s.send(t, ${port}, '${ip}', (e) => { if (e) { console.log(String(e)); process.exit(1); } if (--left === 0) { s.close(); process.exit(0); } }); });
    setTimeout(() => process.exit(2), 5000);`]);
  if (r.code !== 0) throw new Error(`UDP sender in ${ns} failed: ${r.out}`);
}

/**
 * The packets of a capture file as tcpdump prints them (-n, and -v with
 * `verbose`), one string per packet. A file still being written may end in a
 * partial packet: what precedes it is returned.
 */
export function readCapture(file: string, verbose = false): string[] {
  const r = spawnSync('tcpdump', ['-n', '-r', file, ...(verbose ? ['-v'] : [])], { encoding: 'utf8' });
  if (r.status !== 0 && !/truncated dump file|cut short/.test(r.stderr)) throw new Error(`tcpdump -r ${file}: ${r.stderr}`);
  const out: string[] = [];
  for (const line of r.stdout.split('\n')) {
    if (!line.trim()) continue;
    if (/^\d\d:\d\d:\d\d\./.test(line) || out.length === 0) out.push(line);
    else out[out.length - 1] += `\n${line}`; // -v continuation lines
  }
  return out;
}

/**
 * tcpdump on `iface` in namespace `ns`, packets arriving (-Q in) that match
 * `filter`, written to a pcap packet by packet (-U), so packets() reads what
 * has arrived so far. stop() interrupts it; cleanup() kills it if need be and
 * removes the file.
 */
export function packetCapture(ns: string, iface: string, filter: string) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'twt-cap-'));
  const file = path.join(dir, 'c.pcap');
  const cap = spawn('ip', ['netns', 'exec', ns, 'tcpdump', '-i', iface, '-U', '-w', file, '-s', '0', '-Q', 'in', filter], { stdio: ['ignore', 'ignore', 'pipe'] });
  const listening = untilOutput(cap.stderr, 'listening on', `tcpdump in ${ns}`);
  listening.catch(() => {}); // awaited through started()
  const done = new Promise<void>((r) => cap.on('close', () => r()));
  return {
    started: () => listening,
    packets: (verbose = false) => readCapture(file, verbose),
    async stop(): Promise<void> {
      if (cap.exitCode === null) cap.kill('SIGINT');
      const t = setTimeout(() => cap.kill('SIGKILL'), 3000);
      await done;
      clearTimeout(t);
    },
    cleanup(): void {
      if (cap.exitCode === null) cap.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Polls `read` until `ok` holds for its value, or `ms` pass; returns the last value read. */
export async function until<T>(read: () => Promise<T> | T, ok: (v: T) => boolean, ms = 3000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await read();
    if (ok(v) || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
}
