// Reachability between every pair of pods, answered by the compiled tables' verdict()
// and verdict6() (the same lookups the packet path makes), never by a second evaluator.
import { PROTO_NUM, podKey, type ClusterModel, type Pod, type Protocol } from './model.js';
import { EGRESS, INGRESS, PolicyTables, type Explanation } from '../dataplane/tables/policy.js';
import { parseIPv4Address } from '../lib/ipv4.js';
import { isIPv6, parseIPv6Address } from '../lib/ipv6.js';

/** Which of a pod's addresses: Kubernetes' spelling (spec.ipFamilies). */
export type IPFamily = 'IPv4' | 'IPv6';
export const IP_FAMILIES = ['IPv4', 'IPv6'] as const;

export interface Matrix {
  pods: string[]; // "ns/name", rows = source, columns = destination
  allowed: boolean[][];
}

/** src → dst is allowed iff src's egress allows dst:port AND dst's ingress allows src:port. */
export function allowedBetween(t: PolicyTables, srcIp: number, dstIp: number, proto: number, port: number): boolean {
  if (srcIp === dstIp) return true;
  return t.verdict(EGRESS, srcIp, dstIp, proto, port) >= 0 && t.verdict(INGRESS, dstIp, srcIp, proto, port) >= 0;
}

/** allowedBetween() for IPv6: the addresses as four words each (`| 0`). */
export function allowedBetween6(t: PolicyTables, src: Int32Array, dst: Int32Array, proto: number, port: number): boolean {
  if (src[0] === dst[0] && src[1] === dst[1] && src[2] === dst[2] && src[3] === dst[3]) return true;
  return t.verdict6(EGRESS, src, 0, dst, 0, proto, port) >= 0 && t.verdict6(INGRESS, dst, 0, src, 0, proto, port) >= 0;
}

/** IPv6 text → the four words verdict6() takes. */
export const words6 = (ip: string): Int32Array => Int32Array.from(parseIPv6Address(ip), (w) => w | 0);

/** The pod's address in the family, if it has one. */
export const addressOf = (p: Pod, family: IPFamily): string | undefined => (family === 'IPv6' ? p.ip6 : p.ip);

/** Pods that can carry traffic in the family (have an address of it), in model order. */
export function matrixPods(model: ClusterModel, family: IPFamily = 'IPv4'): Pod[] {
  return model.pods.filter((p) => addressOf(p, family) !== undefined);
}

export function reachabilityMatrix(model: ClusterModel, t: PolicyTables, port = 80, protocol: Protocol = 'TCP', family: IPFamily = 'IPv4'): Matrix {
  const pods = matrixPods(model, family);
  const proto = PROTO_NUM[protocol];
  let allowed: boolean[][];
  if (family === 'IPv6') {
    const ips = pods.map((p) => words6(p.ip6!));
    allowed = ips.map((s) => ips.map((d) => allowedBetween6(t, s, d, proto, port)));
  } else {
    const ips = pods.map((p) => parseIPv4Address(p.ip!));
    allowed = ips.map((s) => ips.map((d) => allowedBetween(t, s, d, proto, port)));
  }
  return { pods: pods.map(podKey), allowed };
}

export interface Trace {
  allowed: boolean;
  egress: Explanation; // source pod's egress policies
  ingress: Explanation; // destination pod's ingress policies
}

/** One pod to another over the family's addresses (both pods must have one). */
export function tracePair(t: PolicyTables, src: Pod, dst: Pod, port: number, protocol: Protocol, family: IPFamily = 'IPv4'): Trace {
  const s = addressOf(src, family);
  const d = addressOf(dst, family);
  if (s === undefined || d === undefined) throw new Error(`${podKey(s === undefined ? src : dst)} has no ${family} address`);
  return traceAddresses(t, s, d, port, protocol);
}

/**
 * From one address to another, pods or not (a peer outside the cluster, a node): the
 * egress of the source's pod and the ingress of the destination's. Both of one family.
 */
export function traceAddresses(t: PolicyTables, srcIp: string, dstIp: string, port: number, protocol: Protocol): Trace {
  const proto = PROTO_NUM[protocol];
  if (isIPv6(srcIp) !== isIPv6(dstIp)) throw new Error(`${srcIp} and ${dstIp} are of different IP families: a packet has one`);
  if (isIPv6(srcIp)) {
    const s = words6(srcIp);
    const d = words6(dstIp);
    return { allowed: allowedBetween6(t, s, d, proto, port), egress: t.explain6(EGRESS, s, d, proto, port), ingress: t.explain6(INGRESS, d, s, proto, port) };
  }
  const s = parseIPv4Address(srcIp);
  const d = parseIPv4Address(dstIp);
  return { allowed: allowedBetween(t, s, d, proto, port), egress: t.explain(EGRESS, s, d, proto, port), ingress: t.explain(INGRESS, d, s, proto, port) };
}
