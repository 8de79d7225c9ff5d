import { describe, expect, it } from 'vitest';
import { csumAdd, csumFold, l4ChecksumVerify6 } from '../../dataplane/packet/checksum.js';
import { F_DST4, F_ICMP_CODE, F_ICMP_TYPE, F_L3LEN, F_L4OFF, F_SPORT, F_SRC4, F_TTL, newFields } from '../../dataplane/packet/fields.js';
import {
  writeIcmp6EchoReplyInPlace, writeIcmp6PacketTooBig, writeIcmpEchoReplyInPlace, writeIcmpFragNeeded,
} from '../../dataplane/packet/icmp.js';
import { parseIPv4 } from '../../dataplane/packet/ipv4.js';
import { parseIPv6 } from '../../dataplane/packet/ipv6.js';
import { R_OK } from '../../dataplane/packet/reasons.js';
import { ICMP6_ECHO_PKT, ICMP_ECHO_PKT, TCP_SYN_PKT, be16, concat, hex, ip4, refChecksum } from './helpers.js';

const f = newFields();
const GW = ip4(10, 244, 0, 1);

describe('ICMPv4', () => {
  it('fragmentation needed quotes header + 8 bytes with the MTU (RFC 792/1191)', () => {
    const big = concat(TCP_SYN_PKT, new Uint8Array(1400));
    big[2] = 1460 >> 8; big[3] = 1460 & 0xff; // claims 1460 bytes
    const out = new Uint8Array(2048);
    const n = writeIcmpFragNeeded(out, 16, big, 0, 1460, 1450, GW, ip4(192, 168, 1, 10));
    expect(n).toBe(20 + 8 + 28);
    expect(parseIPv4(out, 16, n, f, true)).toBe(R_OK);
    expect([f[F_ICMP_TYPE], f[F_ICMP_CODE], f[F_L3LEN], f[F_SRC4], f[F_DST4], f[F_TTL]])
      .toEqual([3, 4, n, GW, ip4(192, 168, 1, 10), 64]);
    const icmp = f[F_L4OFF];
    expect(refChecksum(out, icmp, n - 20)).toBe(0);
    expect(be16(out, icmp + 4)).toBe(0);
    expect(be16(out, icmp + 6)).toBe(1450);
    expect([...out.subarray(icmp + 8, icmp + 36)]).toEqual([...big.subarray(0, 28)]);
  });

  it('works in place over the original packet and quotes IP options', () => {
    const orig = concat(hex('4600'), TCP_SYN_PKT.subarray(2, 20), hex('94040000'), TCP_SYN_PKT.subarray(20));
    const b = concat(new Uint8Array(14), orig);
    const n = writeIcmpFragNeeded(b, 14, b, 14, orig.length, 1400, GW, ip4(192, 168, 1, 10));
    expect(n).toBe(28 + 24 + 8);
    expect([...b.subarray(14 + 28, 14 + n)]).toEqual([...orig.subarray(0, 32)]);
    expect(csumFold(csumAdd(b, 14, 20, 0))).toBe(0);
    expect(refChecksum(b, 34, n - 20)).toBe(0);
  });

  it('short originals are quoted whole', () => {
    const tiny = ICMP_ECHO_PKT.slice(0, 24);
    const out = new Uint8Array(100);
    expect(writeIcmpFragNeeded(out, 0, tiny, 0, 24, 576, GW, 1)).toBe(52);
    expect(refChecksum(out, 20, 32)).toBe(0);
  });

  it('echo request becomes a valid reply in place', () => {
    const b = concat(new Uint8Array(14), ICMP_ECHO_PKT);
    b[14 + 8] = 3; b[14 + 10] = 0; b[14 + 11] = 0; // arrived with TTL 3
    const c = refChecksum(b, 14, 20);
    b[14 + 10] = c >> 8; b[14 + 11] = c & 0xff;
    expect(parseIPv4(b, 14, b.length - 14, f, true)).toBe(R_OK);
    writeIcmpEchoReplyInPlace(b, 14, f);
    expect(parseIPv4(b, 14, b.length - 14, f, true)).toBe(R_OK);
    expect([f[F_ICMP_TYPE], f[F_SRC4], f[F_DST4], f[F_TTL], f[F_SPORT]]).toEqual([0, ip4(10, 0, 0, 2), ip4(10, 0, 0, 1), 64, 0x1234]);
    expect(refChecksum(b, 34, 40)).toBe(0);
    const before = b.slice();
    writeIcmpEchoReplyInPlace(b, 14, f); // a reply is left alone
    expect(b).toEqual(before);
  });
});

describe('ICMPv6', () => {
  const OUR6 = hex('fd000000000000000000000000000001');

  it('Packet Too Big includes as much as fits in 1280 bytes', () => {
    const big = concat(ICMP6_ECHO_PKT.subarray(0, 40), new Uint8Array(1500));
    big[4] = 1500 >> 8; big[5] = 1500 & 0xff; big[6] = 17;
    const out = new Uint8Array(2048);
    const n = writeIcmp6PacketTooBig(out, 0, big, 0, 1540, 1450, OUR6, 0);
    expect(n).toBe(1280);
    expect(parseIPv6(out, 0, n, f)).toBe(R_OK);
    expect([f[F_ICMP_TYPE], f[F_ICMP_CODE], f[F_L3LEN]]).toEqual([2, 0, 1280]);
    expect([...out.subarray(8, 24)]).toEqual([...OUR6]);
    expect([...out.subarray(24, 40)]).toEqual([...big.subarray(8, 24)]); // back to the sender
    expect(be16(out, 44) * 65536 + be16(out, 46)).toBe(1450);
    expect(l4ChecksumVerify6(out, 40, n - 40, 8, 24, 58)).toBe(true);
    expect([...out.subarray(48, 1280)]).toEqual([...big.subarray(0, 1232)]);
  });

  it('in place, answering as the original destination', () => {
    const b = concat(new Uint8Array(14), ICMP6_ECHO_PKT, new Uint8Array(64)); // room for the reply
    const origDst = b.slice(14 + 24, 14 + 40);
    const n = writeIcmp6PacketTooBig(b, 14, b, 14, ICMP6_ECHO_PKT.length, 1280, b, 14 + 24);
    expect(n).toBe(48 + 54);
    expect([...b.subarray(14 + 8, 14 + 24)]).toEqual([...origDst]);
    expect([...b.subarray(14 + 24, 14 + 40)]).toEqual([...ICMP6_ECHO_PKT.subarray(8, 24)]);
    expect(l4ChecksumVerify6(b, 54, n - 40, 22, 38, 58)).toBe(true);
  });

  it('echo request becomes a valid reply in place', () => {
    const b = ICMP6_ECHO_PKT.slice();
    expect(parseIPv6(b, 0, b.length, f)).toBe(R_OK);
    writeIcmp6EchoReplyInPlace(b, 0, f);
    expect(parseIPv6(b, 0, b.length, f)).toBe(R_OK);
    expect([f[F_ICMP_TYPE], f[F_SPORT]]).toEqual([129, 0x0bad]);
    expect([...b.subarray(8, 24)]).toEqual([...ICMP6_ECHO_PKT.subarray(24, 40)]);
    expect(l4ChecksumVerify6(b, 40, 14, 8, 24, 58)).toBe(true);
  });
});
