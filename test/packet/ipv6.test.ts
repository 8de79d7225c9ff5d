import { describe, expect, it } from 'vitest';
import {
  F_DF, F_DPORT, F_DST4, F_DST6, F_FRAG, F_ICMP_TYPE, F_IHL, F_IPID, F_IPVER, F_L3LEN, F_L4LEN, F_L4OFF, F_PROTO,
  F_SPORT, F_SRC4, F_SRC6, F_TCP_FLAGS, F_TOS, F_TTL, newFields,
} from '../../dataplane/packet/fields.js';
import { parseIPv6 } from '../../dataplane/packet/ipv6.js';
import { R_BAD_EXT_HEADER, R_BAD_L4, R_BAD_VERSION, R_OK, R_TRUNCATED } from '../../dataplane/packet/reasons.js';
import { ICMP6_ECHO_PKT, TCP_SYN_PKT, UDP_DNS_PKT, ahHdr, concat, fragHdr, ipv6WithExts, optHdr } from './helpers.js';

const f = newFields();
const TCP = TCP_SYN_PKT.subarray(20); // 40-byte TCP SYN header with options
const UDP = UDP_DNS_PKT.subarray(20);

describe('parseIPv6', () => {
  it('ICMPv6 echo request', () => {
    f[F_SRC4] = 123; // stale values from a previous IPv4 packet must be cleared
    expect(parseIPv6(ICMP6_ECHO_PKT, 0, ICMP6_ECHO_PKT.length, f)).toBe(R_OK);
    expect(f[F_IPVER]).toBe(6);
    expect(f[F_L3LEN]).toBe(54);
    expect(f[F_IHL]).toBe(40);
    expect(f[F_L4OFF]).toBe(40);
    expect(f[F_L4LEN]).toBe(14);
    expect(f[F_PROTO]).toBe(58);
    expect(f[F_TTL]).toBe(64);
    expect(f[F_DF]).toBe(1);
    expect(f[F_TOS]).toBe(0);
    expect(f[F_SRC4]).toBe(0);
    expect([f[F_SRC6], f[F_SRC6 + 1], f[F_SRC6 + 2], f[F_SRC6 + 3]]).toEqual([0xfe800000 | 0, 0, 0, 1]);
    expect([f[F_DST6], f[F_DST6 + 3]]).toEqual([0xfe800000 | 0, 2]);
    expect([f[F_ICMP_TYPE], f[F_SPORT], f[F_DPORT]]).toEqual([128, 0x0bad, 0x0bad]);
  });

  it('traffic class spans the first two bytes; padding after payload is fine', () => {
    const p = concat(ICMP6_ECHO_PKT, new Uint8Array(10));
    p[0] = 0x6b; p[1] = 0x80; // TC = 0xb8 (EF)
    expect(parseIPv6(p, 0, p.length, f)).toBe(R_OK);
    expect(f[F_TOS]).toBe(0xb8);
    expect(f[F_L3LEN]).toBe(54);
  });

  it('walks HBH → routing → dest → AH → fragment(first) to TCP', () => {
    const p = ipv6WithExts([[0, optHdr(1)], [43, optHdr(3)], [60, optHdr(2)], [51, ahHdr(4)], [44, fragHdr(0, true, 0xdeadbeef)]], 6, TCP);
    const b = concat(new Uint8Array(30), p);
    expect(parseIPv6(b, 30, p.length, f)).toBe(R_OK);
    const ext = 8 + 24 + 16 + 24 + 8;
    expect(f[F_IHL]).toBe(40 + ext);
    expect(f[F_L4OFF]).toBe(30 + 40 + ext);
    expect(f[F_L4LEN]).toBe(40);
    expect(f[F_PROTO]).toBe(6);
    expect(f[F_FRAG]).toBe(1);
    expect(f[F_IPID]).toBe(0xdeadbeef | 0);
    expect([f[F_SPORT], f[F_DPORT], f[F_TCP_FLAGS]]).toEqual([51000, 443, 2]);
  });

  it('non-first fragment: protocol known, no ports; atomic fragment is whole', () => {
    const p = ipv6WithExts([[44, fragHdr(185, false, 7)]], 17, new Uint8Array(16));
    expect(parseIPv6(p, 0, p.length, f)).toBe(R_OK);
    expect([f[F_FRAG], f[F_PROTO], f[F_SPORT], f[F_L4OFF], f[F_L4LEN]]).toEqual([2, 17, 0, 48, 16]);
    const atomic = ipv6WithExts([[44, fragHdr(0, false, 7)]], 17, UDP);
    expect(parseIPv6(atomic, 0, atomic.length, f)).toBe(R_OK);
    expect([f[F_FRAG], f[F_SPORT], f[F_DPORT]]).toEqual([0, 40000, 53]);
  });

  it('ESP and No Next Header stop the walk', () => {
    const esp = ipv6WithExts([[60, optHdr(1)]], 50, new Uint8Array(24));
    expect(parseIPv6(esp, 0, esp.length, f)).toBe(R_OK);
    expect([f[F_PROTO], f[F_L4OFF], f[F_SPORT]]).toEqual([50, 48, 0]);
    const none = ipv6WithExts([], 59, new Uint8Array(0));
    expect(parseIPv6(none, 0, none.length, f)).toBe(R_OK);
    expect([f[F_PROTO], f[F_L4LEN]]).toEqual([59, 0]);
  });

  it('bad chains: HBH not first, too many headers, header past payload', () => {
    const late = ipv6WithExts([[60, optHdr(1)], [0, optHdr(1)]], 6, TCP);
    expect(parseIPv6(late, 0, late.length, f)).toBe(R_BAD_EXT_HEADER);
    const eight = ipv6WithExts(Array.from({ length: 8 }, () => [60, optHdr(1)] as [number, Uint8Array]), 17, UDP);
    expect(parseIPv6(eight, 0, eight.length, f)).toBe(R_OK);
    const nine = ipv6WithExts(Array.from({ length: 9 }, () => [60, optHdr(1)] as [number, Uint8Array]), 17, UDP);
    expect(parseIPv6(nine, 0, nine.length, f)).toBe(R_BAD_EXT_HEADER);
    const long = ipv6WithExts([[43, optHdr(1)]], 6, new Uint8Array(0));
    long[41] = 5; // claims 48 bytes, payload has 8
    expect(parseIPv6(long, 0, long.length, f)).toBe(R_BAD_EXT_HEADER);
    const cut = ipv6WithExts([[44, fragHdr(0, true, 1)]], 6, new Uint8Array(0)).subarray(0, 44);
    cut[5] = 4;
    expect(parseIPv6(cut, 0, cut.length, f)).toBe(R_BAD_EXT_HEADER);
    expect(f[F_L4OFF]).toBe(0);
  });

  it('truncation and version errors', () => {
    const p = ipv6WithExts([[0, optHdr(1)]], 6, TCP);
    for (let n = 0; n < p.length; n++) expect(parseIPv6(p, 0, n, f)).toBe(R_TRUNCATED);
    const v4 = p.slice();
    v4[0] = 0x45;
    expect(parseIPv6(v4, 0, v4.length, f)).toBe(R_BAD_VERSION);
    const shortTcp = ipv6WithExts([], 6, TCP.subarray(0, 19));
    expect(parseIPv6(shortTcp, 0, shortTcp.length, f)).toBe(R_BAD_L4);
  });
});
