// The overlay's UDP calls on IPv6 sockets (flannel's flannel-v6.<VNI>: VXLAN
// over an IPv6 underlay). Two throwaway namespaces joined by a veth pair carry
// the lab's IPv6 underlay addresses; each namespace's loopback has ::1. An IPv6
// address crosses the addon as 4 host-order int32 words, most significant first.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import { native } from '../../dataplane/native/index.js';
import { flowSteering, flowWorker, OVERLAY_IP_AT } from '../../dataplane/engine/steering.js';
import { formatIPv6Address, parseIPv6Address } from '../../lib/ipv6.js';
import { arena, createNetns, ipv4, slots, udpOnRandomPort, waitReadable, type Netns } from './helpers.js';

const A11 = 'fc00:f853:ccd:e793::11'; // node A's underlay address (on va)
const A14 = 'fc00:f853:ccd:e793::14'; // a second one on va
const B12 = 'fc00:f853:ccd:e793::12'; // node B's (on vb)
const B13 = 'fc00:f853:ccd:e793::13'; // a second one on vb
const LO6 = '::1';
const SLOT = 2048;
const cpus = native.cpus();
const two = cpus.length >= 2;

/** The words the addon reads and writes for an address. */
const w6 = (s: string) => Int32Array.from(parseIPv6Address(s));
/** dst for entries 0..n-1, entry j's 4 words from addrs[j]. */
const dsts = (addrs: string[]) => {
  const d = new Int32Array(4 * addrs.length);
  addrs.forEach((s, j) => d.set(w6(s), 4 * j));
  return d;
};
const srcOf = (src: Int32Array, i: number) => formatIPv6Address(src.subarray(4 * i, 4 * i + 4));
const thrown = (f: () => unknown): Error => {
  try { f(); } catch (e) { return e as Error; }
  throw new Error('expected a throw');
};

/** Every datagram waiting on fd (polling up to `ms` for each batch), with its source and GRO size. */
function drain(fd: number, want: number, slot = SLOT, ms = 1000) {
  const b = arena(64 * slot), r = slots(64, slot), src = new Int32Array(4 * 64);
  const got: { data: Buffer; src: string; meta: number }[] = [];
  let bytes = 0;
  while (bytes < want && waitReadable([fd], ms)[0]) {
    const n = native.udpRecv(fd, b, r.offs, r.lens, src, r.meta, 64, slot);
    for (let k = 0; k < n; k++) {
      got.push({ data: Buffer.from(b.subarray(r.offs[k], r.offs[k] + r.lens[k])), src: srcOf(src, k), meta: r.meta[k] });
      bytes += r.lens[k];
    }
  }
  return got;
}

let A: Netns, B: Netns;
beforeAll(() => {
  try {
    A = createNetns();
    B = createNetns();
    for (const ns of [A, B]) // createNetns turns IPv6 off; these tests want it (::1 comes back on lo)
      execFileSync('ip', ['netns', 'exec', ns.name, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=0', 'net.ipv6.conf.default.disable_ipv6=0']);
    A.ip('link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb', 'netns', B.name);
    A.ip('-6', 'addr', 'add', `${A11}/64`, 'dev', 'va', 'nodad');
    A.ip('-6', 'addr', 'add', `${A14}/64`, 'dev', 'va', 'nodad');
    B.ip('-6', 'addr', 'add', `${B12}/64`, 'dev', 'vb', 'nodad');
    B.ip('-6', 'addr', 'add', `${B13}/64`, 'dev', 'vb', 'nodad');
    // GRO on the receiving veth gives it a NAPI context; veth hands it a locally sent skb only when the
    // receiver also has rx-udp-gro-forwarding (veth_skb_is_eligible_for_gro). Then datagrams can coalesce.
    execFileSync('ip', ['netns', 'exec', B.name, 'ethtool', '-K', 'vb', 'gro', 'on', 'rx-udp-gro-forwarding', 'on']);
    A.ip('link', 'set', 'va', 'up');
    B.ip('link', 'set', 'vb', 'up');
    // Static neighbours: right after the link comes up, the first neighbour solicitation can beat the
    // peer's join of the solicited-node group (addrconf runs from a workqueue), and the retry is 1 s later.
    const mac = (ns: Netns, dev: string) => (JSON.parse(ns.ip('-j', 'link', 'show', dev)) as { address: string }[])[0].address;
    for (const x of [B12, B13]) A.ip('-6', 'neigh', 'replace', x, 'lladdr', mac(B, 'vb'), 'dev', 'va', 'nud', 'permanent');
    for (const x of [A11, A14]) B.ip('-6', 'neigh', 'replace', x, 'lladdr', mac(A, 'va'), 'dev', 'vb', 'nud', 'permanent');
  } catch (e) {
    A?.destroy();
    B?.destroy();
    throw e;
  }
});
afterAll(() => {
  A?.destroy();
  B?.destroy();
});

function open(ns: Netns, addr: string, opts: Parameters<typeof native.udpOpen>[2] = {}, port?: number) {
  const s = port === undefined ? udpOnRandomPort((p) => native.udpOpenIn(ns.path, addr, p, opts)) : { fd: native.udpOpenIn(ns.path, addr, port, opts), port };
  ns.fds.push(s.fd);
  return s;
}
function close(ns: Netns, fd: number) {
  ns.fds.splice(ns.fds.indexOf(fd), 1);
  native.close(fd);
}

describe('native UDP on IPv6', () => {
  it('an IPv6 address opens an AF_INET6 socket with IPV6_V6ONLY, every option on it, GSO and GRO offered', () => {
    const opts = { reusePort: true, gro: true, incomingCpu: cpus[0] };
    const g1 = open(A, '::', opts);
    const g2 = open(A, '::', opts, g1.port); // a reuseport group
    // V6ONLY: IPv4 can take the same port (without reusePort: it shares no group), and gets its datagrams.
    const v4 = open(A, '0.0.0.0', {}, g1.port);
    expect(native.udpOffloads(g1.fd)).toEqual({ gso: true, gro: true });
    expect(native.udpOffloads(open(A, A11).fd)).toEqual({ gso: true, gro: true });
    const tx4 = open(A, '127.0.0.1');
    const a = arena(SLOT), d = slots(1, SLOT);
    d.lens[0] = 7;
    expect(native.udpSend(tx4.fd, a, d.offs, d.lens, d.idx, 1, Int32Array.of(ipv4('127.0.0.1')), Int32Array.of(g1.port))).toBe(1);
    expect(drain(v4.fd, 7).map((g) => g.data.length)).toEqual([7]);
    expect([drain(g1.fd, 1, SLOT, 50).length, drain(g2.fd, 1, SLOT, 50).length]).toEqual([0, 0]);
    // An address that is not on the namespace: bind fails as for IPv4.
    expect(thrown(() => native.udpOpenIn(A.path, 'fc00::99', 0, {})).message).toBe('bind: EADDRNOTAVAIL');
  });

  it('udpSend of 64 datagrams over the veth arrives intact; src holds the sender\'s 4 words, which send the reply back', () => {
    const tx = open(A, A11), rx = open(B, '::');
    const a = arena(64 * SLOT), out = slots(64, SLOT);
    for (let i = 0; i < 64; i++) {
      out.lens[i] = 100 + i * 13;
      for (let j = 0; j < out.lens[i]; j++) a[out.offs[i] + j] = (i * 31 + j) & 0xff;
    }
    const dst = dsts(new Array(64).fill(B12)), dport = new Int32Array(64).fill(rx.port);
    expect(native.udpSend(tx.fd, a, out.offs, out.lens, out.idx, 64, dst, dport)).toBe(64);

    const b = arena(256 * SLOT), inn = slots(256, SLOT), src = new Int32Array(4 * 256).fill(-1);
    let got = 0;
    while (got < 64 && waitReadable([rx.fd], 1000)[0]) {
      const n = native.udpRecv(rx.fd, b, inn.offs, inn.lens, src, inn.meta, 256, SLOT);
      for (let k = 0; k < n; k++, got++) {
        expect(inn.lens[k]).toBe(100 + got * 13); // one veth, one flow: in order
        expect([...src.subarray(4 * k, 4 * k + 4)]).toEqual([0xfc00f853 | 0, 0x0ccde793, 0, 0x11]);
        expect(inn.meta[k]).toBe(0);
        const d = b.subarray(inn.offs[k], inn.offs[k] + inn.lens[k]);
        expect(d.every((v, j) => v === ((got * 31 + j) & 0xff))).toBe(true);
      }
    }
    expect(got).toBe(64);
    // Word k as unsigned hex is groups 2k and 2k+1.
    expect([...src.subarray(0, 4)].map((w) => (w >>> 0).toString(16).padStart(8, '0')).join('')).toBe('fc00f8530ccde7930000000000000011');
    expect(srcOf(src, 0)).toBe(A11);
    expect(native.udpRecv(rx.fd, b, inn.offs, inn.lens, src, inn.meta, 256, SLOT)).toBe(0); // EAGAIN → 0

    // The reply: src words as dst, as a node answers its peer.
    b.set([1, 2, 3], 0);
    expect(native.udpSend(rx.fd, b, Int32Array.of(0), Int32Array.of(3), Int32Array.of(0), 1, src.slice(0, 4), Int32Array.of(tx.port))).toBe(1);
    const reply = drain(tx.fd, 3);
    expect(reply.map((g) => [g.data, g.meta])).toEqual([[Buffer.from([1, 2, 3]), 0]]);
    expect([B12, B13]).toContain(reply[0].src); // rx is bound to "::": the kernel picks one of vb's addresses
  });

  it('one udpRecv batch from two sources fills each entry\'s 4 words; loopback ::1 works too', () => {
    const s11 = open(A, A11), s14 = open(A, A14), rx = open(B, B12);
    const a = arena(8 * SLOT), d = slots(8, SLOT);
    for (let i = 0; i < 8; i++) { d.lens[i] = 20 + i; a.fill(i, d.offs[i], d.offs[i] + d.lens[i]); }
    const dst = dsts(new Array(8).fill(B12)), dport = new Int32Array(8).fill(rx.port);
    // Alternate the senders: entries 0, 2, 4, 6 from ::11, 1, 3, 5, 7 from ::14.
    for (let i = 0; i < 8; i++) expect(native.udpSend(i % 2 ? s14.fd : s11.fd, a, d.offs, d.lens, Int32Array.of(i), 1, dst, dport)).toBe(1);
    const got = drain(rx.fd, 8 * 20);
    expect(got.map((g) => [g.data[0], g.data.length, g.src])).toEqual(Array.from({ length: 8 }, (_, i) => [i, 20 + i, i % 2 ? A14 : A11]));

    const l1 = open(A, LO6), l2 = open(A, '::');
    expect(native.udpSend(l1.fd, a, d.offs, d.lens, d.idx, 1, dsts([LO6]), Int32Array.of(l2.port))).toBe(1);
    expect(drain(l2.fd, 1).map((g) => g.src)).toEqual(['::1']);
  });

  it('udpSend to two destinations reads dst[4j..4j+3] of the entries idx names', () => {
    const tx = open(A, '::');
    const r1 = open(B, B12);
    const r2 = open(B, B13, {}, r1.port); // same port, the other address
    const a = arena(4 * 1024), d = slots(4, 1024);
    d.lens.fill(10);
    for (let i = 0; i < 4; i++) a.fill(i + 1, d.offs[i], d.offs[i] + 10);
    const dst = dsts([B12, B13, B12, B13]), dport = new Int32Array(4).fill(r1.port);
    expect(native.udpSend(tx.fd, a, d.offs, d.lens, Int32Array.of(3, 0, 1), 3, dst, dport)).toBe(3);
    expect(drain(r1.fd, 10).map((g) => g.data[0])).toEqual([1]);
    expect(drain(r2.fd, 20).map((g) => g.data[0])).toEqual([4, 2]);
    // dst only as long as the largest entry named needs: entries 0 and 1 with 8 words.
    expect(native.udpSend(tx.fd, a, d.offs, d.lens, Int32Array.of(1, 0), 2, dst.slice(0, 8), dport)).toBe(2);
    expect(drain(r1.fd, 10).map((g) => g.data[0])).toEqual([1]);
    expect(drain(r2.fd, 10).map((g) => g.data[0])).toEqual([2]);
  });

  for (const [where, from, to, ns] of [['loopback', LO6, LO6, 'A'], ['the veth', A11, B12, 'B']] as const)
    it(`udpSendGso of 10 x 1000 bytes over ${where} reaches a GRO socket as one receive of segment size 1000`, () => {
      const tx = open(A, from), rx = open(ns === 'A' ? A : B, to, { gro: true });
      expect(native.udpOffloads(tx.fd)).toEqual({ gso: true, gro: true });
      const a = arena(16384);
      for (let j = 0; j < 10000; j++) a[100 + j] = (j * 7 + ((j / 1000) | 0)) & 0xff;
      native.udpSendGso(tx.fd, a, 100, 10000, 1000, w6(to), rx.port);
      const got = drain(rx.fd, 10000, 65536);
      expect(got.map((g) => [g.meta, g.data.length, g.src])).toEqual([[1000, 10000, from]]);
      expect(got[0].data.equals(Buffer.from(a.subarray(100, 10100)))).toBe(true);
      // Without UDP_GRO the kernel segments it for the socket: 10 datagrams.
      const plain = open(ns === 'A' ? A : B, to);
      native.udpSendGso(tx.fd, a, 100, 10000, 1000, w6(to), plain.port);
      expect(drain(plain.fd, 10000).map((g) => [g.meta, g.data.length])).toEqual(new Array(10).fill([0, 1000]));
    });

  it('udpSendRuns: a UDP_SEGMENT run of chained header + payload and a plain chained datagram, to two destinations', () => {
    const tx = open(A, A11);
    const rx = open(B, B12, { gro: true });
    const r2 = open(B, B13);
    const H = 60, P = 940, LAST = 433, SEGS = 5;
    const a = arena(65536);
    const offs = new Int32Array(32), lens = new Int32Array(32), more = new Uint8Array(32);
    const want: number[][] = [];
    const payload = 20000;
    for (let j = 0; j < 4 * P + LAST; j++) a[payload + j] = (j * 13 + 7) & 0xff;
    for (let k = 0; k < SEGS; k++) {
      const h = 2 * k, e = h + 1, plen = k === SEGS - 1 ? LAST : P;
      offs[h] = 1001 + k * 97; lens[h] = H; more[h] = 1;
      for (let j = 0; j < H; j++) a[offs[h] + j] = (k * 50 + j) & 0xff;
      offs[e] = payload + k * P; lens[e] = plen;
      want.push([...a.subarray(offs[h], offs[h] + H), ...a.subarray(offs[e], offs[e] + plen)]);
    }
    const pieces = [[40000, 5], [40100, 300], [40999, 1]];
    pieces.forEach(([o, l], q) => { offs[10 + q] = o; lens[10 + q] = l; more[10 + q] = q < 2 ? 1 : 0; a.fill(q + 1, o, o + l); });
    const plain = pieces.flatMap(([o, l]) => [...a.subarray(o, o + l)]);
    const idx = Int32Array.from({ length: 13 }, (_, i) => i);
    // Every entry's words set (only each run's first counts): the run to ::12, the plain datagram to ::13.
    const dst = dsts([...new Array(10).fill(B12), ...new Array(3).fill(B13)]);
    const dport = new Int32Array(13).fill(rx.port);
    dport.fill(r2.port, 10);
    expect(native.udpSendRuns(tx.fd, a, offs, lens, idx, 13, dst, dport, Int32Array.of(10, 3), 2, more)).toBe(13);
    const got = drain(rx.fd, 4 * (H + P) + H + LAST, 65536);
    expect(got.map((g) => [g.meta, g.src])).toEqual([[H + P, A11]]); // one GSO message, whole on the GRO socket
    expect(got[0].data.equals(Buffer.from(want.flat()))).toBe(true);
    const p = drain(r2.fd, plain.length);
    expect(p.map((g) => [g.data.equals(Buffer.from(plain)), g.src])).toEqual([[true, A11]]);
  });

  it('GRO coalesces separate datagrams of one flow into one receive of segment size 1200 (veth with GRO on)', () => {
    const tx = open(A, A11), rx = open(B, B12, { gro: true });
    const N = 32, a = arena((N + 1) * SLOT), d = slots(N + 1, SLOT);
    d.lens.fill(1200);
    for (let i = 0; i <= N; i++) a.fill(i, d.offs[i], d.offs[i] + 1200);
    const dst = dsts(new Array(N + 1).fill(B12)), dport = new Int32Array(N + 1).fill(rx.port);
    // Sent one by one, each datagram's veth NAPI poll runs as it is sent and finds it alone. So a token
    // bucket on va holds all but the first; opened wide, the next send releases them all in one
    // qdisc run, and B's NAPI poll finds them together, as a NIC's would under load.
    execFileSync('tc', ['-n', A.name, 'qdisc', 'add', 'dev', 'va', 'root', 'tbf', 'rate', '1kbit', 'burst', '1600', 'limit', '200000']);
    try {
      expect(native.udpSend(tx.fd, a, d.offs, d.lens, d.idx, N, dst, dport)).toBe(N);
      execFileSync('tc', ['-n', A.name, 'qdisc', 'change', 'dev', 'va', 'root', 'tbf', 'rate', '10gbit', 'burst', '200000', 'limit', '200000']);
      expect(native.udpSend(tx.fd, a, d.offs, d.lens, Int32Array.of(N), 1, dst, dport)).toBe(1);
      const got = drain(rx.fd, (N + 1) * 1200, 65536);
      const all = Buffer.concat(got.map((g) => g.data));
      expect(all.equals(Buffer.concat(Array.from({ length: N + 1 }, (_, i) => Buffer.alloc(1200, i))))).toBe(true);
      for (const g of got) expect([g.meta === 0 ? g.data.length : g.meta, g.src]).toEqual([1200, A11]);
      expect(got.length).toBeLessThanOrEqual(3); // the first alone, the rest in one or two receives
      expect(Math.max(...got.map((g) => g.data.length))).toBeGreaterThanOrEqual(16 * 1200);
    } finally {
      execFileSync('tc', ['-n', A.name, 'qdisc', 'del', 'dev', 'va', 'root']);
    }
  });

  it.skipIf(!two)('SO_INCOMING_CPU: a reuseport group hands a datagram to the socket of the CPU that received it', () => {
    const s0 = open(A, '::', { reusePort: true, incomingCpu: cpus[0] });
    const s1 = open(A, '::', { reusePort: true, incomingCpu: cpus[1] }, s0.port);
    const tx = open(A, LO6);
    try {
      const a = arena(16 * SLOT), d = slots(16, SLOT);
      d.lens.fill(32);
      const dst = dsts(new Array(16).fill(LO6)), dport = new Int32Array(16).fill(s0.port);
      for (const [k, want, other] of [[0, s0.fd, s1.fd], [1, s1.fd, s0.fd], [0, s0.fd, s1.fd]] as const) {
        native.pinThread(cpus[k]);
        expect(native.udpSend(tx.fd, a, d.offs, d.lens, d.idx, 16, dst, dport)).toBe(16); // loopback delivers in the sendmsg
        expect([drain(want, 16 * 32, SLOT, 500).length, drain(other, 1, SLOT, 0).length]).toEqual([16, 0]);
      }
    } finally {
      native.pinThread(-1);
    }
  });

  it('udpSteer: the classic BPF program picks an IPv6 reuseport group\'s socket from the UDP payload, as on IPv4', () => {
    const W = 3;
    const first = open(A, '::', { reusePort: true });
    const socks = [first.fd];
    for (let k = 1; k < W; k++) socks.push(open(A, '::', { reusePort: true }, first.port).fd);
    native.udpSteer(socks[0], flowSteering(OVERLAY_IP_AT, W));
    const tx = open(A, LO6);
    // VXLAN datagrams whose inner IPv4 packets differ in addresses and ports.
    const F = 48, a = arena(F * SLOT), d = slots(F, SLOT);
    const want = Array.from({ length: F }, (_, i) => {
      const dgram = new Uint8Array(OVERLAY_IP_AT + 48);
      dgram[0] = 0x08;
      const v = new DataView(dgram.buffer, OVERLAY_IP_AT);
      v.setUint8(0, 0x45); v.setUint16(2, 48); v.setUint8(8, 64); v.setUint8(9, 17);
      v.setUint32(12, 0x0af40102 + i * 7); v.setUint32(16, 0x0af40203 + i * 13); v.setUint16(20, 1024 + i); v.setUint16(22, 8080);
      a.set(dgram, d.offs[i]); d.lens[i] = dgram.length;
      return flowWorker(dgram, OVERLAY_IP_AT, W);
    });
    expect(new Set(want).size).toBe(W);
    expect(native.udpSend(tx.fd, a, d.offs, d.lens, d.idx, F, dsts(new Array(F).fill(LO6)), new Int32Array(F).fill(first.port))).toBe(F);
    const got = new Array<number>(F).fill(-1);
    socks.forEach((fd, k) => {
      for (const g of drain(fd, Infinity, SLOT, 50)) got[g.data.readUInt16BE(OVERLAY_IP_AT + 20) - 1024] = k;
    });
    expect(got).toEqual(want);
  });

  it('bad arguments: src and dst too short for 4 words per entry, dst of the wrong kind, bad addresses', () => {
    const s6 = open(A, '::'), s4 = open(A, '127.0.0.1');
    const a = arena(4 * SLOT), d = slots(4, SLOT);
    d.lens.fill(8);
    const dport = new Int32Array(4).fill(9);
    // udpRecv: src needs 4 * max words on an IPv6 socket (any length on IPv4, as before).
    let e = thrown(() => native.udpRecv(s6.fd, a, d.offs, d.lens, new Int32Array(15), d.meta, 4, SLOT));
    expect(e).toBeInstanceOf(TypeError);
    expect(e.message).toMatch(/^src /);
    expect(native.udpRecv(s6.fd, a, d.offs, d.lens, new Int32Array(16), d.meta, 4, SLOT)).toBe(0);
    expect(native.udpRecv(s6.fd, a, d.offs, d.lens, new Int32Array(0), d.meta, 0, SLOT)).toBe(0);
    expect(native.udpRecv(s4.fd, a, d.offs, d.lens, new Int32Array(4), d.meta, 4, SLOT)).toBe(0);
    // udpSend / udpSendRuns: dst needs 4 * (largest idx + 1) words.
    e = thrown(() => native.udpSend(s6.fd, a, d.offs, d.lens, Int32Array.of(0, 2), 2, new Int32Array(11), dport));
    expect(e).toBeInstanceOf(TypeError);
    expect(e.message).toMatch(/^dst /);
    e = thrown(() => native.udpSendRuns(s6.fd, a, d.offs, d.lens, Int32Array.of(3), 1, new Int32Array(15), dport, Int32Array.of(1), 1));
    expect(e).toBeInstanceOf(TypeError);
    expect(e.message).toMatch(/^dst /);
    // An IPv4-shaped dst (one word per entry) on an IPv6 socket is refused before anything is sent.
    e = thrown(() => native.udpSend(s6.fd, a, d.offs, d.lens, d.idx, 4, new Int32Array(4), dport));
    expect(e).toBeInstanceOf(TypeError);
    // idx outside the other arrays stays a RangeError; so do bad ports.
    expect(thrown(() => native.udpSend(s6.fd, a, d.offs, d.lens, Int32Array.of(4), 1, new Int32Array(20), new Int32Array(5)))).toBeInstanceOf(RangeError);
    expect(thrown(() => native.udpSend(s6.fd, a, d.offs, d.lens, Int32Array.of(0), 1, new Int32Array(4), Int32Array.of(70000)))).toBeInstanceOf(RangeError);
    // udpSendGso: 4 words on IPv6, a number on IPv4.
    e = thrown(() => native.udpSendGso(s6.fd, a, 0, 100, 50, 1, 9));
    expect(e).toBeInstanceOf(TypeError);
    expect(e.message).toMatch(/^dst /);
    expect(thrown(() => native.udpSendGso(s6.fd, a, 0, 100, 50, new Int32Array(3), 9))).toBeInstanceOf(TypeError);
    expect(thrown(() => native.udpSendGso(s4.fd, a, 0, 100, 50, new Int32Array(4), 9))).toBeInstanceOf(TypeError);
    expect(thrown(() => native.udpSendGso(s6.fd, a, 0, 100, 0, w6(LO6), 9))).toBeInstanceOf(RangeError);
    // Addresses: no zone ids, nothing malformed.
    for (const bad of ['fe80::1%lo', '::g', '1::2::3', 'fc00::11/64', '1.2.3', ''])
      expect(thrown(() => native.udpOpenIn(A.path, bad, 0, {}))).toBeInstanceOf(TypeError);
  });

  it('the family is the socket\'s own: a reused fd number takes the new socket\'s, an fd udpOpen did not make asks the kernel', async () => {
    const a = arena(SLOT), d = slots(1, SLOT);
    const s6 = open(A, '::');
    close(A, s6.fd);
    const s4 = open(A, '127.0.0.1');
    expect(s4.fd).toBe(s6.fd); // the lowest free number, reused
    const src4 = new Int32Array(1);
    d.lens[0] = 5;
    expect(native.udpSend(s4.fd, a, d.offs, d.lens, d.idx, 1, Int32Array.of(ipv4('127.0.0.1')), Int32Array.of(s4.port))).toBe(1);
    waitReadable([s4.fd], 1000);
    expect(native.udpRecv(s4.fd, a, d.offs, d.lens, src4, d.meta, 1, SLOT)).toBe(1);
    expect(src4[0]).toBe(ipv4('127.0.0.1'));
    // A node dgram socket (this namespace): getsockopt(SO_DOMAIN) tells each call the family.
    for (const type of ['udp6', 'udp4'] as const) {
      const sock = dgram.createSocket(type);
      await new Promise<void>((res) => sock.bind(0, type === 'udp6' ? '::' : '0.0.0.0', res));
      try {
        const quiet = process.noDeprecation;
        process.noDeprecation = true; // _handle is node's own, deprecated for public use; its fd is the socket's
        const fd = (sock as unknown as { _handle: { fd: number } })._handle.fd;
        process.noDeprecation = quiet;
        expect(fd).toBeGreaterThan(2);
        const short = () => native.udpRecv(fd, a, d.offs, d.lens, new Int32Array(1), d.meta, 1, SLOT);
        if (type === 'udp6') expect(thrown(short)).toBeInstanceOf(TypeError);
        else expect(short()).toBe(0);
      } finally {
        sock.close();
      }
    }
  });
});
