// VXLAN (RFC 7348) header, encapsulation helper and flow-hash source ports.
import { ETH_HLEN, ETH_P_IP, writeEthernet } from './ethernet.js';
import { IPV4_HLEN, writeIPv4Header } from './ipv4.js';
import { IPPROTO_UDP } from './l4.js';
import * as reasons from './reasons.js';
import { UDP_HLEN, writeUdpHeader } from './udp.js';
// Imported constants are module-cell loads in V8's hot loops; module-level consts fold.
const { R_BAD_VXLAN_FLAGS, R_TRUNCATED } = reasons;

export const VXLAN_HLEN = 8;
export const VXLAN_PORT = 8472; // flannel / Linux default, not IANA 4789
export const VXLAN_FLAG_I = 0x08;
/** Outer Ethernet + IPv4 + UDP + VXLAN bytes in front of the inner frame. */
export const VXLAN_ENCAP4_HLEN = ETH_HLEN + IPV4_HLEN + UDP_HLEN + VXLAN_HLEN; // 50
/** What the overlay adds inside the underlay's MTU (outer IPv4, UDP, VXLAN, inner Ethernet): the pod MTU is the underlay MTU less this, as with flannel. */
export const VXLAN_OVERHEAD = IPV4_HLEN + UDP_HLEN + VXLAN_HLEN + ETH_HLEN; // 50

/** Write the 8-byte VXLAN header: I flag, reserved bits zero, 24-bit VNI. */
export function writeVxlan(b: Uint8Array, off: number, vni: number): void {
  b[off] = VXLAN_FLAG_I;
  b[off + 1] = 0;
  b[off + 2] = 0;
  b[off + 3] = 0;
  b[off + 4] = (vni >>> 16) & 0xff;
  b[off + 5] = (vni >>> 8) & 0xff;
  b[off + 6] = vni & 0xff;
  b[off + 7] = 0;
}

/**
 * Parse the VXLAN header at b[off] (len bytes available). Returns the VNI
 * (>= 0) or a negated reason. Reserved bits are ignored, as receivers must.
 */
export function parseVxlan(b: Uint8Array, off: number, len: number): number {
  if (len < VXLAN_HLEN) return -R_TRUNCATED;
  if ((b[off] & VXLAN_FLAG_I) === 0) return -R_BAD_VXLAN_FLAGS;
  return (b[off + 4] << 16) | (b[off + 5] << 8) | b[off + 6];
}

/**
 * Write outer Ethernet/IPv4/UDP/VXLAN headers at b[off] for an inner frame of
 * innerLen bytes that the caller places (or already has) at off + 50.
 * Outer UDP checksum is 0, as Linux VXLAN sends by default over IPv4.
 * Returns VXLAN_ENCAP4_HLEN.
 */
export function writeVxlanEncap4(
  b: Uint8Array, off: number, dstMac: Uint8Array, srcMac: Uint8Array,
  src: number, dst: number, sport: number, vni: number, innerLen: number, ipId: number, ttl: number,
): number {
  writeEthernet(b, off, dstMac, srcMac, ETH_P_IP);
  const ip = off + ETH_HLEN;
  const udpLen = UDP_HLEN + VXLAN_HLEN + innerLen;
  writeIPv4Header(b, ip, IPV4_HLEN + udpLen, ipId, ttl, IPPROTO_UDP, src, dst, false);
  writeUdpHeader(b, ip + IPV4_HLEN, sport, VXLAN_PORT, udpLen, 0);
  writeVxlan(b, ip + IPV4_HLEN + UDP_HLEN, vni);
  return VXLAN_ENCAP4_HLEN;
}

// Kernel default ip_local_port_range "32768 60999", used by udp_flow_src_port().
export const VXLAN_SPORT_MIN = 32768;
export const VXLAN_SPORT_MAX = 60999;

/**
 * Map a 32-bit flow hash into the port range exactly like the kernel's
 * udp_flow_src_port(): hash ^= hash << 16 (only top bits survive scaling),
 * then ((u64)hash * (max - min) >> 32) + min, i.e. [32768, 60998].
 */
export function vxlanSourcePort(hash: number): number {
  const h = (hash ^ (hash << 16)) >>> 0;
  // h * range < 2^47: exact in a double, no BigInt needed.
  return VXLAN_SPORT_MIN + Math.floor((h * (VXLAN_SPORT_MAX - VXLAN_SPORT_MIN)) / 4294967296);
}

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function mix(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** murmur3-style 5-tuple hash (unsigned 32-bit); direction-sensitive. */
export function flowHash4(src: number, dst: number, sport: number, dport: number, proto: number): number {
  let h = mix(0x9747b28c, src);
  h = mix(h, dst);
  h = mix(h, ((sport & 0xffff) << 16) | (dport & 0xffff));
  h = mix(h, proto);
  return fmix(h ^ 16);
}

/** Same for IPv6, over the parsed F_SRC6/F_DST6 words (8 words from f at srcIdx/dstIdx). */
export function flowHash6(f: Int32Array, srcIdx: number, dstIdx: number, sport: number, dport: number, proto: number): number {
  let h = 0x9747b28c;
  for (let i = 0; i < 4; i++) h = mix(h, f[srcIdx + i]);
  for (let i = 0; i < 4; i++) h = mix(h, f[dstIdx + i]);
  h = mix(h, ((sport & 0xffff) << 16) | (dport & 0xffff));
  h = mix(h, proto);
  return fmix(h ^ 40);
}
