// One of several threads hammering a shared IPv6 Conntrack (the IPv6 twin of
// conntrack-worker.mjs). Key k is the 5-tuple keyOf(k); all workers wait on a start
// flag so their upserts overlap.
import { parentPort, workerData } from 'node:worker_threads';

const { moduleUrl, buffer, control, id, workers, keys, shared, shortEvery } = workerData;
const { Conntrack } = await import(moduleUrl);
const ct = new Conntrack(buffer);
const ctl = new Int32Array(control); // [0] start flag, [1] workers done, [2] workers ready
if (ct.family !== 6) throw new Error(`worker: table family ${ct.family}, expected 6`);

// Even k: source fd00:10:244:<lo>>16>::<lo & 0xffff> (lo = k >> 1); odd k: source
// fd01:<lo & 0xffff>:244:<lo>>16>::7 (keys that differ only in the first word).
// Destination fd00:10:96::a; source port from k.
// Must match keyOf in conntrack6.test.ts.
function keyOf(k, src, dst) {
  const lo = k >>> 1;
  src[0] = (k & 1) ? (0xfd010000 | (lo & 0xffff)) | 0 : 0xfd000010 | 0;
  src[1] = (0x02440000 | (lo >>> 16)) | 0;
  src[2] = 0;
  src[3] = (k & 1) ? 7 : lo & 0xffff;
  dst[0] = 0xfd000010 | 0;
  dst[1] = 0x00960000;
  dst[2] = 0;
  dst[3] = 10;
  return [6, 1024 + (k % 7), 443];
}
const short = (k) => shortEvery > 0 && k % shortEvery === 0;
const mine = (k) => k >= keys || k % workers === id || k % workers === (id + 1) % workers;

Atomics.add(ctl, 2, 1);
while (Atomics.load(ctl, 0) === 0) Atomics.wait(ctl, 0, 0, 5);

const src = new Int32Array(4), dst = new Int32Array(4), got = new Int32Array(11);
let full = 0;
let wrongKey = 0;
for (let k = 0; k < keys + shared; k++) {
  if (!mine(k)) continue;
  const [p, sp, dp] = keyOf(k, src, dst);
  if (ct.upsert6(p, src, 0, dst, 0, sp, dp, 1, k, 0, short(k) ? 1 : 100) < 0) full++;
  // peek at a key another worker is inserting right now: a hit must carry that key
  const o = (k + 7) % (keys + shared);
  if (short(o)) continue;
  const [op, osp, odp] = keyOf(o, src, dst);
  const hit = ct.lookup6(op, src, 0, dst, 0, osp, odp, 0);
  if (hit >= 0) {
    let same = ct.keyAt6(hit, got) && got[0] === op && got[9] === osp && got[10] === odp && ct.tag(hit) === o;
    for (let w = 0; w < 4; w++) same &&= got[1 + w] === src[w] && got[5 + w] === dst[w];
    if (!same) wrongKey++;
  }
}
let missing = 0;
for (let k = 0; k < keys + shared; k++) {
  if (!mine(k) || short(k)) continue;
  const [p, sp, dp] = keyOf(k, src, dst);
  const slot = ct.lookup6(p, src, 0, dst, 0, sp, dp, 0);
  if (slot < 0 || ct.tag(slot) !== k) missing++;
}
Atomics.add(ctl, 1, 1);
parentPort.postMessage({ full, missing, wrongKey });
