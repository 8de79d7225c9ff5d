// Stage: route each parsed IPv4 packet by longest-prefix match on its
// destination, decide what it may do, and hand it to its next hop's handler
// (the graph is declared in stages/graph.ts):
//   local pod → to-pod.ts; remote node → to-overlay.ts; this node's stack → to-host.ts.
// Before that, in this order: a pod's UDP to a node's VXLAN port is dropped;
// the overlay may not send outside the pod range; what the stack hands back
// with a local pod's source is recorded as translated (Services,
// stages/translated.ts) and judged as that pod's egress; the Service range and
// everything outside go to the stack (a pod's egress to a Service is judged once
// translated); NetworkPolicy (stages/policy.ts); and the replies of translated
// flows go back through the stack instead of straight to their pod.
import * as fib from '../tables/fib.js';
import { C } from './counters.js';
import { admit, admitDeferred } from './policy.js';
import { isTranslatedReply, recordTranslated } from './translated.js';
import { toPod } from './to-pod.js';
import { toOverlay } from './to-overlay.js';
import { toHost } from './to-host.js';
import { FROM_POD, FROM_TUN, FROM_VXLAN } from './ids.js';
import type { Batch } from './batch.js';
import type { StageContext } from './context.js';

// V8 does not constant-fold imported bindings (every use in a hot loop is a
// module-cell load); module-level consts it does fold.
const { NH_STRIDE, NH_KIND, NH_LOCAL, NH_REMOTE, NH_HOST, NH_DROP, NH_SERVICE, NH_OUTSIDE, findPeer } = fib;
const UDP = 17;

export function forward(ctx: StageContext, bt: Batch, from: number): void {
  const c = ctx.counters, nh = ctx.nh, lpm = ctx.route4;
  bt.resetMade();
  const coalescing = from === FROM_VXLAN && ctx.podGso && ctx.vnetSend;
  // Replies of translated flows (T2) are looked for only while such flows exist,
  // once per run of one flow's packets (the verdict of the run's first holds).
  const replies = from !== FROM_TUN && ctx.translated.count() > 0;
  let rSrc = 0, rDst = 0, rPorts = -1, rProto = -1, rVia = false;
  for (let i = 0; i < bt.n; i++) {
    if (bt.l3len[i] === 0) continue;
    const p = lpm.lookup(bt.dst[i]) * NH_STRIDE;
    let kind = nh[p + NH_KIND];
    let fromPod = from === FROM_POD;
    if (fromPod && bt.dport[i] === ctx.vxlanPort && bt.proto[i] === UDP && isNode(ctx, kind, bt.dst[i])) {
      c[C.drop_overlay_port]++; // a pod must not speak VXLAN to a node: it would forge what the overlay trusts
      continue;
    }
    if (kind === NH_OUTSIDE || kind === NH_SERVICE) {
      if (from === FROM_VXLAN) { c[C.drop_overlay_dst]++; continue; } // no node sends these through the overlay
    }
    if (from === FROM_TUN && (kind === NH_LOCAL || kind === NH_REMOTE) && (bt.src[i] & ctx.podMask) === ctx.podPrefix &&
      bt.src[i] !== ctx.gatewayIp && nh[lpm.lookup(bt.src[i]) * NH_STRIDE + NH_KIND] === NH_LOCAL) {
      recordTranslated(ctx, bt, i); // T1: a local pod's packet, translated by the stack
      fromPod = true; // its egress is judged now, on the translated destination
    }
    if (kind === NH_SERVICE) {
      if (ctx.policy !== undefined && fromPod) admitDeferred(ctx, bt, i); // judged once the stack has translated it
      kind = NH_HOST;
    } else {
      if (kind === NH_OUTSIDE) kind = NH_HOST;
      if (ctx.policy !== undefined && kind !== NH_DROP && !admit(ctx, bt, i, fromPod, kind === NH_LOCAL)) continue;
    }
    if (replies && kind === NH_LOCAL) {
      const ports = (bt.sport[i] << 16) | bt.dport[i];
      if (bt.src[i] !== rSrc || bt.dst[i] !== rDst || ports !== rPorts || bt.proto[i] !== rProto) {
        rSrc = bt.src[i]; rDst = bt.dst[i]; rPorts = ports; rProto = bt.proto[i];
        rVia = isTranslatedReply(ctx, bt, i);
      }
      if (rVia) kind = NH_HOST; // T2: back through the stack, which un-DNATs it
    }
    switch (kind) { // the next hop's handler (stages/graph.ts)
      case NH_LOCAL: i += toPod(ctx, bt, i, p, from, coalescing); break;
      case NH_REMOTE: toOverlay(ctx, bt, i, p, from); break;
      case NH_HOST: i += toHost(ctx, bt, i, from); break;
      default: c[C.drop_no_route]++;
    }
  }
}

/** Whether `dst` (whose next hop kind is `kind`) is a node's address: this node's own, or a peer's underlay address. */
function isNode(ctx: StageContext, kind: number, dst: number): boolean {
  return kind === NH_HOST || (kind === NH_OUTSIDE && findPeer(ctx.peers, dst) >= 0);
}
