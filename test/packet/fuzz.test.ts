// Robustness: 100k random and mutated frames through every parser. Checks:
// no throw, only valid reason codes, offsets within the frame, and results
// that do not depend on bytes outside [off, off+len) (no out-of-bounds reads).
import { describe, expect, it } from 'vitest';
import { parseArp } from '../../dataplane/packet/arp.js';
import { ETH_P_IP, ETH_P_IPV6, parseEthernet } from '../../dataplane/packet/ethernet.js';
import { F_COUNT, F_DPORT, F_ETHTYPE, F_L3LEN, F_L3OFF, F_L4LEN, F_L4OFF, F_PROTO, newFields } from '../../dataplane/packet/fields.js';
import { parseIPv4 } from '../../dataplane/packet/ipv4.js';
import { parseIPv6 } from '../../dataplane/packet/ipv6.js';
import { R_COUNT, R_OK, REASON_NAMES } from '../../dataplane/packet/reasons.js';
import { parseVxlan, VXLAN_ENCAP4_HLEN, writeVxlanEncap4 } from '../../dataplane/packet/vxlan.js';
import {
  ICMP6_ECHO_PKT, ICMP_ECHO_PKT, MAC_A, MAC_B, TCP_SYN_PKT, UDP_DNS_PKT, ahHdr, concat, ethHdr, fragHdr, hex, ipv6WithExts,
  optHdr, vlanEthHdr,
} from './helpers.js';

const FRAMES = 100_000;
const SLOT = 2048;
const GUARD = 64;

// xorshift32: deterministic and far cheaper than fast-check for 100k cases.
let seed = 0x2545f491;
function rnd(): number {
  seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
  return seed >>> 0;
}
function below(n: number): number {
  return rnd() % n;
}

function seeds(): Uint8Array[] {
  const ipOpts = concat(hex('4700'), TCP_SYN_PKT.subarray(2, 20), hex('0101010101010100'), TCP_SYN_PKT.subarray(20));
  const frag = UDP_DNS_PKT.slice();
  frag[6] = 0x20; frag[7] = 0x10;
  const inner = concat(ethHdr(ETH_P_IP), ICMP_ECHO_PKT);
  const vx = new Uint8Array(VXLAN_ENCAP4_HLEN + inner.length);
  vx.set(inner, VXLAN_ENCAP4_HLEN);
  writeVxlanEncap4(vx, 0, MAC_B, MAC_A, 0xc0a8000b | 0, 0xc0a8000c | 0, 40000, 1, inner.length, 1, 64);
  const tcp = TCP_SYN_PKT.subarray(20);
  return [
    concat(ethHdr(ETH_P_IP), ICMP_ECHO_PKT),
    concat(ethHdr(ETH_P_IP), TCP_SYN_PKT, new Uint8Array(4)),
    concat(vlanEthHdr(ETH_P_IP, 7), UDP_DNS_PKT),
    concat(ethHdr(ETH_P_IP), ipOpts),
    concat(ethHdr(ETH_P_IP), frag),
    concat(ethHdr(ETH_P_IPV6), ICMP6_ECHO_PKT),
    concat(ethHdr(ETH_P_IPV6), ipv6WithExts([[0, optHdr(1)], [43, optHdr(2)], [51, ahHdr(2)], [44, fragHdr(0, true, 9)], [60, optHdr(1)]], 6, tcp)),
    concat(ethHdr(ETH_P_IPV6), ipv6WithExts([[44, fragHdr(100, true, 9)]], 17, new Uint8Array(24))),
    concat(hex('ffffffffffff02420af400070806'), hex('0001080006040001 02420af40007 0af40007 000000000000 0af40001')),
    vx,
  ];
}

// Byte offsets (within a frame) of length-ish fields worth hammering.
const LENGTH_FIELDS = [12, 13, 14, 42, 15, 16, 17, 18, 19, 20, 21, 22, 23, 38, 39, 40, 41, 46, 54, 55, 56, 57, 58, 62, 63, 66, 70, 74, 78, 82];

describe('parser fuzz', () => {
  it(`${FRAMES} random/mutated frames: no throw, valid reasons, offsets in bounds`, () => {
    const base = seeds();
    const arena = new Uint8Array(new SharedArrayBuffer(SLOT * 4));
    const f = newFields();
    const sig = new Int32Array(F_COUNT * 16 + 16);
    const sig2 = new Int32Array(sig.length);
    const failures: string[] = [];
    const frame = new Uint8Array(SLOT);
    const histogram = new Int32Array(R_COUNT);

    // Run every parser over the frame at off, recording results into out.
    function runAll(off: number, len: number, out: Int32Array): string | null {
      let k = 0;
      const end = off + len;
      const check = (r: number, what: string): string | null => {
        if (!Number.isInteger(r) || r < 0 || r >= R_COUNT) return `${what}: bad reason ${r}`;
        histogram[r]++;
        const l3 = f[F_L3OFF], l4 = f[F_L4OFF];
        if (l3 < off || l3 > end) return `${what}: F_L3OFF ${l3 - off} outside [0, ${len}]`;
        if (l4 < off || l4 > end) return `${what}: F_L4OFF ${l4 - off} outside [0, ${len}]`;
        if (r === R_OK && what.includes('ip') &&
          (l3 + f[F_L3LEN] > end || l4 + f[F_L4LEN] > end || f[F_L4LEN] < 0 || l4 < l3)) return `${what}: lengths past end`;
        out.set(f, k);
        out[k + F_COUNT] = r;
        k += F_COUNT + 1;
        return null;
      };
      let e: string | null;
      // Clear first: stale fields from a previous call would differ between the two runs.
      const run = (what: string, parse: () => number): string | null => (f.fill(0), check(parse(), what));
      if ((e = run('eth', () => parseEthernet(arena, off, len, f)))) return e;
      const l3 = f[F_L3OFF];
      const et = f[F_ETHTYPE];
      if ((e = run('arp', () => parseArp(arena, l3, end - l3, f)))) return e;
      if ((e = run('ipv6', () => parseIPv6(arena, l3, end - l3, f)))) return e;
      if ((e = run('ipv4', () => parseIPv4(arena, l3, end - l3, f, false)))) return e;
      let r4 = 0;
      if ((e = run('ipv4v', () => (r4 = parseIPv4(arena, l3, end - l3, f, true))))) return e;
      // Raw L3 at the slot start too (as for a TUN device without Ethernet).
      if ((e = run('ipv4raw', () => parseIPv4(arena, off, len, f, true)))) return e;
      if ((e = run('ipv6raw', () => parseIPv6(arena, off, len, f)))) return e;
      if ((e = run('arpraw', () => parseArp(arena, off, len, f)))) return e;
      for (const vo of [off, off + 42, off + 46, end - 8]) {
        if (vo < off) continue;
        const v = parseVxlan(arena, vo, end - vo);
        if (!Number.isInteger(v) || v > 0xffffff || (v < 0 && -v >= R_COUNT)) return `vxlan: bad result ${v}`;
        if (v < 0) histogram[-v]++;
        out[k++] = v;
      }
      // Follow a VXLAN encapsulation into the inner frame.
      if (et === ETH_P_IP && r4 === R_OK) {
        parseIPv4(arena, l3, end - l3, f, true);
        if (f[F_PROTO] === 17 && f[F_DPORT] === 8472) {
          const vo = f[F_L4OFF] + 8;
          const v = parseVxlan(arena, vo, end - vo);
          if (v >= 0) {
            const io = vo + 8;
            if ((e = run('inner eth', () => parseEthernet(arena, io, end - io, f)))) return e;
            const il3 = f[F_L3OFF];
            if ((e = run('inner ipv4', () => parseIPv4(arena, il3, end - il3, f, true)))) return e;
            if ((e = run('inner ipv6', () => parseIPv6(arena, il3, end - il3, f)))) return e;
          }
        }
      }
      out[k] = -12345;
      return null;
    }

    const t0 = performance.now();
    for (let n = 0; n < FRAMES; n++) {
      // 1. Build the frame: a mutated seed, or pure noise.
      const s = base[n % base.length];
      let len: number;
      const mode = n < 2000 ? 0 : below(10);
      if (mode === 9) {
        len = below(300);
        for (let i = 0; i < len; i++) frame[i] = rnd() & 0xff;
        if (len > 14 && (rnd() & 1)) { frame[12] = 0x86; frame[13] = 0xdd; }
        if (len > 15 && (rnd() & 1)) frame[14] = (frame[14] & 0x0f) | (rnd() & 1 ? 0x40 : 0x60);
      } else {
        frame.set(s);
        len = s.length;
        if (mode === 0) {
          len = n % (s.length + 1); // truncation at every length, seed by seed
        } else {
          const muts = 1 + below(4);
          for (let m = 0; m < muts; m++) {
            const kind = below(4);
            if (kind === 0) { const bit = below(len * 8); frame[bit >> 3] ^= 1 << (bit & 7); }
            else if (kind === 1) { frame[LENGTH_FIELDS[below(LENGTH_FIELDS.length)] % len] = rnd() & 0xff; }
            else if (kind === 2) { frame[below(len)] = rnd() & 0xff; }
            else { len = below(len + 1); if (len === 0) break; }
          }
          if (rnd() & 1) len = Math.min(len + below(30), SLOT - GUARD); // trailing junk/padding
        }
      }
      const off = SLOT + (n & 63) * 2; // varying slot alignment, odd offsets included via +1 below
      const o = off + (n & 1);

      // 2. Run twice with different bytes outside the frame; results must match.
      try {
        arena.fill(0x00, o - GUARD, o);
        arena.set(frame.subarray(0, len), o);
        arena.fill(0x00, o + len, o + len + GUARD);
        let err = runAll(o, len, sig);
        if (!err) {
          arena.fill(0xff, o - GUARD, o);
          arena.fill(0xff, o + len, o + len + GUARD);
          err = runAll(o, len, sig2);
          if (!err) for (let i = 0; i < sig.length; i++) if (sig[i] !== sig2[i]) { err = `depends on bytes outside the frame (slot ${i})`; break; }
        }
        if (err) failures.push(`frame ${n} len ${len}: ${err}: ${Buffer.from(frame.subarray(0, len)).toString('hex')}`);
      } catch (x) {
        failures.push(`frame ${n} len ${len}: threw ${String(x)}: ${Buffer.from(frame.subarray(0, len)).toString('hex')}`);
      }
      if (failures.length > 5) break;
    }
    const ms = performance.now() - t0;
    const counts = REASON_NAMES.map((name, i) => `${name}=${histogram[i]}`).join(' ');
    console.log(`fuzz: ${FRAMES} frames in ${ms.toFixed(0)} ms; results: ${counts}`);
    expect(failures).toEqual([]);
    // Sanity: the corpus exercises most reasons, not just TRUNCATED.
    expect(histogram.filter((c) => c > 0).length).toBeGreaterThanOrEqual(9);
  });
});
