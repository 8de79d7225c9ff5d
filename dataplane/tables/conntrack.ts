// Connection tracking: an open-addressing (linear probing) hash table of IPv4 or
// IPv6 5-tuples in ONE SharedArrayBuffer that every worker wraps and mutates in place.
// A table holds one family, fixed at create() and kept in its header (so a worker's
// `new Conntrack(buffer)` knows it): the IPv4 methods (lookup, upsert, keyAt) throw on
// an IPv6 table and the IPv6 ones (lookup6, upsert6, keyAt6, remove6) on an IPv4 table.
// The rest (state, tag, expires, touch, setState, remove, count, sweep, adopt) take
// either. The stages use one table of each family.
//
// IPv4 slot = 8 int32 words: CTRL, PROTO, SRC, DST, PORTS (sport<<16|dport), STATE, TAG, EXPIRES.
// IPv6 slot = 16 words: CTRL, PROTO, HASH, -, PORTS, STATE, TAG, EXPIRES, SRC[4], DST[4]
// (addresses as 4 big-endian int32 words each; HASH, the key's hash, is part of the
// key as far as the seqlock goes: compared first, it rejects other keys in one read).
// CTRL = (version << 2) | kind, kind one of EMPTY, WRITING, LIVE, DEAD (tombstone).
// Claiming a free slot bumps the version; the version never goes back, so a reader
// can tell that a slot was recycled while it was reading the key (seqlock).
//
// Invariants (the argument for correctness; the same for both families):
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
//
// Hand-over (engine dumpFlows/adoptFlows) writes a table's bytes and adopt() reads
// them back: the header's FAMILY word is 0 in tables written before IPv6 existed,
// which read as IPv4; the IPv4 layout is unchanged.

const MAGIC = 0x434f4e54; // "CONT"
const VERSION = 1;
const FAMILY = 3; // header word: 4 or 6 (0: an IPv4 table from before families)
const COUNT = 16; // own 64-byte line: written by every insert/remove
const MAXPROBE = 32; // own line: read by every lookup, written rarely
const LOCKS = 48;
const STRIPES = 256; // lock stripes, one per 64-byte line
const LOCK_STRIDE = 16;
const SLOTS = LOCKS + STRIPES * LOCK_STRIDE;
const SLOT_WORDS = 8; // IPv4
const SLOT_WORDS6 = 16; // IPv6
const SWEEP_CHUNK = 4096;

const EMPTY = 0;
const WRITING = 1;
const LIVE = 2;
const DEAD = 3;
const KIND = 3;

// slot field offsets, both families
const PROTO = 1;
const PORTS = 4;
const STATE = 5;
const TAG = 6;
const EXPIRES = 7;
// IPv4 only
const SRC = 2;
const DST = 3;
// IPv6 only
const HASH = 2;
const SRC6 = 8; // 4 words
const DST6 = 12; // 4 words

function hash(proto: number, src: number, dst: number, ports: number): number {
  let h = Math.imul(src, 0x9e3779b1) ^ Math.imul(dst, 0x85ebca77) ^ Math.imul(ports, 0xc2b2ae3d) ^ Math.imul(proto, 0x27d4eb2f);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

// IPv6: one multiply-xorshift step per word. Each step is a bijection of the running
// hash for a given word, so keys that differ in exactly one word never share a
// 32-bit hash; fmix32 (as in hash()) then spreads every bit to the low (slot) and
// high (stripe) bits.
function hash6(proto: number, a: Int32Array, ai: number, b: Int32Array, bi: number, ports: number): number {
  let h = Math.imul(proto ^ 0x5bd1e995, 0x9e3779b1);
  h ^= h >>> 15;
  h = Math.imul(h ^ ports, 0x85ebca77);
  h ^= h >>> 15;
  h = Math.imul(h ^ a[ai], 0xc2b2ae3d);
  h ^= h >>> 15;
  h = Math.imul(h ^ a[ai + 1], 0x27d4eb2f);
  h ^= h >>> 15;
  h = Math.imul(h ^ a[ai + 2], 0x165667b1);
  h ^= h >>> 15;
  h = Math.imul(h ^ a[ai + 3], 0x9e3779b1);
  h ^= h >>> 15;
  h = Math.imul(h ^ b[bi], 0x85ebca77);
  h ^= h >>> 15;
  h = Math.imul(h ^ b[bi + 1], 0xc2b2ae3d);
  h ^= h >>> 15;
  h = Math.imul(h ^ b[bi + 2], 0x27d4eb2f);
  h ^= h >>> 15;
  h = Math.imul(h ^ b[bi + 3], 0x165667b1);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** True when the IPv6 slot at word `at` holds this key (plain reads: callers confirm with CTRL). */
function same6(t: Int32Array, at: number, h: number, proto: number, ports: number, a: Int32Array, ai: number, b: Int32Array, bi: number): boolean {
  return t[at + HASH] === h && t[at + SRC6 + 3] === a[ai + 3] && t[at + DST6 + 3] === b[bi + 3] && t[at + PORTS] === ports
    && t[at + SRC6 + 2] === a[ai + 2] && t[at + DST6 + 2] === b[bi + 2] && t[at + SRC6 + 1] === a[ai + 1] && t[at + DST6 + 1] === b[bi + 1]
    && t[at + SRC6] === a[ai] && t[at + DST6] === b[bi] && t[at + PROTO] === proto;
}

function wrongFamily(method: string, family: number): never {
  const other = method.endsWith('6') ? method.slice(0, -1) : method + '6';
  throw new Error(`conntrack: ${method}() is for IPv${family === 6 ? 4 : 6} tables; this table is IPv${family} (use ${other}())`);
}

export class Conntrack {
  readonly buffer: SharedArrayBuffer;
  readonly capacity: number;
  /** The address family of the keys: 4 (lookup, upsert, keyAt) or 6 (lookup6, upsert6, keyAt6). */
  readonly family: 4 | 6;
  private readonly t: Int32Array;
  private readonly mask: number;
  private readonly v6: boolean;
  private readonly shift: number; // log2 of the slot's words: 3 (IPv4) or 4 (IPv6)

  /** A table of `family` keys with room for `capacity` entries, rounded up to a power of two. */
  static create(capacity: number, family: 4 | 6 = 4): Conntrack {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1 << 26) throw new RangeError(`conntrack: capacity ${capacity} out of range 1..2^26`);
    if (family !== 4 && family !== 6) throw new RangeError(`conntrack: family ${String(family)} is neither 4 nor 6`);
    const cap = Math.max(16, 2 ** Math.ceil(Math.log2(capacity)));
    const buf = new SharedArrayBuffer((SLOTS + cap * (family === 6 ? SLOT_WORDS6 : SLOT_WORDS)) * 4);
    const t = new Int32Array(buf);
    t[0] = MAGIC;
    t[1] = VERSION;
    t[2] = cap;
    t[FAMILY] = family;
    return new Conntrack(buf);
  }

  constructor(buf: SharedArrayBuffer) {
    const t = new Int32Array(buf);
    const cap = t[2];
    const f = t.length > FAMILY ? t[FAMILY] : -1;
    const v6 = f === 6;
    const words = v6 ? SLOT_WORDS6 : SLOT_WORDS;
    if (t.length < SLOTS || t[0] !== MAGIC || t[1] !== VERSION || (f !== 0 && f !== 4 && f !== 6) || t.length !== SLOTS + cap * words) {
      throw new Error('conntrack: buffer is not a Conntrack table');
    }
    this.buffer = buf;
    this.t = t;
    this.capacity = cap;
    this.family = v6 ? 6 : 4;
    this.v6 = v6;
    this.shift = v6 ? 4 : 3;
    this.mask = cap - 1;
  }

  /** IPv4: slot of the live, unexpired entry for the 5-tuple, or -1. Lock-free. */
  lookup(proto: number, src: number, dst: number, sport: number, dport: number, now: number): number {
    if (this.v6) wrongFamily('lookup', 6);
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
   * IPv4: insert or update the entry: sets state, tag and expiry (now + ttl) either way.
   * Returns its slot, or -1 when the table is full.
   */
  upsert(proto: number, src: number, dst: number, sport: number, dport: number, state: number, tag: number, now: number, ttl: number): number {
    if (this.v6) wrongFamily('upsert', 6);
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
      this.publish(at, mine, state, tag, now + ttl, freeDist, lock);
      return free;
    }
    if (slot >= 0) this.setFields(SLOTS + slot * SLOT_WORDS, state, tag, now + ttl);
    this.unlock(lock);
    return slot;
  }

  /**
   * IPv6: slot of the live, unexpired entry for the 5-tuple, or -1. Lock-free.
   * The source address is a[ai..ai+3], the destination b[bi..bi+3]: 4 words each,
   * big-endian word order as read from the packet.
   */
  lookup6(proto: number, a: Int32Array, ai: number, b: Int32Array, bi: number, sport: number, dport: number, now: number): number {
    if (!this.v6) wrongFamily('lookup6', 4);
    const t = this.t;
    const ports = (sport << 16) | (dport & 0xffff);
    const h = hash6(proto, a, ai, b, bi, ports);
    let i = h & this.mask;
    const limit = t[MAXPROBE];
    for (let d = 0; d <= limit; ) {
      const at = SLOTS + i * SLOT_WORDS6;
      const kind = t[at] & KIND;
      if (kind === EMPTY) return -1;
      if (kind === LIVE && same6(t, at, h, proto, ports, a, ai, b, bi)) {
        const c = Atomics.load(t, at);
        if ((c & KIND) === LIVE && same6(t, at, h, proto, ports, a, ai, b, bi) && Atomics.load(t, at) === c) {
          return t[at + EXPIRES] > now ? i : -1;
        }
        continue;
      }
      i = (i + 1) & this.mask;
      d++;
    }
    return -1;
  }

  /** IPv6: upsert() for the key of lookup6(). */
  upsert6(proto: number, a: Int32Array, ai: number, b: Int32Array, bi: number, sport: number, dport: number, state: number, tag: number, now: number, ttl: number): number {
    if (!this.v6) wrongFamily('upsert6', 4);
    const t = this.t;
    const ports = (sport << 16) | (dport & 0xffff);
    const h = hash6(proto, a, ai, b, bi, ports);
    const lock = LOCKS + (h >>> 24) * LOCK_STRIDE;
    this.lock(lock);
    let slot = -1;
    for (;;) {
      const limit = Atomics.load(t, MAXPROBE);
      let free = -1;
      let freeDist = 0;
      let i = h & this.mask;
      for (let d = 0; d < this.capacity; d++, i = (i + 1) & this.mask) {
        const at = SLOTS + i * SLOT_WORDS6;
        const kind = t[at] & KIND;
        if (kind === EMPTY || kind === DEAD) {
          if (free < 0) {
            free = i;
            freeDist = d;
          }
          if (kind === EMPTY) break;
        } else if (kind === LIVE && same6(t, at, h, proto, ports, a, ai, b, bi)) {
          const c = Atomics.load(t, at);
          if ((c & KIND) === LIVE && same6(t, at, h, proto, ports, a, ai, b, bi) && Atomics.load(t, at) === c) {
            slot = i;
            break;
          }
          d--;
          i = (i - 1) & this.mask;
        }
        if (d >= limit && free >= 0) break;
      }
      if (slot >= 0 || free < 0) break;
      const at = SLOTS + free * SLOT_WORDS6;
      const c = Atomics.load(t, at);
      if ((c & KIND) === WRITING || (c & KIND) === LIVE) continue;
      const mine = ((c + 4) & ~KIND) | WRITING;
      if (Atomics.compareExchange(t, at, c, mine) !== c) continue;
      t[at + PROTO] = proto;
      t[at + HASH] = h;
      t[at + PORTS] = ports;
      t[at + SRC6] = a[ai];
      t[at + SRC6 + 1] = a[ai + 1];
      t[at + SRC6 + 2] = a[ai + 2];
      t[at + SRC6 + 3] = a[ai + 3];
      t[at + DST6] = b[bi];
      t[at + DST6 + 1] = b[bi + 1];
      t[at + DST6 + 2] = b[bi + 2];
      t[at + DST6 + 3] = b[bi + 3];
      this.publish(at, mine, state, tag, now + ttl, freeDist, lock);
      return free;
    }
    if (slot >= 0) this.setFields(SLOTS + slot * SLOT_WORDS6, state, tag, now + ttl);
    this.unlock(lock);
    return slot;
  }

  private setFields(at: number, state: number, tag: number, expires: number): void {
    const t = this.t;
    t[at + STATE] = state;
    t[at + TAG] = tag;
    t[at + EXPIRES] = expires;
  }

  // The end of an insert, its key written into the claimed slot at `at`: the
  // rest of the entry, MAXPROBE raised to cover it, then LIVE (I3).
  private publish(at: number, mine: number, state: number, tag: number, expires: number, freeDist: number, lock: number): void {
    const t = this.t;
    this.setFields(at, state, tag, expires);
    for (let m = Atomics.load(t, MAXPROBE); m < freeDist; m = Atomics.load(t, MAXPROBE)) {
      Atomics.compareExchange(t, MAXPROBE, m, freeDist);
    }
    Atomics.store(t, at, (mine & ~KIND) | LIVE); // publish (I3)
    Atomics.add(t, COUNT, 1);
    this.unlock(lock);
  }

  // Either family: a slot's fields other than the key sit at the same offsets.
  state(slot: number): number {
    return this.t[SLOTS + (slot << this.shift) + STATE];
  }
  tag(slot: number): number {
    return this.t[SLOTS + (slot << this.shift) + TAG];
  }
  expires(slot: number): number {
    return this.t[SLOTS + (slot << this.shift) + EXPIRES];
  }
  touch(slot: number, now: number, ttl: number): void {
    this.t[SLOTS + (slot << this.shift) + EXPIRES] = now + ttl;
  }
  setState(slot: number, state: number): void {
    this.t[SLOTS + (slot << this.shift) + STATE] = state;
  }
  /**
   * IPv4: copy the key of `slot` into out[0..4] = proto, src, dst, sport, dport (src/dst
   * as int32) and return true, or return false if the slot holds no live entry. For
   * dumps and tests; does not allocate.
   */
  keyAt(slot: number, out: Int32Array): boolean {
    if (this.v6) wrongFamily('keyAt', 6);
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
   * IPv6: copy the key of `slot` into out[0..10] = proto, src[4], dst[4], sport, dport
   * and return true, or return false if the slot holds no live entry. Does not allocate.
   */
  keyAt6(slot: number, out: Int32Array): boolean {
    if (!this.v6) wrongFamily('keyAt6', 4);
    const t = this.t;
    const at = SLOTS + slot * SLOT_WORDS6;
    for (;;) {
      const c = Atomics.load(t, at);
      if ((c & KIND) !== LIVE) return false;
      out[0] = t[at + PROTO];
      for (let w = 0; w < 4; w++) {
        out[1 + w] = t[at + SRC6 + w];
        out[5 + w] = t[at + DST6 + w];
      }
      out[9] = t[at + PORTS] >>> 16;
      out[10] = t[at + PORTS] & 0xffff;
      if (Atomics.load(t, at) === c) return true;
    }
  }
  /**
   * Copy every live, unexpired entry of `from` (another process's table, read
   * from its bytes; the same family as this one) into this one, keeping state and
   * expiry and setting `tag`. Safe while this table is in use: each entry goes in by
   * upsert. Returns how many were copied (fewer when this table filled up).
   */
  adopt(from: Conntrack, tag: number, now: number): number {
    if (from.family !== this.family) throw new Error(`conntrack: cannot adopt an IPv${from.family} table into an IPv${this.family} table`);
    const t = from.t;
    let n = 0;
    if (this.v6) {
      const key = new Int32Array(11);
      for (let i = 0; i < from.capacity; i++) {
        const at = SLOTS + i * SLOT_WORDS6, exp = t[at + EXPIRES], state = t[at + STATE];
        if (exp <= now || !from.keyAt6(i, key)) continue;
        if (this.upsert6(key[0], key, 1, key, 5, key[9], key[10], state, tag, now, exp - now) >= 0) n++;
      }
      return n;
    }
    const key = new Int32Array(5);
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

  /** Delete the entry in `slot` (no-op if the slot is not live, or is -1). Either family. */
  remove(slot: number): void {
    if (!(slot >= 0 && slot < this.capacity)) return; // not a handle (lookup's -1)
    const t = this.t;
    const at = SLOTS + (slot << this.shift);
    const c = Atomics.load(t, at);
    if ((c & KIND) !== LIVE) return;
    // The key's stripe, from a key that may be being recycled: then the CAS below fails.
    const h = this.v6 ? t[at + HASH] : hash(t[at + PROTO], t[at + SRC], t[at + DST], t[at + PORTS]);
    const lock = LOCKS + (h >>> 24) * LOCK_STRIDE;
    this.lock(lock);
    // Under the key's lock the slot is ours unless it was recycled meanwhile.
    if (Atomics.compareExchange(t, at, c, (c & ~KIND) | DEAD) === c) Atomics.sub(t, COUNT, 1);
    this.unlock(lock);
  }
  /** remove() of an IPv6 table's slot (remove() takes either family; this one checks). */
  remove6(slot: number): void {
    if (!this.v6) wrongFamily('remove6', 4);
    this.remove(slot);
  }

  /** Free every entry with expiry <= now; returns how many. Blocks upserts briefly, never lookups. Either family. */
  sweep(now: number): number {
    const t = this.t;
    const cap = this.capacity;
    const shift = this.shift;
    let freed = 0;
    // High chunks first, so a chain's trailing tombstones empty in a single pass.
    for (let hi = cap; hi > 0; hi -= SWEEP_CHUNK) {
      const lo = Math.max(0, hi - SWEEP_CHUNK);
      for (let s = 0; s < STRIPES; s++) this.lock(LOCKS + s * LOCK_STRIDE); // ascending: no deadlock
      for (let i = hi - 1; i >= lo; i--) {
        const at = SLOTS + (i << shift);
        let c = t[at];
        if ((c & KIND) === LIVE && t[at + EXPIRES] <= now) {
          c = (c & ~KIND) | DEAD;
          Atomics.store(t, at, c);
          freed++;
        }
        if ((c & KIND) === DEAD && (t[SLOTS + (((i + 1) & this.mask) << shift)] & KIND) === EMPTY) {
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
