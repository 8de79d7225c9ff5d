import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { csumAdd, csumFold } from '../../dataplane/packet/checksum.js';
import {
  F_DF, F_DPORT, F_DST4, F_FRAG, F_ICMP_CODE, F_ICMP_TYPE, F_IHL, F_IPID, F_IPVER, F_L3LEN, F_L3OFF, F_L4LEN,
  F_L4OFF, F_PROTO, F_SPORT, F_SRC4, F_TCP_FLAGS, F_TTL, newFields,
} from '../../dataplane/packet/fields.js';
import { decTtl, parseIPv4, setIPv4Addr, writeIPv4Header } from '../../dataplane/packet/ipv4.js';
import {
  R_BAD_CHECKSUM, R_BAD_IHL, R_BAD_L4, R_BAD_TOTAL_LENGTH, R_BAD_VERSION, R_OK, R_TRUNCATED,
} from '../../dataplane/packet/reasons.js';
import { TCP_SYN } from '../../dataplane/packet/tcp.js';
import { ICMP_ECHO_PKT, TCP_SYN_PKT, UDP_DNS_PKT, be16, concat, hex, ip4, refChecksum } from './helpers.js';

const f = newFields();

function withHeaderChecksum(p: Uint8Array): Uint8Array {
  const ihl = (p[0] & 15) * 4;
  p[10] = 0; p[11] = 0;
  const c = refChecksum(p, 0, ihl);
  p[10] = c >> 8; p[11] = c & 0xff;
  return p;
}

describe('parseIPv4', () => {
  it('ICMP echo request', () => {
    expect(parseIPv4(ICMP_ECHO_PKT, 0, ICMP_ECHO_PKT.length, f, true)).toBe(R_OK);
    expect(f[F_IPVER]).toBe(4);
    expect(f[F_L3LEN]).toBe(60);
    expect(f[F_IHL]).toBe(20);
    expect(f[F_L4OFF]).toBe(20);
    expect(f[F_L4LEN]).toBe(40);
    expect(f[F_PROTO]).toBe(1);
    expect(f[F_TTL]).toBe(64);
    expect(f[F_DF]).toBe(1);
    expect(f[F_FRAG]).toBe(0);
    expect(f[F_IPID]).toBe(0xabcd);
    expect(f[F_SRC4]).toBe(ip4(10, 0, 0, 1));
    expect(f[F_DST4]).toBe(ip4(10, 0, 0, 2));
    expect(f[F_ICMP_TYPE]).toBe(8);
    expect(f[F_ICMP_CODE]).toBe(0);
    expect(f[F_SPORT]).toBe(0x1234);
    expect(f[F_DPORT]).toBe(0x1234);
  });

  it('TCP SYN with options, inside a slot with Ethernet padding after it', () => {
    const b = concat(new Uint8Array(64), TCP_SYN_PKT, new Uint8Array(6));
    expect(parseIPv4(b, 64, b.length - 64, f, true)).toBe(R_OK);
    expect(f[F_L3OFF]).toBe(64);
    expect(f[F_L4OFF]).toBe(84);
    expect(f[F_L4LEN]).toBe(40);
    expect(f[F_SRC4]).toBe(ip4(192, 168, 1, 10));
    expect(f[F_SRC4]).toBeLessThan(0);
    expect(f[F_SPORT]).toBe(51000);
    expect(f[F_DPORT]).toBe(443);
    expect(f[F_TCP_FLAGS]).toBe(TCP_SYN);
  });

  it('UDP without DF', () => {
    expect(parseIPv4(UDP_DNS_PKT, 0, UDP_DNS_PKT.length, f, true)).toBe(R_OK);
    expect([f[F_PROTO], f[F_SPORT], f[F_DPORT], f[F_DF]]).toEqual([17, 40000, 53, 0]);
  });

  it('skips options (IHL 6, router alert)', () => {
    const p = TCP_SYN_PKT;
    const opt = concat(hex('46'), p.subarray(1, 2), hex('0040'), p.subarray(4, 20), hex('94040000'), p.subarray(20));
    withHeaderChecksum(opt);
    expect(parseIPv4(opt, 0, opt.length, f, true)).toBe(R_OK);
    expect(f[F_IHL]).toBe(24);
    expect(f[F_L4OFF]).toBe(24);
    expect(f[F_DPORT]).toBe(443);
  });

  it('every truncation of every packet is TRUNCATED, never OK', () => {
    for (const p of [ICMP_ECHO_PKT, TCP_SYN_PKT, UDP_DNS_PKT]) {
      for (let n = 0; n < p.length; n++) expect(parseIPv4(p, 0, n, f, false)).toBe(R_TRUNCATED);
    }
  });

  it('header errors', () => {
    const p = (mut: (q: Uint8Array) => void, verify = false) => {
      const q = TCP_SYN_PKT.slice();
      mut(q);
      return parseIPv4(q, 0, q.length, f, verify);
    };
    expect(p((q) => { q[0] = 0x65; })).toBe(R_BAD_VERSION);
    expect(p((q) => { q[0] = 0x44; })).toBe(R_BAD_IHL);
    expect(p((q) => { q[0] = 0x4f; })).toBe(R_BAD_L4); // 60-byte header leaves no TCP header
    expect(parseIPv4(concat(hex('4f00003c'), new Uint8Array(36)), 0, 40, f, false)).toBe(R_TRUNCATED); // header longer than the buffer
    expect(p((q) => { q[3] = 19; })).toBe(R_BAD_TOTAL_LENGTH);
    expect(p((q) => { q[3] = 61; })).toBe(R_TRUNCATED);
    expect(p((q) => { q[8] = 1; })).toBe(R_OK); // checksum not verified
    expect(p((q) => { q[8] = 1; }, true)).toBe(R_BAD_CHECKSUM);
  });

  it('fragments: first parses ports, later ones flagged without L4', () => {
    const first = withHeaderChecksum(UDP_DNS_PKT.slice());
    first[6] = 0x20; // MF
    first.set([0x01, 0x00], 24); // UDP length 256 > this fragment: fine for a first fragment
    withHeaderChecksum(first);
    expect(parseIPv4(first, 0, first.length, f, true)).toBe(R_OK);
    expect([f[F_FRAG], f[F_SPORT], f[F_DPORT]]).toEqual([1, 40000, 53]);
    const later = withHeaderChecksum(UDP_DNS_PKT.slice());
    later[7] = 0x03; // offset 24 bytes
    withHeaderChecksum(later);
    expect(parseIPv4(later, 0, later.length, f, true)).toBe(R_OK);
    expect([f[F_FRAG], f[F_SPORT], f[F_DPORT], f[F_PROTO], f[F_L4LEN]]).toEqual([2, 0, 0, 17, 20]);
  });

  it('L4 sanity: TCP data offset, UDP length, short ICMP', () => {
    const tcp = TCP_SYN_PKT.slice();
    tcp[32] = 0x40; // doff 4
    expect(parseIPv4(tcp, 0, tcp.length, f, false)).toBe(R_BAD_L4);
    tcp[32] = 0xb0; // 44 bytes > 40
    expect(parseIPv4(tcp, 0, tcp.length, f, false)).toBe(R_BAD_L4);
    const udp = UDP_DNS_PKT.slice();
    udp[25] = 7;
    expect(parseIPv4(udp, 0, udp.length, f, false)).toBe(R_BAD_L4);
    udp[25] = 21;
    expect(parseIPv4(udp, 0, udp.length, f, false)).toBe(R_BAD_L4);
    const icmp = ICMP_ECHO_PKT.slice(0, 26);
    icmp[3] = 26;
    expect(parseIPv4(icmp, 0, icmp.length, f, false)).toBe(R_BAD_L4);
    const sctp = UDP_DNS_PKT.slice(0, 30); // 10-byte "SCTP" header: too short
    sctp[3] = 30; sctp[9] = 132;
    expect(parseIPv4(sctp, 0, sctp.length, f, false)).toBe(R_BAD_L4);
    sctp[3] = 32;
    const sctp2 = concat(sctp, new Uint8Array(2));
    expect(parseIPv4(sctp2, 0, sctp2.length, f, false)).toBe(R_OK);
    expect([f[F_SPORT], f[F_DPORT]]).toEqual([40000, 53]);
  });

  it('other protocols (GRE) give ports 0', () => {
    const g = UDP_DNS_PKT.slice();
    g[9] = 47;
    expect(parseIPv4(g, 0, g.length, f, false)).toBe(R_OK);
    expect([f[F_PROTO], f[F_SPORT], f[F_DPORT]]).toEqual([47, 0, 0]);
  });
});

describe('IPv4 writers', () => {
  it('writeIPv4Header produces a valid header that parses back', () => {
    const b = new Uint8Array(48);
    writeIPv4Header(b, 8, 40, 0xbeef, 63, 6, ip4(10, 244, 1, 2), ip4(172, 16, 0, 9), true);
    expect(refChecksum(b, 8, 20)).toBe(0);
    expect(be16(b, 18)).toBe(refChecksum(Uint8Array.from([...b.subarray(8, 18), 0, 0, ...b.subarray(20, 28)])));
    b.set(TCP_SYN_PKT.subarray(20, 40), 28);
    b[40] = 0x50; // doff 5
    expect(parseIPv4(b, 8, 40, f, true)).toBe(R_OK);
    expect([f[F_TTL], f[F_IPID], f[F_PROTO], f[F_DF], f[F_SRC4], f[F_DST4]])
      .toEqual([63, 0xbeef, 6, 1, ip4(10, 244, 1, 2), ip4(172, 16, 0, 9)]);
  });

  it('decTtl keeps the header checksum valid (and equals a recompute)', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 255 }), fc.nat(0xffff), fc.integer(), (ttl, id, src) => {
      const b = new Uint8Array(20);
      writeIPv4Header(b, 0, 20, id, ttl, 17, src, 0x0a000001, false);
      decTtl(b, 0);
      expect(b[8]).toBe(ttl - 1);
      expect(csumFold(csumAdd(b, 0, 20, 0))).toBe(0);
      const re = b.slice(); re[10] = 0; re[11] = 0;
      expect(be16(b, 10)).toBe(refChecksum(re));
    }));
    const z = new Uint8Array(20);
    decTtl(z, 0);
    expect(z[8]).toBe(0);
  });

  it('setIPv4Addr rewrites addresses with a valid checksum', () => {
    fc.assert(fc.property(fc.integer(), fc.integer(), fc.boolean(), (a, n, isDst) => {
      const b = new Uint8Array(20);
      writeIPv4Header(b, 0, 20, 1, 64, 47, a, ~a, true);
      const old = setIPv4Addr(b, 0, n | 0, isDst);
      expect(old).toBe(isDst ? ~a : a | 0);
      expect(refChecksum(b, 0, 20)).toBe(0);
      expect(parseIPv4(b, 0, 20, f, true)).toBe(R_OK);
      expect(f[isDst ? F_DST4 : F_SRC4]).toBe(n | 0);
    }));
  });
});
