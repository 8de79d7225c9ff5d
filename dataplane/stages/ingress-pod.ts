// Stage: frames from pods' veths (AF_PACKET). Answers ARP and IPv6 neighbour
// solicitations for any address but the pod's own (the engine is every pod's
// router), enforces anti-spoofing (source MAC and IP must be the pod's; only
// neighbour discovery may come from the pod's link-local address), and parses
// the IPv4 or IPv6 header.
import * as ethernet from '../packet/ethernet.js';
import { parseArp, arpRequestToReply, ARPOP_REQUEST } from '../packet/arp.js';
import { parseIPv4 } from '../packet/ipv4.js';
import { parseIPv6 } from '../packet/ipv6.js';
import { fromUnspecified, isLinkLocal, isNeighborSolicit, neighborSolicitToAdvert } from '../packet/ndp.js';
import * as fields from '../packet/fields.js';
import * as fib from '../tables/fib.js';
import { C } from './counters.js';
import { countParseDrop, takeIPv4, takeIPv6 } from './parse.js';
import { takeVnet } from './vnet.js';
import * as virtio from '../packet/virtio.js';
import type { Batch } from './batch.js';
import type { StageContext } from './context.js';

// V8 does not constant-fold imported bindings (every use in a hot loop is a
// module-cell load); module-level consts it does fold.
const { parseEthernet, ethReplyInPlace, ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6 } = ethernet;
const { F_ETHTYPE, F_L3OFF, F_SRC4, F_DST4, F_SRC6, F_ICMP_TYPE, F_PROTO } = fields;
const { NH_STRIDE, NH_IP, NH_IP6, NH_MAC_HI, NH_MAC_LO } = fib;
const ICMPV6 = 58;
const { VNET_HLEN } = virtio;

function macIs(b: Uint8Array, off: number, hi: number, lo: number): boolean {
  return ((b[off] << 8) | b[off + 1]) === hi && ((b[off + 2] << 24) | (b[off + 3] << 16) | (b[off + 4] << 8) | b[off + 5]) === lo;
}

export function ingressPod(ctx: StageContext, bt: Batch): void {
  const b = bt.arena, f = ctx.f, c = ctx.counters, nh = ctx.nh, ifmap = ctx.ifmap, vnet = ctx.podTso;
  for (let i = 0; i < bt.n; i++) {
    bt.l3len[i] = 0; // 0 = not for the route stage
    if (vnet) {
      if (bt.lens[i] < VNET_HLEN) { c[C.drop_truncated]++; continue; }
      if (!takeVnet(bt, i, c, C.rx_pod_gso)) continue;
    } else {
      bt.vflags[i] = 0; bt.gso[i] = 0; // the batch's arrays are shared with the TUN path, which sets them
    }
    const off = bt.offs[i], len = bt.lens[i], ifx = bt.meta[i];
    const id = ifx < ifmap.length ? ifmap[ifx] : 0;
    if (id === 0) { c[C.drop_unknown_port]++; continue; }
    const p = id * NH_STRIDE;
    let r = parseEthernet(b, off, len, f);
    if (r !== 0) { countParseDrop(c, r); continue; }
    if (!macIs(b, off + 6, nh[p + NH_MAC_HI], nh[p + NH_MAC_LO]) || f[F_L3OFF] !== off + ETH_HLEN) { c[C.drop_spoofed]++; continue; }
    const type = f[F_ETHTYPE];
    if (type === ETH_P_IP) {
      r = parseIPv4(b, off + ETH_HLEN, len - ETH_HLEN, f, false);
      if (r !== 0) { countParseDrop(c, r); continue; }
      if (f[F_SRC4] !== nh[p + NH_IP]) { c[C.drop_spoofed]++; continue; }
      takeIPv4(bt, i, f);
    } else if (type === ETH_P_ARP) {
      r = parseArp(b, off + ETH_HLEN, len - ETH_HLEN, f);
      if (r !== 0) { countParseDrop(c, r); continue; }
      const spa = f[F_SRC4], tpa = f[F_DST4];
      if (f[F_ICMP_TYPE] !== ARPOP_REQUEST || spa === 0 || tpa === spa) { c[C.arp_ignored]++; continue; } // probes and announcements need no answer
      if (spa !== nh[p + NH_IP]) { c[C.drop_spoofed]++; continue; }
      arpRequestToReply(b, off + ETH_HLEN, ctx.gwMac);
      ethReplyInPlace(b, off, ctx.gwMac);
      bt.lens[i] = ETH_HLEN + 28;
      bt.toPod(i, ifx);
      c[C.arp_replies]++;
    } else if (type === ETH_P_IPV6) {
      const l3 = off + ETH_HLEN;
      r = parseIPv6(b, l3, len - ETH_HLEN, f);
      if (r !== 0) { countParseDrop(c, r); continue; }
      if (f[F_SRC6] === nh[p + NH_IP6] && f[F_SRC6 + 1] === nh[p + NH_IP6 + 1] && f[F_SRC6 + 2] === nh[p + NH_IP6 + 2] &&
        f[F_SRC6 + 3] === nh[p + NH_IP6 + 3] && (nh[p + NH_IP6] | nh[p + NH_IP6 + 1] | nh[p + NH_IP6 + 2] | nh[p + NH_IP6 + 3]) !== 0) {
        if (isNeighborSolicit(b, f)) { answerSolicit(ctx, bt, i, ifx); continue; }
        if (b[l3 + 24] !== 0xff) { takeIPv6(bt, i, f); continue; } // multicast is not routed: below
      } else if (!isLinkLocal(b, l3 + 8) && !fromUnspecified(b, l3)) { c[C.drop_spoofed]++; continue; }
      // The pod's link-local traffic: solicitations from its link-local address
      // are answered; duplicate address detection, router solicitations, MLD
      // reports and the rest are not routed.
      if (isNeighborSolicit(b, f) && !fromUnspecified(b, l3)) answerSolicit(ctx, bt, i, ifx);
      else c[f[F_PROTO] === ICMPV6 ? C.nd_ignored : C.drop_no_route]++;
    } else {
      c[C.drop_not_ip]++;
    }
  }
}

// The gateway answers every solicitation with its own MAC, as it answers ARP:
// on-link pods in the same /64 and the gateway address alike reach the engine.
function answerSolicit(ctx: StageContext, bt: Batch, i: number, ifx: number): void {
  const b = bt.arena, off = bt.offs[i];
  const n = neighborSolicitToAdvert(b, ctx.f, ctx.gwMac);
  ethReplyInPlace(b, off, ctx.gwMac); // the EtherType stays IPv6
  bt.lens[i] = ETH_HLEN + n;
  bt.toPod(i, ifx);
  ctx.counters[C.nd_replies]++;
}
