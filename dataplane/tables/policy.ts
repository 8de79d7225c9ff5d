// Compiled NetworkPolicy tables in SharedArrayBuffers: the packet path asks
// verdict(dir, podIp, peerIp, proto, port) for IPv4 and verdict6(dir, pod, podAt, peer,
// peerAt, proto, port) for IPv6, with a cost independent of the number of policies: one
// LPM lookup (pod address → pod), one load (pod, family, dir → rule set), a binary search
// over the rule set's peer-address runs and one over the matched class's port segments.
//
// Buffers:
//   pods  Lpm4Table: pod IPv4/32 → pod index + 1
//   pods6 Lpm6Table: pod IPv6/128 → pod index + 1 (absent when no pod has an IPv6 address)
//   rules Int32Array d, the directory:
//     d[0..7]   MAGIC, VERSION, int32 count, pod count, reserved
//     d[8 + 4*pod + dir]      offset in blocks of the pod's IPv4 rule set for dir, 0 = not isolated
//     d[8 + 4*pod + 2 + dir]  the same for IPv6 (DIR6 + dir)
//   Isolation is per pod, not per family: a pod isolated in a direction has a rule set for
//   each family it has an address of (one whose rules match nothing of that family denies).
//   blocks Int32Array b (and a Uint32Array view u over the same bytes), the rule sets:
//     IPv4 rule set at o: b[o] = n runs; u[o+1 .. o+1+n) run start IPs (ascending, first is 0);
//                    b[o+1+n+j] = offset of run j's class relative to o, 0 = no rule matches
//     IPv6 rule set at o: b[o] = n runs; u[o+1+4j .. o+1+4j+4) run j's start address, four
//                    words, most significant first (ascending, first is ::);
//                    b[o+1+4n+j] = offset of run j's class relative to o, 0 = no rule matches
//     class at c:    b[c] = m segments; b[c+1 .. c+1+m) segment start keys (proto<<16 | port,
//                    ascending); b[c+1+m+k] = rule id allowing the segment, 0 = none
//     (a class is family-independent: the same encoding under both kinds of rule set)
//   The blocks buffer is an arena the compiler appends to and several generations of
//   tables share: a rule set, once a directory points at it, is never written again, so
//   a change publishes a new directory plus the rule sets it rebuilt, not every rule set.
// Beside them, for explain() only: policy names, rule id → (policy, "ingress[i]"), rule
// set offset → isolating policies. The compiler hands a function that builds them on
// first use; they are not shared with the dataplane, which never explains.
// Why not an Lpm4 per (pod, direction) over peers: an Lpm4Table is >= 256 KiB (its
// 2^16-entry first level), so 1,000 pods would need 0.5 GiB; sorted runs cost 8 bytes
// per peer interval (20 for IPv6) and a ~10-step binary search.
import { Lpm4Table } from './lpm4.js';
import { Lpm6Table } from './lpm6.js';
import { formatIPv4Address } from '../../lib/ipv4.js';
import { formatIPv6Address } from '../../lib/ipv6.js';

export const INGRESS = 0;
export const EGRESS = 1;
export type Direction = typeof INGRESS | typeof EGRESS;

/** Reserved rule ids: a pod reaching itself, and its node (kubelet probes) reaching it. */
export const RULE_SELF = 1;
export const RULE_NODE = 2;
/** Rule ids the compiler hands to policy rules start here. */
export const FIRST_POLICY_RULE = 16;

export const MAGIC = 0x504f4c54; // "POLT"
export const VERSION = 3; // 3: IPv6 (pods6, four directory entries per pod, IPv6 rule sets)
export const HDR = 8;
/** Directory entries per pod: IPv4 ingress, egress, then IPv6 ingress, egress. */
export const DIR_STRIDE = 4;
/** Where a pod's IPv6 entries start among its directory entries. */
export const DIR6 = 2;

export interface PolicyBuffers {
  pods: SharedArrayBuffer;
  pods6?: SharedArrayBuffer; // absent: no pod has an IPv6 address
  rules: SharedArrayBuffer;
  blocks: SharedArrayBuffer;
}

export interface PolicyMeta {
  pods: string[]; // "ns/name" by pod index
  policies: Record<string, string>; // policy id → "ns/name"
  rules: Record<string, [policy: number, path: string]>; // rule id → policy id, "ingress[0]"
  isolatedBy: Record<string, number[]>; // rule-set offset → ids of the policies isolating the pod in that direction
}

export interface Explanation {
  direction: 'ingress' | 'egress';
  pod?: string; // the pod whose policies were consulted
  verdict: number; // as verdict(): > 0 rule id, 0 not isolated, -1 denied
  allowed: boolean;
  policy?: string; // "ns/name" of the deciding policy
  rule?: string; // "ingress[0]" / "egress[1]"
  isolatedBy: string[]; // the policies that isolate the pod in this direction
  reason: string;
}

export class PolicyTables {
  readonly buffers: PolicyBuffers;
  private readonly podLpm: Lpm4Table;
  private readonly podLpm6: Lpm6Table | undefined;
  private readonly d: Int32Array;
  private readonly b: Int32Array;
  private readonly u: Uint32Array;
  private metaCache?: PolicyMeta;
  private readonly metaOf?: () => PolicyMeta;

  constructor(buffers: PolicyBuffers, meta?: () => PolicyMeta) {
    const d = new Int32Array(buffers.rules);
    if (d.length < HDR || d[0] !== MAGIC || d[1] !== VERSION || d[2] !== d.length) throw new Error('policy: buffer is not a PolicyTables rules buffer');
    this.buffers = buffers;
    this.podLpm = new Lpm4Table(buffers.pods);
    this.podLpm6 = buffers.pods6 ? new Lpm6Table(buffers.pods6) : undefined;
    this.d = d;
    this.b = new Int32Array(buffers.blocks);
    this.u = new Uint32Array(buffers.blocks);
    this.metaOf = meta;
  }

  /**
   * The hot path. dir: INGRESS (podIp is the destination, peerIp the source) or EGRESS
   * (podIp is the source, peerIp the destination); port is the destination port.
   * Returns the id (> 0) of a rule allowing the packet, 0 when podIp is not isolated in
   * that direction (allowed), -1 when it is isolated and no rule matches (deny).
   */
  verdict(dir: number, podIp: number, peerIp: number, proto: number, port: number): number {
    const pod = this.podLpm.lookup(podIp);
    if (pod === 0) return 0; // not a pod of ours: no policy applies
    const o = this.d[HDR + 4 * (pod - 1) + dir]; // 4: DIR_STRIDE, written out on the hot path
    if (o === 0) return 0;
    if ((podIp | 0) === (peerIp | 0)) return RULE_SELF;
    const b = this.b;
    const u = this.u;
    const ip = peerIp >>> 0;
    const n = b[o];
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (u[o + 1 + mid] <= ip) lo = mid;
      else hi = mid - 1;
    }
    const rel = b[o + 1 + n + lo];
    if (rel === 0) return -1;
    return this.classRule(o + rel, proto, port);
  }

  /**
   * verdict() for IPv6: the pod's and the peer's addresses are four int32 words each (most
   * significant first, as read from the header, `| 0`) at pod[podAt..podAt+3] and
   * peer[peerAt..peerAt+3]. dir, proto, port and the result as verdict().
   */
  verdict6(dir: number, pod: Int32Array, podAt: number, peer: Int32Array, peerAt: number, proto: number, port: number): number {
    const lpm = this.podLpm6;
    if (lpm === undefined) return 0;
    const p0 = pod[podAt];
    const p1 = pod[podAt + 1];
    const p2 = pod[podAt + 2];
    const p3 = pod[podAt + 3];
    const idx = lpm.lookup(p0, p1, p2, p3);
    if (idx === 0) return 0; // not a pod of ours: no policy applies
    const o = this.d[HDR + 4 * (idx - 1) + 2 + dir]; // DIR_STRIDE, DIR6
    if (o === 0) return 0;
    const a0 = peer[peerAt] >>> 0;
    const a1 = peer[peerAt + 1] >>> 0;
    const a2 = peer[peerAt + 2] >>> 0;
    const a3 = peer[peerAt + 3] >>> 0;
    if (a3 === p3 >>> 0 && a2 === p2 >>> 0 && a1 === p1 >>> 0 && a0 === p0 >>> 0) return RULE_SELF;
    const b = this.b;
    const u = this.u;
    const n = b[o];
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      const s = o + 1 + 4 * mid;
      // start <= peer, the four words compared as one 128-bit number
      let w = u[s];
      let le: boolean;
      if (w !== a0) le = w < a0;
      else if ((w = u[s + 1]) !== a1) le = w < a1;
      else if ((w = u[s + 2]) !== a2) le = w < a2;
      else le = u[s + 3] <= a3;
      if (le) lo = mid;
      else hi = mid - 1;
    }
    const rel = b[o + 1 + 4 * n + lo];
    if (rel === 0) return -1;
    return this.classRule(o + rel, proto, port);
  }

  /** The rule of the class at c (its port segments, searched by proto<<16 | port) that allows the port, or -1. */
  private classRule(c: number, proto: number, port: number): number {
    const b = this.b, m = b[c];
    const key = (proto << 16) | port;
    if (m === 0 || b[c + 1] > key) return -1;
    let lo = 0, hi = m - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (b[c + 1 + mid] <= key) lo = mid;
      else hi = mid - 1;
    }
    const rule = b[c + 1 + m + lo];
    return rule > 0 ? rule : -1;
  }

  get meta(): PolicyMeta {
    if (!this.metaOf) throw new Error('policy: these tables carry no names (only the compiler\'s do)');
    this.metaCache ??= this.metaOf();
    return this.metaCache;
  }

  get bytes(): number {
    return this.buffers.pods.byteLength + (this.buffers.pods6?.byteLength ?? 0) + this.buffers.rules.byteLength + this.buffers.blocks.byteLength;
  }

  /** Control path: verdict() plus which policy and rule decided, for `twill policy trace`. */
  explain(dir: number, podIp: number, peerIp: number, proto: number, port: number): Explanation {
    const v = this.verdict(dir, podIp, peerIp, proto, port);
    const podIdx = this.podLpm.lookup(podIp);
    const off = podIdx > 0 ? this.d[HDR + DIR_STRIDE * (podIdx - 1) + dir] : 0;
    return this.explained(dir, v, podIdx, off, formatIPv4Address(podIp >>> 0), formatIPv4Address(peerIp >>> 0), proto, port);
  }

  /** explain() for IPv6: verdict6() plus which policy and rule decided; the addresses as four words each. */
  explain6(dir: number, podIp: ArrayLike<number>, peerIp: ArrayLike<number>, proto: number, port: number): Explanation {
    const pod = Int32Array.from({ length: 4 }, (_, i) => podIp[i] | 0);
    const peer = Int32Array.from({ length: 4 }, (_, i) => peerIp[i] | 0);
    const v = this.verdict6(dir, pod, 0, peer, 0, proto, port);
    const podIdx = this.podLpm6 ? this.podLpm6.lookup(pod[0], pod[1], pod[2], pod[3]) : 0;
    const off = podIdx > 0 ? this.d[HDR + DIR_STRIDE * (podIdx - 1) + DIR6 + dir] : 0;
    return this.explained(dir, v, podIdx, off, formatIPv6Address(pod), formatIPv6Address(peer), proto, port);
  }

  private explained(dir: number, v: number, podIdx: number, off: number, podText: string, peer: string, proto: number, port: number): Explanation {
    const direction = dir === INGRESS ? 'ingress' : 'egress';
    const meta = this.meta;
    const pod = podIdx > 0 ? meta.pods[podIdx - 1] : undefined;
    const isolatedBy = (meta.isolatedBy[off] ?? []).map((i) => meta.policies[i]);
    const base = { direction, pod, verdict: v, allowed: v >= 0, isolatedBy } as const;
    if (podIdx === 0) return { ...base, reason: `${podText} is not a known pod: no policy applies` };
    if (v === 0) return { ...base, reason: `${pod} is not isolated for ${direction}: no policy selects it with policyTypes ${direction === 'ingress' ? 'Ingress' : 'Egress'}` };
    if (v === RULE_SELF) return { ...base, reason: `${pod} talking to itself is always allowed` };
    if (v === RULE_NODE) return { ...base, reason: `${peer} is a node IP: traffic from the node (kubelet probes) is always allowed` };
    if (v < 0) return { ...base, reason: `${pod} is isolated for ${direction} by ${isolatedBy.join(', ')} and no rule allows ${peer} port ${port}/${protoName(proto)}` };
    const [pi, path] = meta.rules[v] ?? [-1, '?'];
    const policy = meta.policies[pi];
    return { ...base, policy, rule: path, reason: `allowed by ${policy} ${path}` };
  }
}

export function protoName(p: number): string {
  return p === 6 ? 'TCP' : p === 17 ? 'UDP' : p === 132 ? 'SCTP' : String(p);
}

