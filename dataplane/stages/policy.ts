// NetworkPolicy with connection tracking, called by the forward stage once it
// knows where a packet goes. A packet of a tracked flow (either direction)
// passes; a new flow is judged by the compiled tables: egress of its source if
// the source is a pod on this node, ingress of its destination if the
// destination is a pod on this node. Each node judges only its own pods, so
// every flow is judged once per end.
//
// Entries remember the policy generation that admitted them. After a policy
// change the next packet of an old flow is judged again: a flow the new
// policies still allow never loses a packet, one they deny stops at once.
//
// A TCP packet without SYN that no entry knows (the agent restarted, the entry
// expired) belongs to a connection already under way, in one direction or the
// other: it passes if either direction is allowed, and the entry is recorded
// that way. Only a SYN opens a new connection, so this lets no new one through.
//
// IPv6 flows are tracked in their own table (ctx.conntrack6) and judged by
// verdict6, with the same rules: a pod is isolated for both families at once.
//
// Services: a pod's packet to the Service range is not judged on its way into
// the node's stack (admitDeferred): kube-proxy translates it there, and it is
// judged when the stack hands it back with the pod's source and the endpoint
// as destination (stages/forward.ts, translated.ts), so policy judges the
// backend pod, as Kubernetes defines. Its entry (state DEFERRED) only lets the
// un-translated replies (Service address to pod) back in.
import { INGRESS, EGRESS } from '../tables/policy.js';
import { C } from './counters.js';
import type { PolicyTables } from '../tables/policy.js';
import { V6, type Batch } from './batch.js';
import type { StageContext } from './context.js';

export const CT_TTL_S = 120;
const TCP = 6, SYN = 0x02;
const JUDGED = 1, DEFERRED = 2; // entry states

/** 0 allowed; else the counter to charge: a flow from `src` (a local pod if fromPod) to `dst` (if toPod) on proto/port. */
function judge(pt: PolicyTables, src: number, dst: number, proto: number, port: number, fromPod: boolean, toPod: boolean): number {
  if (fromPod && pt.verdict(EGRESS, src, dst, proto, port) < 0) return C.drop_policy_egress;
  if (toPod && pt.verdict(INGRESS, dst, src, proto, port) < 0) return C.drop_policy_ingress;
  return 0;
}

function judge6(pt: PolicyTables, s: Int32Array, d: Int32Array, o: number, proto: number, port: number, fromPod: boolean, toPod: boolean): number {
  if (fromPod && pt.verdict6(EGRESS, s, o, d, o, proto, port) < 0) return C.drop_policy_egress;
  if (toPod && pt.verdict6(INGRESS, d, o, s, o, proto, port) < 0) return C.drop_policy_ingress;
  return 0;
}

/** True when packet i may go on. fromPod: its source is a pod on this node; toPod: its destination is. */
export function admit(ctx: StageContext, bt: Batch, i: number, fromPod: boolean, toPod: boolean): boolean {
  if ((bt.flags[i] & V6) !== 0) return admit6(ctx, bt, i, fromPod, toPod);
  const pt = ctx.policy!, ct = ctx.conntrack!, now = ctx.now, gen = ctx.policyGen;
  const proto = bt.proto[i], src = bt.src[i], dst = bt.dst[i], sport = bt.sport[i], dport = bt.dport[i];
  let slot = ct.lookup(proto, src, dst, sport, dport, now);
  let reply = false;
  if (slot < 0) {
    slot = ct.lookup(proto, dst, src, dport, sport, now);
    reply = slot >= 0;
  }
  if (slot >= 0 && (ct.tag(slot) === gen || ct.state(slot) === DEFERRED)) {
    ct.touch(slot, now, CT_TTL_S);
    return true;
  }
  // Judge the flow in its original direction (known from the entry, or this packet's own).
  let drop = reply ? judge(pt, dst, src, proto, sport, toPod, fromPod) : judge(pt, src, dst, proto, dport, fromPod, toPod);
  if (drop !== 0 && slot < 0 && proto === TCP && (bt.tcpFlags[i] & SYN) === 0 && judge(pt, dst, src, proto, sport, toPod, fromPod) === 0) {
    reply = true; // mid-connection, and the connection from the other side is allowed
    drop = 0;
  }
  if (drop !== 0) {
    ctx.counters[drop]++;
    return false;
  }
  const stored = reply ? ct.upsert(proto, dst, src, dport, sport, JUDGED, gen, now, CT_TTL_S) : ct.upsert(proto, src, dst, sport, dport, JUDGED, gen, now, CT_TTL_S);
  if (stored < 0) ctx.counters[C.conntrack_full]++;
  return true;
}

// admit() for IPv6: the same steps on the IPv6 table, addresses as (array, index).
function admit6(ctx: StageContext, bt: Batch, i: number, fromPod: boolean, toPod: boolean): boolean {
  const pt = ctx.policy!, ct = ctx.conntrack6!, now = ctx.now, gen = ctx.policyGen;
  const proto = bt.proto[i], s = bt.src6, d = bt.dst6, o = 4 * i, sport = bt.sport[i], dport = bt.dport[i];
  let slot = ct.lookup6(proto, s, o, d, o, sport, dport, now);
  let reply = false;
  if (slot < 0) {
    slot = ct.lookup6(proto, d, o, s, o, dport, sport, now);
    reply = slot >= 0;
  }
  if (slot >= 0 && (ct.tag(slot) === gen || ct.state(slot) === DEFERRED)) {
    ct.touch(slot, now, CT_TTL_S);
    return true;
  }
  let drop = reply ? judge6(pt, d, s, o, proto, sport, toPod, fromPod) : judge6(pt, s, d, o, proto, dport, fromPod, toPod);
  if (drop !== 0 && slot < 0 && proto === TCP && (bt.tcpFlags[i] & SYN) === 0 && judge6(pt, d, s, o, proto, sport, toPod, fromPod) === 0) {
    reply = true;
    drop = 0;
  }
  if (drop !== 0) {
    ctx.counters[drop]++;
    return false;
  }
  const stored = reply ? ct.upsert6(proto, d, o, s, o, dport, sport, JUDGED, gen, now, CT_TTL_S) : ct.upsert6(proto, s, o, d, o, sport, dport, JUDGED, gen, now, CT_TTL_S);
  if (stored < 0) ctx.counters[C.conntrack_full]++;
  return true;
}

/** A local pod's packet i to the Service range: passes unjudged, and its replies will too (see above). */
export function admitDeferred(ctx: StageContext, bt: Batch, i: number): void {
  if ((bt.flags[i] & V6) !== 0) {
    const ct = ctx.conntrack6!, now = ctx.now, o = 4 * i, proto = bt.proto[i], sport = bt.sport[i], dport = bt.dport[i];
    const slot = ct.lookup6(proto, bt.src6, o, bt.dst6, o, sport, dport, now);
    if (slot >= 0 && ct.state(slot) === DEFERRED) { ct.touch(slot, now, CT_TTL_S); return; }
    if (ct.upsert6(proto, bt.src6, o, bt.dst6, o, sport, dport, DEFERRED, ctx.policyGen, now, CT_TTL_S) < 0) ctx.counters[C.conntrack_full]++;
    return;
  }
  const ct = ctx.conntrack!, now = ctx.now;
  const proto = bt.proto[i], src = bt.src[i], dst = bt.dst[i], sport = bt.sport[i], dport = bt.dport[i];
  const slot = ct.lookup(proto, src, dst, sport, dport, now);
  if (slot >= 0 && ct.state(slot) === DEFERRED) { ct.touch(slot, now, CT_TTL_S); return; }
  if (ct.upsert(proto, src, dst, sport, dport, DEFERRED, ctx.policyGen, now, CT_TTL_S) < 0) ctx.counters[C.conntrack_full]++;
}
