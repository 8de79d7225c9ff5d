// struct virtio_net_hdr (the legacy 10-byte form), which AF_PACKET with
// PACKET_VNET_HDR and TUN with IFF_VNET_HDR put in front of every frame. Its
// 16-bit fields are in host byte order for these sockets (little-endian here).
//   0 flags      (NEEDS_CSUM: the checksum at csum_start + csum_offset is partial)
//   1 gso_type   (NONE, TCPV4, UDP, TCPV6, UDP_L4; | ECN)
//   2 hdr_len    (bytes of headers before the payload)
//   4 gso_size   (payload bytes per segment)
//   6 csum_start (from the start of the frame)
//   8 csum_offset (of the checksum field from csum_start)
export const VNET_HLEN = 10;
export const VNET_F_NEEDS_CSUM = 1;
export const VNET_F_DATA_VALID = 2;
export const VNET_GSO_NONE = 0;
export const VNET_GSO_TCPV4 = 1;
export const VNET_GSO_UDP = 3;
export const VNET_GSO_TCPV6 = 4;
export const VNET_GSO_UDP_L4 = 5;
export const VNET_GSO_ECN = 0x80;

export function vnetFlags(b: Uint8Array, off: number): number { return b[off]; }
export function vnetGsoType(b: Uint8Array, off: number): number { return b[off + 1]; }
export function vnetGsoSize(b: Uint8Array, off: number): number { return b[off + 4] | (b[off + 5] << 8); }
export function vnetCsumStart(b: Uint8Array, off: number): number { return b[off + 6] | (b[off + 7] << 8); }
export function vnetCsumOffset(b: Uint8Array, off: number): number { return b[off + 8] | (b[off + 9] << 8); }

/** Write a whole header. */
export function writeVnet(b: Uint8Array, off: number, flags: number, gsoType: number, hdrLen: number, gsoSize: number, csumStart: number, csumOffset: number): void {
  b[off] = flags; b[off + 1] = gsoType;
  b[off + 2] = hdrLen & 0xff; b[off + 3] = hdrLen >>> 8;
  b[off + 4] = gsoSize & 0xff; b[off + 5] = gsoSize >>> 8;
  b[off + 6] = csumStart & 0xff; b[off + 7] = csumStart >>> 8;
  b[off + 8] = csumOffset & 0xff; b[off + 9] = csumOffset >>> 8;
}

/** A header that says nothing: a plain frame with finished checksums. */
export function zeroVnet(b: Uint8Array, off: number): void {
  b[off] = 0; b[off + 1] = 0; b[off + 2] = 0; b[off + 3] = 0; b[off + 4] = 0;
  b[off + 5] = 0; b[off + 6] = 0; b[off + 7] = 0; b[off + 8] = 0; b[off + 9] = 0;
}
