import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Worker } from 'node:worker_threads';
import { Lpm4Builder, Lpm4Table } from '../../dataplane/tables/lpm4.js';
import { formatIPv4Address, parseIPv4Address, parseIPv4Cidr } from '../../lib/ipv4.js';
import { compileTables } from './compile.js';

const maskOf = (len: number): number => (len === 0 ? 0 : (-1 << (32 - len)) >>> 0);

/** Reference: the prefix set as a Map, longest match by linear scan. */
class NaiveLpm4 {
  readonly routes = new Map<string, { p: number; len: number; v: number }>();
  set(p: number, len: number, v: number): void {
    const m = (p & maskOf(len)) >>> 0;
    this.routes.set(`${m}/${len}`, { p: m, len, v });
  }
  delete(p: number, len: number): boolean {
    return this.routes.delete(`${(p & maskOf(len)) >>> 0}/${len}`);
  }
  lookup(addr: number): number {
    let best = -1;
    let v = 0;
    for (const r of this.routes.values()) {
      if (r.len > best && ((addr & maskOf(r.len)) >>> 0) === r.p) {
        best = r.len;
        v = r.v;
      }
    }
    return v;
  }
}

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const len = fc.oneof(fc.constantFrom(0, 1, 8, 15, 16, 17, 20, 24, 25, 28, 31, 32), fc.integer({ min: 0, max: 32 }));
const value = fc.integer({ min: 1, max: 0x7fffffff });
const route = fc.record({ p: u32, len, v: value });
// nested: a child of an earlier route (same leading bits, longer length)
const nested = fc.record({ parent: fc.nat(), extra: fc.integer({ min: 0, max: 16 }), bits: u32, v: value });

function scenario(routes: { p: number; len: number; v: number }[], children: { parent: number; extra: number; bits: number; v: number }[]) {
  const all = [...routes];
  for (const c of children) {
    if (all.length === 0) break;
    const parent = all[c.parent % all.length];
    const l = Math.min(32, parent.len + c.extra);
    all.push({ p: ((parent.p & maskOf(parent.len)) | (c.bits & ~maskOf(parent.len))) >>> 0, len: l, v: c.v });
  }
  return all;
}

/** Addresses inside, at the edges of, and just outside the routes, plus random ones. */
function probes(routes: { p: number; len: number }[], noise: number[]): number[] {
  const out = [...noise];
  for (const [i, r] of routes.entries()) {
    const lo = (r.p & maskOf(r.len)) >>> 0;
    const hi = (lo | ~maskOf(r.len)) >>> 0;
    out.push(lo, hi, (lo - 1) >>> 0, (hi + 1) >>> 0, (lo | (noise[i % Math.max(1, noise.length)] ?? 0) & ~maskOf(r.len)) >>> 0);
  }
  return out;
}

describe('Lpm4 against a naive reference', () => {
  it('matches on random nested sets, with overwrites and deletes', () => {
    fc.assert(
      fc.property(
        fc.array(route, { maxLength: 60 }),
        fc.array(nested, { maxLength: 60 }),
        fc.array(u32, { maxLength: 50 }),
        fc.array(fc.record({ i: fc.nat(), v: value }), { maxLength: 10 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        (routes, children, noise, overwrites, deletes) => {
          const all = scenario(routes, children);
          const b = new Lpm4Builder();
          const ref = new NaiveLpm4();
          for (const r of all) {
            // callers may pass int32 for addresses >= 128.0.0.0
            b.set(r.p | 0, r.len, r.v);
            ref.set(r.p, r.len, r.v);
          }
          for (const o of overwrites) {
            if (all.length === 0) break;
            const r = all[o.i % all.length];
            b.set(r.p, r.len, o.v); // duplicate prefix, new value: last one wins
            ref.set(r.p, r.len, o.v);
          }
          expect(b.size).toBe(ref.routes.size);
          const addrs = probes(all, noise);
          let t = b.build();
          for (const a of addrs) expect(t.lookup(a)).toBe(ref.lookup(a));
          for (const d of deletes) {
            if (all.length === 0) break;
            const r = all[d % all.length];
            expect(b.delete(r.p, r.len)).toBe(ref.delete(r.p, r.len));
            expect(b.has(r.p, r.len)).toBe(false);
          }
          t = b.build();
          expect(t.size).toBe(ref.routes.size);
          for (const a of addrs) expect(t.lookup(a | 0)).toBe(ref.lookup(a));
        },
      ),
      { numRuns: 150 },
    );
  });

  it('matches on a larger random table', () => {
    let seed = 1;
    const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) ^ (seed >>> 16)) >>> 0;
    const b = new Lpm4Builder();
    const ref = new NaiveLpm4();
    const rs: { p: number; len: number }[] = [];
    for (let i = 0; i < 3000; i++) {
      const r = { p: rnd(), len: [0, 8, 12, 16, 19, 22, 24, 24, 24, 27, 30, 32][rnd() % 12] };
      const v = 1 + (rnd() & 0xffff);
      b.set(r.p, r.len, v);
      ref.set(r.p, r.len, v);
      rs.push(r);
    }
    const t = b.build();
    const noise = Array.from({ length: 2000 }, () => rnd());
    for (const a of probes(rs, noise)) expect(t.lookup(a)).toBe(ref.lookup(a));
  });

  it('handles /0 and /32 at the extremes', () => {
    const b = new Lpm4Builder();
    b.set(0, 0, 7);
    b.set(0xffffffff, 32, 9);
    b.set(0, 32, 11);
    const t = b.build();
    expect(t.lookup(0xffffffff)).toBe(9);
    expect(t.lookup(-1)).toBe(9);
    expect(t.lookup(0)).toBe(11);
    expect(t.lookup(1)).toBe(7);
    expect(t.lookup(0x80000000)).toBe(7);
    expect(new Lpm4Builder().build().lookup(123)).toBe(0);
  });

  it('masks bits beyond len', () => {
    const b = new Lpm4Builder();
    b.set(parseIPv4Address('10.1.2.3'), 16, 5);
    expect(b.has(parseIPv4Address('10.1.0.0'), 16)).toBe(true);
    expect(b.size).toBe(1);
    expect(b.build().lookup(parseIPv4Address('10.1.200.1'))).toBe(5);
  });
});

describe('Lpm4 validation and helpers', () => {
  it('rejects value 0, bad values and lengths', () => {
    const b = new Lpm4Builder();
    expect(() => b.set(0, 8, 0)).toThrow(/value 0 out of range/);
    expect(() => b.set(0, 8, -1)).toThrow(RangeError);
    expect(() => b.set(0, 8, 0x80000000)).toThrow(RangeError);
    expect(() => b.set(0, 8, 1.5)).toThrow(RangeError);
    expect(() => b.set(0, 33, 1)).toThrow(/prefix length 33 out of range 0..32/);
    expect(() => b.set(0, -1, 1)).toThrow(RangeError);
    expect(() => b.delete(0, 40)).toThrow(RangeError);
  });

  it('rejects a buffer that is not a table', () => {
    expect(() => new Lpm4Table(new SharedArrayBuffer(1024))).toThrow(/not an Lpm4Table/);
  });

  it('parses and formats addresses and CIDRs', () => {
    expect(parseIPv4Address('0.0.0.0')).toBe(0);
    expect(parseIPv4Address('255.255.255.255')).toBe(0xffffffff);
    expect(parseIPv4Address('10.244.1.7')).toBe(0x0af40107);
    expect(formatIPv4Address(0xc0a80001)).toBe('192.168.0.1');
    expect(formatIPv4Address(-1)).toBe('255.255.255.255');
    expect(parseIPv4Cidr('10.244.1.7/16')).toEqual({ prefix: 0x0af40000, len: 16 });
    expect(parseIPv4Cidr('0.0.0.0/0')).toEqual({ prefix: 0, len: 0 });
    for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1.2.3.-4', '1..2.3', ' 1.2.3.4', '1.2.3.4 ', '0x1.2.3.4', '1.2.3.1234']) {
      expect(() => parseIPv4Address(bad), bad).toThrow(/invalid IPv4 address/);
    }
    expect(() => parseIPv4Cidr('10.0.0.0')).toThrow(/missing "\/len"/);
    expect(() => parseIPv4Cidr('10.0.0.0/33')).toThrow(/bad prefix length "33"/);
    expect(() => parseIPv4Cidr('10.0.0.0/')).toThrow(/bad prefix length/);
    expect(() => parseIPv4Cidr('10.0.0/8')).toThrow(/invalid IPv4 address/);
  });

  it('round-trips format/parse', () => {
    fc.assert(fc.property(u32, (n) => parseIPv4Address(formatIPv4Address(n)) === n));
  });
});

describe('Lpm4 in a worker thread', () => {
  let compiled: ReturnType<typeof compileTables>;
  beforeAll(() => {
    compiled = compileTables();
  }, 60_000);
  afterAll(() => compiled?.cleanup());

  it('answers like the main thread from the same SharedArrayBuffer', async () => {
    let seed = 42;
    const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) ^ (seed >>> 16)) >>> 0;
    const b = new Lpm4Builder();
    for (let i = 0; i < 5000; i++) b.set(rnd(), 8 + (rnd() % 25), 1 + (rnd() & 0xfffff));
    const t = b.build();
    const queries = new Uint32Array(20000).map(() => rnd());
    const expected = Array.from(queries, (q) => t.lookup(q));
    const worker = new Worker(new URL('./lpm-worker.mjs', import.meta.url), {
      workerData: { moduleUrl: compiled.urls['lpm4.js'], kind: 4, buffer: t.buffer, queries },
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
