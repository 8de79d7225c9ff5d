// Test helpers: hex dumps, a deliberately naive reference checksum, frame builders.

export function hex(s: string): Uint8Array {
  const t = s.replace(/\s+/g, '');
  const out = new Uint8Array(t.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(t.substr(i * 2, 2), 16);
  return out;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/** RFC 1071 straight from the text: sum 16-bit words, fold, complement. */
export function refChecksum(data: ArrayLike<number>, start = 0, len = data.length - start): number {
  let s = 0;
  for (let i = 0; i < len; i += 2) s += (data[start + i] << 8) + (i + 1 < len ? data[start + i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return ~s & 0xffff;
}

export function be16(b: Uint8Array, o: number): number {
  return (b[o] << 8) | b[o + 1];
}

export function ip4(a: number, b: number, c: number, d: number): number {
  return ((a << 24) | (b << 16) | (c << 8) | d) | 0;
}

// Captured-style packets (checksums computed independently in Python).
export const ICMP_ECHO_PKT = hex(
  '4500003cabcd400040017af10a0000010a00000208003b27123400016162636465666768696a6b6c6d6e6f7071727374757677616263646566676869',
);
export const TCP_SYN_PKT = hex(
  '4500003c4242400040062c67c0a8010a0a600001c73801bb0102030400000000a002faf0b4010000020405b40402080a000000010000000001030307',
);
export const UDP_DNS_PKT = hex('45000028000700004011645c0af401050a60000a9c400035001439b9123401000001000000000000');
export const ICMP6_ECHO_PKT = hex(
  '60000000000e3a40fe800000000000000000000000000001fe8000000000000000000000000000028000620c0bad000770696e673621',
);

export const MAC_A = hex('020000000001');
export const MAC_B = hex('020000000002');

export function ethHdr(type: number, dst = MAC_B, src = MAC_A): Uint8Array {
  return concat(dst, src, new Uint8Array([type >> 8, type & 0xff]));
}

export function vlanEthHdr(type: number, vid: number): Uint8Array {
  return concat(MAC_B, MAC_A, new Uint8Array([0x81, 0x00, vid >> 8, vid & 0xff, type >> 8, type & 0xff]));
}

/** IPv6 header + extension chain: exts are [nextHeaderType, bodyBytes] in order; body length must fit the type's rules. */
export function ipv6WithExts(exts: Array<[number, Uint8Array]>, proto: number, l4: Uint8Array): Uint8Array {
  const hdr = ICMP6_ECHO_PKT.slice(0, 40);
  const parts: Uint8Array[] = [];
  const types = exts.map((e) => e[0]);
  for (let i = 0; i < exts.length; i++) {
    const body = exts[i][1].slice();
    body[0] = i + 1 < exts.length ? types[i + 1] : proto;
    parts.push(body);
  }
  const payload = concat(...parts, l4);
  hdr[4] = payload.length >> 8;
  hdr[5] = payload.length & 0xff;
  hdr[6] = exts.length ? types[0] : proto;
  return concat(hdr, payload);
}

/** Generic 8-byte-unit option header (HBH/routing/dest) of n*8 bytes. */
export function optHdr(units: number): Uint8Array {
  const h = new Uint8Array(units * 8);
  h[1] = units - 1;
  h[2] = 1; // PadN
  h[3] = units * 8 - 4;
  return h;
}

export function fragHdr(offset8: number, more: boolean, id: number): Uint8Array {
  const h = new Uint8Array(8);
  const fo = (offset8 << 3) | (more ? 1 : 0);
  h[2] = fo >> 8; h[3] = fo & 0xff;
  h[4] = id >>> 24; h[5] = (id >>> 16) & 0xff; h[6] = (id >>> 8) & 0xff; h[7] = id & 0xff;
  return h;
}

export function ahHdr(payloadLen32: number): Uint8Array {
  const h = new Uint8Array((payloadLen32 + 2) * 4);
  h[1] = payloadLen32;
  return h;
}
