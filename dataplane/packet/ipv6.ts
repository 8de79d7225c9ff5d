// IPv6 header and extension-header walk (RFC 8200, RFC 7045).
import {
  F_DF, F_DST4, F_DST6, F_FRAG, F_IHL, F_IPID, F_IPVER, F_L3LEN, F_L3OFF, F_L4LEN, F_L4OFF,
  F_PROTO, F_SRC4, F_SRC6, F_TOS, F_TTL,
} from './fields.js';
import { read32 } from './ipv4.js';
import { clearL4, parseL4 } from './l4.js';
import { R_BAD_EXT_HEADER, R_BAD_VERSION, R_OK, R_TRUNCATED } from './reasons.js';

export const IPV6_HLEN = 40;
export const IPV6_SRC_OFF = 8;
export const IPV6_DST_OFF = 24;
export const IPV6_MIN_MTU = 1280;
/** More extension headers than this is treated as an attack / malformed. */
export const IPV6_MAX_EXT_HEADERS = 8;

export const NEXTHDR_HOP = 0;
export const NEXTHDR_ROUTING = 43;
export const NEXTHDR_FRAGMENT = 44;
export const NEXTHDR_ESP = 50;
export const NEXTHDR_AUTH = 51;
export const NEXTHDR_NONE = 59;
export const NEXTHDR_DEST = 60;
export const NEXTHDR_MOBILITY = 135;
export const NEXTHDR_HIP = 139;
export const NEXTHDR_SHIM6 = 140;

/**
 * Parse the IPv6 packet at b[off] (len bytes available, padding allowed),
 * walking extension headers within the payload length to the upper protocol,
 * then its L4 header. F_IHL/F_L4OFF point past the extension headers. ESP and
 * No Next Header stop the walk (F_PROTO 50/59, no ports). A fragment header
 * with a non-zero offset sets F_FRAG = 2 and stops (no L4 info).
 */
export function parseIPv6(b: Uint8Array, off: number, len: number, f: Int32Array): number {
  f[F_L3OFF] = off;
  f[F_L3LEN] = 0;
  f[F_IHL] = 0;
  f[F_L4OFF] = off;
  f[F_L4LEN] = 0;
  f[F_IPVER] = 6;
  f[F_FRAG] = 0;
  f[F_IPID] = 0;
  f[F_DF] = 1; // routers never fragment IPv6: oversize means Packet Too Big
  f[F_SRC4] = 0;
  f[F_DST4] = 0;
  clearL4(f);
  if (len < IPV6_HLEN) return R_TRUNCATED;
  if (b[off] >>> 4 !== 6) return R_BAD_VERSION;
  const tot = IPV6_HLEN + ((b[off + 4] << 8) | b[off + 5]);
  if (tot > len) return R_TRUNCATED;
  f[F_L3LEN] = tot;
  f[F_TOS] = ((b[off] & 0x0f) << 4) | (b[off + 1] >>> 4);
  f[F_TTL] = b[off + 7];
  f[F_SRC6] = read32(b, off + 8);
  f[F_SRC6 + 1] = read32(b, off + 12);
  f[F_SRC6 + 2] = read32(b, off + 16);
  f[F_SRC6 + 3] = read32(b, off + 20);
  f[F_DST6] = read32(b, off + 24);
  f[F_DST6 + 1] = read32(b, off + 28);
  f[F_DST6 + 2] = read32(b, off + 32);
  f[F_DST6 + 3] = read32(b, off + 36);

  const end = off + tot;
  let nh = b[off + 6];
  let p = off + IPV6_HLEN;
  let count = 0;
  let l4 = true; // whether an upper-layer header follows that we should parse
  walk: for (;;) {
    let hlen: number;
    // Hop-by-Hop must directly follow the fixed header.
    if (nh === NEXTHDR_HOP && p !== off + IPV6_HLEN) return R_BAD_EXT_HEADER;
    switch (nh) {
      case NEXTHDR_HOP:
      case NEXTHDR_ROUTING:
      case NEXTHDR_DEST:
      case NEXTHDR_MOBILITY:
      case NEXTHDR_HIP:
      case NEXTHDR_SHIM6:
        if (p + 2 > end) return R_BAD_EXT_HEADER;
        hlen = (b[p + 1] + 1) << 3;
        break;
      case NEXTHDR_AUTH:
        if (p + 2 > end) return R_BAD_EXT_HEADER;
        hlen = (b[p + 1] + 2) << 2;
        break;
      case NEXTHDR_FRAGMENT: {
        if (p + 8 > end) return R_BAD_EXT_HEADER;
        const fo = (b[p + 2] << 8) | b[p + 3];
        f[F_IPID] = read32(b, p + 4);
        if ((fo & 0xfff8) !== 0) {
          f[F_FRAG] = 2;
          l4 = false;
        } else if ((fo & 1) !== 0) {
          f[F_FRAG] = 1;
        } // offset 0 without M: atomic fragment, processed as whole (RFC 6946)
        hlen = 8;
        break;
      }
      case NEXTHDR_ESP:
      case NEXTHDR_NONE:
        l4 = false;
        break walk;
      default:
        break walk; // upper-layer protocol
    }
    if (++count > IPV6_MAX_EXT_HEADERS || p + hlen > end) return R_BAD_EXT_HEADER;
    nh = b[p];
    p += hlen;
    if (!l4) break;
  }
  f[F_PROTO] = nh;
  f[F_IHL] = p - off;
  f[F_L4OFF] = p;
  f[F_L4LEN] = end - p;
  return l4 ? parseL4(b, p, end - p, nh, f) : R_OK;
}
