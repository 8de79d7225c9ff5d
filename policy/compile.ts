// ClusterModel → PolicyTables, incrementally.
//
// Caches, from the bottom up:
//  - per policy (keyed by namespace/name; a new object is compared by its JSON text):
//    its rules turned into peer specs and port terms, with stable rule ids;
//  - per selector (namespace scope + pod selector): the set of pods it selects. When
//    pods or namespaces change, only the changed pods are re-matched against each
//    cached selector; a selector whose membership changes bumps the revision of the
//    policies using it as a peer;
//  - per rule set, keyed by direction + (policy id, revision) of every policy isolating
//    the pod + whatever named ports depend on: the compiled block. Pods that are
//    selected by the same policies share one block; a change recompiles only the blocks
//    whose key changed, straight into an arena the tables of every generation share;
//    a change publishes a new pod directory over it (see tables.ts).
// Model objects are treated as immutable: pass a new object to change a pod, namespace
// or policy (unchanged objects are recognised by identity, so they are not re-hashed).
//
// IPv6 and dual stack: a pod has an IPv4 address (ip), an IPv6 one (ip6) or both. A
// selector peer matches a pod by either; an ipBlock matches only its own family. Each
// isolated (pod, direction) gets a rule set per family the pod has an address of, from
// the same policies (isolation is per pod). The IPv6 rule sets are compiled by the same
// sweep as the IPv4 ones, over a compressed line (see compileRuleset): its coordinates
// are the IPv6 pod addresses and the addresses after them, the node addresses and every
// IPv6 ipBlock edge of the policies in force, rebuilt when one of those changes.
import { Lpm4Builder } from '../dataplane/tables/lpm4.js';
import { Lpm6Builder } from '../dataplane/tables/lpm6.js';
import { parseIPv4Address, parseIPv4Cidr } from '../lib/ipv4.js';
import { isIPv6, parseIPv6Address, parseIPv6Cidr } from '../lib/ipv6.js';
import {
  PROTO_NUM, canonical, effectivePolicyTypes, selectorMatches,
  type ClusterModel, type LabelSelector, type Namespace, type NetworkPolicy, type NetworkPolicyPeer, type NetworkPolicyPort, type Pod,
} from './model.js';
import { Scratch, compileRuleset, type PodUniverse, type PortTerm, type RuleInput } from './ruleset.js';
import { DIR6, DIR_STRIDE, EGRESS, FIRST_POLICY_RULE, HDR, INGRESS, MAGIC, PolicyTables, RULE_NODE, VERSION, type PolicyMeta } from '../dataplane/tables/policy.js';
import { IsolationIndex } from './isolation.js';
import { BlockArena, type Placed } from './arena.js';

interface SelectorSpec {
  ns?: string; // exactly this namespace...
  nsSel?: LabelSelector; // ...or namespaces matching this
  podSel: LabelSelector;
}
interface SelectorState {
  spec: SelectorSpec;
  members: Set<number>; // pod uids
  users: Set<PolicyState>; // policies using it as a peer
  targets: Set<PolicyState>; // policies it is the podSelector of
  refs: number; // policies using it (as target or peer)
  ranks?: Int32Array; // members' ranks in the pod universe of epoch ranksEpoch
  ranksEpoch: number;
  ranks6?: Int32Array; // the same in the IPv6 pod universe
  ranks6Epoch: number;
}
/** A selector, or an ipBlock as ranges of its family: IPv4 [lo, hi, ...] (uint32), IPv6 [lo, hi, ...] (128-bit). */
type PeerSpec = { sel: string } | { ranges: number[]; ranges6: bigint[] };
interface CompiledRule {
  ruleId: number;
  path: string;
  peers: PeerSpec[] | null; // null: every peer
  ports: PortTerm[] | null; // null: every port
  named: boolean;
  resolved?: RuleInput; // peers resolved, valid for the policy revision and pod epoch it was made in
  resolvedEpoch?: number;
  resolved6?: RuleInput; // the same for IPv6 (ranks and ranges in the IPv6 line of epoch resolved6Epoch)
  resolved6Epoch?: number;
}
interface PolicyState {
  id: number;
  rev: number;
  obj: NetworkPolicy;
  name: string;
  target: string; // selector key of spec.podSelector
  rules: [CompiledRule[], CompiledRule[]] | undefined; // by direction; undefined: not isolating in it
  isolates: [boolean, boolean];
  named: [boolean, boolean]; // has named ports, by direction
  sels: string[]; // all selector keys referenced
  seen: number; // the last generation whose model held it
  inputs: [RuleInput[] | undefined, RuleInput[] | undefined]; // its rules resolved, by direction, for pod epoch inputsEpoch
  inputsEpoch: number;
  inputs6: [RuleInput[] | undefined, RuleInput[] | undefined]; // the same for IPv6, for line epoch inputs6Epoch
  inputs6Epoch: number;
  has6: boolean; // has IPv6 ipBlock ranges (they are edges of the IPv6 line)
}
interface PodState {
  uid: number;
  obj: Pod;
  canon: string;
  ip: number; // -1: none
  ip6: bigint; // -1n: none
  portsCanon: string;
}
/** A pod's rule sets in one direction, by family. */
interface RulesetPair {
  v4?: CachedRuleset;
  v6?: CachedRuleset;
}
/** The IPv6 line: sorted coordinates (128-bit), their index, and their words (4 per coordinate). */
interface Line6 {
  at: Map<bigint, number>;
  words: Int32Array;
  size: number;
}
interface CachedRuleset extends Placed {
  dir: number;
  v6: boolean;
  policies: PolicyState[];
  revs: number[];
  extra: string;
  used: number; // generation last used
}

export interface CompileStats {
  ms: number;
  rulesetsBuilt: number;
  rulesetsReused: number;
  changedPods: number;
  changedPolicies: number;
}

const TOP6 = 1n << 128n;

function cidrRange(cidr: string): [number, number] | undefined {
  if (isIPv6(cidr)) return undefined; // the other family
  const { prefix, len } = parseIPv4Cidr(cidr);
  return [prefix, len === 0 ? 0xffffffff : prefix + 2 ** (32 - len) - 1];
}

/** 4 words (most significant first) → one 128-bit number. */
function big6(w: ArrayLike<number>): bigint {
  return (BigInt(w[0] >>> 0) << 96n) | (BigInt(w[1] >>> 0) << 64n) | (BigInt(w[2] >>> 0) << 32n) | BigInt(w[3] >>> 0);
}

function cidrRange6(cidr: string): [bigint, bigint] | undefined {
  if (!isIPv6(cidr)) return undefined; // the other family
  const { addr, len } = parseIPv6Cidr(cidr);
  const lo = big6(addr);
  return [lo, lo + (1n << BigInt(128 - len)) - 1n];
}

/** cidr minus excepts, as sorted disjoint [lo, hi] pairs; [] for an IPv6 cidr. */
function ipBlockRanges(cidr: string, except: string[] = []): number[] {
  const base = cidrRange(cidr);
  if (!base) return [];
  let out: number[] = [...base];
  for (const e of except) {
    const x = cidrRange(e);
    if (!x) continue; // validation rejects an except of the other family
    const next: number[] = [];
    for (let i = 0; i < out.length; i += 2) {
      const [lo, hi] = [out[i], out[i + 1]];
      if (x[1] < lo || x[0] > hi) next.push(lo, hi);
      else {
        if (x[0] > lo) next.push(lo, x[0] - 1);
        if (x[1] < hi) next.push(x[1] + 1, hi);
      }
    }
    out = next;
  }
  return out;
}

/** ipBlockRanges() for IPv6, in 128-bit numbers; [] for an IPv4 cidr. */
function ipBlockRanges6(cidr: string, except: string[] = []): bigint[] {
  const base = cidrRange6(cidr);
  if (!base) return [];
  let out: bigint[] = [...base];
  for (const e of except) {
    const x = cidrRange6(e);
    if (!x) continue;
    const next: bigint[] = [];
    for (let i = 0; i < out.length; i += 2) {
      const [lo, hi] = [out[i], out[i + 1]];
      if (x[1] < lo || x[0] > hi) next.push(lo, hi);
      else {
        if (x[0] > lo) next.push(lo, x[0] - 1n);
        if (x[1] < hi) next.push(x[1] + 1n, hi);
      }
    }
    out = next;
  }
  return out;
}

function portTerms(ports: NetworkPolicyPort[] | undefined): PortTerm[] | null {
  if (!ports || ports.length === 0) return null;
  return ports.map((p) => {
    const proto = PROTO_NUM[p.protocol ?? 'TCP'];
    if (typeof p.port === 'string') return { proto, lo: 0, hi: 0, name: p.port };
    const lo = p.port ?? 0;
    const hi = p.port === undefined ? 65535 : (p.endPort ?? p.port);
    return { proto, lo: (proto << 16) | lo, hi: (proto << 16) | hi };
  });
}

export class PolicyCompiler {
  private readonly pods = new Map<string, PodState>();
  private readonly podsByUid = new Map<number, PodState>();
  private readonly podsByNs = new Map<string, Map<string, PodState>>(); // a namespace-scoped selector looks there only
  private readonly namespaces = new Map<string, { obj: Namespace; canon: string }>();
  private readonly nsLabels = new Map<string, Record<string, string>>();
  private readonly selectors = new Map<string, SelectorState>();
  private readonly selectorKeys = new Map<string, string>(); // JSON text of a spec → its canonical key
  private readonly policies = new Map<string, PolicyState>();
  private readonly policyOf = new WeakMap<NetworkPolicy, PolicyState>();
  private readonly rulesets = new Map<number, CachedRuleset[]>(); // by key hash
  private readonly iso = new IsolationIndex<PolicyState, RulesetPair>();
  private nextUid = 1;
  private nextPolicyId = 1;
  private nextRev = 1;
  private nextRuleId = FIRST_POLICY_RULE;
  private podEpoch = 0; // bumped when any pod's IP or container ports change
  private uni: PodUniverse = { ips: new Float64Array(0), pods: [], portsId: new Int32Array(0) };
  private rankOf = new Map<number, number>(); // uid → rank
  private portIds = new Map<string, number>(); // container ports (canonical) → PodUniverse.portsId (both families)
  private rankEpoch = -1;
  // IPv6: the pods with an IPv6 address by address (rank = index), their addresses, and the line
  private ranked6: PodState[] = [];
  private rankOf6 = new Map<number, number>();
  private uni6: PodUniverse = { ips: new Float64Array(0), pods: [], portsId: new Int32Array(0) };
  private line6: Line6 = { at: new Map(), words: new Int32Array(4), size: 1 };
  private line6Key = '';
  private line6Epoch = 0; // bumped when the line's coordinates change
  private uni6Epoch = -1;
  private readonly policies6 = new Set<PolicyState>(); // those with IPv6 ipBlock ranges
  private generation = 0;
  private readonly arena = new BlockArena(); // PolicyBuffers.blocks, shared by generations
  private last?: { tables: PolicyTables; nodeKey: string; podUids: Int32Array; podEpoch: number };
  lastStats: CompileStats = { ms: 0, rulesetsBuilt: 0, rulesetsReused: 0, changedPods: 0, changedPolicies: 0 };

  compile(model: ClusterModel): PolicyTables {
    const t0 = performance.now();
    this.generation++;
    const changedPods = this.syncPods(model);
    const changedPolicies = this.syncPolicies(model);
    const tables = this.assemble(model, changedPods + changedPolicies > 0);
    this.lastStats = { ...this.lastStats, ms: performance.now() - t0, changedPods, changedPolicies };
    return tables;
  }

  // ---- pods and namespaces -------------------------------------------------------

  private syncPods(model: ClusterModel): number {
    const dirty = new Set<number>(); // uids to re-match against cached selectors
    const nsSeen = new Set<string>();
    const changedNs = new Set<string>();
    for (const ns of model.namespaces) {
      nsSeen.add(ns.name);
      const old = this.namespaces.get(ns.name);
      if (old && old.obj === ns) continue;
      const canon = canonical(ns.labels);
      if (!old || old.canon !== canon) changedNs.add(ns.name);
      this.namespaces.set(ns.name, { obj: ns, canon });
      this.nsLabels.set(ns.name, ns.labels);
    }
    for (const name of [...this.namespaces.keys()]) {
      if (!nsSeen.has(name)) {
        this.namespaces.delete(name);
        this.nsLabels.delete(name);
        changedNs.add(name);
      }
    }
    let portsChanged = false;
    const moved = new Set<number>(); // uids whose IP changed (or appeared / went away)
    const seen = new Set<string>();
    for (const pod of model.pods) {
      const key = `${pod.namespace}/${pod.name}`;
      seen.add(key);
      const old = this.pods.get(key);
      if (old && old.obj === pod) continue;
      const canon = JSON.stringify(pod);
      if (old && old.canon === canon) {
        old.obj = pod;
        continue;
      }
      const ip = pod.ip ? parseIPv4Address(pod.ip) : -1;
      const ip6 = pod.ip6 ? big6(parseIPv6Address(pod.ip6)) : -1n;
      const portsCanon = canonical(pod.containerPorts);
      if (!old || old.ip !== ip || old.ip6 !== ip6 || old.portsCanon !== portsCanon) portsChanged = true;
      if (!old || old.ip !== ip || old.ip6 !== ip6) moved.add(old?.uid ?? this.nextUid);
      const st: PodState = { uid: old?.uid ?? this.nextUid++, obj: pod, canon, ip, ip6, portsCanon };
      this.pods.set(key, st);
      this.podsByUid.set(st.uid, st);
      let inNs = this.podsByNs.get(pod.namespace);
      if (!inNs) this.podsByNs.set(pod.namespace, (inNs = new Map()));
      inNs.set(key, st);
      dirty.add(st.uid);
    }
    for (const [key, st] of [...this.pods]) {
      if (seen.has(key)) {
        if (changedNs.has(st.obj.namespace)) dirty.add(st.uid);
        continue;
      }
      this.pods.delete(key);
      this.podsByUid.delete(st.uid);
      this.podsByNs.get(st.obj.namespace)?.delete(key);
      this.iso.drop(st.uid);
      dirty.add(st.uid);
      moved.add(st.uid);
      if (st.ip >= 0 || st.ip6 >= 0n) portsChanged = true;
    }
    if (portsChanged) {
      this.podEpoch++;
      this.iso.touchAll(); // named ports resolve anew
    }
    for (const uid of dirty) if (this.podsByUid.has(uid)) this.iso.touch(uid);
    if (dirty.size) {
      for (const sel of this.selectors.values()) {
        let changed = false;
        for (const uid of dirty) {
          const st = this.podsByUid.get(uid);
          const now = st !== undefined && this.matches(sel.spec, st.obj);
          if (now !== sel.members.has(uid)) {
            changed = true;
            if (now) sel.members.add(uid);
            else sel.members.delete(uid);
            for (const p of sel.targets) {
              if (now) this.iso.add(uid, p);
              else this.iso.remove(uid, p);
            }
          } else if (now && moved.has(uid)) {
            changed = true; // a member's IP changed
          }
        }
        if (changed) {
          sel.ranks = undefined;
          sel.ranks6 = undefined;
          for (const p of sel.users) this.bump(p);
        }
      }
    }
    return dirty.size;
  }

  private matches(s: SelectorSpec, pod: Pod): boolean {
    if (s.ns !== undefined ? pod.namespace !== s.ns : !selectorMatches(s.nsSel!, this.nsLabels.get(pod.namespace) ?? {})) return false;
    return selectorMatches(s.podSel, pod.labels);
  }

  private selector(spec: SelectorSpec): string {
    // most selectors repeat word for word: canonical() (key sorting) runs once per distinct text
    const text = JSON.stringify(spec);
    let key = this.selectorKeys.get(text);
    if (key === undefined) this.selectorKeys.set(text, (key = canonical(spec)));
    if (!this.selectors.has(key)) {
      const members = new Set<number>();
      const pool = spec.ns !== undefined ? (this.podsByNs.get(spec.ns)?.values() ?? []) : this.pods.values();
      for (const st of pool) if (this.matches(spec, st.obj)) members.add(st.uid);
      this.selectors.set(key, { spec, members, users: new Set(), targets: new Set(), refs: 0, ranksEpoch: -1, ranks6Epoch: -1 });
    }
    return key;
  }

  private bump(p: PolicyState): void {
    p.rev = this.nextRev++;
    for (const uid of this.selectors.get(p.target)!.members) this.iso.touch(uid);
    for (const dir of p.rules ?? []) {
      for (const r of dir) {
        r.resolved = undefined;
        r.resolved6 = undefined;
      }
    }
    p.inputs = [undefined, undefined];
    p.inputs6 = [undefined, undefined];
  }

  // ---- policies ------------------------------------------------------------------

  private syncPolicies(model: ClusterModel): number {
    let changed = 0;
    const gen = this.generation;
    for (const np of model.policies) {
      // the same object as last time: found without building its key (10k policies, one change)
      const known = this.policyOf.get(np);
      if (known && known.obj === np && this.policies.get(known.name) === known) {
        known.seen = gen;
        continue;
      }
      const key = `${np.namespace}/${np.name}`;
      const old = this.policies.get(key);
      if (old) old.seen = gen;
      if (old && old.obj === np) continue;
      // JSON text is a sound change detector (equal text = equal policy); a mere key
      // reordering only costs a needless recompile, and it is far cheaper than canonical().
      // Only a policy met again as a new object pays for it.
      if (old && JSON.stringify(old.obj) === JSON.stringify(np)) {
        old.obj = np;
        this.policyOf.set(np, old);
        continue;
      }
      if (old) this.release(old);
      const st = this.compilePolicy(np);
      st.seen = gen;
      this.policies.set(key, st);
      this.policyOf.set(np, st);
      changed++;
    }
    for (const [key, st] of this.policies) {
      if (st.seen !== gen) {
        this.release(st);
        this.policies.delete(key);
        changed++;
      }
    }
    return changed;
  }

  private release(p: PolicyState): void {
    this.policies6.delete(p);
    const t = this.selectors.get(p.target)!;
    t.targets.delete(p);
    for (const uid of t.members) this.iso.remove(uid, p);
    for (const key of p.sels) {
      const s = this.selectors.get(key)!;
      s.users.delete(p);
      if (--s.refs === 0) this.selectors.delete(key);
    }
    if (this.selectorKeys.size > 2 * this.selectors.size + 4096) this.selectorKeys.clear(); // texts of selectors gone
  }

  private compilePolicy(np: NetworkPolicy): PolicyState {
    const types = effectivePolicyTypes(np.spec);
    const sels: string[] = [];
    const target = this.selector({ ns: np.namespace, podSel: np.spec.podSelector });
    sels.push(target);
    const st: PolicyState = {
      id: this.nextPolicyId++, rev: this.nextRev++, obj: np, name: `${np.namespace}/${np.name}`, target,
      rules: [[], []], isolates: [types.includes('Ingress'), types.includes('Egress')], named: [false, false], sels, seen: 0, inputs: [undefined, undefined], inputsEpoch: -1,
      inputs6: [undefined, undefined], inputs6Epoch: -1, has6: false,
    };
    const peerSpec = (peer: NetworkPolicyPeer): PeerSpec => {
      if (peer.ipBlock) {
        const { cidr, except } = peer.ipBlock;
        const ranges6 = ipBlockRanges6(cidr, except);
        if (ranges6.length) st.has6 = true;
        return { ranges: ipBlockRanges(cidr, except), ranges6 };
      }
      // podSelector alone: the policy's namespace; namespaceSelector: those namespaces
      const spec: SelectorSpec = peer.namespaceSelector
        ? { nsSel: peer.namespaceSelector, podSel: peer.podSelector ?? {} }
        : { ns: np.namespace, podSel: peer.podSelector ?? {} };
      const key = this.selector(spec);
      sels.push(key);
      return { sel: key };
    };
    const build = (dir: 'ingress' | 'egress', peers: (NetworkPolicyPeer[] | undefined)[], ports: (NetworkPolicyPort[] | undefined)[]): CompiledRule[] =>
      peers.map((pp, i) => {
        const terms = portTerms(ports[i]);
        return {
          ruleId: this.nextRuleId++,
          path: `${dir}[${i}]`,
          peers: pp && pp.length ? pp.map(peerSpec) : null, // missing or empty: every peer
          ports: terms,
          named: terms !== null && terms.some((t) => t.name !== undefined),
        };
      });
    const rules = st.rules!;
    if (st.isolates[INGRESS]) {
      const ing = np.spec.ingress ?? [];
      rules[INGRESS] = build('ingress', ing.map((r) => r.from), ing.map((r) => r.ports));
    }
    if (st.isolates[EGRESS]) {
      const eg = np.spec.egress ?? [];
      rules[EGRESS] = build('egress', eg.map((r) => r.to), eg.map((r) => r.ports));
    }
    st.named = [rules[INGRESS].some((r) => r.named), rules[EGRESS].some((r) => r.named)];
    for (const key of sels) {
      const s = this.selectors.get(key)!;
      s.refs++;
      if (key !== target) s.users.add(st);
    }
    if (st.has6) this.policies6.add(st);
    const t = this.selectors.get(target)!;
    t.targets.add(st);
    for (const uid of t.members) this.iso.add(uid, st);
    return st;
  }

  private selectorRanks(key: string): Int32Array {
    const sel = this.selectors.get(key)!;
    if (sel.ranksEpoch !== this.podEpoch || !sel.ranks) {
      const out: number[] = [];
      for (const uid of sel.members) {
        const k = this.rankOf.get(uid);
        if (k !== undefined) out.push(k);
      }
      sel.ranks = Int32Array.from(out);
      sel.ranksEpoch = this.podEpoch;
    }
    return sel.ranks;
  }

  private resolve(r: CompiledRule): RuleInput {
    if (r.resolved && r.resolvedEpoch === this.podEpoch) return r.resolved;
    const sels: Int32Array[] = [];
    const ranges: number[] = [];
    for (const p of r.peers ?? []) {
      if ('ranges' in p) ranges.push(...p.ranges);
      else sels.push(this.selectorRanks(p.sel));
    }
    r.resolvedEpoch = this.podEpoch;
    return (r.resolved = { ruleId: r.ruleId, all: r.peers === null, sels, ranges, ports: r.ports, named: r.named });
  }

  /** The policy's rules in a direction, resolved (one array, shared by every rule set the policy is in). */
  private inputsOf(p: PolicyState, dir: number): RuleInput[] {
    if (p.inputsEpoch !== this.podEpoch) {
      p.inputs = [undefined, undefined];
      p.inputsEpoch = this.podEpoch;
    }
    return (p.inputs[dir] ??= p.rules![dir].map((r) => this.resolve(r)));
  }

  private selectorRanks6(key: string): Int32Array {
    const sel = this.selectors.get(key)!;
    if (sel.ranks6Epoch !== this.podEpoch || !sel.ranks6) {
      const out: number[] = [];
      for (const uid of sel.members) {
        const k = this.rankOf6.get(uid);
        if (k !== undefined) out.push(k);
      }
      sel.ranks6 = Int32Array.from(out);
      sel.ranks6Epoch = this.podEpoch;
    }
    return sel.ranks6;
  }

  /** 128-bit [lo, hi, ...] → coordinates of the IPv6 line (each lo and hi + 1 is one). */
  private onLine6(ranges: readonly bigint[]): number[] {
    const { at, size } = this.line6;
    const out: number[] = [];
    for (let i = 0; i < ranges.length; i += 2) {
      const hi = ranges[i + 1] + 1n;
      out.push(at.get(ranges[i])!, hi === TOP6 ? size - 1 : at.get(hi)! - 1);
    }
    return out;
  }

  private resolve6(r: CompiledRule): RuleInput {
    if (r.resolved6 && r.resolved6Epoch === this.line6Epoch) return r.resolved6;
    const sels: Int32Array[] = [];
    const ranges: number[] = [];
    for (const p of r.peers ?? []) {
      if ('ranges6' in p) ranges.push(...this.onLine6(p.ranges6));
      else sels.push(this.selectorRanks6(p.sel));
    }
    r.resolved6Epoch = this.line6Epoch;
    return (r.resolved6 = { ruleId: r.ruleId, all: r.peers === null, sels, ranges, ports: r.ports, named: r.named });
  }

  /** inputsOf() for IPv6. */
  private inputsOf6(p: PolicyState, dir: number): RuleInput[] {
    if (p.inputs6Epoch !== this.line6Epoch) {
      p.inputs6 = [undefined, undefined];
      p.inputs6Epoch = this.line6Epoch;
    }
    return (p.inputs6[dir] ??= p.rules![dir].map((r) => this.resolve6(r)));
  }

  /**
   * The IPv6 pod universe (when the pods moved) and the line (when its coordinates did: the
   * pods, the node addresses, the IPv6 ipBlocks in force). Returns the node addresses as
   * ranges on the line.
   */
  private prepare6(nodes6: bigint[]): number[] {
    const moved = this.uni6.pods.length !== this.ranked6.length || this.uni6Epoch !== this.podEpoch;
    const key = `${this.podEpoch}|${nodes6.join(',')}|${[...this.policies6].map((p) => p.id).join(',')}`;
    if (key !== this.line6Key || moved) {
      const pts: bigint[] = [0n];
      const point = (a: bigint): void => {
        pts.push(a);
        if (a + 1n < TOP6) pts.push(a + 1n);
      };
      for (const st of this.ranked6) point(st.ip6);
      for (const a of nodes6) point(a);
      for (const p of this.policies6) {
        for (const dir of p.rules!) {
          for (const r of dir) {
            for (const peer of r.peers ?? []) {
              if (!('ranges6' in peer)) continue;
              for (let i = 0; i < peer.ranges6.length; i += 2) {
                pts.push(peer.ranges6[i]);
                if (peer.ranges6[i + 1] + 1n < TOP6) pts.push(peer.ranges6[i + 1] + 1n);
              }
            }
          }
        }
      }
      pts.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      const at = new Map<bigint, number>();
      const coords: bigint[] = [];
      for (const x of pts) {
        if (coords.length && coords[coords.length - 1] === x) continue;
        at.set(x, coords.length);
        coords.push(x);
      }
      const words = new Int32Array(4 * coords.length);
      coords.forEach((x, c) => {
        for (let i = 0; i < 4; i++) words[4 * c + i] = Number((x >> BigInt(96 - 32 * i)) & 0xffffffffn) | 0;
      });
      this.line6 = { at, words, size: coords.length };
      this.line6Key = key;
      this.line6Epoch++;
      const ranked = this.ranked6;
      this.uni6 = {
        ips: Float64Array.from(ranked, (st) => at.get(st.ip6)!),
        pods: ranked.map((st) => st.obj),
        portsId: Int32Array.from(ranked, (st) => this.portIds.get(st.portsCanon)!),
      };
      this.uni6Epoch = this.podEpoch;
    }
    const out: number[] = [];
    for (const a of nodes6) {
      const c = this.line6.at.get(a)!;
      out.push(c, c);
    }
    return out;
  }

  // ---- assembly ------------------------------------------------------------------

  private assemble(model: ClusterModel, changed: boolean): PolicyTables {
    // pods in the tables: those with an address of either family, in model order (a
    // duplicate address: last wins)
    const tablePods: PodState[] = [];
    const byIp = new Map<number, PodState>();
    const byIp6 = new Map<bigint, PodState>();
    for (const pod of model.pods) {
      const st = this.pods.get(`${pod.namespace}/${pod.name}`)!;
      if (st.ip < 0 && st.ip6 < 0n) continue;
      tablePods.push(st);
      if (st.ip >= 0) byIp.set(st.ip, st);
      if (st.ip6 >= 0n) byIp6.set(st.ip6, st);
    }
    if (this.uni.ips.length !== byIp.size || this.ranked6.length !== byIp6.size || this.rankEpoch !== this.podEpoch) {
      const ips = Float64Array.from(byIp.keys()).sort();
      const portIds = (this.portIds = new Map<string, number>());
      const portsIdOf = (st: PodState): number => portIds.get(st.portsCanon) ?? (portIds.set(st.portsCanon, portIds.size), portIds.size - 1);
      const ranked = Array.from(ips, (ip) => byIp.get(ip)!);
      const portsId = Int32Array.from(ranked, portsIdOf);
      this.uni = { ips, pods: ranked.map((st) => st.obj), portsId };
      this.rankOf = new Map(Array.from(ips, (ip, k) => [byIp.get(ip)!.uid, k]));
      this.ranked6 = [...byIp6.keys()].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)).map((a) => byIp6.get(a)!);
      for (const st of this.ranked6) portsIdOf(st);
      for (const st of tablePods) portsIdOf(st); // a pod whose address another took still has its rule sets
      this.rankOf6 = new Map(this.ranked6.map((st, k) => [st.uid, k]));
      this.rankEpoch = this.podEpoch;
    }
    const nodeRanges: number[] = [];
    const nodes6: bigint[] = [];
    for (const ip of model.nodeIps) {
      if (isIPv6(ip)) nodes6.push(big6(parseIPv6Address(ip)));
      else {
        const n = parseIPv4Address(ip);
        nodeRanges.push(n, n);
      }
    }
    const nodeKey = model.nodeIps.join(',');
    const podUids = Int32Array.from(tablePods, (st) => st.uid);
    const samePods = this.last !== undefined && this.last.podEpoch === this.podEpoch && podUids.length === this.last.podUids.length && podUids.every((u, i) => u === this.last!.podUids[i]);
    // nothing that the tables depend on moved: the ones in force stay (same object)
    if (this.last && !changed && samePods && nodeKey === this.last.nodeKey) {
      this.lastStats = { ...this.lastStats, rulesetsBuilt: 0, rulesetsReused: 0 };
      return this.last.tables;
    }
    if (nodeKey !== this.last?.nodeKey) this.iso.touchAll(); // ingress rule sets admit the nodes
    const scratch = new Scratch(this.uni.ips.length);
    // IPv6 only where a pod has an IPv6 address
    const any6 = this.ranked6.length > 0;
    const nodeRanges6 = any6 ? this.prepare6(nodes6) : [];
    const scratch6 = any6 ? new Scratch(this.uni6.ips.length) : scratch;

    // each pod's rule sets: those of last time unless the pod was touched since
    let built = 0;
    let reused = 0;
    const blocks: CachedRuleset[] = [];
    const blockIndex = new Map<CachedRuleset, number>();
    const podDir = new Int32Array(DIR_STRIDE * tablePods.length).fill(-1);
    const place = (rs: CachedRuleset, slot: number): void => {
      if (rs.used === -1) built++;
      else reused++;
      rs.used = this.generation;
      let bi = blockIndex.get(rs);
      if (bi === undefined) {
        bi = blocks.length;
        blocks.push(rs);
        blockIndex.set(rs, bi);
      }
      podDir[slot] = bi;
    };
    tablePods.forEach((st, i) => {
      const iso = this.iso.get(st.uid);
      if (!iso) return;
      const sets: [RulesetPair | undefined, RulesetPair | undefined] = [undefined, undefined];
      for (const dir of [INGRESS, EGRESS]) {
        const ps = iso.by[dir];
        if (ps.length === 0) continue;
        const last = iso.sets?.[dir];
        const pair: RulesetPair = {};
        // isolation is per pod: a rule set for each family the pod has an address of
        if (st.ip >= 0) {
          pair.v4 = last?.v4 ?? this.ruleset(dir, false, ps, st, nodeKey, nodeRanges, scratch);
          place(pair.v4, DIR_STRIDE * i + dir);
        }
        if (st.ip6 >= 0n) {
          pair.v6 = last?.v6 ?? this.ruleset(dir, true, ps, st, nodeKey, nodeRanges6, scratch6);
          place(pair.v6, DIR_STRIDE * i + DIR6 + dir);
        }
        sets[dir] = pair;
      }
      this.iso.given(st.uid, sets);
    });
    this.iso.settle();
    for (const [h, list] of this.rulesets) {
      const live = list.filter((rs) => rs.used === this.generation);
      if (live.length === 0) this.rulesets.delete(h);
      else if (live.length !== list.length) this.rulesets.set(h, live);
    }

    // the rule sets were written to the arena as they were compiled; the dead ones are
    // dropped from it once they outweigh the live ones
    const arena = this.arena;
    arena.compact(blocks);
    const size = HDR + podDir.length;
    const dirBuf = new SharedArrayBuffer(size * 4);
    const d = new Int32Array(dirBuf);
    d[0] = MAGIC;
    d[1] = VERSION;
    d[2] = size;
    d[3] = tablePods.length;
    for (let i = 0; i < podDir.length; i++) d[HDR + i] = podDir[i] < 0 ? 0 : blocks[podDir[i]].at;

    let pods = samePods ? this.last!.tables.buffers.pods : undefined;
    let pods6 = samePods ? this.last!.tables.buffers.pods6 : undefined;
    if (!samePods) {
      const lpm = new Lpm4Builder();
      tablePods.forEach((st, i) => st.ip >= 0 && lpm.set(st.ip, 32, i + 1));
      pods = lpm.build().buffer;
      if (any6) {
        const lpm6 = new Lpm6Builder();
        const w = new Uint32Array(4);
        tablePods.forEach((st, i) => {
          if (st.ip6 < 0n) return;
          for (let k = 0; k < 4; k++) w[k] = Number((st.ip6 >> BigInt(96 - 32 * k)) & 0xffffffffn);
          lpm6.set(w, 128, i + 1);
        });
        pods6 = lpm6.build().buffer;
      }
    }

    this.lastStats = { ...this.lastStats, rulesetsBuilt: built, rulesetsReused: reused };
    const buffers = pods6 ? { pods: pods!, pods6, rules: dirBuf, blocks: arena.buf } : { pods: pods!, rules: dirBuf, blocks: arena.buf };
    const tables = new PolicyTables(buffers, this.metaOf(tablePods, blocks));
    this.last = { tables, nodeKey, podUids, podEpoch: this.podEpoch };
    return tables;
  }

  /** explain()'s names, built only when asked for (the dataplane never is): from what this compile saw. */
  private metaOf(tablePods: PodState[], blocks: CachedRuleset[]): () => PolicyMeta {
    const policies = [...this.policies.values()];
    const offsets = blocks.map((b) => b.at);
    return () => {
      const meta: PolicyMeta = { pods: tablePods.map((st) => `${st.obj.namespace}/${st.obj.name}`), policies: {}, rules: {}, isolatedBy: {} };
      for (const p of policies) {
        meta.policies[p.id] = p.name;
        for (const dir of p.rules ?? []) for (const r of dir) meta.rules[r.ruleId] = [p.id, r.path];
      }
      blocks.forEach((b, i) => (meta.isolatedBy[offsets[i]] = b.policies.map((p) => p.id)));
      return meta;
    };
  }

  /** The cached rule set for these isolating policies, in one family, compiled if missing. */
  private ruleset(dir: number, v6: boolean, ps: PolicyState[], st: PodState, nodeKey: string, nodeRanges: number[], scratch: Scratch): CachedRuleset {
    let named = false;
    let h1 = dir + 1 + (v6 ? 2 : 0);
    let h2 = dir + 7;
    for (const p of ps) {
      named ||= p.named[dir];
      h1 = Math.imul(h1 ^ p.id, 0x9e3779b1) ^ Math.imul(p.rev, 0x85ebca77);
      h2 = Math.imul(h2 + p.rev, 0xc2b2ae3d) ^ Math.imul(p.id, 0x27d4eb2f);
      h1 ^= h1 >>> 15;
      h2 ^= h2 >>> 13;
    }
    // what else the block depends on: node IPs (ingress), named-port resolution
    const extra = dir === INGRESS ? `${nodeKey}${named ? `|${st.portsCanon}` : ''}` : named ? `${this.podEpoch}` : '';
    for (let i = 0; i < extra.length; i++) h1 = Math.imul(h1 ^ extra.charCodeAt(i), 0x01000193);
    const hash = (h1 >>> 0) * 0x200000 + ((h2 >>> 0) & 0x1fffff);
    const bucket = this.rulesets.get(hash);
    // the hash only picks the bucket: a hit is confirmed on the exact inputs
    const hit = bucket?.find((rs) => rs.dir === dir && rs.v6 === v6 && rs.extra === extra && rs.policies.length === ps.length && rs.policies.every((p, i) => p === ps[i] && rs.revs[i] === p.rev));
    if (hit) return hit;
    // node IPs first: RULE_NODE is the lowest id, so it explains node traffic
    const head: RuleInput[] = dir === INGRESS && nodeRanges.length ? [{ ruleId: RULE_NODE, all: false, sels: [], ranges: nodeRanges, ports: null, named: false }] : [];
    const inputs = head.concat(...ps.map((p) => (v6 ? this.inputsOf6(p, dir) : this.inputsOf(p, dir))));
    const ctx = { egress: dir === EGRESS, target: st.obj, targetPortsId: this.portIds.get(st.portsCanon), uni: v6 ? this.uni6 : this.uni };
    const placed = v6 ? compileRuleset(inputs, ctx, scratch, this.arena, this.line6.words) : compileRuleset(inputs, ctx, scratch, this.arena);
    const rs: CachedRuleset = { at: placed.at, len: placed.len, dir, v6, policies: ps.slice(), revs: ps.map((p) => p.rev), extra, used: -1 };
    if (bucket) bucket.push(rs);
    else this.rulesets.set(hash, [rs]);
    return rs;
  }
}

/** One-shot compile (no cache kept). */
export function compilePolicies(model: ClusterModel): PolicyTables {
  return new PolicyCompiler().compile(model);
}
