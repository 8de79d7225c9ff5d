// Worker placement (engine/worker.ts, engine/pod-queues.ts): a thread pinned to
// CPU k must get what arrives on CPU k, from the overlay socket
// (SO_INCOMING_CPU in a reuseport group) and from a pod veth (PACKET_FANOUT_CPU,
// member k opened k-th).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { native } from '../../dataplane/native/index.js';
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
    let ns: Netns;
    beforeAll(() => {
      ns = createNetns();
      ns.ip('link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb');
      ns.ip('link', 'set', 'va', 'up');
      ns.ip('link', 'set', 'vb', 'up');
    });
    afterAll(() => ns?.destroy());

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
