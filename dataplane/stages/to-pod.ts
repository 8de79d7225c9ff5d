// Next hop NH_LOCAL: a pod on this node. Ethernet (gateway MAC → pod MAC) in
// front of the packet, out of the pod's veth by AF_PACKET. A packet with offloads
// (partial checksum, super-packet) goes whole with a virtio_net_hdr on the vnet
// socket when there is one; overlay TCP is coalesced into GSO frames first
// (stages/coalesce.ts). Returns how many more entries it took (coalescing).
import * as ethernet from '../packet/ethernet.js';
import * as virtio from '../packet/virtio.js';
import * as fib from '../tables/fib.js';
import { coalesce } from './coalesce.js';
import { segment } from './segment.js';
import { OVERSIZED, type Batch } from './batch.js';
import { copyMac, finish, ttlOk, writeEthType, writeMac, writeVnetFor } from './headers.js';
import { tooBig } from './too-big.js';
import { FROM_POD, FROM_TUN, OUT_POD } from './ids.js';
import type { StageContext } from './context.js';

const { NH_IFINDEX, NH_MAC_HI, NH_MAC_LO } = fib; // module-level consts V8 folds
const { ETH_HLEN } = ethernet;
const { VNET_HLEN } = virtio;

export function toPod(ctx: StageContext, bt: Batch, i: number, p: number, from: number, coalescing: boolean): number {
  const b = bt.arena, c = ctx.counters, nh = ctx.nh, l3 = bt.l3[i], l3len = bt.l3len[i], vf = bt.vflags[i];
  if ((bt.flags[i] & OVERSIZED) !== 0) { tooBig(ctx, bt, i, l3, from); return 0; }
  if (coalescing && vf === 0) {
    const k = coalesce(ctx, bt, i, nh[p + NH_IFINDEX], nh[p + NH_MAC_HI], nh[p + NH_MAC_LO]);
    if (k > 0) return k - 1;
  }
  if (from !== FROM_TUN && !ttlOk(b, l3, c)) return 0;
  const eth = l3 - ETH_HLEN;
  writeMac(b, eth, nh[p + NH_MAC_HI], nh[p + NH_MAC_LO]);
  copyMac(b, eth + 6, ctx.gwMac);
  writeEthType(b, eth);
  if (vf !== 0) {
    if (ctx.vnetSend) { // a pod's virtio_net_hdr is still in front of its Ethernet header; the host's and a peer's are written there
      if (from !== FROM_POD) writeVnetFor(bt, i, eth);
      bt.offs[i] = eth - VNET_HLEN; bt.lens[i] = l3len + ETH_HLEN + VNET_HLEN;
      bt.toPodVnet(i, nh[p + NH_IFINDEX]);
      return 0;
    }
    if (bt.gso[i] > 0) { segment(ctx, bt, i, ETH_HLEN, OUT_POD, nh[p + NH_IFINDEX], 0); return 0; }
    if (!finish(bt, i, c)) return 0;
  }
  bt.offs[i] = eth; bt.lens[i] = l3len + ETH_HLEN;
  bt.toPod(i, nh[p + NH_IFINDEX]);
  return 0;
}
