// One of several threads hammering a shared Conntrack. Keys are numbered; key k is
// the 5-tuple keyOf(k). All workers wait on a start flag so their upserts overlap.
import { parentPort, workerData } from 'node:worker_threads';

const { moduleUrl, buffer, control, id, workers, keys, shared, shortEvery } = workerData;
const { Conntrack } = await import(moduleUrl);
const ct = new Conntrack(buffer);
const ctl = new Int32Array(control); // [0] start flag, [1] workers done, [2] workers ready
const keyOf = (k) => [6, (0x0a000000 + k) | 0, 0xc0a80001, 1024 + (k % 60000), 443 + Math.floor(k / 60000)];
// keys k with k % shortEvery === 0 (if shortEvery > 0) expire at 1, the rest at 100
const short = (k) => shortEvery > 0 && k % shortEvery === 0;
// key k is mine if it falls in my share, or in the block every worker inserts
const mine = (k) => k >= keys || k % workers === id || k % workers === (id + 1) % workers;

Atomics.add(ctl, 2, 1);
while (Atomics.load(ctl, 0) === 0) Atomics.wait(ctl, 0, 0, 5);

const got = new Int32Array(5);
let full = 0;
let wrongKey = 0;
for (let k = 0; k < keys + shared; k++) {
  if (!mine(k)) continue;
  const [p, s, d, sp, dp] = keyOf(k);
  const slot = ct.upsert(p, s, d, sp, dp, 1, k, 0, short(k) ? 1 : 100);
  if (slot < 0) full++;
  // peek at a key another worker is inserting right now: a hit must carry that key.
  // Not a short-lived key: the main thread sweeps at a later clock (5) than these
  // lookups (0), and a handle to an entry swept meanwhile may already hold another
  // key (conntrack.ts: handles stay valid until the entry is removed or swept).
  const o = (k + 7) % (keys + shared);
  if (short(o)) continue;
  const [op, os, od, osp, odp] = keyOf(o);
  const hit = ct.lookup(op, os, od, osp, odp, 0);
  if (hit >= 0 && (!ct.keyAt(hit, got) || got[1] !== os || got[3] !== osp || got[4] !== odp || ct.tag(hit) !== o)) wrongKey++;
}
let missing = 0;
for (let k = 0; k < keys + shared; k++) {
  if (!mine(k) || short(k)) continue;
  const [p, s, d, sp, dp] = keyOf(k);
  const slot = ct.lookup(p, s, d, sp, dp, 0);
  if (slot < 0 || ct.tag(slot) !== k) missing++;
}
Atomics.add(ctl, 1, 1);
parentPort.postMessage({ full, missing, wrongKey });
