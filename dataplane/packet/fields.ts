// Fixed-layout parse result: one Int32Array per worker, overwritten per packet,
// so parsing allocates nothing. All offsets are absolute indices into the
// packet buffer `b` (the same coordinate system as the `off` argument).
// Fields are only meaningful when the parser returned R_OK.

export const F_ETHTYPE = 0; // EtherType after skipping one 802.1Q tag
export const F_VLAN = 1; // 802.1Q VLAN id, or -1 if untagged
export const F_L3OFF = 2; // start of the L3 header
export const F_L3LEN = 3; // IPv4 total length / IPv6 40 + payload length; ARP: 28
export const F_IPVER = 4; // 4 or 6
export const F_PROTO = 5; // upper-layer protocol (after IPv6 extension headers)
export const F_TTL = 6; // TTL / hop limit
export const F_TOS = 7; // IPv4 TOS / IPv6 traffic class (DSCP+ECN byte)
export const F_DF = 8; // IPv4: DF bit. IPv6: always 1 (routers never fragment IPv6)
export const F_FRAG = 9; // 0 not a fragment, 1 first fragment, 2 non-first fragment (no L4 info)
export const F_IPID = 10; // IPv4 identification; IPv6 fragment header identification (| 0) or 0
export const F_SRC4 = 11; // IPv4 source as int32 (network order bits, | 0); 0 for IPv6
export const F_DST4 = 12;
export const F_SRC6 = 13; // 4 words F_SRC6..F_SRC6+3, each big-endian 32 bits | 0; 0 for IPv4
export const F_DST6 = 17; // 4 words
export const F_L4OFF = 21; // start of the L4 header (after IPv4 options / IPv6 ext headers)
export const F_L4LEN = 22; // F_L3LEN - F_IHL: L4 header + payload per the IP length
export const F_SPORT = 23; // TCP/UDP/SCTP ports; ICMP(v6) echo: identifier in both; else 0
export const F_DPORT = 24;
export const F_ICMP_TYPE = 25; // ICMP/ICMPv6 type; ARP: opcode
export const F_ICMP_CODE = 26;
export const F_TCP_FLAGS = 27; // low 8 bits of TCP flags (FIN..CWR)
export const F_IHL = 28; // bytes from L3 start to L4 start (IPv4 IHL*4; IPv6 40 + ext headers)
export const F_COUNT = 29;

/** Allocate the per-worker parse result (once, not per packet). */
export function newFields(): Int32Array {
  return new Int32Array(F_COUNT);
}
