// IPv6 connection tracking (tables/conntrack.ts, family 6): the properties conntrack.test.ts
// checks for IPv4, for IPv6 keys (among them keys that differ in one word only), plus the
// family checks and the hand-over's dump/adopt round trip for both families.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Worker } from 'node:worker_threads';
import { Conntrack } from '../../dataplane/tables/conntrack.js';
import { parseIPv6Address } from '../../lib/ipv6.js';
import { compileTables } from './compile.js';

const TCP = 6;
const UDP = 17;

/** An address as the stages hold it: 4 big-endian int32 words. */
const ip6 = (s: string) => Int32Array.from(parseIPv6Address(s), (w) => w | 0);

/** Every live slot's key as a string; duplicates would show up twice. */
function liveKeys(ct: Conntrack): string[] {
  const k = new Int32Array(11);
  const keys: string[] = [];
  for (let s = 0; s < ct.capacity; s++) if (ct.keyAt6(s, k)) keys.push(Array.from(k).join(','));
  return keys;
}

/** The table's bytes read back as engine.adoptFlows reads a dump file. */
function throughBytes(ct: Conntrack): Conntrack {
  const bytes = Buffer.from(new Uint8Array(ct.buffer)); // a copy, as written to and read from a file
  const sab = new SharedArrayBuffer(bytes.length);
  new Uint8Array(sab).set(bytes);
  return new Conntrack(sab);
}

const A = ip6('fd00:10:244:1::2');
const B = ip6('fd00:10:96::a');

describe('IPv6 Conntrack on one thread', () => {
  it('inserts, finds, updates in place and removes', () => {
    const ct = Conntrack.create(100, 6);
    expect([ct.capacity, ct.family]).toEqual([128, 6]);
    expect(ct.lookup6(TCP, A, 0, B, 0, 1234, 80, 0)).toBe(-1);
    const s = ct.upsert6(TCP, A, 0, B, 0, 1234, 80, 1, 0xdead, 10, 30);
    expect(s).toBeGreaterThanOrEqual(0);
    expect(ct.lookup6(TCP, A, 0, B, 0, 1234, 80, 10)).toBe(s);
    expect([ct.state(s), ct.tag(s), ct.expires(s), ct.count()]).toEqual([1, 0xdead, 40, 1]);
    // every field of the key matters
    expect(ct.lookup6(UDP, A, 0, B, 0, 1234, 80, 10)).toBe(-1);
    expect(ct.lookup6(TCP, B, 0, A, 0, 1234, 80, 10)).toBe(-1);
    expect(ct.lookup6(TCP, A, 0, B, 0, 80, 1234, 10)).toBe(-1);
    expect(ct.upsert6(TCP, A, 0, B, 0, 1234, 80, 2, 7, 20, 30)).toBe(s);
    expect([ct.state(s), ct.tag(s), ct.expires(s), ct.count()]).toEqual([2, 7, 50, 1]);
    ct.setState(s, 3);
    ct.touch(s, 100, 5);
    expect([ct.state(s), ct.expires(s)]).toEqual([3, 105]);
    ct.remove6(s);
    expect(ct.lookup6(TCP, A, 0, B, 0, 1234, 80, 100)).toBe(-1);
    expect(ct.count()).toBe(0);
    ct.remove6(s); // removing twice is a no-op
    ct.remove(s); // remove() takes either family
    ct.remove(-1); // and a missed lookup's -1
    expect(ct.count()).toBe(0);
  });

  it('tells apart keys that differ in one bit of one word, and reads addresses at any index', () => {
    const ct = Conntrack.create(1024, 6);
    // one array holding many addresses, as a batch's src6/dst6 do: entry i at 4*i
    const words = new Int32Array(4 * 65);
    for (let i = 0; i < 65; i++) words.set(A, 4 * i);
    // address i (1..64) differs from address 0 in bit 2(i-1) of its 128: one bit of one word
    for (let i = 1; i <= 64; i++) words[4 * i + ((2 * (i - 1)) >> 5)] ^= 1 << ((2 * (i - 1)) & 31);
    const seen = new Set<string>();
    for (let i = 0; i <= 64; i++) seen.add(Array.from(words.subarray(4 * i, 4 * i + 4)).join(','));
    expect(seen.size).toBe(65); // 65 distinct addresses, 64 of them one bit from the first
    for (let i = 0; i <= 64; i++) {
      expect(ct.upsert6(TCP, words, 4 * i, B, 0, 5000, 443, 1, i, 0, 10)).toBeGreaterThanOrEqual(0); // as source
      expect(ct.upsert6(TCP, B, 0, words, 4 * i, 443, 5000, 1, 1000 + i, 0, 10)).toBeGreaterThanOrEqual(0); // as destination
    }
    expect(ct.count()).toBe(130);
    for (let i = 0; i <= 64; i++) {
      const copy = words.slice(4 * i, 4 * i + 4); // the same key from another array
      expect(ct.tag(ct.lookup6(TCP, copy, 0, B, 0, 5000, 443, 0))).toBe(i);
      expect(ct.tag(ct.lookup6(TCP, B, 0, copy, 0, 443, 5000, 0))).toBe(1000 + i);
    }
    // and each word on its own, with high-bit (negative int32) values
    for (let w = 0; w < 8; w++) {
      const a = A.slice(), b = B.slice();
      (w < 4 ? a : b)[w & 3] ^= 0x80000000 | 0;
      expect(ct.lookup6(TCP, a, 0, b, 0, 5000, 443, 0)).toBe(-1);
      const s = ct.upsert6(TCP, a, 0, b, 0, 5000, 443, 1, 2000 + w, 0, 10);
      expect(ct.lookup6(TCP, a, 0, b, 0, 5000, 443, 0)).toBe(s);
    }
    expect(ct.tag(ct.lookup6(TCP, A, 0, B, 0, 5000, 443, 0))).toBe(0); // untouched by its neighbours
    expect(ct.count()).toBe(138);
    expect(new Set(liveKeys(ct)).size).toBe(138);
  });

  it('keeps the key words as given, and high ports', () => {
    const ct = Conntrack.create(16, 6);
    const a = ip6('ffff:fffe:8000:1::ffff:ffff'), b = ip6('2001:db8::1');
    const s = ct.upsert6(UDP, a, 0, b, 0, 65535, 40000, 1, 1, 0, 10);
    const k = new Int32Array(11);
    expect(ct.keyAt6(s, k)).toBe(true);
    expect(Array.from(k)).toEqual([UDP, ...a, ...b, 65535, 40000]);
    expect(k[1]).toBe(0xfffffffe | 0);
    expect(ct.keyAt6((s + 1) & 15, k)).toBe(false);
  });

  it('returns -1 when full, and reuses freed slots (tombstones)', () => {
    const ct = Conntrack.create(16, 6);
    const a = A.slice();
    const key = (i: number) => ((a[3] = i), a);
    for (let i = 0; i < 16; i++) expect(ct.upsert6(TCP, key(i), 0, B, 0, 2, 3, 1, i, 0, 10)).toBeGreaterThanOrEqual(0);
    expect(ct.upsert6(TCP, key(99), 0, B, 0, 2, 3, 1, 0, 0, 10)).toBe(-1);
    expect(ct.upsert6(TCP, key(5), 0, B, 0, 2, 3, 1, 55, 0, 10)).toBeGreaterThanOrEqual(0); // update still works
    const freed = ct.lookup6(TCP, key(3), 0, B, 0, 2, 3, 0);
    ct.remove6(freed);
    expect(ct.upsert6(TCP, key(99), 0, B, 0, 2, 3, 1, 0, 0, 10)).toBe(freed); // the tombstone, the only free slot
    for (let i = 0; i < 16; i++) if (i !== 3) expect(ct.tag(ct.lookup6(TCP, key(i), 0, B, 0, 2, 3, 0))).toBe(i === 5 ? 55 : i);
    expect(ct.lookup6(TCP, key(3), 0, B, 0, 2, 3, 0)).toBe(-1);
    expect(ct.count()).toBe(16);
  });

  it('expires entries and sweeps them without breaking other chains', () => {
    const ct = Conntrack.create(64, 6);
    const a = A.slice();
    // keys differ only in the source's first word
    const key = (i: number) => ((a[0] = (0xfd000000 | i) | 0), a);
    for (let i = 0; i < 50; i++) ct.upsert6(TCP, key(i), 0, B, 0, 1000, 80, 1, i, 100, i % 3 === 0 ? 5 : 50);
    expect(ct.lookup6(TCP, key(3), 0, B, 0, 1000, 80, 104)).toBeGreaterThanOrEqual(0);
    expect(ct.lookup6(TCP, key(3), 0, B, 0, 1000, 80, 105)).toBe(-1); // expiry is exclusive
    expect(ct.count()).toBe(50);
    expect(ct.sweep(110)).toBe(17);
    expect(ct.count()).toBe(33);
    for (let i = 0; i < 50; i++) {
      const s = ct.lookup6(TCP, key(i), 0, B, 0, 1000, 80, 110);
      if (i % 3 === 0) expect(s).toBe(-1);
      else expect(ct.tag(s)).toBe(i);
    }
    // an expired but unswept key is revived in place, not duplicated
    ct.upsert6(TCP, key(1), 0, B, 0, 1000, 80, 1, 1, 100, 1);
    ct.upsert6(TCP, key(1), 0, B, 0, 1000, 80, 2, 11, 200, 10);
    expect(ct.tag(ct.lookup6(TCP, key(1), 0, B, 0, 1000, 80, 200))).toBe(11);
    expect(ct.sweep(1000)).toBe(33);
    expect(ct.count()).toBe(0);
    expect(liveKeys(ct)).toEqual([]);
    // a fully swept table is as good as new: refill it completely
    for (let i = 0; i < 64; i++) expect(ct.upsert6(UDP, key(i), 0, B, 0, 9, 10, 1, i, 0, 10)).toBeGreaterThanOrEqual(0);
    for (let i = 0; i < 64; i++) expect(ct.tag(ct.lookup6(UDP, key(i), 0, B, 0, 9, 10, 0))).toBe(i);
  });

  it('behaves like a Map under random operations (model test)', () => {
    type Op =
      | { op: 'upsert'; k: number; ttl: number; tag: number }
      | { op: 'remove'; k: number }
      | { op: 'lookup'; k: number }
      | { op: 'tick'; dt: number }
      | { op: 'sweep' };
    const key = fc.integer({ min: 0, max: 40 });
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 5, arbitrary: fc.record({ op: fc.constant('upsert' as const), k: key, ttl: fc.integer({ min: 0, max: 20 }), tag: fc.integer() }) },
      { weight: 2, arbitrary: fc.record({ op: fc.constant('remove' as const), k: key }) },
      { weight: 3, arbitrary: fc.record({ op: fc.constant('lookup' as const), k: key }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('tick' as const), dt: fc.integer({ min: 0, max: 10 }) }) },
      { weight: 1, arbitrary: fc.constant({ op: 'sweep' as const }) },
    );
    // Key 0 is (A, B); key k > 0 differs from it in one bit of one of the 8 address
    // words (word (k-1)%8, bit (k-1)>>3), so any two keys differ in at most two words.
    const keys = Array.from({ length: 41 }, (_, k) => {
      const w = new Int32Array(8);
      w.set(A, 0);
      w.set(B, 4);
      if (k > 0) w[(k - 1) % 8] ^= 1 << ((k - 1) >> 3);
      return w;
    });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const ct = Conntrack.create(64, 6); // 41 keys in 64 slots: long chains
        const model = new Map<number, { tag: number; expires: number }>();
        let now = 0;
        const look = (k: number) => ct.lookup6(TCP, keys[k], 0, keys[k], 4, 40000, 443, now);
        const live = (k: number) => {
          const e = model.get(k);
          return e !== undefined && e.expires > now ? e : undefined;
        };
        for (const o of ops) {
          if (o.op === 'upsert') {
            const s = ct.upsert6(TCP, keys[o.k], 0, keys[o.k], 4, 40000, 443, 1, o.tag, now, o.ttl);
            if (s < 0) {
              expect(model.size + (model.has(o.k) ? 0 : 1)).toBeGreaterThan(64);
              continue;
            }
            model.set(o.k, { tag: o.tag, expires: now + o.ttl });
          } else if (o.op === 'remove') {
            const s = look(o.k);
            if (s >= 0) ct.remove6(s);
            if (live(o.k)) model.delete(o.k);
          } else if (o.op === 'lookup') {
            const s = look(o.k);
            const e = live(o.k);
            expect(s >= 0).toBe(e !== undefined);
            if (e) expect(ct.tag(s)).toBe(e.tag);
          } else if (o.op === 'tick') {
            now += o.dt;
          } else {
            let expired = 0;
            for (const [k, e] of model) if (e.expires <= now) (model.delete(k), expired++);
            expect(ct.sweep(now)).toBe(expired);
          }
          expect(ct.count()).toBe(model.size);
        }
        for (let k = 0; k <= 40; k++) expect(look(k) >= 0).toBe(live(k) !== undefined);
        const found = liveKeys(ct);
        expect(new Set(found).size).toBe(found.length);
        expect(found.length).toBe(model.size);
      }),
      { numRuns: 200 },
    );
  });

  it('keeps probe chains short for structured keys (the hash mixes every word)', () => {
    // 100k flows of 1000 pods (10 nodes' /64s) to 5 Service addresses: only a few
    // bits vary, spread over words 1 and 3 of the source, word 3 of the destination
    // and the source port. A hash that dropped a word would pile them into long chains.
    const ct = Conntrack.create(1 << 18, 6);
    const a = ip6('fd00:10:244::'), b = ip6('fd00:10:96::');
    let n = 0;
    for (let node = 0; node < 10; node++) for (let pod = 2; pod < 102; pod++) for (let c = 0; c < 100; c++) {
      a[1] = (0x02440000 | node) | 0;
      a[3] = pod;
      b[3] = 10 + (c % 5);
      expect(ct.upsert6(TCP, a, 0, b, 0, 32768 + c, 443, 1, n++, 0, 100)).toBeGreaterThanOrEqual(0);
    }
    expect(ct.count()).toBe(100_000);
    const maxProbe = new Int32Array(ct.buffer)[32]; // the table's MAXPROBE header word
    expect(maxProbe).toBeLessThan(64); // ~20 for a uniform hash at this load (0.38)
  });
});

describe('Conntrack families', () => {
  it('knows its family, from its header too', () => {
    expect(Conntrack.create(16).family).toBe(4);
    expect(Conntrack.create(16, 4).family).toBe(4);
    const ct6 = Conntrack.create(16, 6);
    expect(new Conntrack(ct6.buffer).family).toBe(6);
    expect(ct6.buffer.byteLength).toBeGreaterThan(Conntrack.create(16).buffer.byteLength);
    expect(() => Conntrack.create(16, 5 as 4)).toThrow(RangeError);
  });

  it('throws on the other family\'s methods', () => {
    const ct4 = Conntrack.create(16), ct6 = Conntrack.create(16, 6);
    const k = new Int32Array(11);
    expect(() => ct6.lookup(TCP, 1, 2, 3, 4, 0)).toThrow(/lookup\(\) is for IPv4 tables; this table is IPv6 \(use lookup6\(\)\)/);
    expect(() => ct6.upsert(TCP, 1, 2, 3, 4, 1, 1, 0, 10)).toThrow(/IPv4 tables; this table is IPv6/);
    expect(() => ct6.keyAt(0, k)).toThrow(/IPv4 tables; this table is IPv6/);
    expect(() => ct4.lookup6(TCP, A, 0, B, 0, 3, 4, 0)).toThrow(/lookup6\(\) is for IPv6 tables; this table is IPv4 \(use lookup\(\)\)/);
    expect(() => ct4.upsert6(TCP, A, 0, B, 0, 3, 4, 1, 1, 0, 10)).toThrow(/IPv6 tables; this table is IPv4/);
    expect(() => ct4.keyAt6(0, k)).toThrow(/IPv6 tables; this table is IPv4/);
    expect(() => ct4.remove6(0)).toThrow(/IPv6 tables; this table is IPv4/);
    expect(() => ct4.adopt(ct6, 0, 0)).toThrow(/cannot adopt an IPv6 table into an IPv4 table/);
    expect(() => ct6.adopt(ct4, 0, 0)).toThrow(/cannot adopt an IPv4 table into an IPv6 table/);
    expect([ct4.count(), ct6.count()]).toEqual([0, 0]); // nothing half-done
  });

  it('rejects buffers that are not tables', () => {
    const ct6 = Conntrack.create(16, 6);
    const bad = (mutate: (t: Int32Array) => void, len = ct6.buffer.byteLength) => {
      const sab = new SharedArrayBuffer(len);
      new Uint8Array(sab).set(new Uint8Array(ct6.buffer).subarray(0, len));
      mutate(new Int32Array(sab));
      return () => new Conntrack(sab);
    };
    expect(bad(() => undefined)).not.toThrow();
    expect(bad((t) => (t[3] = 4))).toThrow(/not a Conntrack table/); // an IPv4 header on IPv6 slots: wrong length
    expect(bad((t) => (t[3] = 5))).toThrow(/not a Conntrack table/);
    expect(bad(() => undefined, ct6.buffer.byteLength - 64)).toThrow(/not a Conntrack table/);
    expect(bad(() => undefined, 8)).toThrow(/not a Conntrack table/);
  });

  it('reads an IPv4 table written before families (header word 3 = 0) as IPv4', () => {
    const ct = Conntrack.create(64);
    const s = ct.upsert(TCP, 0x0a000001, 0x0a000002, 1234, 80, 1, 9, 0, 100);
    const old = throughBytes(ct);
    new Int32Array(old.buffer)[3] = 0; // as tables were written before IPv6
    const again = new Conntrack(old.buffer);
    expect(again.family).toBe(4);
    expect(again.lookup(TCP, 0x0a000001, 0x0a000002, 1234, 80, 0)).toBe(s);
    const fresh = Conntrack.create(64);
    expect(fresh.adopt(again, -1, 10)).toBe(1);
  });
});

describe('hand-over: dump (the table\'s bytes) and adopt', () => {
  it('IPv4: copies live, unexpired entries with their state and expiry, under the new tag', () => {
    const from = Conntrack.create(256);
    for (let i = 0; i < 100; i++) from.upsert(i % 2 ? TCP : UDP, (0x0af40100 + i) | 0, 0xc0a80001 | 0, 1024 + i, 443, 1 + (i % 3), i, 0, i % 4 === 0 ? 5 : 50 + i);
    from.remove(from.lookup(TCP, (0x0af40100 + 1) | 0, 0xc0a80001 | 0, 1025, 443, 0));
    const to = Conntrack.create(1024);
    to.upsert(TCP, 1, 2, 3, 4, 1, 1, 0, 100); // a flow of its own, kept
    expect(to.adopt(throughBytes(from), -1, 10)).toBe(74); // 100 - 25 expired - 1 removed
    expect(to.count()).toBe(75);
    for (let i = 0; i < 100; i++) {
      const s = to.lookup(i % 2 ? TCP : UDP, (0x0af40100 + i) | 0, 0xc0a80001 | 0, 1024 + i, 443, 10);
      if (i % 4 === 0 || i === 1) expect(s).toBe(-1);
      else expect([to.state(s), to.tag(s), to.expires(s)]).toEqual([1 + (i % 3), -1, 50 + i]);
    }
    expect(to.adopt(throughBytes(from), 0, 10)).toBe(74); // again: updated in place, not duplicated
    expect(to.count()).toBe(75);
  });

  it('IPv6: the same', () => {
    const from = Conntrack.create(256, 6);
    const keys = Array.from({ length: 100 }, (_, i) => {
      const a = A.slice();
      a[i % 4] ^= 1 << (i >> 2); // each one bit of one word from A
      return a;
    });
    for (let i = 0; i < 100; i++) from.upsert6(i % 2 ? TCP : UDP, keys[i], 0, B, 0, 1024, 443, 1 + (i % 3), i, 0, i % 4 === 0 ? 5 : 50 + i);
    from.remove6(from.lookup6(TCP, keys[1], 0, B, 0, 1024, 443, 0));
    const to = Conntrack.create(1024, 6);
    to.upsert6(TCP, B, 0, A, 0, 3, 4, 1, 1, 0, 100);
    expect(to.adopt(throughBytes(from), -1, 10)).toBe(74);
    expect(to.count()).toBe(75);
    for (let i = 0; i < 100; i++) {
      const s = to.lookup6(i % 2 ? TCP : UDP, keys[i], 0, B, 0, 1024, 443, 10);
      if (i % 4 === 0 || i === 1) expect(s).toBe(-1);
      else expect([to.state(s), to.tag(s), to.expires(s)]).toEqual([1 + (i % 3), -1, 50 + i]);
    }
    const k = new Int32Array(11);
    const dumped = new Set<string>();
    for (let s = 0; s < to.capacity; s++) if (to.keyAt6(s, k)) dumped.add(Array.from(k).join(','));
    expect(dumped.size).toBe(75);
    expect(to.adopt(throughBytes(from), 0, 10)).toBe(74);
    expect(to.count()).toBe(75);
  });
});

describe('IPv6 Conntrack shared by worker threads', () => {
  let compiled: ReturnType<typeof compileTables>;
  beforeAll(() => {
    compiled = compileTables();
  }, 60_000);
  afterAll(() => compiled?.cleanup());

  const WORKERS = 4;
  const KEYS = 100_000; // key k is upserted by workers k%4 and (k+1)%4
  const SHARED = 10_000; // plus keys every worker upserts

  /** Key k as in conntrack6-worker.mjs. */
  function keyOf(k: number): number[] {
    const lo = k >>> 1;
    const src = [(k & 1) ? (0xfd010000 | (lo & 0xffff)) | 0 : 0xfd000010 | 0, (0x02440000 | (lo >>> 16)) | 0, 0, (k & 1) ? 7 : lo & 0xffff];
    const dst = [0xfd000010 | 0, 0x00960000, 0, 10];
    return [TCP, ...src, ...dst, 1024 + (k % 7), 443];
  }

  async function run(ct: Conntrack, shortEvery: number, whileRunning?: (done: () => boolean) => void) {
    const control = new SharedArrayBuffer(16);
    const ctl = new Int32Array(control);
    const workers = Array.from(
      { length: WORKERS },
      (_, id) =>
        new Worker(new URL('./conntrack6-worker.mjs', import.meta.url), {
          workerData: { moduleUrl: compiled.urls['conntrack.js'], buffer: ct.buffer, control, id, workers: WORKERS, keys: KEYS, shared: SHARED, shortEvery },
        }),
    );
    const results = workers.map(
      (w) =>
        new Promise<{ full: number; missing: number; wrongKey: number }>((resolve, reject) => {
          w.once('message', resolve);
          w.once('error', reject);
        }),
    );
    while (Atomics.load(ctl, 2) < WORKERS) await new Promise((r) => setTimeout(r, 5));
    Atomics.store(ctl, 0, 1); // go
    Atomics.notify(ctl, 0);
    whileRunning?.(() => Atomics.load(ctl, 1) === WORKERS);
    const out = await Promise.all(results);
    await Promise.all(workers.map((w) => w.terminate()));
    return out;
  }

  /** Every key k < KEYS + SHARED (except the short-lived ones) is live exactly once. */
  function verify(ct: Conntrack, shortEvery: number) {
    const expected = new Set<string>();
    for (let k = 0; k < KEYS + SHARED; k++) {
      if (shortEvery > 0 && k % shortEvery === 0) continue;
      expected.add(keyOf(k).join(','));
    }
    expect(expected.size).toBe(KEYS + SHARED - (shortEvery > 0 ? Math.ceil((KEYS + SHARED) / shortEvery) : 0)); // keyOf is one-to-one
    const keys = liveKeys(ct);
    expect(keys.length).toBe(expected.size); // no duplicates, nothing lost
    expect(new Set(keys).size).toBe(keys.length);
    for (const k of keys) expect(expected.has(k)).toBe(true);
    expect(ct.count()).toBe(expected.size);
  }

  it('concurrent upserts of overlapping keys leave exactly one entry per key', async () => {
    const ct = Conntrack.create(1 << 18, 6);
    const results = await run(ct, 0);
    for (const r of results) expect(r).toEqual({ full: 0, missing: 0, wrongKey: 0 });
    verify(ct, 0);
  }, 60_000);

  it('sweeps concurrently with upserts without losing or duplicating keys', async () => {
    const ct = Conntrack.create(1 << 18, 6);
    let sweeps = 0;
    // as in conntrack.test.ts: every 3rd key expires at 1, the main thread sweeps at 5
    const nap = new Int32Array(new SharedArrayBuffer(4));
    const results = await run(ct, 3, (done) => {
      while (!done()) { ct.sweep(5); sweeps++; Atomics.wait(nap, 0, 0, 0.2); }
    });
    for (const r of results) expect(r).toEqual({ full: 0, missing: 0, wrongKey: 0 });
    ct.sweep(5);
    expect(sweeps).toBeGreaterThan(0);
    verify(ct, 3);
  }, 60_000);
});
