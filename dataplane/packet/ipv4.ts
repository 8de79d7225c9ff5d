// IPv4 header parsing/writing (RFC 791).
import { csumAdd, csumFold, csumUpdate16, csumUpdate32 } from './checksum.js';
import * as fields from './fields.js';
import { clearL4, parseL4 } from './l4.js';
import * as reasons from './reasons.js';
// Imported constants are module-cell loads in V8's hot loops; module-level consts fold.
const { R_BAD_CHECKSUM, R_BAD_IHL, R_BAD_TOTAL_LENGTH, R_BAD_VERSION, R_OK, R_TRUNCATED } = reasons;
const { F_DF, F_DST4, F_DST6, F_FRAG, F_IHL, F_IPID, F_IPVER, F_L3LEN, F_L3OFF, F_L4LEN, F_L4OFF, F_PROTO, F_SRC4, F_SRC6, F_TOS, F_TTL } = fields;

export const IPV4_HLEN = 20;
export const IP_DF = 0x4000;
export const IP_MF = 0x2000;
export const IP_OFFMASK = 0x1fff;

export function read32(b: Uint8Array, o: number): number {
  return (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3];
}

export function write32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}

/**
 * Parse the IPv4 packet at b[off] (len bytes available; trailing Ethernet
 * padding beyond the total length is allowed) and its L4 header. Sets every
 * IP/L4 field. The header checksum is checked only when `verify` is true
 * (skip it when the NIC/kernel already did). Non-first fragments return R_OK
 * with F_FRAG = 2 and no L4 info.
 */
export function parseIPv4(b: Uint8Array, off: number, len: number, f: Int32Array, verify: boolean): number {
  f[F_L3OFF] = off;
  f[F_L3LEN] = 0;
  f[F_IHL] = 0;
  f[F_L4OFF] = off;
  f[F_L4LEN] = 0;
  f[F_IPVER] = 4;
  f[F_FRAG] = 0;
  f[F_SRC6] = 0; f[F_SRC6 + 1] = 0; f[F_SRC6 + 2] = 0; f[F_SRC6 + 3] = 0;
  f[F_DST6] = 0; f[F_DST6 + 1] = 0; f[F_DST6 + 2] = 0; f[F_DST6 + 3] = 0;
  clearL4(f);
  if (len < IPV4_HLEN) return R_TRUNCATED;
  const vihl = b[off];
  if (vihl >>> 4 !== 4) return R_BAD_VERSION;
  const ihl = (vihl & 0x0f) << 2;
  if (ihl < IPV4_HLEN) return R_BAD_IHL;
  if (ihl > len) return R_TRUNCATED;
  const tot = (b[off + 2] << 8) | b[off + 3];
  if (tot < ihl) return R_BAD_TOTAL_LENGTH;
  if (tot > len) return R_TRUNCATED;
  if (verify && csumFold(csumAdd(b, off, ihl, 0)) !== 0) return R_BAD_CHECKSUM;

  const frag = (b[off + 6] << 8) | b[off + 7];
  const proto = b[off + 9];
  f[F_L3LEN] = tot;
  f[F_IHL] = ihl;
  f[F_L4OFF] = off + ihl;
  f[F_L4LEN] = tot - ihl;
  f[F_TOS] = b[off + 1];
  f[F_IPID] = (b[off + 4] << 8) | b[off + 5];
  f[F_DF] = (frag & IP_DF) !== 0 ? 1 : 0;
  f[F_TTL] = b[off + 8];
  f[F_PROTO] = proto;
  f[F_SRC4] = read32(b, off + 12);
  f[F_DST4] = read32(b, off + 16);
  if ((frag & IP_OFFMASK) !== 0) {
    f[F_FRAG] = 2; // ports live in the first fragment only
    return R_OK;
  }
  if ((frag & IP_MF) !== 0) f[F_FRAG] = 1;
  return parseL4(b, off + ihl, tot - ihl, proto, f);
}

/** Write a 20-byte header (no options, TOS 0) including its checksum. */
export function writeIPv4Header(
  b: Uint8Array, off: number, totalLen: number, id: number, ttl: number, proto: number,
  src: number, dst: number, df: boolean,
): void {
  b[off] = 0x45;
  b[off + 1] = 0;
  b[off + 2] = totalLen >>> 8;
  b[off + 3] = totalLen & 0xff;
  b[off + 4] = (id >>> 8) & 0xff;
  b[off + 5] = id & 0xff;
  b[off + 6] = df ? 0x40 : 0;
  b[off + 7] = 0;
  b[off + 8] = ttl;
  b[off + 9] = proto;
  b[off + 10] = 0;
  b[off + 11] = 0;
  write32(b, off + 12, src);
  write32(b, off + 16, dst);
  const c = csumFold(csumAdd(b, off, IPV4_HLEN, 0));
  b[off + 10] = c >>> 8;
  b[off + 11] = c & 0xff;
}

/** TTL-1 with an RFC 1624 checksum update. No-op at TTL 0 (caller drops/ICMPs at TTL <= 1). */
export function decTtl(b: Uint8Array, off: number): void {
  const ttl = b[off + 8];
  if (ttl === 0) return;
  const proto = b[off + 9];
  const c = csumUpdate16((b[off + 10] << 8) | b[off + 11], (ttl << 8) | proto, ((ttl - 1) << 8) | proto);
  b[off + 8] = ttl - 1;
  b[off + 10] = c >>> 8;
  b[off + 11] = c & 0xff;
}

/**
 * Rewrite the source (or destination if isDst) address, updating the header
 * checksum incrementally; returns the old address so the caller can fix the
 * L4 checksum too (csumUpdate32: TCP/UDP cover the pseudo-header).
 */
export function setIPv4Addr(b: Uint8Array, off: number, addr: number, isDst: boolean): number {
  const o = off + (isDst ? 16 : 12);
  const old = read32(b, o);
  const c = csumUpdate32((b[off + 10] << 8) | b[off + 11], old, addr);
  write32(b, o, addr);
  b[off + 10] = c >>> 8;
  b[off + 11] = c & 0xff;
  return old;
}
