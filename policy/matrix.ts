// Reachability between every pair of pods, answered by the compiled tables' verdict()
// (the same lookups the packet path makes), never by a second evaluator.
import { PROTO_NUM, podKey, type ClusterModel, type Pod, type Protocol } from './model.js';
import { EGRESS, INGRESS, PolicyTables, type Explanation } from '../dataplane/tables/policy.js';
import { parseIPv4Address } from '../lib/ipv4.js';

export interface Matrix {
  pods: string[]; // "ns/name", rows = source, columns = destination
  allowed: boolean[][];
}

/** src → dst is allowed iff src's egress allows dst:port AND dst's ingress allows src:port. */
export function allowedBetween(t: PolicyTables, srcIp: number, dstIp: number, proto: number, port: number): boolean {
  if (srcIp === dstIp) return true;
  return t.verdict(EGRESS, srcIp, dstIp, proto, port) >= 0 && t.verdict(INGRESS, dstIp, srcIp, proto, port) >= 0;
}

/** Pods that can carry traffic (have an IP), in model order. */
export function matrixPods(model: ClusterModel): Pod[] {
  return model.pods.filter((p) => p.ip !== undefined);
}

export function reachabilityMatrix(model: ClusterModel, t: PolicyTables, port = 80, protocol: Protocol = 'TCP'): Matrix {
  const pods = matrixPods(model);
  const ips = pods.map((p) => parseIPv4Address(p.ip!));
  const proto = PROTO_NUM[protocol];
  return {
    pods: pods.map(podKey),
    allowed: ips.map((s) => ips.map((d) => allowedBetween(t, s, d, proto, port))),
  };
}

export interface Trace {
  allowed: boolean;
  egress: Explanation; // source pod's egress policies
  ingress: Explanation; // destination pod's ingress policies
}

export function tracePair(t: PolicyTables, src: Pod, dst: Pod, port: number, protocol: Protocol): Trace {
  const s = parseIPv4Address(src.ip!);
  const d = parseIPv4Address(dst.ip!);
  const proto = PROTO_NUM[protocol];
  const egress = t.explain(EGRESS, s, d, proto, port);
  const ingress = t.explain(INGRESS, d, s, proto, port);
  return { allowed: allowedBetween(t, s, d, proto, port), egress, ingress };
}
