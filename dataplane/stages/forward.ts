// Stage: route each parsed packet by longest-prefix match on its destination
// (IPv4 or IPv6: one next-hop array, stages/graph.ts), decide what it may do,
// and hand it to its next hop's handler
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
import { V6 } from './batch.js';
import { toPod } from './to-pod.js';
import { toOverlay } from './to-overlay.js';
import { toHost } from './to-host.js';
import { FROM_POD, FROM_TUN, FROM_VXLAN, FROM_VXLAN6 } from './ids.js';
import type { Batch } from './batch.js';
import type { StageContext } from './context.js';

// V8 does not constant-fold imported bindings (every use in a hot loop is a
// module-cell load); module-level consts it does fold.
const { NH_STRIDE, NH_KIND, NH_LOCAL, NH_REMOTE, NH_HOST, NH_DROP, NH_SERVICE, NH_OUTSIDE, findPeer, findPeer6, inRange6 } = fib;
const UDP = 17;

export function forward(ctx: StageContext, bt: Batch, from: number): void {
  const c = ctx.counters, nh = ctx.nh, lpm = ctx.route4, s6 = bt.src6, d6 = bt.dst6;
  bt.resetMade();
  const overlay = from === FROM_VXLAN || from === FROM_VXLAN6;
  const coalescing = overlay && ctx.podGso && ctx.vnetSend;
  // Replies of translated flows (T2) are looked for only while such flows exist,
  // once per run of one flow's packets (the verdict of the run's first holds).
  const replies = from !== FROM_TUN && ctx.translated.count() > 0;
  const replies6 = from !== FROM_TUN && ctx.translated6.count() > 0;
  let rPrev = -1, rVia = false; // the entry a reply was last looked for, and the verdict
  // The last entry policy admitted, and as what: the next packets of the same flow
  // in this batch are admitted with it (same tables, same clock: the same verdict).
  let aPrev = -1, aFromPod = false, aToPod = false;
  let r6 = -1, r6p = 0; // the last IPv6 destination looked up (at d6[r6]) and its next hop: a run of one flow pays one IPv6 LPM lookup
  for (let i = 0; i < bt.n; i++) {
    if (bt.l3len[i] === 0) continue;
    const six = (bt.flags[i] & V6) !== 0, o = 4 * i;
    let p: number;
    if (!six) p = lpm.lookup(bt.dst[i]) * NH_STRIDE;
    else if (r6 >= 0 && d6[o] === d6[r6] && d6[o + 1] === d6[r6 + 1] && d6[o + 2] === d6[r6 + 2] && d6[o + 3] === d6[r6 + 3]) p = r6p;
    else { p = ctx.route6.lookup(d6[o], d6[o + 1], d6[o + 2], d6[o + 3]) * NH_STRIDE; r6 = o; r6p = p; }
    let kind = nh[p + NH_KIND];
    let fromPod = from === FROM_POD;
    if (fromPod && bt.dport[i] === ctx.vxlanPort && bt.proto[i] === UDP && isNode(ctx, bt, i, kind, six)) {
      c[C.drop_overlay_port]++; // a pod must not speak VXLAN to a node: it would forge what the overlay trusts
      continue;
    }
    if (kind === NH_OUTSIDE || kind === NH_SERVICE) {
      if (overlay) { c[C.drop_overlay_dst]++; continue; } // no node sends these through the overlay
    }
    if (from === FROM_TUN && (kind === NH_LOCAL || kind === NH_REMOTE) && localPodSource(ctx, bt, i, six)) {
      recordTranslated(ctx, bt, i); // T1: a local pod's packet, translated by the stack
      fromPod = true; // its egress is judged now, on the translated destination
    }
    if (kind === NH_SERVICE) {
      if (ctx.policy !== undefined && fromPod) admitDeferred(ctx, bt, i); // judged once the stack has translated it
      kind = NH_HOST;
    } else {
      if (kind === NH_OUTSIDE) kind = NH_HOST;
      if (ctx.policy !== undefined && kind !== NH_DROP) {
        const toPod = kind === NH_LOCAL;
        if (aPrev < 0 || aFromPod !== fromPod || aToPod !== toPod || !sameFlow(bt, aPrev, i)) {
          if (!admit(ctx, bt, i, fromPod, toPod)) continue;
          aPrev = i; aFromPod = fromPod; aToPod = toPod;
        }
      }
    }
    if ((six ? replies6 : replies) && kind === NH_LOCAL) {
      if (rPrev < 0 || !sameFlow(bt, rPrev, i)) { rPrev = i; rVia = isTranslatedReply(ctx, bt, i); }
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

/** Whether entries j and i carry the same flow: family, protocol, ports and addresses. */
function sameFlow(bt: Batch, j: number, i: number): boolean {
  if (bt.proto[j] !== bt.proto[i] || bt.sport[j] !== bt.sport[i] || bt.dport[j] !== bt.dport[i] || bt.src[j] !== bt.src[i] || bt.dst[j] !== bt.dst[i]) return false;
  const six = bt.flags[i] & V6;
  if ((bt.flags[j] & V6) !== six) return false;
  if (six === 0) return true;
  const s = bt.src6, d = bt.dst6, a = 4 * j, b = 4 * i;
  return s[a] === s[b] && s[a + 1] === s[b + 1] && s[a + 2] === s[b + 2] && s[a + 3] === s[b + 3] &&
    d[a] === d[b] && d[a + 1] === d[b + 1] && d[a + 2] === d[b + 2] && d[a + 3] === d[b + 3];
}

/** Whether entry i's destination (whose next hop kind is `kind`) is a node's address: this node's own, or a peer's underlay address. */
function isNode(ctx: StageContext, bt: Batch, i: number, kind: number, six: boolean): boolean {
  if (kind === NH_HOST) return true;
  if (kind !== NH_OUTSIDE) return false;
  return six ? findPeer6(ctx.peers6, bt.dst6, 4 * i) >= 0 : findPeer(ctx.peers, bt.dst[i]) >= 0;
}

/** Whether entry i's source is one of this node's pods (T1): in its pod range, not the gateway, a local pod's next hop. */
function localPodSource(ctx: StageContext, bt: Batch, i: number, six: boolean): boolean {
  const nh = ctx.nh;
  if (!six) {
    const s = bt.src[i];
    return (s & ctx.podMask) === ctx.podPrefix && s !== ctx.gatewayIp && nh[ctx.route4.lookup(s) * NH_STRIDE + NH_KIND] === NH_LOCAL;
  }
  const s6 = bt.src6, o = 4 * i, g = ctx.gatewayIp6;
  if (!inRange6(s6, o, ctx.podPrefix6, ctx.podMask6)) return false;
  if (s6[o] === g[0] && s6[o + 1] === g[1] && s6[o + 2] === g[2] && s6[o + 3] === g[3]) return false;
  return nh[ctx.route6.lookup(s6[o], s6[o + 1], s6[o + 2], s6[o + 3]) * NH_STRIDE + NH_KIND] === NH_LOCAL;
}
