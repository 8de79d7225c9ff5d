import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Worker } from 'node:worker_threads';
import { Conntrack } from '../../dataplane/tables/conntrack.js';
import { compileTables } from './compile.js';

const TCP = 6;
const UDP = 17;

/** Every live slot's key as a string; duplicates would show up twice. */
function liveKeys(ct: Conntrack): string[] {
  const k = new Int32Array(5);
  const keys: string[] = [];
  for (let s = 0; s < ct.capacity; s++) if (ct.keyAt(s, k)) keys.push(Array.from(k).join(','));
  return keys;
}

describe('Conntrack on one thread', () => {
  it('inserts, finds, updates in place and removes', () => {
    const ct = Conntrack.create(100);
    expect(ct.capacity).toBe(128);
    expect(ct.lookup(TCP, 0x0a000001, 0x0a000002, 1234, 80, 0)).toBe(-1);
    const s = ct.upsert(TCP, 0x0a000001, 0x0a000002, 1234, 80, 1, 0xdead, 10, 30);
    expect(s).toBeGreaterThanOrEqual(0);
    expect(ct.lookup(TCP, 0x0a000001, 0x0a000002, 1234, 80, 10)).toBe(s);
    expect([ct.state(s), ct.tag(s), ct.expires(s), ct.count()]).toEqual([1, 0xdead, 40, 1]);
    // every field of the key matters
    expect(ct.lookup(UDP, 0x0a000001, 0x0a000002, 1234, 80, 10)).toBe(-1);
    expect(ct.lookup(TCP, 0x0a000002, 0x0a000001, 1234, 80, 10)).toBe(-1);
    expect(ct.lookup(TCP, 0x0a000001, 0x0a000002, 80, 1234, 10)).toBe(-1);
    expect(ct.upsert(TCP, 0x0a000001, 0x0a000002, 1234, 80, 2, 7, 20, 30)).toBe(s);
    expect([ct.state(s), ct.tag(s), ct.expires(s), ct.count()]).toEqual([2, 7, 50, 1]);
    ct.setState(s, 3);
    ct.touch(s, 100, 5);
    expect([ct.state(s), ct.expires(s)]).toEqual([3, 105]);
    ct.remove(s);
    expect(ct.lookup(TCP, 0x0a000001, 0x0a000002, 1234, 80, 100)).toBe(-1);
    expect(ct.count()).toBe(0);
    ct.remove(s); // removing twice is a no-op
    expect(ct.count()).toBe(0);
  });

  it('treats uint32 and int32 addresses alike, and high ports', () => {
    const ct = Conntrack.create(16);
    const s = ct.upsert(UDP, 0xc0a80001, 0xfffffffe, 65535, 40000, 1, 1, 0, 10);
    expect(ct.lookup(UDP, 0xc0a80001 | 0, -2, 65535, 40000, 0)).toBe(s);
    const k = new Int32Array(5);
    expect(ct.keyAt(s, k)).toBe(true);
    expect(Array.from(k)).toEqual([UDP, 0xc0a80001 | 0, -2, 65535, 40000]);
  });

  it('returns -1 when full, and reuses freed slots', () => {
    const ct = Conntrack.create(16);
    for (let i = 0; i < 16; i++) expect(ct.upsert(TCP, i, 1, 2, 3, 1, i, 0, 10)).toBeGreaterThanOrEqual(0);
    expect(ct.upsert(TCP, 99, 1, 2, 3, 1, 0, 0, 10)).toBe(-1);
    expect(ct.upsert(TCP, 5, 1, 2, 3, 1, 55, 0, 10)).toBeGreaterThanOrEqual(0); // update still works
    ct.remove(ct.lookup(TCP, 3, 1, 2, 3, 0));
    expect(ct.upsert(TCP, 99, 1, 2, 3, 1, 0, 0, 10)).toBeGreaterThanOrEqual(0);
    for (let i = 0; i < 16; i++) if (i !== 3) expect(ct.tag(ct.lookup(TCP, i, 1, 2, 3, 0))).toBe(i === 5 ? 55 : i);
    expect(ct.count()).toBe(16);
  });

  it('expires entries and sweeps them without breaking other chains', () => {
    // a small, crowded table makes long probe chains that interleave live and dead keys
    const ct = Conntrack.create(64);
    for (let i = 0; i < 50; i++) ct.upsert(TCP, i, 7, 1000 + i, 80, 1, i, 100, i % 3 === 0 ? 5 : 50);
    expect(ct.lookup(TCP, 3, 7, 1003, 80, 104)).toBeGreaterThanOrEqual(0);
    expect(ct.lookup(TCP, 3, 7, 1003, 80, 105)).toBe(-1); // expiry is exclusive
    expect(ct.count()).toBe(50);
    expect(ct.sweep(110)).toBe(17);
    expect(ct.count()).toBe(33);
    for (let i = 0; i < 50; i++) {
      const s = ct.lookup(TCP, i, 7, 1000 + i, 80, 110);
      if (i % 3 === 0) expect(s).toBe(-1);
      else expect(ct.tag(s)).toBe(i);
    }
    // an expired but unswept key is revived in place, not duplicated
    ct.upsert(TCP, 1, 7, 1001, 80, 1, 1, 100, 1);
    ct.upsert(TCP, 1, 7, 1001, 80, 2, 11, 200, 10);
    expect(ct.tag(ct.lookup(TCP, 1, 7, 1001, 80, 200))).toBe(11);
    expect(ct.sweep(1000)).toBe(33);
    expect(ct.count()).toBe(0);
    expect(liveKeys(ct)).toEqual([]);
    // a fully swept table is as good as new: refill it completely
    for (let i = 0; i < 64; i++) expect(ct.upsert(UDP, i, 8, 9, 10, 1, i, 0, 10)).toBeGreaterThanOrEqual(0);
    for (let i = 0; i < 64; i++) expect(ct.tag(ct.lookup(UDP, i, 8, 9, 10, 0))).toBe(i);
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
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const ct = Conntrack.create(64); // 41 keys in 64 slots: long chains
        const model = new Map<number, { tag: number; expires: number }>();
        let now = 0;
        // keys differ only in ports, and keys 0/32 etc. share the high port bits
        const tuple = (k: number) => [TCP, 0x0a000001, 0x0a000002, k * 1000, 443] as const;
        const live = (k: number) => {
          const e = model.get(k);
          return e !== undefined && e.expires > now ? e : undefined;
        };
        for (const o of ops) {
          if (o.op === 'upsert') {
            const s = ct.upsert(...tuple(o.k), 1, o.tag, now, o.ttl);
            if (s < 0) {
              expect(model.size + (model.has(o.k) ? 0 : 1)).toBeGreaterThan(64);
              continue;
            }
            model.set(o.k, { tag: o.tag, expires: now + o.ttl });
          } else if (o.op === 'remove') {
            const s = ct.lookup(...tuple(o.k), now);
            if (s >= 0) ct.remove(s);
            if (live(o.k)) model.delete(o.k);
          } else if (o.op === 'lookup') {
            const s = ct.lookup(...tuple(o.k), now);
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
        for (let k = 0; k <= 40; k++) {
          const s = ct.lookup(...tuple(k), now);
          expect(s >= 0).toBe(live(k) !== undefined);
        }
        const keys = liveKeys(ct);
        expect(new Set(keys).size).toBe(keys.length);
        expect(keys.length).toBe(model.size);
      }),
      { numRuns: 200 },
    );
  });
});

describe('Conntrack shared by worker threads', () => {
  let compiled: ReturnType<typeof compileTables>;
  beforeAll(() => {
    compiled = compileTables();
  }, 60_000);
  afterAll(() => compiled?.cleanup());

  const WORKERS = 4;
  const KEYS = 100_000; // key k is upserted by workers k%4 and (k+1)%4: 4 x 50,000
  const SHARED = 10_000; // plus keys every worker upserts

  async function run(ct: Conntrack, shortEvery: number, whileRunning?: (done: () => boolean) => void) {
    const control = new SharedArrayBuffer(16);
    const ctl = new Int32Array(control);
    const workers = Array.from(
      { length: WORKERS },
      (_, id) =>
        new Worker(new URL('./conntrack-worker.mjs', import.meta.url), {
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
      expected.add([TCP, (0x0a000000 + k) | 0, 0xc0a80001 | 0, 1024 + (k % 60000), 443 + Math.floor(k / 60000)].join(','));
    }
    const keys = liveKeys(ct);
    expect(keys.length).toBe(expected.size); // no duplicates, nothing lost
    expect(new Set(keys).size).toBe(keys.length);
    for (const k of keys) expect(expected.has(k)).toBe(true);
    expect(ct.count()).toBe(expected.size);
  }

  it('concurrent upserts of overlapping keys leave exactly one entry per key', async () => {
    const ct = Conntrack.create(1 << 18);
    const results = await run(ct, 0);
    for (const r of results) expect(r).toEqual({ full: 0, missing: 0, wrongKey: 0 });
    verify(ct, 0);
  }, 60_000);

  it('sweeps concurrently with upserts without losing or duplicating keys', async () => {
    const ct = Conntrack.create(1 << 18);
    let sweeps = 0;
    // every 3rd key expires at 1; the main thread sweeps at now=5 until the workers finish.
    // A sweep holds every stripe lock: back to back on 2 cores they can starve the
    // workers for minutes, so nap 0.2 ms between sweeps (still many sweeps mid-insert).
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
