// Which worker gets a packet (engine/steering.ts, pod-queues.ts, worker.ts).
// Flow steering: the classic BPF program must pick, in a reuseport group and in
// a PACKET_FANOUT_CBPF group, the socket its TypeScript twin names, the same
// for both directions of a flow, for inner IPv4 and IPv6 packets (an IPv6 group
// of sockets on `::` too). CPU placement: a thread pinned to CPU k must
// get what arrives on CPU k, from the overlay socket (SO_INCOMING_CPU) and from
// a pod veth (PACKET_FANOUT_CPU, member k opened k-th).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { native } from '../../dataplane/native/index.js';
import { flowSteering, flowWorker, OVERLAY_IP_AT, POD_IP_AT } from '../../dataplane/engine/steering.js';
import { execFileSync } from 'node:child_process';
import { parseIPv6Address } from '../../lib/ipv6.js';
import { arena, createNetns, ethFrame, slots, text, udpOnRandomPort, waitReadable, type Netns } from './helpers.js';

const LOOPBACK = 0x7f000001;
const SLOT = 2048;
const cpus = native.cpus();
const two = cpus.length >= 2;

function drain(fd: number): number {
  const b = arena(64 * SLOT), r = slots(64, SLOT);
  let got = 0;
  while (waitReadable([fd], 100)[0]) {
    const n = native.packetRecv(fd, b, r.offs, r.lens, r.meta, 64, SLOT);
    if (n === 0) break;
    got += n;
  }
  return got;
}

/** An IPv4 packet (no options) of protocol `proto` with the given ports; `frag` sets the fragment offset. */
function ipv4(src: number, dst: number, proto: number, sport: number, dport: number, frag = 0): Uint8Array {
  const p = new Uint8Array(48);
  const v = new DataView(p.buffer);
  v.setUint8(0, 0x45); v.setUint16(2, p.length); v.setUint16(6, frag); v.setUint8(8, 64); v.setUint8(9, proto);
  v.setUint32(12, src); v.setUint32(16, dst); v.setUint16(20, sport); v.setUint16(22, dport);
  return p;
}
// A spread of flows: TCP, UDP, SCTP, ICMP (no ports), and a non-first fragment.
const FLOWS: [number, number, number, number, number, number][] = [];
for (let i = 0; i < 48; i++) {
  const proto = [6, 17, 132, 1][i % 4];
  FLOWS.push([0x0af40102 + i * 7, 0x0af40203 + i * 13, proto, 1024 + i * 977, 80 + (i % 5), i % 11 === 0 ? 0x20 : 0]);
}

// IPv6 flows (seeded, so a failure replays): pod to pod across nodes, pod to anywhere, anywhere to
// anywhere; TCP, UDP, SCTP with ports, ICMPv6 and a fragment header without. Each is sent both ways.
interface Flow6 { src: Uint32Array; dst: Uint32Array; next: number; sport: number; dport: number }
const FLOWS6: Flow6[] = (() => {
  let seed = 0x5eed6;
  const u32 = () => { seed = (seed + 0x6d2b79f5) | 0; let t = Math.imul(seed ^ (seed >>> 15), 1 | seed); t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t; return (t ^ (t >>> 14)) >>> 0; };
  const any = () => Uint32Array.of(u32(), u32(), u32(), u32());
  return Array.from({ length: 60 }, (_, i) => ({
    src: i % 3 === 2 ? any() : parseIPv6Address(`fd00:10:244:${1 + (i % 4)}::${(2 + (u32() % 250)).toString(16)}`),
    dst: i % 3 === 0 ? parseIPv6Address(`fd00:10:244:${5 + (i % 3)}::${(2 + (u32() % 250)).toString(16)}`) : any(),
    next: [6, 17, 132, 58, 44][i % 5], sport: u32() & 0xffff, dport: [80, 443, 53][i % 3],
  }));
})();
const TAG6_AT = 62; // the packet's last 2 bytes: flow * 2 + direction, to tell them apart on arrival
/** A 64-byte IPv6 packet of flow f (reply: the other direction), tagged. */
function ipv6(f: Flow6, reply: boolean, tag: number): Uint8Array {
  const p = new Uint8Array(64);
  const v = new DataView(p.buffer);
  const [src, dst, sport, dport] = reply ? [f.dst, f.src, f.dport, f.sport] : [f.src, f.dst, f.sport, f.dport];
  v.setUint32(0, 0x60000000); v.setUint16(4, 24); v.setUint8(6, f.next); v.setUint8(7, 64);
  for (let w = 0; w < 4; w++) { v.setUint32(8 + 4 * w, src[w]); v.setUint32(24 + 4 * w, dst[w]); }
  v.setUint16(40, sport); v.setUint16(42, dport); v.setUint16(TAG6_AT, tag);
  return p;
}
/** Every flow both ways: [tag, packet]. */
const PACKETS6 = FLOWS6.flatMap((f, i) => [false, true].map((r) => ipv6(f, r, 2 * i + (r ? 1 : 0))));

/** Expects both directions of each flow on one member, and the flows on every one of n members. */
function expectSymmetricSpread(got: number[], n: number): void {
  for (let i = 0; i < got.length; i += 2) expect(got[i + 1]).toBe(got[i]);
  expect(new Set(got).size).toBe(n);
}

/** A reuseport group of n sockets bound to `bind`, steered; the datagrams sent to it from `from`; which socket got each (by tag). */
function throughReuseport(ns: Netns, bind: string, from: string, to: number | Int32Array, n: number, dgrams: Uint8Array[], tagOf: (d: Uint8Array) => number): number[] {
  const first = udpOnRandomPort((p) => native.udpOpenIn(ns.path, bind, p, { reusePort: true }));
  ns.fds.push(first.fd);
  const socks = [first.fd];
  for (let k = 1; k < n; k++) { socks.push(native.udpOpenIn(ns.path, bind, first.port, { reusePort: true })); ns.fds.push(socks[k]); }
  const tx = native.udpOpenIn(ns.path, from, 0, {});
  ns.fds.push(tx);
  native.udpSteer(socks[0], flowSteering(OVERLAY_IP_AT, n));
  const a = arena(dgrams.length * SLOT), d = slots(dgrams.length, SLOT);
  dgrams.forEach((g, i) => { a.set(g, d.offs[i]); d.lens[i] = g.length; });
  const words = typeof to === 'number' ? 1 : 4, dst = new Int32Array(words * dgrams.length);
  for (let i = 0; i < dgrams.length; i++) if (typeof to === 'number') dst[i] = to; else dst.set(to, 4 * i);
  expect(native.udpSend(tx, a, d.offs, d.lens, d.idx, dgrams.length, dst, new Int32Array(dgrams.length).fill(first.port))).toBe(dgrams.length);
  const b = arena(64 * SLOT), r = slots(64, SLOT), src = new Int32Array(4 * 64);
  const got = new Array<number>(dgrams.length).fill(-1);
  socks.forEach((fd, k) => {
    let m;
    while (waitReadable([fd], 50)[0] && (m = native.udpRecv(fd, b, r.offs, r.lens, src, r.meta, 64, SLOT)) > 0)
      for (let j = 0; j < m; j++) got[tagOf(b.subarray(r.offs[j], r.offs[j] + r.lens[j]))] = k;
  });
  return got;
}
/** A VXLAN datagram around an inner IP packet (the inner Ethernet header is not looked at). */
function vxlan(inner: Uint8Array): Uint8Array {
  const g = new Uint8Array(OVERLAY_IP_AT + inner.length);
  g[0] = 0x08;
  g[OVERLAY_IP_AT - 2] = inner[0] >> 4 === 6 ? 0x86 : 0x08; g[OVERLAY_IP_AT - 1] = inner[0] >> 4 === 6 ? 0xdd : 0x00;
  g.set(inner, OVERLAY_IP_AT);
  return g;
}
const tag6 = (g: Uint8Array) => (g[OVERLAY_IP_AT + TAG6_AT] << 8) | g[OVERLAY_IP_AT + TAG6_AT + 1];

// One namespace with a veth pair (va, vb) for the fanout tests; each test joins its own group on vb.
let ns: Netns;
beforeAll(() => {
  ns = createNetns();
  ns.ip('link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb');
  ns.ip('link', 'set', 'va', 'up');
  ns.ip('link', 'set', 'vb', 'up');
});
afterAll(() => ns?.destroy());

// One with IPv6 on (only lo: ::1 and 127.0.0.1) for the reuseport groups of the IPv6 tests.
let ns6: Netns;
beforeAll(() => {
  ns6 = createNetns();
  execFileSync('ip', ['netns', 'exec', ns6.name, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=0', 'net.ipv6.conf.default.disable_ipv6=0', 'net.ipv6.conf.lo.disable_ipv6=0']);
});
afterAll(() => ns6?.destroy());

describe('flow steering', () => {
  const N = 3;

  it('is symmetric: both directions of a flow name one worker', () => {
    for (const [s, d, pr, sp, dp, fr] of FLOWS)
      expect(flowWorker(ipv4(d, s, pr, dp, sp, fr), 0, N)).toBe(flowWorker(ipv4(s, d, pr, sp, dp, fr), 0, N));
    const used = new Set(FLOWS.map(([s, d, pr, sp, dp, fr]) => flowWorker(ipv4(s, d, pr, sp, dp, fr), 0, N)));
    expect(used.size).toBe(N); // and it spreads flows over every worker
  });

  it('a reuseport group hands each VXLAN datagram to the socket the program names', () => {
    const socks = [udpOnRandomPort((p) => native.udpOpen('127.0.0.1', p, { reusePort: true }))];
    const port = socks[0].port;
    for (let k = 1; k < N; k++) socks.push({ fd: native.udpOpen('127.0.0.1', port, { reusePort: true }), port });
    const tx = udpOnRandomPort((p) => native.udpOpen('127.0.0.1', p, {}));
    try {
      native.udpSteer(socks[0].fd, flowSteering(OVERLAY_IP_AT, N));
      const a = arena(FLOWS.length * SLOT), d = slots(FLOWS.length, SLOT);
      const want = FLOWS.map(([s, dd, pr, sp, dp, fr], i) => {
        const dgram = new Uint8Array(OVERLAY_IP_AT + 48);
        dgram[0] = 0x08; // VXLAN I flag; the inner Ethernet header is not looked at
        dgram.set(ipv4(s, dd, pr, sp, dp, fr), OVERLAY_IP_AT);
        a.set(dgram, d.offs[i]); d.lens[i] = dgram.length;
        return flowWorker(dgram, OVERLAY_IP_AT, N);
      });
      expect(native.udpSend(tx.fd, a, d.offs, d.lens, d.idx, FLOWS.length, new Int32Array(FLOWS.length).fill(LOOPBACK), new Int32Array(FLOWS.length).fill(port))).toBe(FLOWS.length);
      const b = arena(64 * SLOT), r = slots(64, SLOT);
      const got = new Array<number>(FLOWS.length).fill(-1);
      socks.forEach((sk, k) => {
        let n;
        while ((n = native.udpRecv(sk.fd, b, r.offs, r.lens, r.src, r.meta, 64, SLOT)) > 0)
          for (let j = 0; j < n; j++) { const dp = (b[r.offs[j] + OVERLAY_IP_AT + 20] << 8) | b[r.offs[j] + OVERLAY_IP_AT + 21]; got[(dp - 1024) / 977] = k; }
      });
      expect(got).toEqual(want);
    } finally {
      for (const sk of socks) native.close(sk.fd);
      native.close(tx.fd);
    }
  });

  it('IPv6 inner packets: the twin is symmetric and spreads the flows', () => {
    const want = PACKETS6.map((p) => flowWorker(p, 0, N));
    expectSymmetricSpread(want, N);
  });

  it('a reuseport group on the IPv4 underlay hands each VXLAN datagram with an inner IPv6 packet to the socket the program names, both ways of a flow alike', () => {
    const dgrams = PACKETS6.map(vxlan);
    const want = dgrams.map((g) => flowWorker(g, OVERLAY_IP_AT, N));
    expectSymmetricSpread(want, N);
    expect(throughReuseport(ns6, '127.0.0.1', '127.0.0.1', LOOPBACK, N, dgrams, tag6)).toEqual(want);
  });

  it('an IPv6 reuseport group (::) does the same, for inner IPv6 and inner IPv4 packets', () => {
    const W = 4;
    const dgrams6 = PACKETS6.map(vxlan);
    const want6 = dgrams6.map((g) => flowWorker(g, OVERLAY_IP_AT, W));
    expectSymmetricSpread(want6, W);
    expect(throughReuseport(ns6, '::', '::1', Int32Array.from(parseIPv6Address('::1')), W, dgrams6, tag6)).toEqual(want6);
    // IPv4 flows both ways (tagged by their index in the IP identification field).
    const dgrams4 = FLOWS.flatMap(([s, d, pr, sp, dp, fr], i) => [ipv4(s, d, pr, sp, dp, fr), ipv4(d, s, pr, dp, sp, fr)].map((p, r) => {
      p[4] = 0; p[5] = 2 * i + r;
      return vxlan(p);
    }));
    const want4 = dgrams4.map((g) => flowWorker(g, OVERLAY_IP_AT, W));
    expectSymmetricSpread(want4, W);
    expect(throughReuseport(ns6, '::', '::1', Int32Array.from(parseIPv6Address('::1')), W, dgrams4, (g) => g[OVERLAY_IP_AT + 5])).toEqual(want4);
  });

  describe('PACKET_FANOUT_CBPF on a veth', () => {
    it('hands each IPv4 frame to the member the program names', () => {
      const members: number[] = [];
      for (let k = 0; k < N; k++) { const fd = native.packetOpenIn(ns.path, 'vb', { fanoutGroup: 78, fanoutCbpf: true, ignoreOutgoing: true }); ns.fds.push(fd); members.push(fd); }
      native.packetSteer(members[0], flowSteering(POD_IP_AT, N));
      const tx = native.packetOpenIn(ns.path, '', {});
      ns.fds.push(tx);
      // PACKET_FANOUT_FLAG_DEFRAG holds fragments for reassembly: whole packets only here.
      const flows = FLOWS.filter((f) => f[5] === 0);
      const a = arena(flows.length * SLOT), d = slots(flows.length, SLOT);
      const want = flows.map(([s, dd, pr, sp, dp, fr], i) => {
        const ip = ipv4(s, dd, pr, sp, dp, fr);
        const f = new Uint8Array(14 + ip.length);
        f.fill(0xff, 0, 6); f.set([0x02, 0, 0, 0, 0, 0x01], 6); f[12] = 0x08; f[13] = 0x00; f.set(ip, 14);
        a.set(f, d.offs[i]); d.lens[i] = f.length;
        return flowWorker(ip, 0, N);
      });
      expect(native.packetSend(tx, a, d.offs, d.lens, d.idx, flows.length, new Int32Array(flows.length).fill(ns.ifindex('va')))).toBe(flows.length);
      const b = arena(64 * SLOT), r = slots(64, SLOT);
      const got = new Array<number>(FLOWS.length).fill(-1);
      members.forEach((fd, k) => {
        let n;
        while (waitReadable([fd], 100)[0] && (n = native.packetRecv(fd, b, r.offs, r.lens, r.meta, 64, SLOT)) > 0)
          for (let j = 0; j < n; j++) {
            const f = b.subarray(r.offs[j], r.offs[j] + r.lens[j]);
            if (f[12] !== 0x08 || f[13] !== 0x00 || f.length < 14 + 24) continue; // IPv6 chatter is off; skip anything else
            got[(((f[14 + 20] << 8) | f[14 + 21]) - 1024) / 977] = k; // the source port numbers the flow
          }
      });
      expect(got.filter((_, i) => FLOWS[i][5] === 0)).toEqual(want);
    });

    it('hands each IPv6 frame to the member the program names, both ways of a flow alike', () => {
      const members: number[] = [];
      for (let k = 0; k < N; k++) { const fd = native.packetOpenIn(ns.path, 'vb', { fanoutGroup: 79, fanoutCbpf: true, ignoreOutgoing: true }); ns.fds.push(fd); members.push(fd); }
      native.packetSteer(members[0], flowSteering(POD_IP_AT, N));
      const tx = native.packetOpenIn(ns.path, '', {});
      ns.fds.push(tx);
      const a = arena(PACKETS6.length * SLOT), d = slots(PACKETS6.length, SLOT);
      const want = PACKETS6.map((ip, i) => {
        const f = new Uint8Array(14 + ip.length);
        f.set([0x33, 0x33, 0, 0, 0, 0x01], 0); f.set([0x02, 0, 0, 0, 0, 0x01], 6); f[12] = 0x86; f[13] = 0xdd; f.set(ip, 14);
        a.set(f, d.offs[i]); d.lens[i] = f.length;
        return flowWorker(ip, 0, N);
      });
      expectSymmetricSpread(want, N);
      expect(native.packetSend(tx, a, d.offs, d.lens, d.idx, PACKETS6.length, new Int32Array(PACKETS6.length).fill(ns.ifindex('va')))).toBe(PACKETS6.length);
      const b = arena(64 * SLOT), r = slots(64, SLOT);
      const got = new Array<number>(PACKETS6.length).fill(-1);
      members.forEach((fd, k) => {
        let n;
        while (waitReadable([fd], 100)[0] && (n = native.packetRecv(fd, b, r.offs, r.lens, r.meta, 64, SLOT)) > 0)
          for (let j = 0; j < n; j++) {
            const f = b.subarray(r.offs[j], r.offs[j] + r.lens[j]);
            if (f[12] !== 0x86 || f[13] !== 0xdd || f.length !== 14 + 64) continue;
            got[(f[14 + TAG6_AT] << 8) | f[14 + TAG6_AT + 1]] = k;
          }
      });
      expect(got).toEqual(want);
    });
  });
});

describe('CPU placement', () => {
  afterEach(() => native.pinThread(-1));

  it('lists the CPUs this thread may use, ascending, and pins to each', () => {
    expect(cpus.length).toBeGreaterThan(0);
    expect([...cpus].sort((a, b) => a - b)).toEqual(cpus);
    for (const c of cpus) native.pinThread(c);
    expect(() => native.pinThread(-2)).toThrow(RangeError);
  });

  it.skipIf(!two)('a reuseport group hands a datagram to the socket whose SO_INCOMING_CPU received it', () => {
    const s0 = udpOnRandomPort((p) => native.udpOpen('127.0.0.1', p, { reusePort: true, incomingCpu: cpus[0] }));
    const s1 = native.udpOpen('127.0.0.1', s0.port, { reusePort: true, incomingCpu: cpus[1] });
    const tx = udpOnRandomPort((p) => native.udpOpen('127.0.0.1', p, {}));
    try {
      const a = arena(16 * SLOT), d = slots(16, SLOT);
      d.lens.fill(32);
      const dst = new Int32Array(16).fill(LOOPBACK), dport = new Int32Array(16).fill(s0.port);
      const b = arena(64 * SLOT), r = slots(64, SLOT);
      const count = (fd: number) => { let n = 0, k; while ((k = native.udpRecv(fd, b, r.offs, r.lens, r.src, r.meta, 64, SLOT)) > 0) n += k; return n; };
      for (const [k, want] of [[0, s0.fd], [1, s1], [0, s0.fd]] as const) {
        native.pinThread(cpus[k]);
        expect(native.udpSend(tx.fd, a, d.offs, d.lens, d.idx, 16, dst, dport)).toBe(16); // loopback delivers in the sendmsg
        waitReadable([want], 500);
        const other = want === s0.fd ? s1 : s0.fd;
        expect([count(want), count(other)]).toEqual([16, 0]);
      }
    } finally {
      native.close(s0.fd); native.close(s1); native.close(tx.fd);
    }
  });

  describe.skipIf(!two)('PACKET_FANOUT_CPU on a veth', () => {
    it('a frame sent on CPU k reaches the k-th member to join', () => {
      const open = (o: Parameters<typeof native.packetOpen>[1]) => { const fd = native.packetOpenIn(ns.path, 'vb', o); ns.fds.push(fd); return fd; };
      const members = [0, 1].map(() => open({ fanoutGroup: 77, fanoutCpu: true, ignoreOutgoing: true }));
      const tx = native.packetOpenIn(ns.path, '', {});
      ns.fds.push(tx);
      const va = ns.ifindex('va');
      const a = arena(8 * SLOT), d = slots(8, SLOT);
      for (let i = 0; i < 8; i++) { const f = ethFrame(text(`f${i}`)); a.set(f, d.offs[i]); d.lens[i] = f.length; }
      for (const k of [1, 0, 1]) {
        native.pinThread(cpus[k]);
        expect(native.packetSend(tx, a, d.offs, d.lens, d.idx, 8, new Int32Array(8).fill(va))).toBe(8);
        expect([drain(members[k]), drain(members[1 - k])]).toEqual([8, 0]);
      }
    });
  });
});
