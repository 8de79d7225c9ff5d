import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { native } from '../../dataplane/native/index.js';
import { arena, createNetns, decode, ethFrame, slots, TEST_ETHERTYPE, text, waitReadable, type Netns } from './helpers.js';

const SLOT = 2048;

describe('native AF_PACKET over a veth pair inside a netns', () => {
  let ns: Netns;
  let va = 0;
  let vb = 0;
  beforeAll(() => {
    ns = createNetns();
    ns.ip('link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb');
    ns.ip('link', 'set', 'va', 'up');
    ns.ip('link', 'set', 'vb', 'up');
    va = ns.ifindex('va');
    vb = ns.ifindex('vb');
  });
  afterAll(() => ns?.destroy());

  const open = (ifname: string, opts: Parameters<typeof native.packetOpen>[1]) => {
    const fd = native.packetOpenIn(ns.path, ifname, opts);
    ns.fds.push(fd);
    return fd;
  };

  /** Send `count` marked frames out of `ifindex` with one packetSend. */
  function send(fd: number, ifindex: number, tag: string, count: number): void {
    const a = arena(count * SLOT);
    const d = slots(count, SLOT);
    for (let i = 0; i < count; i++) {
      const f = ethFrame(text(`${tag}-${i}`));
      a.set(f, d.offs[i]);
      d.lens[i] = f.length;
    }
    expect(native.packetSend(fd, a, d.offs, d.lens, d.idx, count, new Int32Array(count).fill(ifindex))).toBe(count);
  }

  /** Drain the socket; return the test frames' payload tags with their meta. */
  function receive(fd: number, waitMs = 300): { tag: string; meta: number }[] {
    const out: { tag: string; meta: number }[] = [];
    const b = arena(64 * SLOT);
    const r = slots(64, SLOT);
    while (waitReadable([fd], waitMs)[0]) {
      const n = native.packetRecv(fd, b, r.offs, r.lens, r.meta, 64, SLOT);
      if (n === 0) break;
      for (let k = 0; k < n; k++) {
        const f = b.subarray(r.offs[k], r.offs[k] + r.lens[k]);
        if (((f[12] << 8) | f[13]) !== TEST_ETHERTYPE) continue;
        out.push({ tag: decode(f.subarray(14)).replace(/\0+$/, ''), meta: r.meta[k] });
      }
    }
    return out;
  }

  /** Bytes queued on a packet socket, from /proc/net/packet of the namespace. */
  function rmem(fd: number): number {
    const inode = readlinkSync(`/proc/self/fd/${fd}`).match(/socket:\[(\d+)\]/)![1];
    const table = execFileSync('ip', ['netns', 'exec', ns.name, 'cat', '/proc/net/packet'], { encoding: 'utf8' });
    const cols = table.trim().split('\n').map((l) => l.trim().split(/\s+/));
    const row = cols.find((c) => c[cols[0].indexOf('Inode')] === inode)!;
    return Number(row[cols[0].indexOf('Rmem')]);
  }

  it('receives frames sent out of the peer, with meta = receiving ifindex', () => {
    const rx = open('vb', { ignoreOutgoing: true });
    const tx = open('', { qdiscBypass: true });
    send(tx, va, 'peer', 8);
    const got = receive(rx);
    expect(got.map((g) => g.tag)).toEqual(Array.from({ length: 8 }, (_, i) => `peer-${i}`));
    expect(got.every((g) => g.meta === vb)).toBe(true);
    // The unbound send-only socket never queues anything.
    expect(rmem(tx)).toBe(0);
  });

  it('never returns outgoing frames, even without ignoreOutgoing', () => {
    const watch = open('va', {}); // sees va's transmits as PACKET_OUTGOING
    const peer = open('vb', {});
    const tx = open('', {}); // through the qdisc, so taps see the frame
    send(tx, va, 'out', 4);
    // The kernel did queue the outgoing copies on `watch`...
    expect(rmem(watch)).toBeGreaterThan(0);
    // ...but packetRecv skips them, while the peer gets the frames.
    expect(receive(watch, 50)).toEqual([]);
    expect(rmem(watch)).toBe(0);
    expect(receive(peer).map((g) => g.tag)).toEqual(['out-0', 'out-1', 'out-2', 'out-3']);
  });

  it('keeps incoming frames that follow outgoing ones in the same batch', () => {
    const watch = open('va', {});
    const tx = open('', {});
    send(tx, va, 'mine', 3); // outgoing on va
    send(tx, vb, 'theirs', 3); // arrives on va
    const got = receive(watch);
    expect(got.map((g) => g.tag)).toEqual(['theirs-0', 'theirs-1', 'theirs-2']);
    expect(got.every((g) => g.meta === va)).toBe(true);
  });

  it('two sockets join the same fanout group and share the traffic', () => {
    const f1 = open('vb', { fanoutGroup: 4242, ignoreOutgoing: true });
    const f2 = open('vb', { fanoutGroup: 4242, ignoreOutgoing: true });
    const tx = open('', { qdiscBypass: true });
    send(tx, va, 'fan', 16);
    const got = [...receive(f1), ...receive(f2)];
    expect(got.map((g) => g.tag).sort()).toEqual(Array.from({ length: 16 }, (_, i) => `fan-${i}`).sort());
  });

  it('reports a missing interface as ENODEV', () => {
    expect(() => native.packetOpenIn(ns.path, 'nope0', {})).toThrow('if_nametoindex: ENODEV');
  });

  /** The first test frame (after its virtio_net_hdr) a vnet socket receives. */
  function receiveVnet(rx: number): Uint8Array | undefined {
    waitReadable([rx], 500);
    const b = arena(4 * SLOT);
    const r = slots(4, SLOT);
    const n = native.packetRecv(rx, b, r.offs, r.lens, r.meta, 4, SLOT);
    return Array.from({ length: n }, (_, k) => b.subarray(r.offs[k], r.offs[k] + r.lens[k])).find(
      (p) => ((p[22] << 8) | p[23]) === TEST_ETHERTYPE,
    );
  }

  it('supports PACKET_VNET_HDR: frames start with a 10-byte virtio_net_hdr', () => {
    const rx = open('vb', { vnetHdr: true, ignoreOutgoing: true });
    const tx = open('', { vnetHdr: true });
    const f = ethFrame(text('vnet'));
    const a = arena(SLOT);
    a.set(f, 10); // zeroed virtio_net_hdr: no offloads
    expect(native.packetSend(tx, a, Int32Array.of(0), Int32Array.of(10 + f.length), Int32Array.of(0), 1, Int32Array.of(va))).toBe(1);
    const hit = receiveVnet(rx);
    expect(hit).toBeDefined();
    expect(hit!.length).toBe(10 + f.length);
    expect(decode(hit!.subarray(24, 28))).toBe('vnet');
  });

  it('sends a vnet frame of several pieces (virtio_net_hdr, Ethernet, payload pieces) that arrives byte-identical', () => {
    const rx = open('vb', { vnetHdr: true, ignoreOutgoing: true });
    const tx = open('', { vnetHdr: true });
    const a = arena(8 * SLOT);
    const body = Uint8Array.from({ length: 1200 }, (_, j) => (j * 29 + 3) & 0xff);
    body.set(text('pieces'), 0);
    const f = ethFrame(body);
    // Pieces at scattered, odd offsets: a zeroed virtio_net_hdr, the Ethernet header, then the payload in 3.
    const cuts = [[0, 14], [14, 500], [500, 501], [501, f.length]];
    const offs = new Int32Array(8), lens = new Int32Array(8), more = new Uint8Array(8);
    offs[0] = 7 * SLOT + 3; lens[0] = 10; more[0] = 1;
    a.fill(0, offs[0], offs[0] + 10);
    cuts.forEach(([from, to], q) => {
      const e = q + 1;
      offs[e] = (6 - 2 * q) * SLOT + 5 * q + 1; lens[e] = to - from; more[e] = q < cuts.length - 1 ? 1 : 0;
      a.set(f.subarray(from, to), offs[e]);
    });
    const idx = Int32Array.of(0, 1, 2, 3, 4);
    expect(native.packetSend(tx, a, offs, lens, idx, 5, new Int32Array(8).fill(va), more)).toBe(5);
    const hit = receiveVnet(rx);
    expect(hit).toBeDefined();
    expect(Buffer.from(hit!.subarray(10)).equals(Buffer.from(f))).toBe(true);
  });
});
