// IPv6 through the same stages, in memory (no root): every source × next hop ×
// offload state, checked by what the packets that leave hold (families,
// MACs, hop limits, payload lengths, checksums), plus neighbour discovery,
// Packet Too Big, anti-spoofing and the overlay's trust checks for IPv6.
import { describe, expect, test } from 'vitest';
import { POD_A, POD_B, GW } from './rig.js';
import { rig6, receive6, pass6, words, packet6, GW6, POD_A6, POD_B6, REMOTE_POD6, PEER6, VTEP6, PEER_VTEP6, type Source6 } from './rig6.js';
import { graphCases, where, LEN, type Dest, type Sent } from './rig.js';
import { formatMac, l4ChecksumVerify6, ETH_HLEN, VXLAN_HLEN, IPPROTO_ICMPV6, IPPROTO_UDP, parseMac, writeEthernet, ETH_P_IP, writeIPv4Header } from '../../dataplane/packet/index.js';
import { VNET_HLEN } from '../../dataplane/packet/virtio.js';
import { ingressVxlan6 } from '../../dataplane/stages/ingress-vxlan.js';
import { forward } from '../../dataplane/stages/forward.js';
import { FROM_VXLAN6 } from '../../dataplane/stages/graph.js';
import { formatIPv6Address } from '../../lib/ipv6.js';

const DESTS: Record<Dest, string> = { 'local pod': POD_B6, 'remote pod': REMOTE_POD6, host: GW6, service: 'fd00:10:96::a', outside: '2001:db8::1', 'no such pod': 'fd00:10:244:1::99' };
const SRC: Record<Source6, string> = { pod: POD_A6, tun: GW6, vxlan6: REMOTE_POD6 };
const PEER6_KEY = words(PEER6).map((w) => (w >>> 0).toString(16)).join('.');

/** The IPv6 header's offset in what was sent, and whether a virtio_net_hdr leads. */
function l3Of(s: Sent): { l3: number; vnet: boolean } {
  if (s.out === 'udp6') return { l3: VXLAN_HLEN + ETH_HLEN, vnet: false };
  if (s.out === 'pod') return { l3: (s.to as number) < 0 ? VNET_HLEN + ETH_HLEN : ETH_HLEN, vnet: (s.to as number) < 0 };
  return { l3: s.bytes.length > 0 && s.bytes[0] >> 4 !== 6 ? VNET_HLEN : 0, vnet: s.bytes[0] >> 4 !== 6 };
}

const cases = graphCases(['pod', 'tun', 'vxlan6'] as const, 'vxlan6', Object.keys(DESTS) as Dest[]);

describe('IPv6 through the packet graph, in memory', () => {
  test.each(cases)('%s → %s, %s, offloads %s', (source, dest, offload, offloads) => {
    const r = rig6(offloads);
    receive6(r, source, offload, SRC[source], DESTS[dest], LEN[offload]);
    const sent = pass6(r, source);
    const want = where(source, 'vxlan6', dest, 'udp6');
    if (want.startsWith('drop_')) {
      expect(sent).toEqual([]);
      expect(r.counters()[want]).toBe(1);
      return;
    }
    expect(new Set(sent.map((s) => s.out))).toEqual(new Set([want]));
    const mss = r.ctx.overlayMtu6 - 60, pieces = Math.ceil((LEN.gso - 60) / mss);
    const whole = want === 'pod' || want === 'tun' ? offloads : false;
    expect(sent.length).toBe(offload === 'gso' && !whole ? pieces : 1);
    let payload = 0;
    for (const s of sent) {
      const { l3, vnet } = l3Of(s), b = s.bytes;
      expect(b[l3] >> 4).toBe(6);
      const plen = (b[l3 + 4] << 8) | b[l3 + 5];
      expect(l3 + 40 + plen).toBe(b.length);
      payload += plen - (b[l3 + 6] === 6 ? 20 : 8);
      // hop limit: one less where a router forwarded it (pods' and the overlay's packets), the host's own as sent
      expect(b[l3 + 7]).toBe(source === 'vxlan6' ? (want === 'tun' ? 63 : 62) : source === 'pod' && want !== 'tun' ? 63 : 64);
      if (s.out === 'udp6') {
        expect(s.to).toBe(PEER6_KEY);
        expect(formatMac(b, VXLAN_HLEN)).toBe(PEER_VTEP6);
        expect(formatMac(b, VXLAN_HLEN + 6)).toBe(VTEP6);
        expect((b[VXLAN_HLEN + 12] << 8) | b[VXLAN_HLEN + 13]).toBe(0x86dd);
      }
      if (s.out === 'pod') {
        expect(Math.abs(s.to as number)).toBe(POD_B.ifindex);
        expect((b[l3 - 2] << 8) | b[l3 - 1]).toBe(0x86dd);
      }
      // A finished checksum must verify; one left partial goes with a virtio_net_hdr that says so.
      const partialLeft = vnet && (b[0] & 1) === 1;
      if (!partialLeft) expect(l4ChecksumVerify6(b, l3 + 40, plen, l3 + 8, l3 + 24, b[l3 + 6])).toBe(true);
      // GSO_TCPV6, and gso_size: the sender's, or for a peer's tunnel super-packet what the pod MTU allows (ingress-vxlan.ts)
      if (vnet && offload === 'gso') { expect(b[1]).toBe(4); expect(b[4] | (b[5] << 8)).toBe(source === 'vxlan6' ? r.cfg.podMtu - 60 : mss); }
    }
    expect(payload).toBe(LEN[offload] - 40 - (offload === 'plain' ? 8 : 20));
  });

  test('a pod\'s neighbour solicitation for its gateway is answered with the gateway MAC', () => {
    const r = rig6(false), b = r.bt.arena;
    const l3 = receive6(r, 'pod', 'plain', POD_A6, 'ff02::1:ff00:1', 72, { proto: IPPROTO_ICMPV6, hops: 255 });
    const icmp = l3 + 40;
    b.fill(0, icmp, icmp + 32);
    b[icmp] = 135; // NS, target GW6, source link-layer option
    words(GW6).forEach((w, k) => { for (let j = 0; j < 4; j++) b[icmp + 8 + 4 * k + j] = (w >>> (24 - 8 * j)) & 0xff; });
    b[icmp + 24] = 1; b[icmp + 25] = 1;
    const sent = pass6(r, 'pod');
    expect(r.counters().nd_replies).toBe(1);
    expect(sent).toHaveLength(1);
    const na = sent[0].bytes;
    expect(sent[0].to).toBe(POD_A.ifindex);
    expect(formatMac(na, 0)).toBe(POD_A.mac);
    expect(formatMac(na, 6)).toBe('ee:ee:ee:ee:ee:ee');
    expect(na[ETH_HLEN + 40]).toBe(136);
    expect(na[ETH_HLEN + 7]).toBe(255);
    expect(formatIPv6Address([0, 1, 2, 3].map((k) => ((na[ETH_HLEN + 8 + 4 * k] << 24) | (na[ETH_HLEN + 9 + 4 * k] << 16) | (na[ETH_HLEN + 10 + 4 * k] << 8) | na[ETH_HLEN + 11 + 4 * k]) >>> 0))).toBe(GW6);
    expect(formatMac(na, ETH_HLEN + 40 + 26)).toBe('ee:ee:ee:ee:ee:ee');
    expect(l4ChecksumVerify6(na, ETH_HLEN + 40, 32, ETH_HLEN + 8, ETH_HLEN + 24, IPPROTO_ICMPV6)).toBe(true);
  });

  test('duplicate address detection, router solicitations and other link-local chatter are not answered or routed', () => {
    const r = rig6(false), b = r.bt.arena;
    const l3 = receive6(r, 'pod', 'plain', '::', 'ff02::1:ff00:5', 64, { proto: IPPROTO_ICMPV6, hops: 255 });
    b.fill(0, l3 + 40, l3 + 64); b[l3 + 40] = 135;
    expect(pass6(r, 'pod')).toEqual([]);
    const l3b = receive6(r, 'pod', 'plain', 'fe80::5', 'ff02::2', 56, { proto: IPPROTO_ICMPV6, hops: 255 });
    b.fill(0, l3b + 40, l3b + 56); b[l3b + 40] = 133; // router solicitation
    expect(pass6(r, 'pod')).toEqual([]);
    expect(r.counters().nd_ignored).toBe(2);
    expect(r.counters().nd_replies).toBeUndefined();
  });

  test('anti-spoofing: another source address or MAC is dropped', () => {
    const r = rig6(false);
    receive6(r, 'pod', 'plain', 'fd00:10:244:1::77', REMOTE_POD6, 200);
    r.bt.meta[0] = POD_A.ifindex;
    expect(pass6(r, 'pod')).toEqual([]);
    receive6(r, 'pod', 'plain', POD_A6, REMOTE_POD6, 200, { podMac: '02:00:00:aa:00:99' });
    expect(pass6(r, 'pod')).toEqual([]);
    receive6(r, 'pod', 'plain', POD_B6, REMOTE_POD6, 200); // POD_B's address on POD_A's veth
    r.bt.meta[0] = POD_A.ifindex;
    expect(pass6(r, 'pod')).toEqual([]);
    expect(r.counters().drop_spoofed).toBe(3);
  });

  test('hop limit 1 from a pod is dropped', () => {
    const r = rig6(false);
    receive6(r, 'pod', 'plain', POD_A6, REMOTE_POD6, 200, { hops: 1 });
    expect(pass6(r, 'pod')).toEqual([]);
    expect(r.counters().drop_ttl).toBe(1);
  });

  test('over the pod MTU: ICMPv6 Packet Too Big back to the pod, and back over the IPv6 overlay', () => {
    const r = rig6(false);
    receive6(r, 'pod', 'plain', POD_A6, REMOTE_POD6, 1480);
    let sent = pass6(r, 'pod');
    expect(sent).toHaveLength(1);
    let b = sent[0].bytes, l3 = ETH_HLEN;
    expect(sent[0].to).toBe(POD_A.ifindex);
    expect(b[l3 + 6]).toBe(IPPROTO_ICMPV6);
    expect(b[l3 + 40]).toBe(2);
    expect((b[l3 + 44] << 24) | (b[l3 + 45] << 16) | (b[l3 + 46] << 8) | b[l3 + 47]).toBe(1430); // the IPv6 overlay's MTU
    expect(l4ChecksumVerify6(b, l3 + 40, b.length - l3 - 40, l3 + 8, l3 + 24, IPPROTO_ICMPV6)).toBe(true);
    expect(r.counters().icmp6_too_big_sent).toBe(1);

    receive6(r, 'vxlan6', 'plain', REMOTE_POD6, POD_B6, 1480);
    sent = pass6(r, 'vxlan6');
    expect(sent).toHaveLength(1);
    expect(sent[0].out).toBe('udp6');
    expect(sent[0].to).toBe(PEER6_KEY);
    b = sent[0].bytes; l3 = VXLAN_HLEN + ETH_HLEN;
    expect(b[l3 + 40]).toBe(2);
    expect((b[l3 + 44] << 24) | (b[l3 + 45] << 16) | (b[l3 + 46] << 8) | b[l3 + 47]).toBe(1450); // the pod's
    expect(l4ChecksumVerify6(b, l3 + 40, b.length - l3 - 40, l3 + 8, l3 + 24, IPPROTO_ICMPV6)).toBe(true);
    expect(r.counters().icmp6_too_big_sent).toBe(2);
  });

  test('1431 to 1450 bytes: delivered to a local pod, Packet Too Big (1430) for a remote one, as flannel-v6.1 clamps it', () => {
    const r = rig6(false);
    receive6(r, 'pod', 'plain', POD_A6, POD_B6, 1440);
    expect(pass6(r, 'pod').map((s) => s.out)).toEqual(['pod']);
    receive6(r, 'pod', 'plain', POD_A6, REMOTE_POD6, 1440);
    const sent = pass6(r, 'pod');
    expect(sent.map((s) => s.out)).toEqual(['pod']);
    expect(sent[0].bytes[ETH_HLEN + 40]).toBe(2);
    receive6(r, 'pod', 'plain', POD_A6, REMOTE_POD6, 1430);
    expect(pass6(r, 'pod').map((s) => s.out)).toEqual(['udp6']);
  });

  test('the IPv6 overlay trusts only IPv6 peers, their pod ranges, and IPv6 inside', () => {
    const r = rig6(false);
    receive6(r, 'vxlan6', 'plain', REMOTE_POD6, POD_B6, 300);
    r.bt.from6.set(words('fc00::99'), 0);
    expect(pass6(r, 'vxlan6')).toEqual([]);
    expect(r.counters().drop_unknown_vtep).toBe(1);
    receive6(r, 'vxlan6', 'plain', 'fd00:10:244:3::7', POD_B6, 300);
    expect(pass6(r, 'vxlan6')).toEqual([]);
    expect(r.counters().drop_foreign_source).toBe(1);
    // IPv4 inside VXLAN over IPv6: flannel keeps the families apart
    receive6(r, 'vxlan6', 'plain', REMOTE_POD6, POD_B6, 300);
    const b = r.bt.arena, off = r.bt.offs[0];
    writeEthernet(b, off + VXLAN_HLEN, parseMac(VTEP6), parseMac(PEER_VTEP6), ETH_P_IP);
    writeIPv4Header(b, off + VXLAN_HLEN + ETH_HLEN, 300, 1, 64, IPPROTO_UDP, 0x0af40207, 0x0af40106, true);
    expect(pass6(r, 'vxlan6')).toEqual([]);
    expect(r.counters().drop_wrong_family).toBe(1);
  });

  test('TCP segments of one flow from the IPv6 overlay are coalesced into one GSO_TCPV6 frame for the pod', () => {
    const r = rig6(true), bt = r.bt, b = bt.arena;
    bt.aimGro();
    const base = bt.offs[0], seg = 1000, n = 5, mss = seg - 60;
    for (let k = 0; k < n; k++) {
      const off = base + k * 1100;
      b.set(b.subarray(0, 0), off);
      const l3 = off + VXLAN_HLEN + ETH_HLEN;
      b[off] = 0x08; b[off + 1] = 0; b[off + 2] = 0; b[off + 3] = 0; b[off + 4] = 0; b[off + 5] = 0; b[off + 6] = 1; b[off + 7] = 0;
      writeEthernet(b, off + VXLAN_HLEN, parseMac(VTEP6), parseMac(PEER_VTEP6), 0x86dd);
      packet6(b, l3, seg, 6, REMOTE_POD6, POD_B6, false, 63);
      const seq = 1000 + k * mss;
      b[l3 + 44] = seq >>> 24; b[l3 + 45] = (seq >>> 16) & 0xff; b[l3 + 46] = (seq >>> 8) & 0xff; b[l3 + 47] = seq & 0xff;
      b[l3 + 53] = 0x10; // ACK
      // checksum again over the new sequence number and flags
      b[l3 + 56] = 0; b[l3 + 57] = 0;
      let s = 0;
      for (let q = l3 + 8; q < l3 + 40; q += 2) s += (b[q] << 8) | b[q + 1];
      s += seg - 40 + 6;
      for (let q = l3 + 40; q < l3 + seg; q += 2) s += (b[q] << 8) | (q + 1 < l3 + seg ? b[q + 1] : 0);
      while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
      const v = ~s & 0xffff;
      b[l3 + 56] = v >> 8; b[l3 + 57] = v & 0xff;
      bt.offs[k] = off; bt.lens[k] = VXLAN_HLEN + ETH_HLEN + seg; bt.meta[k] = 0; bt.aux[k] = 0;
    }
    bt.from6.set(words(PEER6), 0);
    bt.n = n;
    bt.clearOutputs();
    ingressVxlan6(r.ctx, bt);
    forward(r.ctx, bt, FROM_VXLAN6);
    expect(bt.nPod).toBe(n + 1); // the made header, then each segment's payload, one chain
    expect(r.counters().coalesced_segments).toBe(n);
    const h = bt.podIdx[0], hb = b.subarray(bt.offs[h], bt.offs[h] + bt.lens[h]);
    expect(hb[1]).toBe(4); // GSO_TCPV6
    expect(hb[4] | (hb[5] << 8)).toBe(mss);
    const ip6 = VNET_HLEN + ETH_HLEN;
    expect((hb[ip6 + 4] << 8) | hb[ip6 + 5]).toBe(n * mss + 20);
    expect(hb[ip6 + 7]).toBe(62);
  });
});

test('the IPv6 rig keeps the IPv4 gateway and pods of rig.ts', () => {
  expect(GW).toBe('10.244.1.1');
  expect(POD_B.ip).toBe('10.244.1.6');
});
