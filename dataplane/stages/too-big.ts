// A packet over the pod MTU: dropped and counted, and with DF set answered with
// ICMP fragmentation-needed (RFC 1191), or for IPv6 (always DF) with ICMPv6
// Packet Too Big (RFC 8201), to a local pod directly or to a remote one through
// the overlay. The node's stack needs none: it sees the TUN MTU itself.
import * as ethernet from '../packet/ethernet.js';
import * as vxlan from '../packet/vxlan.js';
import { writeIcmp6PacketTooBig, writeIcmpFragNeeded } from '../packet/icmp.js';
import * as fib from '../tables/fib.js';
import { C } from './counters.js';
import { DF, V6, type Batch } from './batch.js';
import { encapHeaders } from './headers.js';
import { FROM_POD, FROM_TUN } from './ids.js';
import type { StageContext } from './context.js';

const { ETH_HLEN, ethReplyInPlace } = ethernet; // module-level consts V8 folds
const { VXLAN_HLEN } = vxlan;
const { NH_STRIDE, NH_KIND, NH_IP, NH_IP6, NH_REMOTE } = fib;

/** `mtu`: the one the packet exceeded (the pod MTU unless given). */
export function tooBig(ctx: StageContext, bt: Batch, i: number, l3: number, from: number, mtu = ctx.podMtu): void {
  const b = bt.arena, c = ctx.counters, src = bt.src[i];
  c[C.drop_too_big]++;
  if ((bt.flags[i] & DF) === 0 || from === FROM_TUN) return;
  const eth = l3 - ETH_HLEN, six = (bt.flags[i] & V6) !== 0;
  let q = 0;
  if (from !== FROM_POD) {
    const s6 = bt.src6, o = 4 * i;
    q = (six ? ctx.route6.lookup(s6[o], s6[o + 1], s6[o + 2], s6[o + 3]) : ctx.route4.lookup(src)) * NH_STRIDE;
    if (ctx.nh[q + NH_KIND] !== NH_REMOTE) return; // ingress-vxlan.ts let in only a peer's own sources
  }
  const n = six
    ? writeIcmp6PacketTooBig(b, l3, b, l3, bt.l3len[i], mtu, ctx.gatewayIp6Bytes, 0)
    : writeIcmpFragNeeded(b, l3, b, l3, bt.l3len[i], mtu, ctx.gatewayIp, src);
  if (from === FROM_POD) {
    ethReplyInPlace(b, eth, ctx.gwMac); // back to the sender
    bt.offs[i] = eth; bt.lens[i] = n + ETH_HLEN;
    bt.toPod(i, bt.meta[i]);
  } else {
    bt.dst[i] = bt.src[i]; bt.src[i] = six ? 0 : ctx.gatewayIp; bt.proto[i] = six ? 58 : 1; // the flow the send socket's hash sees
    encapHeaders(ctx, bt, i, eth, q);
    bt.offs[i] = eth - VXLAN_HLEN; bt.lens[i] = n + ETH_HLEN + VXLAN_HLEN;
    if (six) bt.toUdp6(i, ctx.nh, q + NH_IP6, ctx.vxlanPort);
    else bt.toUdp(i, ctx.nh[q + NH_IP], ctx.vxlanPort);
  }
  c[six ? C.icmp6_too_big_sent : C.icmp_frag_needed_sent]++;
}
