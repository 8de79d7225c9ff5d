// Ethernet II framing with at most one 802.1Q tag.
import * as fields from './fields.js';
import * as reasons from './reasons.js';
// Imported constants are module-cell loads in V8's hot loops; module-level consts fold.
const { R_OK, R_TRUNCATED, R_UNSUPPORTED_ETHERTYPE } = reasons;
const { F_ETHTYPE, F_L3OFF, F_L4OFF, F_VLAN } = fields;

export const ETH_HLEN = 14;
export const ETH_ALEN = 6;
export const VLAN_HLEN = 4;
export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;
export const ETH_P_IPV6 = 0x86dd;
export const ETH_P_8021Q = 0x8100;
export const ETH_P_8021AD = 0x88a8;

/**
 * Parse the Ethernet header at b[off], len bytes available. Sets F_ETHTYPE,
 * F_VLAN and F_L3OFF (F_L4OFF = F_L3OFF until an L3 parser runs, so every
 * offset field stays inside the frame). Returns R_UNSUPPORTED_ETHERTYPE (fields still set) for
 * anything but IPv4/IPv6/ARP, including stacked tags and 802.3 length frames.
 */
export function parseEthernet(b: Uint8Array, off: number, len: number, f: Int32Array): number {
  f[F_ETHTYPE] = 0;
  f[F_VLAN] = -1;
  f[F_L3OFF] = off;
  f[F_L4OFF] = off;
  if (len < ETH_HLEN) return R_TRUNCATED;
  let type = (b[off + 12] << 8) | b[off + 13];
  let l3 = off + ETH_HLEN;
  if (type === ETH_P_8021Q || type === ETH_P_8021AD) {
    if (len < ETH_HLEN + VLAN_HLEN) return R_TRUNCATED;
    f[F_VLAN] = ((b[off + 14] << 8) | b[off + 15]) & 0x0fff;
    type = (b[off + 16] << 8) | b[off + 17];
    l3 += VLAN_HLEN;
  }
  f[F_ETHTYPE] = type;
  f[F_L3OFF] = l3;
  f[F_L4OFF] = l3;
  if (type === ETH_P_IP || type === ETH_P_IPV6 || type === ETH_P_ARP) return R_OK;
  return R_UNSUPPORTED_ETHERTYPE;
}

/** Write a 14-byte untagged header. dst/src are caller-owned 6-byte arrays. */
export function writeEthernet(b: Uint8Array, off: number, dst: Uint8Array, src: Uint8Array, type: number): void {
  for (let i = 0; i < 6; i++) {
    b[off + i] = dst[i];
    b[off + 6 + i] = src[i];
  }
  b[off + 12] = type >>> 8;
  b[off + 13] = type & 0xff;
}

/** Turn a received frame's header into a reply's: dst ← old src, src ← ourMac. */
export function ethReplyInPlace(b: Uint8Array, off: number, ourMac: Uint8Array): void {
  for (let i = 0; i < 6; i++) {
    b[off + i] = b[off + 6 + i];
    b[off + 6 + i] = ourMac[i];
  }
}

export function macEquals(b: Uint8Array, off: number, mac: Uint8Array): boolean {
  return b[off] === mac[0] && b[off + 1] === mac[1] && b[off + 2] === mac[2] &&
    b[off + 3] === mac[3] && b[off + 4] === mac[4] && b[off + 5] === mac[5];
}

/** Group bit of the first octet: broadcast or multicast. */
export function macIsMulticast(b: Uint8Array, off: number): boolean {
  return (b[off] & 1) === 1;
}

/** Control path: "aa:bb:cc:dd:ee:ff" (or '-' separated) → 6 bytes. Throws on bad input. */
export function parseMac(s: string): Uint8Array {
  const parts = s.trim().split(/[:-]/);
  if (parts.length !== 6) throw new Error(`invalid MAC address: ${s}`);
  const mac = new Uint8Array(6);
  for (let i = 0; i < 6; i++) {
    if (!/^[0-9a-fA-F]{1,2}$/.test(parts[i])) throw new Error(`invalid MAC address: ${s}`);
    mac[i] = parseInt(parts[i], 16);
  }
  return mac;
}

/** Control path: 6 bytes at b[off] → "aa:bb:cc:dd:ee:ff". */
export function formatMac(b: Uint8Array, off: number): string {
  let s = '';
  for (let i = 0; i < 6; i++) s += (i ? ':' : '') + b[off + i].toString(16).padStart(2, '0');
  return s;
}
