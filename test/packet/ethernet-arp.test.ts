import { describe, expect, it } from 'vitest';
import {
  ARP_HLEN, ARP_SHA_OFF, ARP_SPA_OFF, ARP_THA_OFF, ARP_TPA_OFF, arpRequestToReply, parseArp, writeArpRequest,
} from '../../dataplane/packet/arp.js';
import {
  ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ethReplyInPlace, formatMac, macEquals, macIsMulticast, parseEthernet,
  parseMac, writeEthernet,
} from '../../dataplane/packet/ethernet.js';
import { F_DST4, F_ETHTYPE, F_ICMP_TYPE, F_L3LEN, F_L3OFF, F_SRC4, F_VLAN, newFields } from '../../dataplane/packet/fields.js';
import { R_BAD_ARP, R_OK, R_TRUNCATED, R_UNSUPPORTED_ETHERTYPE } from '../../dataplane/packet/reasons.js';
import { MAC_A, MAC_B, concat, ethHdr, hex, ip4, vlanEthHdr } from './helpers.js';

// Real ARP request: who-has 10.244.0.1 tell 10.244.0.7 from 02:42:0a:f4:00:07 (broadcast).
const ARP_REQ = hex(
  'ffffffffffff 02420af40007 0806' +
  '0001 0800 06 04 0001 02420af40007 0af40007 000000000000 0af40001',
);

describe('ethernet', () => {
  const f = newFields();

  it('parses untagged IPv4/IPv6/ARP', () => {
    for (const t of [ETH_P_IP, ETH_P_IPV6, ETH_P_ARP]) {
      const fr = concat(ethHdr(t), new Uint8Array(20));
      expect(parseEthernet(fr, 0, fr.length, f)).toBe(R_OK);
      expect(f[F_ETHTYPE]).toBe(t);
      expect(f[F_L3OFF]).toBe(ETH_HLEN);
      expect(f[F_VLAN]).toBe(-1);
    }
  });

  it('skips one 802.1Q tag, at a non-zero slot offset', () => {
    const fr = concat(new Uint8Array(100), vlanEthHdr(ETH_P_IP, 0x2064), new Uint8Array(20));
    expect(parseEthernet(fr, 100, fr.length - 100, f)).toBe(R_OK);
    expect(f[F_ETHTYPE]).toBe(ETH_P_IP);
    expect(f[F_VLAN]).toBe(0x064);
    expect(f[F_L3OFF]).toBe(118);
  });

  it('rejects short frames, stacked tags and other ethertypes', () => {
    const fr = concat(ethHdr(ETH_P_IP), new Uint8Array(4));
    for (let n = 0; n < ETH_HLEN; n++) expect(parseEthernet(fr, 0, n, f)).toBe(R_TRUNCATED);
    const tagged = vlanEthHdr(ETH_P_IP, 5);
    for (let n = ETH_HLEN; n < 18; n++) expect(parseEthernet(tagged, 0, n, f)).toBe(R_TRUNCATED);
    const qinq = concat(vlanEthHdr(0x8100, 5), new Uint8Array(8));
    expect(parseEthernet(qinq, 0, qinq.length, f)).toBe(R_UNSUPPORTED_ETHERTYPE);
    const lldp = concat(ethHdr(0x88cc), new Uint8Array(8));
    expect(parseEthernet(lldp, 0, lldp.length, f)).toBe(R_UNSUPPORTED_ETHERTYPE);
    expect(f[F_ETHTYPE]).toBe(0x88cc);
  });

  it('writes headers and compares MACs', () => {
    const b = new Uint8Array(20);
    writeEthernet(b, 2, MAC_B, MAC_A, ETH_P_IPV6);
    expect([...b.subarray(2, 16)]).toEqual([...ethHdr(ETH_P_IPV6)]);
    expect(macEquals(b, 2, MAC_B)).toBe(true);
    expect(macEquals(b, 8, MAC_B)).toBe(false);
    ethReplyInPlace(b, 2, hex('0a0b0c0d0e0f'));
    expect(formatMac(b, 2)).toBe('02:00:00:00:00:01');
    expect(formatMac(b, 8)).toBe('0a:0b:0c:0d:0e:0f');
    expect(macIsMulticast(ARP_REQ, 0)).toBe(true);
  });

  it('parseMac / formatMac round-trip and reject junk', () => {
    expect([...parseMac('02:42:AC:11:00:02')]).toEqual([2, 0x42, 0xac, 0x11, 0, 2]);
    expect(formatMac(parseMac('2-42-ac-11-0-2'), 0)).toBe('02:42:ac:11:00:02');
    for (const bad of ['', '02:42:ac:11:00', '02:42:ac:11:00:zz', '02:42:ac:11:00:02:03', '002:42:ac:11:00:02']) {
      expect(() => parseMac(bad)).toThrow();
    }
  });
});

describe('arp', () => {
  const f = newFields();

  it('parses a real request', () => {
    expect(parseEthernet(ARP_REQ, 0, ARP_REQ.length, f)).toBe(R_OK);
    expect(parseArp(ARP_REQ, 14, ARP_REQ.length - 14, f)).toBe(R_OK);
    expect(f[F_ICMP_TYPE]).toBe(1);
    expect(f[F_SRC4]).toBe(ip4(10, 244, 0, 7));
    expect(f[F_DST4]).toBe(ip4(10, 244, 0, 1));
    expect(f[F_L3LEN]).toBe(ARP_HLEN);
    expect(formatMac(ARP_REQ, 14 + ARP_SHA_OFF)).toBe('02:42:0a:f4:00:07');
  });

  it('rejects truncation, non-Ethernet/IPv4 and unknown ops', () => {
    for (let n = 0; n < ARP_HLEN; n++) expect(parseArp(ARP_REQ, 14, n, f)).toBe(R_TRUNCATED);
    for (const [i, v] of [[1, 6], [2, 0x86], [4, 8], [5, 16], [7, 3], [6, 1]] as const) {
      const p = ARP_REQ.slice(14);
      p[i] = v;
      expect(parseArp(p, 0, p.length, f)).toBe(R_BAD_ARP);
    }
  });

  it('turns a request into a reply in place', () => {
    const fr = ARP_REQ.slice();
    const ours = hex('eeeeeeeeeeee');
    ethReplyInPlace(fr, 0, ours);
    arpRequestToReply(fr, 14, ours);
    expect(parseArp(fr, 14, fr.length - 14, f)).toBe(R_OK);
    expect(f[F_ICMP_TYPE]).toBe(2);
    expect(f[F_SRC4]).toBe(ip4(10, 244, 0, 1)); // we answer for the asked address
    expect(f[F_DST4]).toBe(ip4(10, 244, 0, 7));
    expect(macEquals(fr, 14 + ARP_SHA_OFF, ours)).toBe(true);
    expect(formatMac(fr, 14 + ARP_THA_OFF)).toBe('02:42:0a:f4:00:07');
    expect(formatMac(fr, 0)).toBe('02:42:0a:f4:00:07');
    expect([...fr.subarray(14 + ARP_SPA_OFF, 14 + ARP_SPA_OFF + 4)]).toEqual([10, 244, 0, 1]);
    expect([...fr.subarray(14 + ARP_TPA_OFF, 14 + ARP_TPA_OFF + 4)]).toEqual([10, 244, 0, 7]);
  });

  it('writes a request that parses back (high addresses stay int32)', () => {
    const b = new Uint8Array(ARP_HLEN);
    const ip = ip4(192, 168, 0, 1);
    expect(writeArpRequest(b, 0, MAC_A, ip, ip4(192, 168, 0, 254))).toBe(ARP_HLEN);
    expect(parseArp(b, 0, b.length, f)).toBe(R_OK);
    expect(f[F_SRC4]).toBe(ip);
    expect(f[F_SRC4]).toBeLessThan(0);
    expect(f[F_DST4]).toBe(ip4(192, 168, 0, 254));
    expect([...b.subarray(ARP_THA_OFF, ARP_THA_OFF + 6)]).toEqual([0, 0, 0, 0, 0, 0]);
    expect(macEquals(b, ARP_SHA_OFF, MAC_B)).toBe(false);
  });
});
