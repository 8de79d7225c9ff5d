// Connection tracking: an open-addressing (linear probing) hash table of IPv4
// 5-tuples in ONE SharedArrayBuffer that every worker wraps and mutates in place.
//
// Slot = 8 int32 words: CTRL, PROTO, SRC, DST, PORTS (sport<<16|dport), STATE, TAG, EXPIRES.
// CTRL = (version << 2) | kind, kind one of EMPTY, WRITING, LIVE, DEAD (tombstone).
// Claiming a free slot bumps the version; the version never goes back, so a reader
// can tell that a slot was recycled while it was reading the key (seqlock).
//
// Invariants (the argument for correctness):
//  I1 Probe chains: if slot j holds a LIVE or WRITING key whose home slot is h, no slot
//     in [h, j) (cyclically) is EMPTY, and j is at most MAXPROBE slots from h.
//  I2 Uniqueness: all writers of a given key (upsert, remove, sweep) hold that key's
//     stripe lock (stripe = function of the key hash), so at most one thread at a time
//     scans for the key and decides where it lives: never two live copies. Different
//     keys race only for free slots, and that race is settled by CAS on CTRL.
//  I3 Publication: a key is written while its slot is WRITING and only then published
//     with an atomic store of LIVE (after MAXPROBE was raised to cover it). Lookups take
//     no lock: they skip WRITING/DEAD slots, compare the key of a LIVE slot and re-read
//     CTRL; an unchanged CTRL proves the key they compared was not being recycled.
//     (A seqlock with plain data reads: sound on x86-64, whose loads are not reordered
//     with loads; on arm64 a recycle racing the confirmation is detected in practice
//     but not formally guaranteed by the JS memory model. Fully atomic key reads would
//     close that gap at ~8 ns per Atomics.load in Node 20.)
//  I4 Slots become EMPTY again only in sweep(), which holds EVERY stripe lock (so no
//     insert is mid-scan) and empties a DEAD slot only when the next slot is EMPTY: no
//     chain runs through such a slot (by I1), so I1 still holds and concurrent lookups
//     are unaffected. Otherwise DEAD slots are reused by inserts (first free slot on
//     the probe path), so tombstones do not pile up.
// Slot handles returned by lookup/upsert stay valid until the entry is removed or
// swept; touch/setState on a handle whose entry was swept may hit a recycled slot, so
// callers sweep behind the clock they use for lookups (the engine: 2 s behind).

const MAGIC = 0x434f4e54; // "CONT"
const VERSION = 1;
const COUNT = 16; // own 64-byte line: written by every insert/remove
const MAXPROBE = 32; // own line: read by every lookup, written rarely
const LOCKS = 48;
const STRIPES = 256; // lock stripes, one per 64-byte line
const LOCK_STRIDE = 16;
const SLOTS = LOCKS + STRIPES * LOCK_STRIDE;
const SLOT_WORDS = 8;
const SWEEP_CHUNK = 4096;

const EMPTY = 0;
const WRITING = 1;
const LIVE = 2;
const DEAD = 3;
const KIND = 3;

// slot field offsets
const PROTO = 1;
const SRC = 2;
const DST = 3;
const PORTS = 4;
const STATE = 5;
const TAG = 6;
const EXPIRES = 7;

function hash(proto: number, src: number, dst: number, ports: number): number {
  let h = Math.imul(src, 0x9e3779b1) ^ Math.imul(dst, 0x85ebca77) ^ Math.imul(ports, 0xc2b2ae3d) ^ Math.imul(proto, 0x27d4eb2f);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

export class Conntrack {
  readonly buffer: SharedArrayBuffer;
  readonly capacity: number;
  private readonly t: Int32Array;
  private readonly mask: number;

  /** A table with room for `capacity` entries, rounded up to a power of two. */
  static create(capacity: number): Conntrack {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1 << 26) throw new RangeError(`conntrack: capacity ${capacity} out of range 1..2^26`);
    const cap = Math.max(16, 2 ** Math.ceil(Math.log2(capacity)));
    const buf = new SharedArrayBuffer((SLOTS + cap * SLOT_WORDS) * 4);
    const t = new Int32Array(buf);
    t[0] = MAGIC;
    t[1] = VERSION;
    t[2] = cap;
    return new Conntrack(buf);
  }

  constructor(buf: SharedArrayBuffer) {
    const t = new Int32Array(buf);
    const cap = t[2];
    if (t[0] !== MAGIC || t[1] !== VERSION || t.length !== SLOTS + cap * SLOT_WORDS) throw new Error('conntrack: buffer is not a Conntrack table');
    this.buffer = buf;
    this.t = t;
    this.capacity = cap;
    this.mask = cap - 1;
  }

  /** Slot of the live, unexpired entry for the 5-tuple, or -1. Lock-free. */
  lookup(proto: number, src: number, dst: number, sport: number, dport: number, now: number): number {
    const t = this.t;
    src |= 0;
    dst |= 0;
    const ports = (sport << 16) | (dport & 0xffff);
    let i = hash(proto, src, dst, ports) & this.mask;
    const limit = t[MAXPROBE]; // a stale bound only misses keys inserted concurrently
    // Probe with plain reads (Atomics.load costs ~8 ns in Node 20), then confirm a
    // candidate with the seqlock of I3: CTRL, key, CTRL again.
    for (let d = 0; d <= limit; ) {
      const at = SLOTS + i * SLOT_WORDS;
      const kind = t[at] & KIND;
      if (kind === EMPTY) return -1;
      if (kind === LIVE && t[at + SRC] === src && t[at + DST] === dst && t[at + PORTS] === ports && t[at + PROTO] === proto) {
        const c = Atomics.load(t, at);
        if ((c & KIND) === LIVE && t[at + SRC] === src && t[at + DST] === dst && t[at + PORTS] === ports && t[at + PROTO] === proto && Atomics.load(t, at) === c) {
          return t[at + EXPIRES] > now ? i : -1; // keys are unique (I2)
        }
        continue; // recycled while we compared: look at the slot again
      }
      i = (i + 1) & this.mask;
      d++;
    }
    return -1;
  }

  /**
   * Insert or update the entry: sets state, tag and expiry (now + ttl) either way.
   * Returns its slot, or -1 when the table is full.
   */
  upsert(proto: number, src: number, dst: number, sport: number, dport: number, state: number, tag: number, now: number, ttl: number): number {
    const t = this.t;
    src |= 0;
    dst |= 0;
    const ports = (sport << 16) | (dport & 0xffff);
    const h = hash(proto, src, dst, ports);
    const lock = LOCKS + (h >>> 24) * LOCK_STRIDE;
    this.lock(lock);
    let slot = -1;
    for (;;) {
      const limit = Atomics.load(t, MAXPROBE); // exact: raised before the key's last insert unlocked
      let free = -1;
      let freeDist = 0;
      let i = h & this.mask;
      for (let d = 0; d < this.capacity; d++, i = (i + 1) & this.mask) {
        const at = SLOTS + i * SLOT_WORDS;
        const kind = t[at] & KIND; // plain read: a free slot is re-checked by the CAS below
        if (kind === EMPTY || kind === DEAD) {
          if (free < 0) {
            free = i;
            freeDist = d;
          }
          if (kind === EMPTY) break; // end of chain (I1)
        } else if (kind === LIVE && t[at + SRC] === src && t[at + DST] === dst && t[at + PORTS] === ports && t[at + PROTO] === proto) {
          // Only we may write this key (I2), but the slot may hold another key that is
          // being recycled under our eyes: confirm as lookup does.
          const c = Atomics.load(t, at);
          if ((c & KIND) === LIVE && t[at + SRC] === src && t[at + DST] === dst && t[at + PORTS] === ports && t[at + PROTO] === proto && Atomics.load(t, at) === c) {
            slot = i; // update in place
            break;
          }
          d--; // look at this slot again
          i = (i - 1) & this.mask;
        }
        if (d >= limit && free >= 0) break; // the key cannot sit farther than MAXPROBE (I1)
      }
      if (slot >= 0 || free < 0) break;
      // Claim the free slot; another key's inserter may beat us to it: rescan.
      const at = SLOTS + free * SLOT_WORDS;
      const c = Atomics.load(t, at);
      if ((c & KIND) === WRITING || (c & KIND) === LIVE) continue;
      const mine = ((c + 4) & ~KIND) | WRITING;
      if (Atomics.compareExchange(t, at, c, mine) !== c) continue;
      t[at + PROTO] = proto;
      t[at + SRC] = src;
      t[at + DST] = dst;
      t[at + PORTS] = ports;
      t[at + STATE] = state;
      t[at + TAG] = tag;
      t[at + EXPIRES] = now + ttl;
      for (let m = Atomics.load(t, MAXPROBE); m < freeDist; m = Atomics.load(t, MAXPROBE)) {
        Atomics.compareExchange(t, MAXPROBE, m, freeDist);
      }
      Atomics.store(t, at, (mine & ~KIND) | LIVE); // publish (I3)
      Atomics.add(t, COUNT, 1);
      this.unlock(lock);
      return free;
    }
    if (slot >= 0) {
      const at = SLOTS + slot * SLOT_WORDS;
      t[at + STATE] = state;
      t[at + TAG] = tag;
      t[at + EXPIRES] = now + ttl;
    }
    this.unlock(lock);
    return slot;
  }

  state(slot: number): number {
    return this.t[SLOTS + slot * SLOT_WORDS + STATE];
  }
  tag(slot: number): number {
    return this.t[SLOTS + slot * SLOT_WORDS + TAG];
  }
  expires(slot: number): number {
    return this.t[SLOTS + slot * SLOT_WORDS + EXPIRES];
  }
  touch(slot: number, now: number, ttl: number): void {
    this.t[SLOTS + slot * SLOT_WORDS + EXPIRES] = now + ttl;
  }
  setState(slot: number, state: number): void {
    this.t[SLOTS + slot * SLOT_WORDS + STATE] = state;
  }
  /**
   * Copy the key of `slot` into out[0..4] = proto, src, dst, sport, dport (src/dst as
   * int32) and return true, or return false if the slot holds no live entry. For
   * dumps and tests; does not allocate.
   */
  keyAt(slot: number, out: Int32Array): boolean {
    const t = this.t;
    const at = SLOTS + slot * SLOT_WORDS;
    for (;;) {
      const c = Atomics.load(t, at);
      if ((c & KIND) !== LIVE) return false;
      out[0] = t[at + PROTO];
      out[1] = t[at + SRC];
      out[2] = t[at + DST];
      out[3] = t[at + PORTS] >>> 16;
      out[4] = t[at + PORTS] & 0xffff;
      if (Atomics.load(t, at) === c) return true;
    }
  }
  /**
   * Copy every live, unexpired entry of `from` (another process's table, read
   * from its bytes) into this one, keeping state and expiry and setting `tag`.
   * Safe while this table is in use: each entry goes in by upsert. Returns how
   * many were copied (fewer when this table filled up).
   */
  adopt(from: Conntrack, tag: number, now: number): number {
    const t = from.t, key = new Int32Array(5);
    let n = 0;
    for (let i = 0; i < from.capacity; i++) {
      const at = SLOTS + i * SLOT_WORDS, exp = t[at + EXPIRES];
      if (exp <= now || !from.keyAt(i, key)) continue;
      if (this.upsert(key[0], key[1], key[2], key[3], key[4], t[at + STATE], tag, now, exp - now) >= 0) n++;
    }
    return n;
  }

  /** Number of live entries (expired ones count until swept). */
  count(): number {
    return Atomics.load(this.t, COUNT);
  }

  /** Delete the entry in `slot` (no-op if the slot is not live). */
  remove(slot: number): void {
    const t = this.t;
    const at = SLOTS + slot * SLOT_WORDS;
    const c = Atomics.load(t, at);
    if ((c & KIND) !== LIVE) return;
    const lock = LOCKS + (hash(t[at + PROTO], t[at + SRC], t[at + DST], t[at + PORTS]) >>> 24) * LOCK_STRIDE;
    this.lock(lock);
    // Under the key's lock the slot is ours unless it was recycled meanwhile.
    if (Atomics.compareExchange(t, at, c, (c & ~KIND) | DEAD) === c) Atomics.sub(t, COUNT, 1);
    this.unlock(lock);
  }

  /** Free every entry with expiry <= now; returns how many. Blocks upserts briefly, never lookups. */
  sweep(now: number): number {
    const t = this.t;
    const cap = this.capacity;
    let freed = 0;
    // High chunks first, so a chain's trailing tombstones empty in a single pass.
    for (let hi = cap; hi > 0; hi -= SWEEP_CHUNK) {
      const lo = Math.max(0, hi - SWEEP_CHUNK);
      for (let s = 0; s < STRIPES; s++) this.lock(LOCKS + s * LOCK_STRIDE); // ascending: no deadlock
      for (let i = hi - 1; i >= lo; i--) {
        const at = SLOTS + i * SLOT_WORDS;
        let c = t[at];
        if ((c & KIND) === LIVE && t[at + EXPIRES] <= now) {
          c = (c & ~KIND) | DEAD;
          Atomics.store(t, at, c);
          freed++;
        }
        if ((c & KIND) === DEAD && (t[SLOTS + ((i + 1) & this.mask) * SLOT_WORDS] & KIND) === EMPTY) {
          Atomics.store(t, at, (c & ~KIND) | EMPTY); // chain end (I4)
        }
      }
      for (let s = STRIPES - 1; s >= 0; s--) this.unlock(LOCKS + s * LOCK_STRIDE);
    }
    Atomics.sub(t, COUNT, freed);
    return freed;
  }

  // Futex mutex (Drepper, "Futexes are tricky"): 0 free, 1 held, 2 held with waiters.
  private lock(at: number): void {
    const t = this.t;
    let c = Atomics.compareExchange(t, at, 0, 1);
    if (c === 0) return;
    for (let spin = 0; spin < 100 && c !== 0; spin++) {
      c = Atomics.compareExchange(t, at, 0, 1);
      if (c === 0) return;
    }
    if (c !== 2) c = Atomics.exchange(t, at, 2);
    while (c !== 0) {
      Atomics.wait(t, at, 2);
      c = Atomics.exchange(t, at, 2);
    }
  }
  private unlock(at: number): void {
    if (Atomics.sub(this.t, at, 1) !== 1) {
      Atomics.store(this.t, at, 0);
      Atomics.notify(this.t, at, 1);
    }
  }
}
