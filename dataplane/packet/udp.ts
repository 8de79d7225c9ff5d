// UDP header (RFC 768).
export const UDP_HLEN = 8;
export const UDP_CHECK_OFF = 6;

/** Write an 8-byte UDP header; pass check = 0 for "no checksum" (IPv4 only). */
export function writeUdpHeader(b: Uint8Array, off: number, sport: number, dport: number, len: number, check: number): void {
  b[off] = sport >>> 8;
  b[off + 1] = sport & 0xff;
  b[off + 2] = dport >>> 8;
  b[off + 3] = dport & 0xff;
  b[off + 4] = len >>> 8;
  b[off + 5] = len & 0xff;
  b[off + 6] = check >>> 8;
  b[off + 7] = check & 0xff;
}
