// Which worker gets a packet (engine/steering.ts, pod-queues.ts, worker.ts).
// Flow steering: the classic BPF program must pick, in a reuseport group and in
// a PACKET_FANOUT_CBPF group, the socket its TypeScript twin names, the same
// for both directions of a flow. CPU placement: a thread pinned to CPU k must
// get what arrives on CPU k, from the overlay socket (SO_INCOMING_CPU) and from
// a pod veth (PACKET_FANOUT_CPU, member k opened k-th).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { native } from '../../dataplane/native/index.js';
import { flowSteering, flowWorker, OVERLAY_IP_AT, POD_IP_AT } from '../../dataplane/engine/steering.js';
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

// One namespace with a veth pair (va, vb) for the fanout tests; each test joins its own group on vb.
let ns: Netns;
beforeAll(() => {
  ns = createNetns();
  ns.ip('link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb');
  ns.ip('link', 'set', 'va', 'up');
  ns.ip('link', 'set', 'vb', 'up');
});
afterAll(() => ns?.destroy());

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
