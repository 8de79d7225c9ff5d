// IPv4 longest-prefix match: a leaf-pushed multibit trie (DIR-16-4-4-4-4) in ONE
// SharedArrayBuffer, so a worker can wrap the buffer it was posted.
//
// Layout (Int32Array `t` over the whole buffer):
//   t[0..3]            header: MAGIC, format version, total int32 count, prefix count
//   t[4 .. 4+65536)    level 0, indexed by the top 16 address bits
//   then 16-entry chunks, each indexed by the next 4 bits (one chunk = one 64-byte line)
// An entry >= 0 is a final value (0 = no route); an entry < 0 is a child chunk whose
// absolute index in `t` is `entry & 0x7fffffff`. Leaf pushing (controlled prefix
// expansion) copies the covering value into every entry below it, so a lookup just
// walks down until it meets a value: at most 5 loads, no backtracking.
// Why stride 4 rather than 8 below level 0: for 100k scattered prefixes the 1 KiB
// chunks of a 16-8-8 trie cost ~15x the memory, and the extra cache misses of the
// bigger table outweigh the extra levels.
// Tables are immutable once built: Lpm4Builder keeps the prefix set and build()
// compiles a fresh buffer; the engine publishes it by generation swap.
import { maskPrefix } from '../../lib/ipv4.js';

const MAGIC = 0x4c504d34; // "LPM4"
const VERSION = 1;
const HDR = 4;
const L0_BITS = 16;
const STRIDE = 4;
const CHUNK = 1 << STRIDE;
const CHILD = 0x80000000 | 0;
const MAX_VALUE = 0x7fffffff;

/** Normalize `prefix` to uint32 with the bits past `len` cleared. */

function checkRoute(len: number, value?: number): void {
  if (!Number.isInteger(len) || len < 0 || len > 32) throw new RangeError(`lpm4: prefix length ${len} out of range 0..32`);
  if (value !== undefined && (!Number.isInteger(value) || value < 1 || value > MAX_VALUE)) {
    throw new RangeError(`lpm4: value ${value} out of range 1..0x7fffffff (0 means "no route")`);
  }
}

export class Lpm4Builder {
  // key = maskedPrefix * 64 + len (exact in a double); value = route value
  private readonly routes = new Map<number, number>();

  set(prefix: number, len: number, value: number): void {
    checkRoute(len, value);
    this.routes.set(maskPrefix(prefix, len) * 64 + len, value);
  }
  delete(prefix: number, len: number): boolean {
    checkRoute(len);
    return this.routes.delete(maskPrefix(prefix, len) * 64 + len);
  }
  has(prefix: number, len: number): boolean {
    checkRoute(len);
    return this.routes.has(maskPrefix(prefix, len) * 64 + len);
  }
  get size(): number {
    return this.routes.size;
  }

  build(): Lpm4Table {
    // Insert shortest first: a longer prefix then simply overwrites the expanded
    // entries of the shorter ones it nests in, and a child chunk is always created
    // after every prefix that covers it, inheriting their value.
    const keys = Array.from(this.routes.keys()).sort((a, b) => a % 64 - b % 64 || a - b);
    let t = new Int32Array(HDR + (1 << L0_BITS) + 256 * CHUNK);
    let used = HDR + (1 << L0_BITS);
    for (const key of keys) {
      const len = key % 64;
      const prefix = (key - len) / 64;
      const value = this.routes.get(key)!;
      let idx = HDR + (prefix >>> (32 - L0_BITS));
      let end = L0_BITS; // address bits consumed by the levels so far
      for (;;) {
        if (len <= end) {
          // ends in this level: fill its 2^(end-len) expanded entries
          t.fill(value, idx, idx + (1 << (end - len)));
          break;
        }
        let e = t[idx];
        if (e >= 0) {
          if (used + CHUNK > t.length) {
            const bigger = new Int32Array(t.length * 2);
            bigger.set(t);
            t = bigger;
          }
          t.fill(e, used, used + CHUNK); // child inherits the covering value
          e = CHILD | used;
          t[idx] = e;
          used += CHUNK;
        }
        end += STRIDE;
        idx = (e & MAX_VALUE) + ((prefix >>> (32 - end)) & (CHUNK - 1));
      }
    }
    const buf = new SharedArrayBuffer(used * 4);
    const out = new Int32Array(buf);
    out.set(t.subarray(0, used));
    out[0] = MAGIC;
    out[1] = VERSION;
    out[2] = used;
    out[3] = keys.length;
    return new Lpm4Table(buf);
  }
}

export class Lpm4Table {
  readonly buffer: SharedArrayBuffer;
  private readonly t: Int32Array;

  constructor(buf: SharedArrayBuffer) {
    const t = new Int32Array(buf);
    if (t.length < HDR + (1 << L0_BITS) || t[0] !== MAGIC || t[1] !== VERSION || t[2] !== t.length) {
      throw new Error('lpm4: buffer is not an Lpm4Table');
    }
    this.buffer = buf;
    this.t = t;
  }

  /** Value of the longest prefix containing `addr` (uint32 or int32), or 0. */
  lookup(addr: number): number {
    const t = this.t;
    let e = t[HDR + (addr >>> 16)];
    if (e >= 0) return e;
    e = t[(e & MAX_VALUE) + ((addr >>> 12) & 15)];
    if (e >= 0) return e;
    e = t[(e & MAX_VALUE) + ((addr >>> 8) & 15)];
    if (e >= 0) return e;
    e = t[(e & MAX_VALUE) + ((addr >>> 4) & 15)];
    if (e >= 0) return e;
    return t[(e & MAX_VALUE) + (addr & 15)];
  }

  get bytes(): number {
    return this.buffer.byteLength;
  }
  /** Number of prefixes the table was built from. */
  get size(): number {
    return this.t[3];
  }
}
