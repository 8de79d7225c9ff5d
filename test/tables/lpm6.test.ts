import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Worker } from 'node:worker_threads';
import { Lpm6Builder, Lpm6Table, formatIPv6, parseCidr6, parseIPv6 } from '../../dataplane/tables/lpm6.js';
import { compileTables } from './compile.js';

type Words = [number, number, number, number];
const wordMask = (len: number, i: number): number => {
  const keep = Math.max(0, Math.min(32, len - 32 * i));
  return keep === 0 ? 0 : (-1 << (32 - keep)) >>> 0;
};
const masked = (w: ArrayLike<number>, len: number): Words =>
  [0, 1, 2, 3].map((i) => (w[i] & wordMask(len, i)) >>> 0) as Words;
const contains = (p: Words, len: number, a: ArrayLike<number>): boolean =>
  [0, 1, 2, 3].every((i) => ((a[i] & wordMask(len, i)) >>> 0) === p[i]);

/** Reference: the prefix set as a Map, longest match by linear scan. */
class NaiveLpm6 {
  readonly routes = new Map<string, { p: Words; len: number; v: number }>();
  set(w: ArrayLike<number>, len: number, v: number): void {
    const p = masked(w, len);
    this.routes.set(`${p.join(':')}/${len}`, { p, len, v });
  }
  delete(w: ArrayLike<number>, len: number): boolean {
    return this.routes.delete(`${masked(w, len).join(':')}/${len}`);
  }
  lookup(a: ArrayLike<number>): number {
    let best = -1;
    let v = 0;
    for (const r of this.routes.values()) {
      if (r.len > best && contains(r.p, r.len, a)) {
        best = r.len;
        v = r.v;
      }
    }
    return v;
  }
}

// Words from a small alphabet so that routes share long prefixes (deep nodes, path
// compression, wide branches), mixed with fully random words.
const word = fc.oneof(fc.constantFrom(0, 0x20010db8, 0x20010db9, 0xfe800000, 0xffffffff, 0x00010000), fc.integer({ min: 0, max: 0xffffffff }));
const addr = fc.tuple(word, word, word, word);
const len = fc.oneof(fc.constantFrom(0, 1, 15, 16, 17, 32, 33, 48, 56, 63, 64, 65, 96, 127, 128), fc.integer({ min: 0, max: 128 }));
const value = fc.integer({ min: 1, max: 0x7fffffff });
const route = fc.record({ w: addr, len, v: value });
const nested = fc.record({ parent: fc.nat(), extra: fc.integer({ min: 0, max: 40 }), bits: addr, v: value });

function scenario(routes: { w: Words; len: number; v: number }[], children: { parent: number; extra: number; bits: Words; v: number }[]) {
  const all = routes.map((r) => ({ w: r.w, len: r.len, v: r.v }));
  for (const c of children) {
    if (all.length === 0) break;
    const parent = all[c.parent % all.length];
    const w = [0, 1, 2, 3].map((i) => ((parent.w[i] & wordMask(parent.len, i)) | (c.bits[i] & ~wordMask(parent.len, i))) >>> 0) as Words;
    all.push({ w, len: Math.min(128, parent.len + c.extra), v: c.v });
  }
  return all;
}

/** Per route: its first and last address, one inside, and the neighbours outside. */
function probes(routes: { w: Words; len: number }[], noise: Words[]): Words[] {
  const out = [...noise];
  for (const [k, r] of routes.entries()) {
    const lo = masked(r.w, r.len);
    const hi = [0, 1, 2, 3].map((i) => (lo[i] | ~wordMask(r.len, i)) >>> 0) as Words;
    const n = noise[k % Math.max(1, noise.length)] ?? [1, 2, 3, 4];
    out.push(lo, hi, [0, 1, 2, 3].map((i) => (lo[i] | (n[i] & ~wordMask(r.len, i))) >>> 0) as Words);
    // flip the last prefix bit: just outside (or in a sibling)
    if (r.len > 0) {
      const flipped = [...lo] as Words;
      const bit = r.len - 1;
      flipped[bit >>> 5] = (flipped[bit >>> 5] ^ (1 << (31 - (bit & 31)))) >>> 0;
      out.push(flipped);
    }
  }
  return out;
}

describe('Lpm6 against a naive reference', () => {
  it('matches on random nested sets, with overwrites and deletes', () => {
    fc.assert(
      fc.property(
        fc.array(route, { maxLength: 50 }),
        fc.array(nested, { maxLength: 80 }),
        fc.array(addr, { maxLength: 30 }),
        fc.array(fc.record({ i: fc.nat(), v: value }), { maxLength: 10 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        (routes, children, noise, overwrites, deletes) => {
          const all = scenario(routes, children);
          const b = new Lpm6Builder();
          const ref = new NaiveLpm6();
          for (const r of all) {
            b.set(r.w, r.len, r.v);
            ref.set(r.w, r.len, r.v);
          }
          for (const o of overwrites) {
            if (all.length === 0) break;
            const r = all[o.i % all.length];
            b.set(r.w, r.len, o.v);
            ref.set(r.w, r.len, o.v);
          }
          expect(b.size).toBe(ref.routes.size);
          const addrs = probes(all, noise);
          let t = b.build();
          for (const a of addrs) expect(t.lookup(a[0], a[1], a[2], a[3])).toBe(ref.lookup(a));
          for (const d of deletes) {
            if (all.length === 0) break;
            const r = all[d % all.length];
            expect(b.delete(r.w, r.len)).toBe(ref.delete(r.w, r.len));
            expect(b.has(r.w, r.len)).toBe(false);
          }
          t = b.build();
          expect(t.size).toBe(ref.routes.size);
          for (const a of addrs) expect(t.lookup(a[0] | 0, a[1] | 0, a[2] | 0, a[3] | 0)).toBe(ref.lookup(a));
        },
      ),
      { numRuns: 150 },
    );
  });

  it('matches on a larger clustered table (wide branch nodes)', () => {
    let seed = 3;
    const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) ^ (seed >>> 16)) >>> 0;
    const sites = Array.from({ length: 8 }, () => [0x20010000 | (rnd() & 0xffff), rnd() & 0xffff0000]);
    const b = new Lpm6Builder();
    const ref = new NaiveLpm6();
    const rs: { w: Words; len: number }[] = [];
    for (let i = 0; i < 1500; i++) {
      const s = sites[rnd() % sites.length];
      const w: Words = [s[0], (s[1] | (rnd() & 0xffff)) >>> 0, rnd(), rnd()];
      const l = [0, 16, 32, 40, 48, 48, 52, 56, 60, 64, 64, 64, 72, 96, 127, 128][rnd() % 16];
      const v = 1 + (rnd() & 0xffff);
      b.set(w, l, v);
      ref.set(w, l, v);
      rs.push({ w, len: l });
    }
    const t = b.build();
    const noise = Array.from({ length: 500 }, () => [rnd(), rnd(), rnd(), rnd()] as Words);
    for (const a of probes(rs, noise)) expect(t.lookup(a[0], a[1], a[2], a[3])).toBe(ref.lookup(a));
  });

  it('handles ::/0 and /128 at the extremes', () => {
    const b = new Lpm6Builder();
    b.set([0, 0, 0, 0], 0, 7);
    b.set(parseIPv6('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'), 128, 9);
    b.set(parseIPv6('::'), 128, 11);
    const t = b.build();
    expect(t.lookup(-1, -1, -1, -1)).toBe(9);
    expect(t.lookup(0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff)).toBe(9);
    expect(t.lookup(0xffffffff, 0xffffffff, 0xffffffff, 0xfffffffe)).toBe(7);
    expect(t.lookup(0, 0, 0, 0)).toBe(11);
    expect(t.lookup(0, 0, 0, 1)).toBe(7);
    expect(new Lpm6Builder().build().lookup(1, 2, 3, 4)).toBe(0);
  });
});

describe('Lpm6 validation and helpers', () => {
  it('rejects value 0, bad values, lengths and addresses', () => {
    const b = new Lpm6Builder();
    expect(() => b.set([0, 0, 0, 0], 64, 0)).toThrow(/value 0 out of range/);
    expect(() => b.set([0, 0, 0, 0], 64, 0x80000000)).toThrow(RangeError);
    expect(() => b.set([0, 0, 0, 0], 129, 1)).toThrow(/prefix length 129 out of range 0..128/);
    expect(() => b.set([0, 0, 0, 0], -1, 1)).toThrow(RangeError);
    expect(() => b.set([0, 0, 0], 8, 1)).toThrow(/4 uint32 words/);
    expect(() => new Lpm6Table(new SharedArrayBuffer(4096))).toThrow(/not an Lpm6Table/);
  });

  it('parses the RFC 4291 text forms', () => {
    const hex = (w: Uint32Array) => Array.from(w, (x) => x.toString(16).padStart(8, '0')).join(' ');
    expect(hex(parseIPv6('::'))).toBe('00000000 00000000 00000000 00000000');
    expect(hex(parseIPv6('::1'))).toBe('00000000 00000000 00000000 00000001');
    expect(hex(parseIPv6('1::'))).toBe('00010000 00000000 00000000 00000000');
    expect(hex(parseIPv6('2001:DB8::8:800:200C:417A'))).toBe('20010db8 00000000 00080800 200c417a');
    expect(hex(parseIPv6('2001:0db8:0000:0000:0008:0800:200c:417a'))).toBe('20010db8 00000000 00080800 200c417a');
    expect(hex(parseIPv6('::ffff:10.244.1.7'))).toBe('00000000 00000000 0000ffff 0af40107');
    expect(hex(parseIPv6('::13.1.68.3'))).toBe('00000000 00000000 00000000 0d014403');
    expect(hex(parseIPv6('1:2:3:4:5:6:1.2.3.4'))).toBe('00010002 00030004 00050006 01020304');
    expect(hex(parseIPv6('fe80::1:2.3.4.5'))).toBe('fe800000 00000000 00000001 02030405');
    expect(parseCidr6('2001:db8::ff/32')).toEqual({ addr: parseIPv6('2001:db8::'), len: 32 });
  });

  it('rejects malformed text with a clear message', () => {
    const bad = ['', ':', ':::', '1', '1.2.3.4', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '1::2::3', ':1::', '1:::2', '12345::', '::g', '1:2:3:4:5:6:7::8', '::1.2.3', '::256.1.1.1', '1:2:3:4:5:6:7:1.2.3.4', 'fe80::1%eth0', '::1.2.3.4:5'];
    for (const s of bad) expect(() => parseIPv6(s), s).toThrow(/invalid IPv6 address/);
    expect(() => parseIPv6('1::2::3')).toThrow(/more than one "::"/);
    expect(() => parseCidr6('2001:db8::')).toThrow(/missing "\/len"/);
    expect(() => parseCidr6('2001:db8::/129')).toThrow(/bad prefix length "129"/);
  });

  it('formats canonically (RFC 5952) and round-trips', () => {
    expect(formatIPv6(parseIPv6('2001:0db8:0:0:1:0:0:1'))).toBe('2001:db8::1:0:0:1');
    expect(formatIPv6(parseIPv6('2001:db8:0:1:1:1:1:1'))).toBe('2001:db8:0:1:1:1:1:1');
    expect(formatIPv6(parseIPv6('::'))).toBe('::');
    expect(formatIPv6(parseIPv6('::ffff:1.2.3.4'))).toBe('::ffff:1.2.3.4');
    expect(formatIPv6([0xfe800000, 0, 0, 1])).toBe('fe80::1');
    fc.assert(
      fc.property(addr, (w) => {
        const text = formatIPv6(w);
        expect(Array.from(parseIPv6(text))).toEqual(w.map((x) => x >>> 0));
      }),
    );
  });
});

describe('Lpm6 in a worker thread', () => {
  let compiled: ReturnType<typeof compileTables>;
  beforeAll(() => {
    compiled = compileTables();
  }, 60_000);
  afterAll(() => compiled?.cleanup());

  it('answers like the main thread from the same SharedArrayBuffer', async () => {
    let seed = 42;
    const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) ^ (seed >>> 16)) >>> 0;
    const b = new Lpm6Builder();
    const rs: Words[] = [];
    for (let i = 0; i < 3000; i++) {
      const w: Words = [0x20010db8, rnd() & 0xff00ffff, rnd(), rnd()];
      b.set(w, 40 + (rnd() % 89), 1 + (rnd() & 0xfffff));
      rs.push(w);
    }
    const t = b.build();
    const queries = new Uint32Array(4 * 10000);
    for (let i = 0; i < 10000; i++) {
      const w = rs[rnd() % rs.length];
      queries.set([w[0], w[1], (w[2] ^ (rnd() & 0xff)) >>> 0, rnd()], 4 * i);
    }
    const expected = Array.from({ length: 10000 }, (_, i) => t.lookup(queries[4 * i], queries[4 * i + 1], queries[4 * i + 2], queries[4 * i + 3]));
    const worker = new Worker(new URL('./lpm-worker.mjs', import.meta.url), {
      workerData: { moduleUrl: compiled.urls['lpm6.js'], kind: 6, buffer: t.buffer, queries },
    });
    const got = await new Promise<Int32Array>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    await worker.terminate();
    expect(Array.from(got)).toEqual(expected);
    expect(expected.some((v) => v !== 0)).toBe(true);
  });
});
