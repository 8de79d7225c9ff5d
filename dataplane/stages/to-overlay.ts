// Next hop NH_REMOTE: another node. VXLAN and the inner Ethernet header (our
// VTEP MAC → theirs) in front of the packet, UDP to the node's underlay address
// (an IPv6 packet: its IPv6 underlay address, from the IPv6 overlay sockets)
// from the flow's send socket; a super-packet is cut into MSS pieces that leave
// as one UDP_SEGMENT run (stages/segment.ts). A DF packet over the pod MTU gets
// ICMP fragmentation-needed back instead, an IPv6 one over the IPv6 overlay's
// MTU (20 less) Packet Too Big (stages/too-big.ts).
import * as vxlan from '../packet/vxlan.js';
import * as ethernet from '../packet/ethernet.js';
import * as fib from '../tables/fib.js';
import { C } from './counters.js';
import { segment } from './segment.js';
import type { Batch } from './batch.js';
import { encapHeaders, finish, ipHeaderLen, ipProto, ttlOk } from './headers.js';
import { tooBig } from './too-big.js';
import { FROM_POD, FROM_VXLAN, FROM_VXLAN6, OUT_UDP, OUT_UDP6 } from './ids.js';
import { V6 } from './batch.js';
import type { StageContext } from './context.js';

const { NH_IP, NH_IP6 } = fib; // module-level consts V8 folds
const { VXLAN_HLEN } = vxlan;
const { ETH_HLEN } = ethernet;

export function toOverlay(ctx: StageContext, bt: Batch, i: number, p: number, from: number): void {
  const b = bt.arena, c = ctx.counters, nh = ctx.nh, l3 = bt.l3[i], l3len = bt.l3len[i], vf = bt.vflags[i];
  if (from === FROM_VXLAN || from === FROM_VXLAN6) { c[C.drop_hairpin]++; return; }
  const g = vf !== 0 ? bt.gso[i] : 0, six = (bt.flags[i] & V6) !== 0, mtu = six ? ctx.overlayMtu6 : ctx.podMtu;
  if ((g > 0 ? pieceLen(b, l3, g) : l3len) > mtu) { tooBig(ctx, bt, i, l3, from, mtu); return; }
  if (from === FROM_POD && !ttlOk(b, l3, c)) return;
  const eth = l3 - ETH_HLEN;
  encapHeaders(ctx, bt, i, eth, p);
  if (g > 0) {
    if (six) segment(ctx, bt, i, ETH_HLEN + VXLAN_HLEN, OUT_UDP6, p + NH_IP6, ctx.vxlanPort);
    else segment(ctx, bt, i, ETH_HLEN + VXLAN_HLEN, OUT_UDP, nh[p + NH_IP], ctx.vxlanPort);
    return;
  }
  if (vf !== 0 && !finish(bt, i, c)) return;
  bt.offs[i] = eth - VXLAN_HLEN; bt.lens[i] = l3len + ETH_HLEN + VXLAN_HLEN;
  if (six) bt.toUdp6(i, nh, p + NH_IP6, ctx.vxlanPort);
  else bt.toUdp(i, nh[p + NH_IP], ctx.vxlanPort);
}

// The IP length of one piece of a super-frame cut at gso_size g.
function pieceLen(b: Uint8Array, l3: number, g: number): number {
  const ihl = ipHeaderLen(b, l3);
  return ihl + (ipProto(b, l3) === 6 ? (b[l3 + ihl + 12] >>> 4) << 2 : 8) + g;
}
