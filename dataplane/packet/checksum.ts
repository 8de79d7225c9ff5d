// Internet checksum (RFC 1071) and incremental update (RFC 1624).
// Sums are plain non-negative numbers; csumAdd returns a partially folded sum
// (< 2^17) so callers can chain additions without overflow concerns.

// Detected once: the Uint32 fast path sums little-endian halves and swaps at the end.
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// Work between folds, sized so accumulators stay small integers (V8 SMIs,
// < 2^30) and `>>> 16` folding stays exact (< 2^32).
// csumAdd: hi*256 + lo <= 16384/2 * 255 * 257 ≈ 5.4e8.
const CHUNK = 16384;
// csumAdd32 sums whole 32-bit words in a double (exact below 2^53): 2^20
// words of < 2^32 each stay far below it. Folding the 32-bit sum's halves
// gives the 16-bit one's-complement sum, as 2^16 ≡ 1 (mod 0xffff).
const CHUNK32 = 1 << 20;

/**
 * Add bytes [off, off+len) to a running one's-complement sum of big-endian
 * 16-bit words (pairs start at `off`; an odd trailing byte is padded with 0).
 * `sum` may be any non-negative integer < 2^53. Returns a sum < 2^17.
 */
export function csumAdd(b: Uint8Array, off: number, len: number, sum: number): number {
  let acc = sum > 0xffffffff ? (sum % 0x10000) + Math.floor(sum / 0x10000) : sum;
  acc = (acc & 0xffff) + (acc >>> 16);
  let i = off;
  const end = off + (len & ~1);
  while (i < end) {
    // High and low bytes are summed separately: fewer shifts in the hot loop.
    let hi = 0;
    let lo = 0;
    const stop = end - i > CHUNK ? i + CHUNK : end;
    const stop16 = stop - 15;
    for (; i < stop16; i += 16) {
      hi += b[i] + b[i + 2] + b[i + 4] + b[i + 6] + b[i + 8] + b[i + 10] + b[i + 12] + b[i + 14];
      lo += b[i + 1] + b[i + 3] + b[i + 5] + b[i + 7] + b[i + 9] + b[i + 11] + b[i + 13] + b[i + 15];
    }
    for (; i < stop; i += 2) {
      hi += b[i];
      lo += b[i + 1];
    }
    acc += hi * 256 + lo;
    acc = (acc & 0xffff) + (acc >>> 16);
  }
  if (len & 1) acc += b[end] << 8;
  return acc;
}

/**
 * Fast variant reading 4 bytes at a time. `w` must be a Uint32Array over the
 * same memory as `b` with the same start (create once per arena, e.g. with
 * wordsOf(b)); `off` is a byte offset into `b` as for csumAdd. Same result.
 */
export function csumAdd32(b: Uint8Array, w: Uint32Array, off: number, len: number, sum: number): number {
  if (len < 32) return csumAdd(b, off, len, sum);
  // Sum with pairs aligned on even absolute positions, bytes weighted as the
  // host loads them (LE: even position = low byte). Byte order and pair phase
  // only swap the folded result (RFC 1071 §2(B)), fixed up at the end.
  let acc = 0;
  let i = off;
  const end = off + len;
  // Head: up to 3 bytes to reach 4-byte alignment.
  for (; i & 3 && i < end; i++) acc += (i & 1) === (LITTLE_ENDIAN ? 1 : 0) ? b[i] << 8 : b[i];
  let k = i >>> 2;
  const kend = end >>> 2;
  while (k < kend) {
    let s = 0;
    const stop = kend - k > CHUNK32 ? k + CHUNK32 : kend;
    const stop4 = stop - 3;
    for (; k < stop4; k += 4) s += w[k] + w[k + 1] + w[k + 2] + w[k + 3];
    for (; k < stop; k++) s += w[k];
    const lo = s % 0x100000000;
    acc += (s - lo) / 0x100000000 + (lo & 0xffff) + Math.floor(lo / 0x10000);
    acc = (acc & 0xffff) + (acc >>> 16);
  }
  for (i = k << 2; i < end; i++) acc += (i & 1) === (LITTLE_ENDIAN ? 1 : 0) ? b[i] << 8 : b[i];
  acc = (acc & 0xffff) + (acc >>> 16);
  acc = (acc & 0xffff) + (acc >>> 16);
  // acc is now the sum with big-endian pairing on even positions (if BE host)
  // or its byte swap (LE host). Pairing from an odd `off` swaps once more.
  if (LITTLE_ENDIAN !== ((off & 1) === 1)) acc = ((acc & 0xff) << 8) | (acc >>> 8);
  let base = sum > 0xffffffff ? (sum % 0x10000) + Math.floor(sum / 0x10000) : sum;
  base = (base & 0xffff) + (base >>> 16);
  return base + acc;
}

/** Uint32 view for csumAdd32 (control path: allocates; b.byteOffset must be 4-aligned). */
export function wordsOf(b: Uint8Array): Uint32Array {
  if (b.byteOffset & 3) throw new RangeError('wordsOf: byteOffset must be 4-aligned');
  return new Uint32Array(b.buffer, b.byteOffset, b.byteLength >>> 2);
}

/** Fold to 16 bits and complement: the value to store in a checksum field. */
export function csumFold(sum: number): number {
  if (sum > 0xffffffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** IPv4 header checksum; the checksum field (off+10) is treated as zero. */
export function ipv4HeaderChecksum(b: Uint8Array, off: number, ihlBytes: number): number {
  const s = csumAdd(b, off, ihlBytes, 0);
  return csumFold(s + (~((b[off + 10] << 8) | b[off + 11]) & 0xffff));
}

/** RFC 1624 eqn 3: HC' = ~(~HC + ~m + m') for one changed 16-bit word. */
export function csumUpdate16(check: number, oldWord: number, newWord: number): number {
  let s = (~check & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff);
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** RFC 1624 eqn 3 for a changed 32-bit value (e.g. an IPv4 address, int32 ok). */
export function csumUpdate32(check: number, oldLong: number, newLong: number): number {
  let s = (~check & 0xffff) + (~(oldLong >>> 16) & 0xffff) + (~oldLong & 0xffff) +
    (newLong >>> 16) + (newLong & 0xffff);
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** Unfolded sum of the IPv4 pseudo-header (RFC 793/768). */
export function pseudoHeaderSum4(src: number, dst: number, proto: number, l4len: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + proto + l4len;
}

/** Unfolded sum of the IPv6 pseudo-header (RFC 8200 §8.1); addresses read from b. */
export function pseudoHeaderSum6(b: Uint8Array, srcOff: number, dstOff: number, proto: number, l4len: number): number {
  return csumAdd(b, srcOff, 16, 0) + csumAdd(b, dstOff, 16, 0) + (l4len >>> 16) + (l4len & 0xffff) + proto;
}

// Offset of the checksum field inside the L4 header for protocols covered by
// the pseudo-header; -1 means the caller must have zeroed it.
function l4CheckOff(proto: number): number {
  if (proto === 6) return 16; // TCP
  if (proto === 17 || proto === 136 || proto === 33) return 6; // UDP, UDP-Lite, DCCP
  if (proto === 58) return 2; // ICMPv6
  return -1;
}

function l4Sum(b: Uint8Array, l4off: number, l4len: number, proto: number, sum: number): number {
  sum = csumAdd(b, l4off, l4len, sum);
  const co = l4CheckOff(proto);
  // Subtracting the stored field (adding its complement) == computing with it zeroed.
  if (co >= 0 && co + 2 <= l4len) sum += ~((b[l4off + co] << 8) | b[l4off + co + 1]) & 0xffff;
  return sum;
}

/**
 * TCP/UDP checksum over IPv4 pseudo-header + segment; returns the field value.
 * The existing checksum field is ignored (TCP, UDP, UDP-Lite, DCCP). UDP 0 maps to 0xffff.
 */
export function l4Checksum4(b: Uint8Array, l4off: number, l4len: number, src: number, dst: number, proto: number): number {
  const c = csumFold(l4Sum(b, l4off, l4len, proto, pseudoHeaderSum4(src, dst, proto, l4len)));
  return c === 0 && proto === 17 ? 0xffff : c;
}

/** True if the stored TCP/UDP checksum is valid (IPv4 UDP checksum 0 = none = valid). */
export function l4ChecksumVerify4(b: Uint8Array, l4off: number, l4len: number, src: number, dst: number, proto: number): boolean {
  if (proto === 17 && l4len >= 8 && b[l4off + 6] === 0 && b[l4off + 7] === 0) return true;
  return csumFold(csumAdd(b, l4off, l4len, pseudoHeaderSum4(src, dst, proto, l4len))) === 0;
}

/** TCP/UDP/ICMPv6 checksum over IPv6 pseudo-header + segment; field ignored; UDP 0 → 0xffff. */
export function l4Checksum6(b: Uint8Array, l4off: number, l4len: number, srcOff: number, dstOff: number, proto: number): number {
  const c = csumFold(l4Sum(b, l4off, l4len, proto, pseudoHeaderSum6(b, srcOff, dstOff, proto, l4len)));
  return c === 0 && proto === 17 ? 0xffff : c;
}

/** True if the stored IPv6 L4 checksum is valid (a zero UDP checksum is invalid in IPv6). */
export function l4ChecksumVerify6(b: Uint8Array, l4off: number, l4len: number, srcOff: number, dstOff: number, proto: number): boolean {
  return csumFold(csumAdd(b, l4off, l4len, pseudoHeaderSum6(b, srcOff, dstOff, proto, l4len))) === 0;
}

/** ICMPv4 checksum (no pseudo-header) over [off, off+len); the field at off+2 is ignored. */
export function icmp4Checksum(b: Uint8Array, off: number, len: number): number {
  return csumFold(csumAdd(b, off, len, 0) + (~((b[off + 2] << 8) | b[off + 3]) & 0xffff));
}
