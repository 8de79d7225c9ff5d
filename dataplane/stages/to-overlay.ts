// Next hop NH_REMOTE: another node. VXLAN and the inner Ethernet header (our
// VTEP MAC → theirs) in front of the packet, UDP to the node's underlay address
// from the flow's send socket; a super-packet is cut into MSS pieces that leave
// as one UDP_SEGMENT run (stages/segment.ts). A DF packet over the pod MTU gets
// ICMP fragmentation-needed back instead (stages/too-big.ts).
import * as vxlan from '../packet/vxlan.js';
import * as ethernet from '../packet/ethernet.js';
import * as fib from '../tables/fib.js';
import { C } from './counters.js';
import { segment } from './segment.js';
import type { Batch } from './batch.js';
import { encapHeaders, finish, ttlOk } from './headers.js';
import { tooBig } from './too-big.js';
import { FROM_POD, FROM_VXLAN, OUT_UDP } from './ids.js';
import type { StageContext } from './context.js';

const { NH_IP } = fib; // module-level consts V8 folds
const { VXLAN_HLEN } = vxlan;
const { ETH_HLEN } = ethernet;

export function toOverlay(ctx: StageContext, bt: Batch, i: number, p: number, from: number): void {
  const b = bt.arena, c = ctx.counters, nh = ctx.nh, l3 = bt.l3[i], l3len = bt.l3len[i], vf = bt.vflags[i];
  if (from === FROM_VXLAN) { c[C.drop_hairpin]++; return; }
  const g = vf !== 0 ? bt.gso[i] : 0;
  if ((g > 0 ? pieceLen(b, l3, g) : l3len) > ctx.podMtu) { tooBig(ctx, bt, i, l3, from); return; }
  if (from === FROM_POD && !ttlOk(b, l3, c)) return;
  const eth = l3 - ETH_HLEN;
  encapHeaders(ctx, bt, i, eth, p);
  if (g > 0) { segment(ctx, bt, i, ETH_HLEN + VXLAN_HLEN, OUT_UDP, nh[p + NH_IP], ctx.vxlanPort); return; }
  if (vf !== 0 && !finish(bt, i, c)) return;
  bt.offs[i] = eth - VXLAN_HLEN; bt.lens[i] = l3len + ETH_HLEN + VXLAN_HLEN;
  bt.toUdp(i, nh[p + NH_IP], ctx.vxlanPort);
}

// The IP length of one piece of a super-frame cut at gso_size g.
function pieceLen(b: Uint8Array, l3: number, g: number): number {
  const ihl = (b[l3] & 15) << 2;
  return ihl + (b[l3 + 9] === 6 ? (b[l3 + ihl + 12] >>> 4) << 2 : 8) + g;
}
