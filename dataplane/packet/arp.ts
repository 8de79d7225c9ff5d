// ARP for Ethernet/IPv4 only (RFC 826). Offsets are relative to the ARP header.
import { F_DST4, F_ICMP_CODE, F_ICMP_TYPE, F_L3LEN, F_L3OFF, F_L4LEN, F_L4OFF, F_SRC4 } from './fields.js';
import { R_BAD_ARP, R_OK, R_TRUNCATED } from './reasons.js';

export const ARP_HLEN = 28;
export const ARP_OP_OFF = 6;
export const ARP_SHA_OFF = 8; // sender MAC
export const ARP_SPA_OFF = 14; // sender IPv4
export const ARP_THA_OFF = 18; // target MAC
export const ARP_TPA_OFF = 24; // target IPv4
export const ARPOP_REQUEST = 1;
export const ARPOP_REPLY = 2;

function rd32(b: Uint8Array, o: number): number {
  return (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3];
}

function wr32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}

/**
 * Parse ARP at b[off] (len bytes available). Sets F_L3OFF, F_L3LEN (28),
 * F_L4OFF = off / F_L4LEN = 0 (no L4),
 * F_ICMP_TYPE = opcode, F_SRC4 = sender IP, F_DST4 = target IP.
 */
export function parseArp(b: Uint8Array, off: number, len: number, f: Int32Array): number {
  f[F_L3OFF] = off;
  f[F_L3LEN] = 0;
  f[F_L4OFF] = off;
  f[F_L4LEN] = 0;
  if (len < ARP_HLEN) return R_TRUNCATED;
  // htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4.
  if (b[off] !== 0 || b[off + 1] !== 1 || b[off + 2] !== 0x08 || b[off + 3] !== 0 ||
    b[off + 4] !== 6 || b[off + 5] !== 4) return R_BAD_ARP;
  const op = (b[off + 6] << 8) | b[off + 7];
  if (op !== ARPOP_REQUEST && op !== ARPOP_REPLY) return R_BAD_ARP;
  f[F_L3LEN] = ARP_HLEN;
  f[F_ICMP_TYPE] = op;
  f[F_ICMP_CODE] = 0;
  f[F_SRC4] = rd32(b, off + ARP_SPA_OFF);
  f[F_DST4] = rd32(b, off + ARP_TPA_OFF);
  return R_OK;
}

/**
 * Rewrite a received request in place into the reply: op=2, tha←sha, tpa←spa,
 * sha←ourMac, spa←old tpa (the address being asked for, which we answer for).
 * The Ethernet header is the caller's (see ethReplyInPlace).
 */
export function arpRequestToReply(b: Uint8Array, arpOff: number, ourMac: Uint8Array): void {
  const spa = rd32(b, arpOff + ARP_SPA_OFF);
  const tpa = rd32(b, arpOff + ARP_TPA_OFF);
  b[arpOff + 6] = 0;
  b[arpOff + 7] = ARPOP_REPLY;
  for (let i = 0; i < 6; i++) {
    b[arpOff + ARP_THA_OFF + i] = b[arpOff + ARP_SHA_OFF + i];
    b[arpOff + ARP_SHA_OFF + i] = ourMac[i];
  }
  wr32(b, arpOff + ARP_TPA_OFF, spa);
  wr32(b, arpOff + ARP_SPA_OFF, tpa);
}

/** Write a 28-byte ARP request (target MAC zero); returns bytes written. Gratuitous ARP: targetIp = ourIp. */
export function writeArpRequest(b: Uint8Array, off: number, ourMac: Uint8Array, ourIp: number, targetIp: number): number {
  b[off] = 0; b[off + 1] = 1; b[off + 2] = 0x08; b[off + 3] = 0; b[off + 4] = 6; b[off + 5] = 4;
  b[off + 6] = 0; b[off + 7] = ARPOP_REQUEST;
  for (let i = 0; i < 6; i++) {
    b[off + ARP_SHA_OFF + i] = ourMac[i];
    b[off + ARP_THA_OFF + i] = 0;
  }
  wr32(b, off + ARP_SPA_OFF, ourIp);
  wr32(b, off + ARP_TPA_OFF, targetIp);
  return ARP_HLEN;
}
