// Transport header parsing shared by IPv4 and IPv6.
import * as fields from './fields.js';
import * as reasons from './reasons.js';
// Imported constants are module-cell loads in V8's hot loops; module-level consts fold.
const { R_BAD_L4, R_OK } = reasons;
const { F_DPORT, F_FRAG, F_ICMP_CODE, F_ICMP_TYPE, F_SPORT, F_TCP_FLAGS } = fields;

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ICMPV6 = 58;
export const IPPROTO_SCTP = 132;
export const IPPROTO_UDPLITE = 136;

export const ICMP_ECHOREPLY = 0;
export const ICMP_DEST_UNREACH = 3;
export const ICMP_ECHO = 8;
export const ICMP_TIME_EXCEEDED = 11;
export const ICMPV6_PKT_TOOBIG = 2;
export const ICMPV6_ECHO_REQUEST = 128;
export const ICMPV6_ECHO_REPLY = 129;

/** Zero the L4 result fields (done before any L3 check so stale values never leak). */
export function clearL4(f: Int32Array): void {
  f[F_SPORT] = 0;
  f[F_DPORT] = 0;
  f[F_ICMP_TYPE] = 0;
  f[F_ICMP_CODE] = 0;
  f[F_TCP_FLAGS] = 0;
}

/**
 * Parse the L4 header at b[off] with l4len bytes of segment (per the IP
 * length, already bounds-checked by the caller). Non-first fragments must not
 * be passed here. Unknown protocols are fine: ports stay 0.
 */
export function parseL4(b: Uint8Array, off: number, l4len: number, proto: number, f: Int32Array): number {
  switch (proto) {
    case IPPROTO_TCP: {
      if (l4len < 20) return R_BAD_L4;
      const doff = b[off + 12] >>> 4;
      if (doff < 5 || doff * 4 > l4len) return R_BAD_L4;
      f[F_SPORT] = (b[off] << 8) | b[off + 1];
      f[F_DPORT] = (b[off + 2] << 8) | b[off + 3];
      f[F_TCP_FLAGS] = b[off + 13];
      return R_OK;
    }
    case IPPROTO_UDP:
    case IPPROTO_UDPLITE: {
      if (l4len < 8) return R_BAD_L4;
      const ulen = (b[off + 4] << 8) | b[off + 5];
      // UDP length covers the whole datagram, so a first fragment may be shorter.
      // UDP-Lite reuses the field as checksum coverage (0 = everything).
      if (proto === IPPROTO_UDP && (ulen < 8 || (ulen > l4len && f[F_FRAG] === 0))) return R_BAD_L4;
      f[F_SPORT] = (b[off] << 8) | b[off + 1];
      f[F_DPORT] = (b[off + 2] << 8) | b[off + 3];
      return R_OK;
    }
    case IPPROTO_SCTP:
      if (l4len < 12) return R_BAD_L4;
      f[F_SPORT] = (b[off] << 8) | b[off + 1];
      f[F_DPORT] = (b[off + 2] << 8) | b[off + 3];
      return R_OK;
    case IPPROTO_ICMP:
    case IPPROTO_ICMPV6: {
      if (l4len < 8) return R_BAD_L4; // every ICMP message has an 8-byte header
      const type = b[off];
      f[F_ICMP_TYPE] = type;
      f[F_ICMP_CODE] = b[off + 1];
      const echo = proto === IPPROTO_ICMP
        ? type === ICMP_ECHO || type === ICMP_ECHOREPLY
        : type === ICMPV6_ECHO_REQUEST || type === ICMPV6_ECHO_REPLY;
      if (echo) {
        // The identifier plays the role of both ports for conntrack/NAT.
        const id = (b[off + 4] << 8) | b[off + 5];
        f[F_SPORT] = id;
        f[F_DPORT] = id;
      }
      return R_OK;
    }
    default:
      return R_OK;
  }
}
