// The SharedArrayBuffer the compiled rule sets live in (PolicyBuffers.blocks). The
// compiler writes each rule set straight into it and never writes a rule set again, so
// several generations of tables share one arena and a change adds only what it rebuilt.
// Growing or compacting makes a new buffer: tables already published keep the old one.

export interface Placed {
  at: number; // offset (in int32s) in the arena
  len: number;
}

export class BlockArena {
  buf: SharedArrayBuffer;
  b: Int32Array;
  end = 1; // offset 0 stays unused: a directory entry of 0 means "not isolated"

  constructor(capacity = 1 << 20) {
    this.buf = new SharedArrayBuffer(4 * capacity);
    this.b = new Int32Array(this.buf);
  }

  /** Room for len int32s at the end; returns its offset. Growing keeps every offset. */
  reserve(len: number): number {
    if (this.end + len > this.b.length) {
      const old = this.b;
      this.buf = new SharedArrayBuffer(4 * Math.max(2 * old.length, this.end + len));
      this.b = new Int32Array(this.buf);
      this.b.set(old.subarray(0, this.end));
    }
    const at = this.end;
    this.end += len;
    return at;
  }

  /** When dead rule sets fill most of the arena: a new one with only `live`, whose offsets change. */
  compact(live: Placed[]): void {
    let size = 1;
    for (const p of live) size += p.len;
    if (this.end < 2 * size + (1 << 16)) return;
    const old = this.b;
    this.buf = new SharedArrayBuffer(4 * 2 * size);
    this.b = new Int32Array(this.buf);
    this.end = 1;
    for (const p of live) {
      this.b.set(old.subarray(p.at, p.at + p.len), this.end);
      p.at = this.end;
      this.end += p.len;
    }
  }
}
