import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseEthernet } from '../../dataplane/packet/ethernet.js';
import { F_DPORT, F_L3LEN, F_L4OFF, F_PROTO, F_SPORT, newFields } from '../../dataplane/packet/fields.js';
import { parseIPv4 } from '../../dataplane/packet/ipv4.js';
import { R_BAD_VXLAN_FLAGS, R_OK, R_TRUNCATED } from '../../dataplane/packet/reasons.js';
import { UDP_HLEN, writeUdpHeader } from '../../dataplane/packet/udp.js';
import {
  VXLAN_ENCAP4_HLEN, VXLAN_HLEN, VXLAN_PORT, flowHash4, flowHash6, parseVxlan, vxlanSourcePort, writeVxlan, writeVxlanEncap4,
} from '../../dataplane/packet/vxlan.js';
import { ICMP_ECHO_PKT, MAC_A, MAC_B, concat, ethHdr, hex, ip4, refChecksum } from './helpers.js';

describe('vxlan header', () => {
  it('writes RFC 7348 layout and parses the VNI back', () => {
    const b = new Uint8Array(10).fill(0xff);
    writeVxlan(b, 1, 0xabcdef);
    expect([...b]).toEqual([0xff, 0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0, 0xff]);
    expect(parseVxlan(b, 1, 8)).toBe(0xabcdef);
    writeVxlan(b, 1, 0);
    expect(parseVxlan(b, 1, 8)).toBe(0);
  });

  it('a real flannel VXLAN header (VNI 1), reserved bits ignored, errors negated', () => {
    const h = hex('0800000000000100');
    expect(parseVxlan(h, 0, 8)).toBe(1);
    h[1] = 0xff; // reserved
    expect(parseVxlan(h, 0, 8)).toBe(1);
    for (let n = 0; n < VXLAN_HLEN; n++) expect(parseVxlan(h, 0, n)).toBe(-R_TRUNCATED);
    expect(parseVxlan(hex('0000000000000100'), 0, 8)).toBe(-R_BAD_VXLAN_FLAGS);
  });

  it('writeUdpHeader', () => {
    const b = new Uint8Array(UDP_HLEN);
    writeUdpHeader(b, 0, 40000, VXLAN_PORT, 0x1234, 0xfffe);
    expect([...b]).toEqual([0x9c, 0x40, 0x21, 0x18, 0x12, 0x34, 0xff, 0xfe]);
  });

  it('full encapsulation parses as Ethernet/IPv4/UDP/VXLAN/inner frame', () => {
    const inner = concat(ethHdr(0x0800), ICMP_ECHO_PKT);
    const b = new Uint8Array(VXLAN_ENCAP4_HLEN + inner.length);
    b.set(inner, VXLAN_ENCAP4_HLEN);
    const sport = vxlanSourcePort(flowHash4(ip4(10, 0, 0, 1), ip4(10, 0, 0, 2), 0x1234, 0x1234, 1));
    expect(writeVxlanEncap4(b, 0, MAC_B, MAC_A, ip4(192, 168, 0, 11), ip4(192, 168, 0, 12), sport, 1, inner.length, 9, 64))
      .toBe(VXLAN_ENCAP4_HLEN);
    const f = newFields();
    expect(parseEthernet(b, 0, b.length, f)).toBe(R_OK);
    expect(parseIPv4(b, 14, b.length - 14, f, true)).toBe(R_OK);
    expect([f[F_PROTO], f[F_SPORT], f[F_DPORT], f[F_L3LEN]]).toEqual([17, sport, 8472, b.length - 14]);
    expect(refChecksum(b, 14, 20)).toBe(0);
    expect(parseVxlan(b, f[F_L4OFF] + 8, b.length - f[F_L4OFF] - 8)).toBe(1);
    expect(parseEthernet(b, 50, inner.length, f)).toBe(R_OK);
    expect(parseIPv4(b, 64, inner.length - 14, f, true)).toBe(R_OK);
  });
});

describe('source port and flow hash', () => {
  it('stays in the kernel range [32768, 60999) and matches the kernel formula', () => {
    fc.assert(fc.property(fc.integer(), (h) => {
      const p = vxlanSourcePort(h);
      expect(p).toBeGreaterThanOrEqual(32768);
      expect(p).toBeLessThan(60999);
      const k = (BigInt((h ^ (h << 16)) >>> 0) * 28231n) >> 32n;
      expect(p).toBe(Number(k) + 32768);
    }));
    expect(vxlanSourcePort(0)).toBe(32768);
    expect(vxlanSourcePort(-1 >>> 16)).toBe(60998); // 0x0000ffff → 0xffffffff after the fold
  });

  it('flow hash is deterministic, unsigned and spreads ports', () => {
    expect(flowHash4(1, 2, 3, 4, 6)).toBe(flowHash4(1, 2, 3, 4, 6));
    expect(flowHash4(1, 2, 3, 4, 6)).not.toBe(flowHash4(1, 2, 3, 5, 6));
    const seen = new Set<number>();
    for (let i = 0; i < 1000; i++) {
      const h = flowHash4(ip4(10, 244, 1, 5), ip4(10, 244, 2, 9), 40000 + i, 80, 6);
      expect(h).toBeGreaterThanOrEqual(0);
      seen.add(vxlanSourcePort(h) >> 8);
    }
    expect(seen.size).toBeGreaterThan(90); // ~110 buckets of 256 ports
    const f = new Int32Array(8).fill(7);
    expect(flowHash6(f, 0, 4, 1, 2, 17)).not.toBe(flowHash6(f, 0, 4, 2, 1, 17));
  });
});
