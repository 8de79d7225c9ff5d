// Stage: frames from pods' veths (AF_PACKET). Answers ARP for any address but
// the pod's own (the engine is every pod's router), enforces anti-spoofing
// (source MAC and IPv4 must be the pod's), and parses the IPv4 header.
import * as ethernet from '../packet/ethernet.js';
import { parseArp, arpRequestToReply, ARPOP_REQUEST } from '../packet/arp.js';
import { parseIPv4 } from '../packet/ipv4.js';
import * as fields from '../packet/fields.js';
import * as fib from '../tables/fib.js';
import { C } from './counters.js';
import { countParseDrop, takeIPv4 } from './parse.js';
import { takeVnet } from './vnet.js';
import * as virtio from '../packet/virtio.js';
import type { Batch } from './batch.js';
import type { StageContext } from './context.js';

// V8 does not constant-fold imported bindings (every use in a hot loop is a
// module-cell load); module-level consts it does fold.
const { parseEthernet, ethReplyInPlace, ETH_HLEN, ETH_P_ARP, ETH_P_IP } = ethernet;
const { F_ETHTYPE, F_L3OFF, F_SRC4, F_DST4, F_ICMP_TYPE } = fields;
const { NH_STRIDE, NH_IP, NH_MAC_HI, NH_MAC_LO } = fib;
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
    } else {
      c[C.drop_not_ipv4]++;
    }
  }
}
