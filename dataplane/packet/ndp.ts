// IPv6 neighbour discovery (RFC 4861), the part a gateway that answers for
// every address needs: recognising a neighbour solicitation and turning it
// into the advertisement in place, as arp.ts does for ARP.
import { l4Checksum6 } from './checksum.js';
import { F_ICMP_CODE, F_ICMP_TYPE, F_L3OFF, F_L4LEN, F_L4OFF, F_PROTO, F_TTL } from './fields.js';
import { IPV6_HLEN } from './ipv6.js';
import { IPPROTO_ICMPV6 } from './l4.js';

export const ND_ROUTER_SOLICIT = 133;
export const ND_NEIGHBOR_SOLICIT = 135;
export const ND_NEIGHBOR_ADVERT = 136;
export const NA_LEN = 32; // ICMPv6 header, flags, target, one target link-layer address option

/** Whether the parsed IPv6 packet (f from parseIPv6) is a valid neighbour solicitation (RFC 4861 §7.1.1). */
export function isNeighborSolicit(b: Uint8Array, f: Int32Array): boolean {
  return f[F_PROTO] === IPPROTO_ICMPV6 && f[F_ICMP_TYPE] === ND_NEIGHBOR_SOLICIT && f[F_ICMP_CODE] === 0 &&
    f[F_TTL] === 255 && f[F_L4LEN] >= 24 && b[f[F_L4OFF] + 8] !== 0xff; // the target is not multicast
}

/** Whether the solicitation's source is the unspecified address (duplicate address detection: nobody to answer). */
export function fromUnspecified(b: Uint8Array, l3: number): boolean {
  for (let k = 8; k < 24; k++) if (b[l3 + k] !== 0) return false;
  return true;
}

/** Whether the IPv6 address at b[at] is link-local (fe80::/10). */
export function isLinkLocal(b: Uint8Array, at: number): boolean {
  return b[at] === 0xfe && (b[at + 1] & 0xc0) === 0x80;
}

/**
 * Turns the solicitation at l3 (parsed into f) into the solicited advertisement
 * for its target, from the target, carrying `mac` (router, solicited and
 * override flags set), back to the solicitation's source. Returns the new IPv6
 * packet length. The Ethernet header is the caller's.
 */
export function neighborSolicitToAdvert(b: Uint8Array, f: Int32Array, mac: Uint8Array): number {
  const l3 = f[F_L3OFF], icmp = l3 + IPV6_HLEN, target = f[F_L4OFF] + 8;
  // The target moves to its fixed place first (extension headers may have put it further on).
  if (target !== icmp + 8) b.copyWithin(icmp + 8, target, target + 16);
  for (let k = 0; k < 16; k++) { b[l3 + 24 + k] = b[l3 + 8 + k]; b[l3 + 8 + k] = b[icmp + 8 + k]; } // to the asker, from the target
  b[l3 + 4] = 0; b[l3 + 5] = NA_LEN; b[l3 + 6] = IPPROTO_ICMPV6; b[l3 + 7] = 255;
  b[icmp] = ND_NEIGHBOR_ADVERT; b[icmp + 1] = 0;
  b[icmp + 4] = 0xe0; b[icmp + 5] = 0; b[icmp + 6] = 0; b[icmp + 7] = 0; // router, solicited, override
  b[icmp + 24] = 2; b[icmp + 25] = 1; // option: target link-layer address, 8 bytes
  for (let k = 0; k < 6; k++) b[icmp + 26 + k] = mac[k];
  const c = l4Checksum6(b, icmp, NA_LEN, l3 + 8, l3 + 24, IPPROTO_ICMPV6);
  b[icmp + 2] = c >>> 8; b[icmp + 3] = c & 0xff;
  return IPV6_HLEN + NA_LEN;
}
