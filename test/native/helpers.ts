// Shared helpers for the native addon tests: throwaway network namespaces
// (named twt-nat-<random>, always deleted), arenas and hand-built packets.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { native } from '../../dataplane/native/index.js';

export function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export interface Netns {
  name: string;
  path: string;
  ip(...args: string[]): string; // `ip -n <ns> ...`
  ifindex(dev: string): number;
  /** Close fds opened into the namespace (so its devices go away) and delete it. */
  destroy(): void;
  fds: number[];
}

export function createNetns(): Netns {
  const name = `twt-nat-${randomBytes(4).toString('hex')}`;
  ip('netns', 'add', name);
  const ns: Netns = {
    name,
    path: `/var/run/netns/${name}`,
    fds: [],
    ip: (...args) => ip('-n', name, ...args),
    ifindex: (dev) => (JSON.parse(ip('-n', name, '-j', 'link', 'show', dev)) as { ifindex: number }[])[0].ifindex,
    destroy() {
      for (const fd of ns.fds.splice(0)) {
        try { native.close(fd); } catch { /* already closed */ }
      }
      try { ip('netns', 'del', name); } catch { /* already gone */ }
    },
  };
  try {
    ns.ip('link', 'set', 'lo', 'up');
    // Quiet the namespace: no IPv6 autoconf/MLD chatter on test links.
    execFileSync('ip', ['netns', 'exec', name, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  } catch (e) {
    ns.destroy();
    throw e;
  }
  return ns;
}

/** A Uint8Array over a SharedArrayBuffer that deliberately starts at a non-zero byteOffset. */
export function arena(size: number): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(size + 64), 64, size);
}

/** Batch descriptors with `n` slots of `slot` bytes each. */
export function slots(n: number, slot: number) {
  const offs = new Int32Array(n);
  for (let i = 0; i < n; i++) offs[i] = i * slot;
  return { offs, lens: new Int32Array(n), meta: new Int32Array(n), src: new Int32Array(n), idx: Int32Array.from({ length: n }, (_, i) => i) };
}

/** Poll until one of `fds` is readable or `ms` pass; returns the ready flags. */
export function waitReadable(fds: number[], ms: number): Int32Array {
  const ready = new Int32Array(fds.length);
  native.poll(Int32Array.from(fds), fds.length, ready, ms);
  return ready;
}

/** Open a UDP socket on a random port in 10000..29999 (below the ephemeral range). */
export function udpOnRandomPort(open: (port: number) => number): { fd: number; port: number } {
  for (let tries = 0; ; tries++) {
    const port = 10000 + Math.floor(Math.random() * 20000);
    try {
      return { fd: open(port), port };
    } catch (e) {
      if ((e as { code?: string }).code !== 'EADDRINUSE' || tries > 20) throw e;
    }
  }
}

export function ipv4(s: string): number {
  return s.split('.').reduce((a, b) => ((a << 8) | Number(b)) >>> 0, 0);
}

function csumAdd(sum: number, b: Uint8Array): number {
  for (let i = 0; i < b.length; i += 2) sum += (b[i] << 8) | (b[i + 1] ?? 0);
  return sum;
}
function csumFold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** IPv4 + UDP packet with valid header and UDP checksums. */
export function udpPacket(src: number, dst: number, sport: number, dport: number, payload: Uint8Array): Uint8Array {
  const ulen = 8 + payload.length;
  const p = new Uint8Array(20 + ulen);
  const v = new DataView(p.buffer);
  v.setUint8(0, 0x45);
  v.setUint16(2, p.length);
  v.setUint16(4, 0x1234); // id
  v.setUint16(6, 0x4000); // DF
  v.setUint8(8, 64);
  v.setUint8(9, 17);
  v.setUint32(12, src);
  v.setUint32(16, dst);
  v.setUint16(10, csumFold(csumAdd(0, p.subarray(0, 20))));
  v.setUint16(20, sport);
  v.setUint16(22, dport);
  v.setUint16(24, ulen);
  p.set(payload, 28);
  const pseudo = new Uint8Array(12);
  const pv = new DataView(pseudo.buffer);
  pv.setUint32(0, src);
  pv.setUint32(4, dst);
  pv.setUint16(8, 17);
  pv.setUint16(10, ulen);
  const c = csumFold(csumAdd(csumAdd(0, pseudo), p.subarray(20)));
  v.setUint16(26, c === 0 ? 0xffff : c);
  return p;
}

export const TEST_ETHERTYPE = 0x88b5; // IEEE local experimental

/** Broadcast Ethernet frame of TEST_ETHERTYPE carrying `payload`. */
export function ethFrame(payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + Math.max(payload.length, 46));
  f.fill(0xff, 0, 6);
  f.set([0x02, 0, 0, 0, 0, 0x01], 6);
  f[12] = TEST_ETHERTYPE >> 8;
  f[13] = TEST_ETHERTYPE & 0xff;
  f.set(payload, 14);
  return f;
}

export const text = (s: string) => new TextEncoder().encode(s);
export const decode = (b: Uint8Array) => new TextDecoder().decode(b);
