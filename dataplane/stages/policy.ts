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
import { INGRESS, EGRESS } from '../../policy/tables.js';
import { C } from '../engine/counters.js';
import type { Batch } from './batch.js';
import type { StageContext } from './context.js';

export const CT_TTL_S = 120;

/** True when packet i may go on. fromPod: its source is a pod on this node; toPod: its destination is. */
export function admit(ctx: StageContext, bt: Batch, i: number, fromPod: boolean, toPod: boolean): boolean {
  const pt = ctx.policy!, ct = ctx.conntrack!, now = ctx.now, gen = ctx.policyGen;
  const proto = bt.proto[i], src = bt.src[i], dst = bt.dst[i], sport = bt.sport[i], dport = bt.dport[i];
  let slot = ct.lookup(proto, src, dst, sport, dport, now);
  let reply = false;
  if (slot < 0) {
    slot = ct.lookup(proto, dst, src, dport, sport, now);
    reply = slot >= 0;
  }
  if (slot >= 0 && ct.tag(slot) === gen) {
    ct.touch(slot, now, CT_TTL_S);
    return true;
  }
  // A new flow, or one admitted under older policies: judge it in its original direction.
  const oSrc = reply ? dst : src, oDst = reply ? src : dst, oPort = reply ? sport : dport;
  const oFromPod = reply ? toPod : fromPod, oToPod = reply ? fromPod : toPod;
  if (oFromPod && pt.verdict(EGRESS, oSrc, oDst, proto, oPort) < 0) {
    ctx.counters[C.drop_policy_egress]++;
    return false;
  }
  if (oToPod && pt.verdict(INGRESS, oDst, oSrc, proto, oPort) < 0) {
    ctx.counters[C.drop_policy_ingress]++;
    return false;
  }
  if (reply) ct.upsert(proto, dst, src, dport, sport, 1, gen, now, CT_TTL_S);
  else if (ct.upsert(proto, src, dst, sport, dport, 1, gen, now, CT_TTL_S) < 0) ctx.counters[C.conntrack_full]++;
  return true;
}
