// A packet over the pod MTU: dropped and counted, and with DF set answered with
// ICMP fragmentation-needed (RFC 1191), to a local pod directly or to a remote
// one through the overlay. The node's stack needs none: it sees the TUN MTU itself.
import * as ethernet from '../packet/ethernet.js';
import * as vxlan from '../packet/vxlan.js';
import { writeIcmpFragNeeded } from '../packet/icmp.js';
import * as fib from '../tables/fib.js';
import { C } from './counters.js';
import { DF, type Batch } from './batch.js';
import { encapHeaders } from './headers.js';
import { FROM_POD, FROM_TUN } from './ids.js';
import type { StageContext } from './context.js';

const { ETH_HLEN, ethReplyInPlace } = ethernet; // module-level consts V8 folds
const { VXLAN_HLEN } = vxlan;
const { NH_STRIDE, NH_KIND, NH_IP, NH_REMOTE } = fib;

export function tooBig(ctx: StageContext, bt: Batch, i: number, l3: number, from: number): void {
  const b = bt.arena, c = ctx.counters, src = bt.src[i];
  c[C.drop_too_big]++;
  if ((bt.flags[i] & DF) === 0 || from === FROM_TUN) return;
  const eth = l3 - ETH_HLEN;
  if (from === FROM_POD) {
    ethReplyInPlace(b, eth, ctx.gwMac); // back to the sender
    const n = writeIcmpFragNeeded(b, l3, b, l3, bt.l3len[i], ctx.podMtu, ctx.gatewayIp, src);
    bt.offs[i] = eth; bt.lens[i] = n + ETH_HLEN;
    bt.toPod(i, bt.meta[i]);
  } else {
    const q = ctx.route4.lookup(src) * NH_STRIDE;
    if (ctx.nh[q + NH_KIND] !== NH_REMOTE) return; // ingress-vxlan.ts let in only a peer's own sources
    const n = writeIcmpFragNeeded(b, l3, b, l3, bt.l3len[i], ctx.podMtu, ctx.gatewayIp, src);
    bt.src[i] = ctx.gatewayIp; bt.dst[i] = src; bt.proto[i] = 1; // the flow the send socket's hash sees
    encapHeaders(ctx, bt, i, eth, q);
    bt.offs[i] = eth - VXLAN_HLEN; bt.lens[i] = n + ETH_HLEN + VXLAN_HLEN;
    bt.toUdp(i, ctx.nh[q + NH_IP], ctx.vxlanPort);
  }
  c[C.icmp_frag_needed_sent]++;
}
