// IPv6 longest-prefix match: a leaf-pushed, path-compressed multibit trie in ONE
// SharedArrayBuffer (a worker wraps the buffer it was posted).
//
// Layout (Int32Array `t` over the whole buffer):
//   t[0..3]           header: MAGIC, format version, total int32 count, prefix count
//   t[4 .. 4+65536)   level 0, indexed by the top 16 address bits
//   then nodes of two kinds, found through entries:
// An entry >= 0 is a final value (0 = no route); an entry < 0 points at a node whose
// absolute index in `t` is `entry & 0x7fffffff`. Node header h = t[n]:
//   BRANCH (h & 4 === 0): t[n+1 ..] are 16 or 256 entries indexed by 4 or 8 address
//       bits, `(a[h & 3] >>> ((h >>> 3) & 31)) & (h >>> 8)` where a[] = address words.
//   CHECK (h === 4): t[n+1..n+8] = mask/bits pairs for words 0..3; if every
//       (w_i & mask_i) === bits_i the result is entry t[n+9], else it is t[n+10]
//       (the value inherited at this point).
// Why CHECK: IPv6 prefixes are long and sparse, so a plain stride-4 trie spends
// ~8-12 single-child nodes per /48../64 prefix. One CHECK node replaces any run of
// single-child levels (path compression), and a subtree holding one route becomes
// a single CHECK that tests the whole remaining prefix: a typical lookup is level 0,
// one or two BRANCH nodes, one CHECK. Branch nodes sit on 4-bit boundaries and
// never straddle a word; leaf pushing copies the covering value into every entry
// below it, so lookups walk down without backtracking.

import { highBits, maskWords } from '../../lib/ipv6.js';
export { parseIPv6Address as parseIPv6, formatIPv6Address as formatIPv6, parseIPv6Cidr as parseCidr6 } from '../../lib/ipv6.js';

const MAGIC = 0x4c504d36; // "LPM6"
const VERSION = 1;
const HDR = 4;
const L0_BITS = 16;
const CHILD = 0x80000000 | 0;
const MAX_VALUE = 0x7fffffff;
const CHECK = 4;
const WIDE_MIN_ROUTES = 24; // routes under a BRANCH that make it 256-way
const CHECK_SIZE = 11;

interface Route {
  w: Uint32Array; // masked prefix, 4 words
  len: number;
  value: number;
}

function checkRoute(len: number, value?: number): void {
  if (!Number.isInteger(len) || len < 0 || len > 128) throw new RangeError(`lpm6: prefix length ${len} out of range 0..128`);
  if (value !== undefined && (!Number.isInteger(value) || value < 1 || value > MAX_VALUE)) {
    throw new RangeError(`lpm6: value ${value} out of range 1..0x7fffffff (0 means "no route")`);
  }
}

const keyOf = (w: Uint32Array, len: number): string => `${w[0]}:${w[1]}:${w[2]}:${w[3]}/${len}`;

/** Common leading bits of two routes' prefixes (0..128). */
function commonBits(a: Uint32Array, b: Uint32Array): number {
  for (let i = 0; i < 4; i++) {
    const x = a[i] ^ b[i];
    if (x !== 0) return 32 * i + Math.clz32(x);
  }
  return 128;
}

/** The `n` address bits at bit offset `pos` (they lie within one word). */
const bitsAt = (w: Uint32Array, pos: number, n: number): number => (w[pos >>> 5] >>> (32 - n - (pos & 31))) & ((1 << n) - 1);

export class Lpm6Builder {
  private readonly routes = new Map<string, Route>();

  set(addr: ArrayLike<number>, len: number, value: number): void {
    checkRoute(len, value);
    const w = maskWords(addr, len);
    this.routes.set(keyOf(w, len), { w, len, value });
  }
  delete(addr: ArrayLike<number>, len: number): boolean {
    checkRoute(len);
    return this.routes.delete(keyOf(maskWords(addr, len), len));
  }
  has(addr: ArrayLike<number>, len: number): boolean {
    checkRoute(len);
    return this.routes.has(keyOf(maskWords(addr, len), len));
  }
  get size(): number {
    return this.routes.size;
  }

  build(): Lpm6Table {
    // Address order (then length) keeps every subtree's routes contiguous.
    const all = Array.from(this.routes.values()).sort((a, b) => {
      for (let i = 0; i < 4; i++) if (a.w[i] !== b.w[i]) return a.w[i] - b.w[i];
      return a.len - b.len;
    });
    const out = new Emitter(HDR + (1 << L0_BITS));
    const short = all.filter((r) => r.len <= L0_BITS).sort((a, b) => a.len - b.len);
    for (const r of short) {
      const start = HDR + (r.w[0] >>> 16);
      out.t.fill(r.value, start, start + (1 << (L0_BITS - r.len)));
    }
    const long = all.filter((r) => r.len > L0_BITS);
    for (let i = 0; i < long.length; ) {
      const top = long[i].w[0] >>> 16;
      let j = i + 1;
      while (j < long.length && long[j].w[0] >>> 16 === top) j++;
      const e = out.node(long.slice(i, j), L0_BITS, out.t[HDR + top]);
      out.t[HDR + top] = e;
      i = j;
    }
    const buf = new SharedArrayBuffer(out.used * 4);
    const t = new Int32Array(buf);
    t.set(out.t.subarray(0, out.used));
    t[0] = MAGIC;
    t[1] = VERSION;
    t[2] = out.used;
    t[3] = all.length;
    return new Lpm6Table(buf);
  }
}

/** Appends nodes to a growable Int32Array while compiling. */
class Emitter {
  t: Int32Array;
  used: number;
  constructor(initial: number) {
    this.t = new Int32Array(initial * 2);
    this.used = initial;
  }
  alloc(n: number): number {
    if (this.used + n > this.t.length) {
      const bigger = new Int32Array(this.t.length * 2);
      bigger.set(this.t);
      this.t = bigger;
    }
    const at = this.used;
    this.used += n;
    return at;
  }

  /**
   * Entry for the subtree at bit `pos` (multiple of 4) that holds `routes` (sorted,
   * all longer than `pos`, all sharing bits [0,pos)); `def` is the value of the
   * longest route covering the whole subtree.
   */
  node(routes: Route[], pos: number, def: number): number {
    if (routes.length === 0) return def;
    const first = routes[0];
    let minLen = 128;
    for (const r of routes) minLen = Math.min(minLen, r.len);
    const common = Math.min(minLen, commonBits(first.w, routes[routes.length - 1].w));
    const q = common & ~3;
    if (routes.length === 1) {
      // a lone route: one CHECK of all its remaining bits
      return first.value === def ? def : this.check(first.w, pos, first.len, first.value, def);
    }
    if (q > pos) {
      // Every route agrees on bits [pos,q): one CHECK tests them. A route ending
      // exactly at q (at most one: routes are distinct) becomes the inherited value.
      let inner = def;
      let rest = routes;
      if (first.len === q) {
        inner = first.value;
        rest = routes.slice(1);
      }
      const next = this.node(rest, q, inner);
      return next === def ? def : this.check(first.w, pos, q, next, def);
    }
    // Routes diverge or end within the next 4 bits: a BRANCH node; 256-way where
    // many routes share it (one level instead of two), else 16-way to save memory.
    const stride = routes.length >= WIDE_MIN_ROUTES && (pos & 31) <= 24 ? 8 : 4;
    const size = 1 << stride;
    const n = this.alloc(1 + size);
    this.t[n] = (pos >>> 5) | ((32 - stride - (pos & 31)) << 3) | ((size - 1) << 8);
    const entries = this.t.subarray(n + 1, n + 1 + size);
    entries.fill(def);
    const end = pos + stride;
    const ending = routes.filter((r) => r.len <= end).sort((a, b) => a.len - b.len);
    for (const r of ending) {
      const start = bitsAt(r.w, pos, stride);
      entries.fill(r.value, start, start + (1 << (end - r.len)));
    }
    const deeper = routes.filter((r) => r.len > end);
    const defaults = Array.from(entries);
    for (let i = 0; i < deeper.length; ) {
      const k = bitsAt(deeper[i].w, pos, stride);
      let j = i + 1;
      while (j < deeper.length && bitsAt(deeper[j].w, pos, stride) === k) j++;
      const e = this.node(deeper.slice(i, j), end, defaults[k]);
      this.t[n + 1 + k] = e; // this.t may have been reallocated by the recursion
      i = j;
    }
    return CHILD | n;
  }

  /** CHECK node: address bits [from,to) must equal those of `w` to reach `next`. */
  check(w: Uint32Array, from: number, to: number, next: number, def: number): number {
    const n = this.alloc(CHECK_SIZE);
    this.t[n] = CHECK;
    for (let i = 0; i < 4; i++) {
      const lo = Math.max(0, Math.min(32, from - 32 * i));
      const hi = Math.max(0, Math.min(32, to - 32 * i));
      const mask = highBits(hi) & ~highBits(lo);
      this.t[n + 1 + 2 * i] = mask;
      this.t[n + 2 + 2 * i] = w[i] & mask;
    }
    this.t[n + 9] = next;
    this.t[n + 10] = def;
    return CHILD | n;
  }
}

export class Lpm6Table {
  readonly buffer: SharedArrayBuffer;
  private readonly t: Int32Array;
  private readonly a = new Int32Array(4); // lookup scratch: the address words, indexable

  constructor(buf: SharedArrayBuffer) {
    const t = new Int32Array(buf);
    if (t.length < HDR + (1 << L0_BITS) || t[0] !== MAGIC || t[1] !== VERSION || t[2] !== t.length) {
      throw new Error('lpm6: buffer is not an Lpm6Table');
    }
    this.buffer = buf;
    this.t = t;
  }

  /** Value of the longest prefix containing w0:w1:w2:w3 (most significant first), or 0. */
  lookup(w0: number, w1: number, w2: number, w3: number): number {
    const t = this.t;
    let e = t[HDR + (w0 >>> 16)];
    if (e >= 0) return e;
    const a = this.a;
    a[0] = w0;
    a[1] = w1;
    a[2] = w2;
    a[3] = w3;
    do {
      const n = e & MAX_VALUE;
      const h = t[n];
      if (h !== CHECK) e = t[n + 1 + ((a[h & 3] >>> ((h >>> 3) & 31)) & (h >>> 8))];
      else {
        const miss = ((w0 & t[n + 1]) ^ t[n + 2]) | ((w1 & t[n + 3]) ^ t[n + 4]) | ((w2 & t[n + 5]) ^ t[n + 6]) | ((w3 & t[n + 7]) ^ t[n + 8]);
        e = miss === 0 ? t[n + 9] : t[n + 10];
      }
    } while (e < 0);
    return e;
  }

  get bytes(): number {
    return this.buffer.byteLength;
  }
  /** Number of prefixes the table was built from. */
  get size(): number {
    return this.t[3];
  }
}
