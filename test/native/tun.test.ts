import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { native } from '../../dataplane/native/index.js';
import { arena, createNetns, decode, ipv4, slots, text, udpOnRandomPort, udpPacket, type Netns } from './helpers.js';

describe('native TUN inside a netns', () => {
  let ns: Netns;
  let q0 = -1;
  let q1 = -1;
  beforeAll(() => {
    ns = createNetns();
    q0 = native.tunOpenIn(ns.path, 'twt0', { multiQueue: true });
    ns.fds.push(q0);
    q1 = native.tunOpenIn(ns.path, 'twt0', { multiQueue: true });
    ns.fds.push(q1);
    ns.ip('link', 'set', 'twt0', 'up');
    ns.ip('addr', 'add', '10.99.0.1/24', 'dev', 'twt0');
  });
  afterAll(() => ns?.destroy());

  it('created the device in the namespace, not here', () => {
    expect(ns.ifindex('twt0')).toBeGreaterThan(0);
    expect(() => native.ifIndex('twt0')).toThrow('if_nametoindex: ENODEV');
  });

  it('reads a datagram the namespace kernel routes into the tun', () => {
    const tx = native.udpOpenIn(ns.path, '0.0.0.0', 0, {});
    ns.fds.push(tx);
    const a = arena(8 * 2048);
    const d = slots(8, 2048);
    a.set(text('hello tun'), 0);
    d.lens[0] = 9;
    expect(native.udpSend(tx, a, d.offs, d.lens, d.idx, 1, Int32Array.of(ipv4('10.99.0.2')), Int32Array.of(9999))).toBe(1);

    const fds = Int32Array.of(q0, q1);
    const ready = new Int32Array(2);
    const b = arena(8 * 2048);
    const r = slots(8, 2048);
    let found: Uint8Array | undefined;
    const deadline = Date.now() + 2000;
    while (!found && Date.now() < deadline && native.poll(fds, 2, ready, 500) > 0) {
      for (let q = 0; q < 2; q++) {
        if (!ready[q]) continue;
        const n = native.tunRead(fds[q], b, r.offs, r.lens, 8, 2048);
        for (let k = 0; k < n; k++) {
          const p = b.subarray(r.offs[k], r.offs[k] + r.lens[k]);
          if (p[0] >> 4 === 4 && p[9] === 17 && ((p[22] << 8) | p[23]) === 9999) found = p.slice();
        }
      }
    }
    expect(found).toBeDefined();
    const p = found!;
    const v = new DataView(p.buffer);
    expect(v.getUint32(12) >>> 0).toBe(ipv4('10.99.0.1'));
    expect(v.getUint32(16) >>> 0).toBe(ipv4('10.99.0.2'));
    expect(decode(p.subarray(28))).toBe('hello tun');
  });

  it('writes a hand-built IPv4/UDP packet that a socket in the namespace receives', () => {
    const rx = udpOnRandomPort((port) => native.udpOpenIn(ns.path, '10.99.0.1', port, {}));
    ns.fds.push(rx.fd);
    const pkt = udpPacket(ipv4('10.99.0.2'), ipv4('10.99.0.1'), 4000, rx.port, text('hello from tun'));
    const a = arena(4096);
    a.set(pkt, 1000);
    const sent = native.tunWrite(q1, a, Int32Array.of(0, 1000), Int32Array.of(0, pkt.length), Int32Array.of(1), 1);
    expect(sent).toBe(1);

    const ready = new Int32Array(1);
    expect(native.poll(Int32Array.of(rx.fd), 1, ready, 2000)).toBe(1);
    const b = arena(4096);
    const r = slots(2, 2048);
    expect(native.udpRecv(rx.fd, b, r.offs, r.lens, r.src, r.meta, 2, 2048)).toBe(1);
    expect(r.src[0]).toBe(ipv4('10.99.0.2') | 0);
    expect(decode(b.subarray(0, r.lens[0]))).toBe('hello from tun');
  });

  it('writes a packet given as a chain of pieces as one packet', () => {
    const rx = udpOnRandomPort((port) => native.udpOpenIn(ns.path, '10.99.0.1', port, {}));
    ns.fds.push(rx.fd);
    const pkt = udpPacket(ipv4('10.99.0.2'), ipv4('10.99.0.1'), 4000, rx.port, text('chained through tun'));
    const a = arena(4096);
    a.set(pkt.subarray(0, 28), 3000); // IP + UDP headers
    a.set(pkt.subarray(28), 501); // the payload, elsewhere
    const sent = native.tunWrite(q1, a, Int32Array.of(3000, 501), Int32Array.of(28, pkt.length - 28), Int32Array.of(0, 1), 2, Uint8Array.of(1, 0));
    expect(sent).toBe(2); // entries
    const ready = new Int32Array(1);
    expect(native.poll(Int32Array.of(rx.fd), 1, ready, 2000)).toBe(1);
    const b = arena(4096);
    const r = slots(2, 2048);
    expect(native.udpRecv(rx.fd, b, r.offs, r.lens, r.src, r.meta, 2, 2048)).toBe(1);
    expect(decode(b.subarray(0, r.lens[0]))).toBe('chained through tun');
  });

  it('tunSetOffload accepts TUN_F_CSUM on a vnetHdr queue and reports kernel errors', () => {
    const fd = native.tunOpenIn(ns.path, 'twt1', { vnetHdr: true });
    ns.fds.push(fd);
    native.tunSetOffload(fd, 1 | 2 | 4); // CSUM|TSO4|TSO6
    expect(() => native.tunSetOffload(fd, 1 << 20)).toThrow(/^TUNSETOFFLOAD: EINVAL$/);
    // A non-multiqueue open of a multiqueue device is refused by the kernel.
    expect(() => native.tunOpenIn(ns.path, 'twt0', {})).toThrow(/^TUNSETIFF: /);
  });

  it('reports a missing namespace as an open error', () => {
    expect(() => native.tunOpenIn('/var/run/netns/twt-nat-missing', 'x', {})).toThrow('open: ENOENT');
  });
});
