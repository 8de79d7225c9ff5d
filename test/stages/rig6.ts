// The IPv6 side of the in-memory rig (rig.ts): the same node, dual-stack, as
// flannel's dual-stack vxlan backend runs one. Its IPv6 pod range is
// fd00:10:244:1::/64, the remote node's fd00:10:244:2::/64 behind its IPv6
// VTEP at fc00::12. Builders for IPv6 packets from each source, including the
// overlay over IPv6 (FROM_VXLAN6), and pass6, which also collects what went to
// the IPv6 overlay.
import { defaultEngineConfig } from '../../dataplane/engine/config.js';
import { compileFib } from '../../dataplane/tables/fib.js';
import { NCOUNTERS, COUNTER_NAMES } from '../../dataplane/stages/counters.js';
import { Conntrack } from '../../dataplane/tables/conntrack.js';
import { StageContext } from '../../dataplane/stages/context.js';
import { Batch } from '../../dataplane/stages/batch.js';
import { ingressVxlan6 } from '../../dataplane/stages/ingress-vxlan.js';
import { ingressTun } from '../../dataplane/stages/ingress-tun.js';
import { ingressPod } from '../../dataplane/stages/ingress-pod.js';
import { forward } from '../../dataplane/stages/forward.js';
import { FROM_POD, FROM_TUN, FROM_VXLAN6 } from '../../dataplane/stages/graph.js';
import { ETH_HLEN, ETH_P_IPV6, IPPROTO_TCP, IPPROTO_UDP, VXLAN_HLEN, parseMac, writeEthernet, writeVxlan, l4Checksum6, csumFold, pseudoHeaderSum6 } from '../../dataplane/packet/index.js';
import { VNET_HLEN, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV6, writeVnet, zeroVnet } from '../../dataplane/packet/virtio.js';
import { parseIPv6Address } from '../../lib/ipv6.js';
import { GW, UNDERLAY, PEER, POD_A, POD_B, VTEP, PEER_VTEP, sent, type Rig, type Sent } from './rig.js';

export const GW6 = 'fd00:10:244:1::1', UNDERLAY6 = 'fc00::11', PEER6 = 'fc00::12';
export const POD_A6 = 'fd00:10:244:1::5', POD_B6 = 'fd00:10:244:1::6', REMOTE_POD6 = 'fd00:10:244:2::7';
export const VTEP6 = '02:00:00:00:01:06', PEER_VTEP6 = '02:00:00:00:02:06';
export type Source6 = 'pod' | 'tun' | 'vxlan6';
export type Offload = 'plain' | 'partial' | 'gso';

export const words = (s: string): number[] => [...parseIPv6Address(s)].map((w) => w | 0);

export function rig6(offloads = true): Rig {
  const cfg = defaultEngineConfig({ node: 't', underlayIp: UNDERLAY, underlayIp6: UNDERLAY6, vtepMac: VTEP, vtepMac6: VTEP6, workers: 1, podMtu: 1450, podTso: offloads, podGso: offloads, tunTso: offloads });
  const stats = new SharedArrayBuffer(8 * NCOUNTERS);
  const ctx = new StageContext(cfg, { podTso: offloads, podGso: offloads, tunTso: offloads, udpGso: offloads, udpGro: offloads, vnetSend: offloads }, stats, 0);
  const fib = compileFib({
    clusterCIDR: '10.244.0.0/16', podCIDR: '10.244.1.0/24', hostIPs: [GW, UNDERLAY, GW6, UNDERLAY6], serviceCIDR: '10.96.0.0/12',
    clusterCIDR6: 'fd00:10:244::/56', podCIDR6: 'fd00:10:244:1::/64', serviceCIDR6: 'fd00:10:96::/112',
    pods: [{ ...POD_A, ip6: POD_A6 }, { ...POD_B, ip6: POD_B6 }],
    remotes: [{ name: 'n2', podCIDR: '10.244.2.0/24', underlayIP: PEER, vtepMAC: PEER_VTEP, podCIDR6: 'fd00:10:244:2::/64', underlayIP6: PEER6, vtepMAC6: PEER_VTEP6 }],
  });
  ctx.setTables({ ...fib, gatewayIP: GW, gatewayIP6: GW6, translated: Conntrack.create(1024).buffer, translated6: Conntrack.create(1024, 6).buffer });
  ctx.now = 1000;
  const bt = new Batch(cfg.batch, 2048, 2, 4096, { bigSlots: cfg.batch, outBytes: 1 << 20 });
  const c = new Float64Array(stats);
  return { cfg, ctx, bt, counters: () => Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, c[i]]).filter(([, v]) => v !== 0)) };
}

function put(b: Uint8Array, at: number, s: string): void {
  const w = parseIPv6Address(s);
  for (let k = 0; k < 4; k++) { b[at + 4 * k] = w[k] >>> 24; b[at + 4 * k + 1] = (w[k] >>> 16) & 0xff; b[at + 4 * k + 2] = (w[k] >>> 8) & 0xff; b[at + 4 * k + 3] = w[k] & 0xff; }
}

/** An IPv6 TCP or UDP packet of `len` bytes at l3, payload a pattern; its L4 checksum partial or finished. */
export function packet6(b: Uint8Array, l3: number, len: number, proto: number, src: string, dst: string, partial: boolean, hops = 64): void {
  for (let k = 0; k < len; k++) b[l3 + k] = (k * 7 + 3) & 0xff;
  const l4 = l3 + 40, l4len = len - 40;
  b[l3] = 0x60; b[l3 + 1] = 0; b[l3 + 2] = 0x12; b[l3 + 3] = 0x34;
  b[l3 + 4] = l4len >> 8; b[l3 + 5] = l4len & 0xff; b[l3 + 6] = proto; b[l3 + 7] = hops;
  put(b, l3 + 8, src); put(b, l3 + 24, dst);
  b[l4] = 0x9c; b[l4 + 1] = 0x40; b[l4 + 2] = 0x1f; b[l4 + 3] = 0x90; // ports 40000 → 8080
  const field = proto === IPPROTO_TCP ? 16 : 6;
  if (proto === IPPROTO_TCP) { b[l4 + 12] = 5 << 4; b[l4 + 13] = 0x18; }
  else if (proto === IPPROTO_UDP) { b[l4 + 4] = l4len >> 8; b[l4 + 5] = l4len & 0xff; }
  else return; // ICMPv6 and the rest: the caller writes it
  b[l4 + field] = 0; b[l4 + field + 1] = 0;
  const v = partial ? ~csumFold(pseudoHeaderSum6(b, l3 + 8, l3 + 24, proto, l4len)) & 0xffff : l4Checksum6(b, l4, l4len, l3 + 8, l3 + 24, proto);
  b[l4 + field] = v >> 8; b[l4 + field + 1] = v & 0xff;
}

/** Entry 0 as `source`'s receive call leaves it (see rig.ts receive); returns the IPv6 header's offset. */
export function receive6(r: Rig, source: Source6, offload: Offload, src: string, dst: string, len: number, opts: { podMac?: string; proto?: number; hops?: number } = {}): number {
  const { bt, cfg } = r, b = bt.arena;
  const proto = opts.proto ?? (offload === 'plain' ? IPPROTO_UDP : IPPROTO_TCP), partial = offload !== 'plain';
  const mss = r.ctx.overlayMtu6 - 60; // as a pod's TCP sends once Packet Too Big has told it the IPv6 overlay's MTU
  let l3: number;
  if (source === 'vxlan6') {
    bt.aimGro();
    const off = bt.offs[0];
    writeVxlan(b, off, 1);
    writeEthernet(b, off + VXLAN_HLEN, parseMac(VTEP6), parseMac(PEER_VTEP6), ETH_P_IPV6);
    l3 = off + VXLAN_HLEN + ETH_HLEN;
    packet6(b, l3, len, proto, src, dst, partial, opts.hops ?? 63);
    bt.lens[0] = VXLAN_HLEN + ETH_HLEN + len; bt.meta[0] = 0; bt.aux[0] = 0;
    bt.from6.set(words(PEER6), 0);
  } else if (source === 'tun') {
    const lead = cfg.tunTso ? VNET_HLEN : 0;
    if (len > 1500) bt.aimBig(lead); else bt.aim(lead);
    const off = bt.offs[0];
    if (lead) {
      if (partial) writeVnet(b, off, VNET_F_NEEDS_CSUM, offload === 'gso' ? VNET_GSO_TCPV6 : 0, offload === 'gso' ? 60 : 0, offload === 'gso' ? mss : 0, 40, 16);
      else zeroVnet(b, off);
    }
    l3 = off + lead;
    packet6(b, l3, len, proto, src, dst, partial && lead > 0, opts.hops);
    bt.lens[0] = lead + len;
  } else {
    const lead = cfg.podTso ? VNET_HLEN : 0;
    if (len > 1500) bt.aimBig(ETH_HLEN + lead); else bt.aim(ETH_HLEN + lead);
    const off = bt.offs[0], pod = src === POD_B6 ? POD_B : POD_A;
    if (lead) {
      if (partial) writeVnet(b, off, VNET_F_NEEDS_CSUM, offload === 'gso' ? VNET_GSO_TCPV6 : 0, offload === 'gso' ? 74 : 0, offload === 'gso' ? mss : 0, 54, 16);
      else zeroVnet(b, off);
    }
    writeEthernet(b, off + lead, parseMac('33:33:ff:00:00:01'), parseMac(opts.podMac ?? pod.mac), ETH_P_IPV6);
    l3 = off + lead + ETH_HLEN;
    packet6(b, l3, len, proto, src, dst, partial && lead > 0, opts.hops);
    bt.lens[0] = lead + ETH_HLEN + len; bt.meta[0] = pod.ifindex;
  }
  bt.n = 1;
  return l3;
}

/** As rig.ts pass, for IPv6 sources. */
export function pass6(r: Rig, source: Source6): Sent[] {
  const { ctx, bt } = r;
  bt.clearOutputs();
  if (source === 'pod') { ingressPod(ctx, bt); forward(ctx, bt, FROM_POD); }
  else if (source === 'tun') { ingressTun(ctx, bt); forward(ctx, bt, FROM_TUN); }
  else { ingressVxlan6(ctx, bt); forward(ctx, bt, FROM_VXLAN6); }
  return sent(bt);
}
