// ICMP errors and echo replies for IPv4 (RFC 792, RFC 1191) and IPv6 (RFC 4443).
// Error writers copy the quoted original first, so they may write over the
// original packet itself (off === origOff) to answer it in place.
import { csumUpdate16, icmp4Checksum, l4Checksum6 } from './checksum.js';
import { F_L3OFF, F_L4OFF } from './fields.js';
import { IPV4_HLEN, read32, write32, writeIPv4Header } from './ipv4.js';
import { IPV6_HLEN, IPV6_MIN_MTU } from './ipv6.js';
import {
  ICMP_DEST_UNREACH, ICMP_ECHO, ICMP_ECHOREPLY, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST,
  ICMPV6_PKT_TOOBIG, IPPROTO_ICMP, IPPROTO_ICMPV6,
} from './l4.js';

export const ICMP_HLEN = 8;
export const ICMP_FRAG_NEEDED = 4; // code under ICMP_DEST_UNREACH
export const ICMP_ERR_TTL = 64;

/** memmove: handles overlap when both views share a buffer. */
function moveBytes(dst: Uint8Array, dOff: number, src: Uint8Array, sOff: number, n: number): void {
  if (src.buffer === dst.buffer && src.byteOffset + sOff < dst.byteOffset + dOff) {
    for (let i = n - 1; i >= 0; i--) dst[dOff + i] = src[sOff + i];
  } else {
    for (let i = 0; i < n; i++) dst[dOff + i] = src[sOff + i];
  }
}

/**
 * Write a complete IPv4 ICMP error at b[off]: IP header, ICMP header with the
 * 32-bit `rest` word, then the original IP header + first 8 payload bytes.
 * Returns the packet length. Caller decides eligibility (never for ICMP errors,
 * non-first fragments, broadcasts — RFC 1122 §3.2.2).
 */
export function writeIcmpError(
  b: Uint8Array, off: number, orig: Uint8Array, origOff: number, origL3Len: number,
  type: number, code: number, rest: number, src: number, dst: number,
): number {
  const ihl = (orig[origOff] & 0x0f) << 2;
  let quote = ihl + 8;
  if (quote > origL3Len) quote = origL3Len;
  if (quote < 0) quote = 0;
  const icmp = off + IPV4_HLEN;
  moveBytes(b, icmp + ICMP_HLEN, orig, origOff, quote);
  b[icmp] = type;
  b[icmp + 1] = code;
  b[icmp + 2] = 0;
  b[icmp + 3] = 0;
  write32(b, icmp + 4, rest);
  const c = icmp4Checksum(b, icmp, ICMP_HLEN + quote);
  b[icmp + 2] = c >>> 8;
  b[icmp + 3] = c & 0xff;
  const total = IPV4_HLEN + ICMP_HLEN + quote;
  writeIPv4Header(b, off, total, 0, ICMP_ERR_TTL, IPPROTO_ICMP, src, dst, false);
  return total;
}

/** Destination Unreachable / Fragmentation Needed with the next-hop MTU (RFC 1191 §4). */
export function writeIcmpFragNeeded(
  b: Uint8Array, off: number, orig: Uint8Array, origOff: number, origL3Len: number,
  mtu: number, src: number, dst: number,
): number {
  return writeIcmpError(b, off, orig, origOff, origL3Len, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, mtu & 0xffff, src, dst);
}

/**
 * Turn a parsed IPv4 echo request (f from parseIPv4) into the reply in place:
 * swap addresses (header checksum unaffected), TTL 64, type 0; both checksums
 * updated incrementally. No-op if the packet is not an echo request.
 */
export function writeIcmpEchoReplyInPlace(b: Uint8Array, l3off: number, f: Int32Array): void {
  const l4 = f[F_L4OFF];
  if (f[F_L3OFF] !== l3off || b[l4] !== ICMP_ECHO) return;
  const s = read32(b, l3off + 12);
  write32(b, l3off + 12, read32(b, l3off + 16));
  write32(b, l3off + 16, s);
  const ttlProto = (b[l3off + 8] << 8) | b[l3off + 9];
  const hc = csumUpdate16((b[l3off + 10] << 8) | b[l3off + 11], ttlProto, (ICMP_ERR_TTL << 8) | b[l3off + 9]);
  b[l3off + 8] = ICMP_ERR_TTL;
  b[l3off + 10] = hc >>> 8;
  b[l3off + 11] = hc & 0xff;
  const code = b[l4 + 1];
  const c = csumUpdate16((b[l4 + 2] << 8) | b[l4 + 3], (ICMP_ECHO << 8) | code, (ICMP_ECHOREPLY << 8) | code);
  b[l4] = ICMP_ECHOREPLY;
  b[l4 + 2] = c >>> 8;
  b[l4 + 3] = c & 0xff;
}

/**
 * Write a complete IPv6 ICMPv6 error at b[off]: IPv6 header (src from
 * src[srcOff..+16], dst = the original's source), ICMPv6 header with the
 * 32-bit `rest`, then as much of the original as keeps the packet <= 1280
 * bytes (RFC 4443 §2.4(c)). Returns the packet length.
 */
export function writeIcmp6Error(
  b: Uint8Array, off: number, orig: Uint8Array, origOff: number, origL3Len: number,
  type: number, code: number, rest: number, src: Uint8Array, srcOff: number,
): number {
  let quote = IPV6_MIN_MTU - IPV6_HLEN - ICMP_HLEN;
  if (quote > origL3Len) quote = origL3Len;
  if (quote < 0) quote = 0;
  const icmp = off + IPV6_HLEN;
  const q = icmp + ICMP_HLEN;
  moveBytes(b, q, orig, origOff, quote);
  // Source before destination, and the destination from the quoted copy, so
  // in-place use works even when src aliases the original's destination.
  for (let i = 0; i < 16; i++) b[off + 8 + i] = src[srcOff + i];
  for (let i = 0; i < 16; i++) b[off + 24 + i] = b[q + 8 + i];
  const plen = ICMP_HLEN + quote;
  b[off] = 0x60;
  b[off + 1] = 0;
  b[off + 2] = 0;
  b[off + 3] = 0;
  b[off + 4] = plen >>> 8;
  b[off + 5] = plen & 0xff;
  b[off + 6] = IPPROTO_ICMPV6;
  b[off + 7] = ICMP_ERR_TTL;
  b[icmp] = type;
  b[icmp + 1] = code;
  write32(b, icmp + 4, rest);
  const c = l4Checksum6(b, icmp, plen, off + 8, off + 24, IPPROTO_ICMPV6);
  b[icmp + 2] = c >>> 8;
  b[icmp + 3] = c & 0xff;
  return IPV6_HLEN + plen;
}

/** ICMPv6 Packet Too Big (type 2, code 0) carrying the 32-bit MTU. */
export function writeIcmp6PacketTooBig(
  b: Uint8Array, off: number, orig: Uint8Array, origOff: number, origL3Len: number,
  mtu: number, src: Uint8Array, srcOff: number,
): number {
  return writeIcmp6Error(b, off, orig, origOff, origL3Len, ICMPV6_PKT_TOOBIG, 0, mtu, src, srcOff);
}

/**
 * Turn a parsed ICMPv6 echo request (f from parseIPv6) into the reply in
 * place: swap addresses (pseudo-header sum unchanged), hop limit 64, type 129.
 * Extension headers, if any, are left as they are. No-op if not a request.
 */
export function writeIcmp6EchoReplyInPlace(b: Uint8Array, l3off: number, f: Int32Array): void {
  const l4 = f[F_L4OFF];
  if (f[F_L3OFF] !== l3off || b[l4] !== ICMPV6_ECHO_REQUEST) return;
  for (let i = 8; i < 24; i++) {
    const t = b[l3off + i];
    b[l3off + i] = b[l3off + i + 16];
    b[l3off + i + 16] = t;
  }
  b[l3off + 7] = ICMP_ERR_TTL;
  const code = b[l4 + 1];
  const c = csumUpdate16((b[l4 + 2] << 8) | b[l4 + 3], (ICMPV6_ECHO_REQUEST << 8) | code, (ICMPV6_ECHO_REPLY << 8) | code);
  b[l4] = ICMPV6_ECHO_REPLY;
  b[l4 + 2] = c >>> 8;
  b[l4 + 3] = c & 0xff;
}
