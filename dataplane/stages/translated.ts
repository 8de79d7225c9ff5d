// Flows the node's own stack translated: a Service's traffic through kube-proxy.
//
// kube-proxy DNATs a pod's packet to a ClusterIP (or NodePort) in the node's
// stack, without masquerade for sources inside the cluster CIDR (KIND-CLUSTER
// notes). The packet reaches that stack through TUN (the ClusterIP routes to
// the host) and comes back out of TUN with the pod's own source and the chosen
// endpoint as destination. The endpoint's replies must pass the same stack
// again, whose conntrack turns their source back into the Service address: a
// reply that went straight to the pod would come from the endpoint's pod IP,
// which the client's connected socket drops.
//
// Invariants:
//  T1 Only the stack emits, on TUN, a packet whose source is one of this node's
//     pods: pod traffic reaches the stack only for addresses outside the pod
//     range (stages/forward.ts sends pod-range destinations directly), so such a
//     packet is pod traffic the stack forwarded back into the pod range, which
//     only a translation (DNAT) does. Each one records its 5-tuple here.
//  T2 A packet for a local pod whose reversed 5-tuple is recorded is a reply of
//     such a flow: it goes to the stack (TUN), never straight to the pod. The
//     stack un-DNATs it and routes it back into TUN, now from the Service
//     address, and it reaches the pod as host traffic.
//  T3 Sending a pod-range packet to the stack is always safe: the stack routes
//     the whole pod range back into TUN, so a stale or colliding entry costs a
//     detour, never a loss. Entries live while the flow does (each packet either
//     way renews them), and briefly after a FIN or RST.
//  T4 Pod-to-pod traffic no Service touched never matches: its packets come from
//     pods or the overlay, never from TUN with a pod source, so no entry exists.
//     Its cost is one lookup per flow run in a batch while any entry exists.
//
// IPv6 flows go through kube-proxy's ip6tables (or ip6 nftables) rules the same
// way and are kept in a second table (ctx.translated6) with the same rules.
//
// The table is a Conntrack (tables/conntrack.ts) of its own, shared by every
// worker: a request and its reply are often read by different workers (TUN
// queues and overlay sockets steer independently).
import { C } from './counters.js';
import { V6, type Batch } from './batch.js';
import type { StageContext } from './context.js';

export const TRANSLATED_TTL_S = 3600; // an idle connection through a Service keeps its way back this long
export const TRANSLATED_CLOSING_TTL_S = 10; // after FIN or RST
const TCP = 6, FIN = 0x01, RST = 0x04;

function ttlOf(bt: Batch, i: number): number {
  return bt.proto[i] === TCP && (bt.tcpFlags[i] & (FIN | RST)) !== 0 ? TRANSLATED_CLOSING_TTL_S : TRANSLATED_TTL_S;
}

/** T1: records packet i (from TUN, source a local pod) as a translated flow. */
export function recordTranslated(ctx: StageContext, bt: Batch, i: number): void {
  if ((bt.flags[i] & V6) !== 0) {
    const t = ctx.translated6, o = 4 * i, proto = bt.proto[i], sport = bt.sport[i], dport = bt.dport[i];
    const slot = t.lookup6(proto, bt.src6, o, bt.dst6, o, sport, dport, ctx.now);
    if (slot >= 0) { t.touch(slot, ctx.now, ttlOf(bt, i)); return; }
    if (t.upsert6(proto, bt.src6, o, bt.dst6, o, sport, dport, 1, 0, ctx.now, ttlOf(bt, i)) < 0) ctx.counters[C.translated_full]++;
    return;
  }
  const t = ctx.translated, proto = bt.proto[i], src = bt.src[i], dst = bt.dst[i], sport = bt.sport[i], dport = bt.dport[i];
  const slot = t.lookup(proto, src, dst, sport, dport, ctx.now);
  if (slot >= 0) { t.touch(slot, ctx.now, ttlOf(bt, i)); return; }
  if (t.upsert(proto, src, dst, sport, dport, 1, 0, ctx.now, ttlOf(bt, i)) < 0) ctx.counters[C.translated_full]++;
}

/** T2: true when packet i, headed for a local pod, is the reply of a translated flow (and renews it). */
export function isTranslatedReply(ctx: StageContext, bt: Batch, i: number): boolean {
  const six = (bt.flags[i] & V6) !== 0, t = six ? ctx.translated6 : ctx.translated, o = 4 * i;
  const slot = six
    ? t.lookup6(bt.proto[i], bt.dst6, o, bt.src6, o, bt.dport[i], bt.sport[i], ctx.now)
    : t.lookup(bt.proto[i], bt.dst[i], bt.src[i], bt.dport[i], bt.sport[i], ctx.now);
  if (slot < 0) return false;
  t.touch(slot, ctx.now, ttlOf(bt, i));
  ctx.counters[C.translated_replies]++;
  return true;
}
