import { afterEach, describe, expect, it } from 'vitest';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { native } from '../../dataplane/native/index.js';
import { arena, slots, udpOnRandomPort, waitReadable } from './helpers.js';

const LOOPBACK = 0x7f000001;
const fds: number[] = [];
afterEach(() => {
  for (const fd of fds.splice(0)) native.close(fd);
});
function open(opts: { gro?: boolean } = {}) {
  const s = udpOnRandomPort((p) => native.udpOpen('127.0.0.1', p, opts));
  fds.push(s.fd);
  return s;
}

describe('native UDP on loopback', () => {
  it('udpSend of 64 datagrams in one call arrives intact via udpRecv', () => {
    const tx = open();
    const rx = open();
    const SLOT = 2048;
    const a = arena(256 * SLOT);
    const out = slots(64, SLOT);
    const dst = new Int32Array(64).fill(LOOPBACK);
    const dport = new Int32Array(64).fill(rx.port);
    for (let i = 0; i < 64; i++) {
      out.lens[i] = 100 + i * 13;
      for (let j = 0; j < out.lens[i]; j++) a[out.offs[i] + j] = (i * 31 + j) & 0xff;
    }
    expect(native.udpSend(tx.fd, a, out.offs, out.lens, out.idx, 64, dst, dport)).toBe(64);

    const b = arena(256 * SLOT);
    const inn = slots(256, SLOT);
    let got = 0;
    while (got < 64 && waitReadable([rx.fd], 1000)[0]) {
      const n = native.udpRecv(rx.fd, b, inn.offs, inn.lens, inn.src, inn.meta, 256, SLOT);
      for (let k = 0; k < n; k++, got++) {
        const i = got; // loopback preserves order
        expect(inn.lens[k]).toBe(100 + i * 13);
        expect(inn.src[k]).toBe(LOOPBACK);
        expect(inn.meta[k]).toBe(0);
        const d = b.subarray(inn.offs[k], inn.offs[k] + inn.lens[k]);
        expect(d.every((v, j) => v === ((i * 31 + j) & 0xff))).toBe(true);
      }
    }
    expect(got).toBe(64);
    expect(native.udpRecv(rx.fd, b, inn.offs, inn.lens, inn.src, inn.meta, 256, SLOT)).toBe(0); // EAGAIN → 0
  });

  it('udpSend honours idx and per-entry destinations', () => {
    const tx = open();
    const r1 = open();
    const r2 = open();
    const a = arena(4096);
    const d = slots(4, 1024);
    d.lens.fill(10);
    for (let i = 0; i < 4; i++) a.fill(i + 1, d.offs[i], d.offs[i] + 10);
    const dst = new Int32Array(4).fill(LOOPBACK);
    const dport = Int32Array.of(r1.port, r2.port, r1.port, r2.port);
    expect(native.udpSend(tx.fd, a, d.offs, d.lens, Int32Array.of(3, 0), 2, dst, dport)).toBe(2);
    const b = arena(4096);
    const r = slots(4, 1024);
    waitReadable([r1.fd], 1000);
    expect(native.udpRecv(r1.fd, b, r.offs, r.lens, r.src, r.meta, 4, 1024)).toBe(1);
    expect(b[0]).toBe(1);
    waitReadable([r2.fd], 1000);
    expect(native.udpRecv(r2.fd, b, r.offs, r.lens, r.src, r.meta, 4, 1024)).toBe(1);
    expect(b[0]).toBe(4);
  });

  it('udpSendGso of 10 x 1000 bytes reaches a GRO socket with segment size 1000', () => {
    const tx = open();
    const rx = open({ gro: true });
    expect(native.udpOffloads(tx.fd)).toEqual({ gso: true, gro: true });
    const a = arena(16384);
    for (let j = 0; j < 10000; j++) a[100 + j] = (j * 7 + (j / 1000) | 0) & 0xff;
    native.udpSendGso(tx.fd, a, 100, 10000, 1000, LOOPBACK, rx.port);

    const b = arena(4 * 65536);
    const r = slots(4, 65536);
    const all: number[] = [];
    const metas: number[] = [];
    while (all.length < 10000 && waitReadable([rx.fd], 1000)[0]) {
      const n = native.udpRecv(rx.fd, b, r.offs, r.lens, r.src, r.meta, 4, 65536);
      for (let k = 0; k < n; k++) {
        expect(r.src[k]).toBe(LOOPBACK);
        metas.push(r.meta[k]);
        // A coalesced receive holds whole segments of meta bytes (the last may be short).
        if (r.meta[k]) expect(r.meta[k]).toBe(1000);
        else expect(r.lens[k]).toBe(1000);
        all.push(...b.subarray(r.offs[k], r.offs[k] + r.lens[k]));
      }
    }
    expect(all.length).toBe(10000);
    expect(Buffer.from(all).equals(Buffer.from(a.subarray(100, 10100)))).toBe(true);
    // Loopback keeps the GSO skb whole for a GRO socket: expect one receive.
    expect(metas).toEqual([1000]);
  });

  it('udpSendRuns sends chains: a UDP_SEGMENT run of header + payload pieces and a plain chained datagram arrive byte-identical', () => {
    const tx = open();
    const rx = open({ gro: true });
    const r2 = open();
    // Five segments of 60 header bytes (written apart, at odd offsets) + a payload
    // piece cut from one contiguous buffer: 4 x (60 + 940) and a last 60 + 433.
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
      offs[e] = payload + k * P; lens[e] = plen; // more[e] = 0: the datagram ends here
      want.push([...a.subarray(offs[h], offs[h] + H), ...a.subarray(offs[e], offs[e] + plen)]);
    }
    // A plain datagram of three pieces, to another socket.
    const pieces = [[40000, 5], [40100, 300], [40999, 1]];
    pieces.forEach(([o, l], q) => { offs[10 + q] = o; lens[10 + q] = l; more[10 + q] = q < 2 ? 1 : 0; a.fill(q + 1, o, o + l); });
    const plain = pieces.flatMap(([o, l]) => [...a.subarray(o, o + l)]);
    const idx = Int32Array.from({ length: 13 }, (_, i) => i);
    const dst = new Int32Array(32).fill(LOOPBACK);
    const dport = new Int32Array(32).fill(rx.port);
    dport.fill(r2.port, 10);
    expect(native.udpSendRuns(tx.fd, a, offs, lens, idx, 13, dst, dport, Int32Array.of(10, 3), 2, more)).toBe(13);

    const b = arena(4 * 65536);
    const r = slots(4, 65536);
    const got: number[] = [];
    const metas: number[] = [];
    while (got.length < 4 * (H + P) + H + LAST && waitReadable([rx.fd], 1000)[0]) {
      const n = native.udpRecv(rx.fd, b, r.offs, r.lens, r.src, r.meta, 4, 65536);
      for (let k = 0; k < n; k++) { metas.push(r.meta[k]); got.push(...b.subarray(r.offs[k], r.offs[k] + r.lens[k])); }
    }
    expect(metas).toEqual([H + P]); // one GSO message: the segment size is a whole chain's length
    expect(Buffer.from(got).equals(Buffer.from(want.flat()))).toBe(true);
    waitReadable([r2.fd], 1000);
    expect(native.udpRecv(r2.fd, b, r.offs, r.lens, r.src, r.meta, 4, 65536)).toBe(1);
    expect(Buffer.from(b.subarray(r.offs[0], r.offs[0] + r.lens[0])).equals(Buffer.from(plain))).toBe(true);
  });

  it('chained sends are checked: whole chains in count and in each run, segments the first one\'s length', () => {
    const tx = open();
    const a = arena(4096);
    const offs = Int32Array.of(0, 100, 200, 300), lens = Int32Array.of(10, 20, 10, 20), idx = Int32Array.of(0, 1, 2, 3);
    const dst = new Int32Array(4).fill(LOOPBACK), dport = new Int32Array(4).fill(9);
    const thrown = (f: () => unknown) => { try { f(); } catch (e) { return e as Error; } return undefined; };
    // The last chain runs past count.
    expect(thrown(() => native.udpSend(tx.fd, a, offs, lens, idx, 3, dst, dport, Uint8Array.of(1, 0, 1, 0)))).toBeInstanceOf(RangeError);
    // A chain across a run boundary.
    expect(thrown(() => native.udpSendRuns(tx.fd, a, offs, lens, idx, 4, dst, dport, Int32Array.of(1, 3), 2, Uint8Array.of(1, 0, 1, 0)))).toBeInstanceOf(RangeError);
    // A segment longer than the first (30 bytes, then 40).
    lens[3] = 30;
    expect(thrown(() => native.udpSendRuns(tx.fd, a, offs, lens, idx, 4, dst, dport, Int32Array.of(4), 1, Uint8Array.of(1, 0, 1, 0)))).toBeInstanceOf(RangeError);
    // A chain of more than UIO_MAXIOV entries.
    const many = 1025, o = new Int32Array(many), l = new Int32Array(many).fill(1), m = new Uint8Array(many).fill(1);
    m[many - 1] = 0;
    expect(thrown(() => native.udpSend(tx.fd, a, o, l, Int32Array.from({ length: many }, (_, i) => i), many,
      new Int32Array(many).fill(LOOPBACK), new Int32Array(many).fill(9), m))).toBeInstanceOf(RangeError);
  });

  it('works from several worker_threads at once', async () => {
    const addon = fileURLToPath(new URL('../../dataplane/native/build/Release/twill_native.node', import.meta.url));
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      const n = require(workerData.addon);
      let a, port;
      for (;;) {
        port = 10000 + Math.floor(Math.random() * 20000);
        try { a = n.udpOpen('127.0.0.1', port, {}); break; } catch (e) { if (e.code !== 'EADDRINUSE') throw e; }
      }
      const b = { fd: n.udpOpen('127.0.0.1', 0, {}), port };
      const arena = new Uint8Array(new SharedArrayBuffer(256 * 256));
      const offs = Int32Array.from({ length: 256 }, (_, i) => i * 256);
      const lens = new Int32Array(256).fill(64), idx = Int32Array.from({ length: 256 }, (_, i) => i);
      const dst = new Int32Array(256).fill(0x7f000001), dport = new Int32Array(256).fill(b.port);
      const rl = new Int32Array(256), src = new Int32Array(256), meta = new Int32Array(256), ready = new Int32Array(1);
      let total = 0;
      for (let round = 0; round < 50; round++) {
        for (let i = 0; i < 256; i++) arena.fill((round + i + workerData.id) & 0xff, offs[i], offs[i] + 64);
        const sent = n.udpSend(b.fd, arena, offs, lens, idx, 256, dst, dport);
        let got = 0;
        while (got < sent && n.poll(Int32Array.of(a), 1, ready, 1000) > 0) {
          const k = n.udpRecv(a, arena, offs, rl, src, meta, 256, 256);
          for (let i = 0; i < k; i++) if (rl[i] !== 64 || src[i] !== 0x7f000001) throw new Error('bad datagram');
          got += k;
        }
        if (got !== sent) throw new Error('lost ' + (sent - got));
        total += got;
      }
      n.close(a); n.close(b.fd);
      parentPort.postMessage(total);`;
    const runs = Array.from({ length: 4 }, (_, id) =>
      new Promise<number>((resolve, reject) => {
        const w = new Worker(code, { eval: true, workerData: { addon, id } });
        w.once('message', resolve);
        w.once('error', reject);
      }),
    );
    const totals = await Promise.all(runs);
    for (const t of totals) expect(t).toBe(50 * 256);
  });
});
