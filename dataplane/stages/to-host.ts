// Next hop NH_HOST: this node's own stack, through TUN (its own addresses; the
// Service range and everything outside the cluster after policy; replies of
// translated flows, stages/translated.ts). The bare IP packet, with a
// virtio_net_hdr first when the device has one: TCP super-packets and partial
// checksums go whole, overlay TCP is coalesced into super-packets first.
// Returns how many more entries it took (coalescing).
import * as virtio from '../packet/virtio.js';
import { C } from './counters.js';
import { coalesce, TO_TUN } from './coalesce.js';
import { segment } from './segment.js';
import { OVERSIZED, type Batch } from './batch.js';
import { finish, writeVnetFor } from './headers.js';
import { tooBig } from './too-big.js';
import { FROM_TUN, FROM_VXLAN, FROM_VXLAN6, OUT_TUN } from './ids.js';
import type { StageContext } from './context.js';

const { VNET_HLEN, VNET_GSO_UDP_L4, zeroVnet } = virtio; // module-level consts V8 folds

export function toHost(ctx: StageContext, bt: Batch, i: number, from: number): number {
  const b = bt.arena, c = ctx.counters, l3 = bt.l3[i], l3len = bt.l3len[i], vf = bt.vflags[i];
  if (from === FROM_TUN) { c[C.drop_hairpin]++; return 0; }
  if ((bt.flags[i] & OVERSIZED) !== 0) { tooBig(ctx, bt, i, l3, from); return 0; } // the TUN device's MTU is the pods'
  if ((from === FROM_VXLAN || from === FROM_VXLAN6) && ctx.tunTso && vf === 0) {
    const k = coalesce(ctx, bt, i, TO_TUN, 0, 0);
    if (k > 0) return k - 1;
  }
  const lead = ctx.tunTso ? VNET_HLEN : 0; // with it, every TUN write starts with a virtio_net_hdr
  if (lead !== 0 && vf !== 0 && ((vf >>> 8) & 0x7f) !== VNET_GSO_UDP_L4) { // the stack takes a TCP super-frame or partial checksum as it is
    writeVnetFor(bt, i, l3);
    if (bt.gso[i] > 0) c[C.tx_tun_gso]++;
  } else {
    if (lead !== 0) zeroVnet(b, l3 - VNET_HLEN);
    if (vf !== 0) {
      if (bt.gso[i] > 0) { segment(ctx, bt, i, lead, OUT_TUN, 0, 0); return 0; }
      if (!finish(bt, i, c)) return 0;
    }
  }
  bt.offs[i] = l3 - lead; bt.lens[i] = l3len + lead;
  bt.toTun(i);
  return 0;
}
