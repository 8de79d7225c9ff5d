// An open-addressing hash table from a key of three int32s to an int32, in typed arrays:
// the rule set compiler looks classes up by 64-bit rule-set hashes a million times per
// compile, and Map keys of that width would be strings or heap numbers (garbage).

function mix(x: number, seed: number): number {
  let h = Math.imul(x ^ seed, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  return h ^ (h >>> 16);
}

export class KeyTable {
  private k1 = new Int32Array(0);
  private k2 = new Int32Array(0);
  private k3 = new Int32Array(0);
  private v = new Int32Array(0);
  private size = 0;

  constructor(capacity = 16) {
    this.clear(capacity);
  }

  /** Empties the table, with room for `entries` without growing. */
  clear(entries: number): void {
    let cap = 16;
    while (cap < 2 * entries) cap *= 2;
    if (this.v.length < cap) {
      this.k1 = new Int32Array(cap);
      this.k2 = new Int32Array(cap);
      this.k3 = new Int32Array(cap);
      this.v = new Int32Array(cap);
    }
    this.v.fill(-1);
    this.size = 0;
  }

  private slot(a: number, b: number, c: number): number {
    const mask = this.v.length - 1;
    let i = mix(a ^ Math.imul(b, 0x9e3779b1), c) & mask;
    while (this.v[i] !== -1 && (this.k1[i] !== a || this.k2[i] !== b || this.k3[i] !== c)) i = (i + 1) & mask;
    return i;
  }

  /** The value stored for (a, b, c), or -1. */
  get(a: number, b: number, c: number): number {
    return this.v[this.slot(a, b, c)];
  }

  /** Stores value (>= 0) for (a, b, c). */
  set(a: number, b: number, c: number, value: number): void {
    if (2 * (this.size + 1) > this.v.length) this.grow();
    const i = this.slot(a, b, c);
    if (this.v[i] === -1) this.size++;
    this.k1[i] = a;
    this.k2[i] = b;
    this.k3[i] = c;
    this.v[i] = value;
  }

  private grow(): void {
    const [k1, k2, k3, v] = [this.k1, this.k2, this.k3, this.v];
    this.k1 = new Int32Array(v.length * 2);
    this.k2 = new Int32Array(v.length * 2);
    this.k3 = new Int32Array(v.length * 2);
    this.v = new Int32Array(v.length * 2).fill(-1);
    this.size = 0;
    for (let i = 0; i < v.length; i++) if (v[i] !== -1) this.set(k1[i], k2[i], k3[i], v[i]);
  }
}
