// ClusterModel → PolicyTables, incrementally.
//
// Caches, from the bottom up:
//  - per policy (keyed by its canonical text): its rules turned into peer specs and
//    port terms, with stable rule ids;
//  - per selector (namespace scope + pod selector): the set of pods it selects. When
//    pods or namespaces change, only the changed pods are re-matched against each
//    cached selector; a selector whose membership changes bumps the revision of the
//    policies using it as a peer;
//  - per rule set, keyed by direction + (policy id, revision) of every policy isolating
//    the pod + whatever named ports depend on: the compiled block. Pods that are
//    selected by the same policies share one block; a change recompiles only the blocks
//    whose key changed, then the final buffers are re-assembled by copying blocks.
// Model objects are treated as immutable: pass a new object to change a pod, namespace
// or policy (unchanged objects are recognised by identity, so they are not re-hashed).
import { Lpm4Builder, parseCidr4, parseIPv4 } from '../dataplane/tables/lpm4.js';
import {
  PROTO_NUM, canonical, effectivePolicyTypes, selectorMatches,
  type ClusterModel, type LabelSelector, type Namespace, type NetworkPolicy, type NetworkPolicyPeer, type NetworkPolicyPort, type Pod,
} from './model.js';
import { Scratch, compileRuleset, type PodUniverse, type PortTerm, type RuleInput } from './ruleset.js';
import { EGRESS, FIRST_POLICY_RULE, HDR, INGRESS, MAGIC, PolicyTables, RULE_NODE, VERSION } from './tables.js';

interface SelectorSpec {
  ns?: string; // exactly this namespace...
  nsSel?: LabelSelector; // ...or namespaces matching this
  podSel: LabelSelector;
}
interface SelectorState {
  spec: SelectorSpec;
  members: Set<number>; // pod uids
  users: Set<PolicyState>; // policies using it as a peer
  refs: number; // policies using it (as target or peer)
  ranks?: Int32Array; // members' ranks in the pod universe of epoch ranksEpoch
  ranksEpoch: number;
}
type PeerSpec = { sel: string } | { ranges: number[] };
interface CompiledRule {
  ruleId: number;
  path: string;
  peers: PeerSpec[] | null; // null: every peer
  ports: PortTerm[] | null; // null: every port
  named: boolean;
  resolved?: RuleInput; // peers resolved, valid for the policy revision and pod epoch it was made in
  resolvedEpoch?: number;
}
interface PolicyState {
  id: number;
  rev: number;
  obj: NetworkPolicy;
  canon: string;
  name: string;
  target: string; // selector key of spec.podSelector
  rules: [CompiledRule[], CompiledRule[]] | undefined; // by direction; undefined: not isolating in it
  isolates: [boolean, boolean];
  named: [boolean, boolean]; // has named ports, by direction
  sels: string[]; // all selector keys referenced
  metaRules: string; // this policy's part of PolicyMeta.rules, as JSON members
}
interface PodState {
  uid: number;
  obj: Pod;
  canon: string;
  ip: number; // -1: none
  portsCanon: string;
}
interface CachedRuleset {
  block: Int32Array;
  dir: number;
  policies: PolicyState[];
  revs: number[];
  extra: string;
  isolatedBy: string; // JSON array of policy ids, for PolicyMeta.isolatedBy
  used: number; // generation last used
}

export interface CompileStats {
  ms: number;
  rulesetsBuilt: number;
  rulesetsReused: number;
  changedPods: number;
  changedPolicies: number;
}

function cidrRange(cidr: string): [number, number] | undefined {
  if (cidr.includes(':')) return undefined; // IPv6: twill's dataplane is IPv4
  const { prefix, len } = parseCidr4(cidr);
  return [prefix, len === 0 ? 0xffffffff : prefix + 2 ** (32 - len) - 1];
}

/** cidr minus excepts, as sorted disjoint [lo, hi] pairs. */
function ipBlockRanges(cidr: string, except: string[] = []): number[] {
  const base = cidrRange(cidr);
  if (!base) return [];
  let out: number[] = [...base];
  for (const e of except) {
    const x = cidrRange(e);
    if (!x) continue;
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
  private readonly namespaces = new Map<string, { obj: Namespace; canon: string }>();
  private readonly nsLabels = new Map<string, Record<string, string>>();
  private readonly selectors = new Map<string, SelectorState>();
  private readonly policies = new Map<string, PolicyState>();
  private readonly rulesets = new Map<number, CachedRuleset[]>(); // by key hash
  private nextUid = 1;
  private nextPolicyId = 1;
  private nextRev = 1;
  private nextRuleId = FIRST_POLICY_RULE;
  private podEpoch = 0; // bumped when any pod's IP or container ports change
  private uni: PodUniverse = { ips: new Float64Array(0), pods: [] };
  private rankOf = new Map<number, number>(); // uid → rank
  private rankEpoch = -1;
  private generation = 0;
  lastStats: CompileStats = { ms: 0, rulesetsBuilt: 0, rulesetsReused: 0, changedPods: 0, changedPolicies: 0 };

  compile(model: ClusterModel): PolicyTables {
    const t0 = performance.now();
    this.generation++;
    const changedPods = this.syncPods(model);
    const changedPolicies = this.syncPolicies(model);
    const tables = this.assemble(model);
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
      const ip = pod.ip ? parseIPv4(pod.ip) : -1;
      const portsCanon = canonical(pod.containerPorts);
      if (!old || old.ip !== ip || old.portsCanon !== portsCanon) portsChanged = true;
      if (!old || old.ip !== ip) moved.add(old?.uid ?? this.nextUid);
      const st: PodState = { uid: old?.uid ?? this.nextUid++, obj: pod, canon, ip, portsCanon };
      this.pods.set(key, st);
      this.podsByUid.set(st.uid, st);
      dirty.add(st.uid);
    }
    for (const [key, st] of [...this.pods]) {
      if (seen.has(key)) {
        if (changedNs.has(st.obj.namespace)) dirty.add(st.uid);
        continue;
      }
      this.pods.delete(key);
      this.podsByUid.delete(st.uid);
      dirty.add(st.uid);
      moved.add(st.uid);
      if (st.ip >= 0) portsChanged = true;
    }
    if (portsChanged) this.podEpoch++;
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
          } else if (now && moved.has(uid)) {
            changed = true; // a member's IP changed
          }
        }
        if (changed) {
          sel.ranks = undefined;
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
    const key = canonical(spec);
    if (!this.selectors.has(key)) {
      const members = new Set<number>();
      for (const st of this.pods.values()) if (this.matches(spec, st.obj)) members.add(st.uid);
      this.selectors.set(key, { spec, members, users: new Set(), refs: 0, ranksEpoch: -1 });
    }
    return key;
  }

  private bump(p: PolicyState): void {
    p.rev = this.nextRev++;
    for (const dir of p.rules ?? []) for (const r of dir) r.resolved = undefined;
  }

  // ---- policies ------------------------------------------------------------------

  private syncPolicies(model: ClusterModel): number {
    let changed = 0;
    const seen = new Set<string>();
    for (const np of model.policies) {
      const key = `${np.namespace}/${np.name}`;
      seen.add(key);
      const old = this.policies.get(key);
      if (old && old.obj === np) continue;
      // JSON text is a sound change detector (equal text = equal policy); a mere key
      // reordering only costs a needless recompile, and it is far cheaper than canonical()
      const canon = JSON.stringify(np);
      if (old && old.canon === canon) {
        old.obj = np;
        continue;
      }
      if (old) this.release(old);
      this.policies.set(key, this.compilePolicy(np, canon));
      changed++;
    }
    for (const [key, st] of [...this.policies]) {
      if (!seen.has(key)) {
        this.release(st);
        this.policies.delete(key);
        changed++;
      }
    }
    return changed;
  }

  private release(p: PolicyState): void {
    for (const key of p.sels) {
      const s = this.selectors.get(key)!;
      s.users.delete(p);
      if (--s.refs === 0) this.selectors.delete(key);
    }
  }

  private compilePolicy(np: NetworkPolicy, canon: string): PolicyState {
    const types = effectivePolicyTypes(np.spec);
    const sels: string[] = [];
    const target = this.selector({ ns: np.namespace, podSel: np.spec.podSelector });
    sels.push(target);
    const st: PolicyState = {
      id: this.nextPolicyId++, rev: this.nextRev++, obj: np, canon, name: `${np.namespace}/${np.name}`, target,
      rules: [[], []], isolates: [types.includes('Ingress'), types.includes('Egress')], named: [false, false], sels, metaRules: '',
    };
    const peerSpec = (peer: NetworkPolicyPeer): PeerSpec => {
      if (peer.ipBlock) return { ranges: ipBlockRanges(peer.ipBlock.cidr, peer.ipBlock.except) };
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
    st.metaRules = [...rules[INGRESS], ...rules[EGRESS]].map((r) => `"${r.ruleId}":[${st.id},"${r.path}"]`).join(',');
    for (const key of sels) {
      const s = this.selectors.get(key)!;
      s.refs++;
      if (key !== target) s.users.add(st);
    }
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

  // ---- assembly ------------------------------------------------------------------

  private assemble(model: ClusterModel): PolicyTables {
    // pods in the tables: those with an IP, in model order (a duplicate IP: last wins)
    const tablePods: PodState[] = [];
    const byIp = new Map<number, PodState>();
    for (const pod of model.pods) {
      const st = this.pods.get(`${pod.namespace}/${pod.name}`)!;
      if (st.ip < 0) continue;
      tablePods.push(st);
      byIp.set(st.ip, st);
    }
    if (this.uni.ips.length !== byIp.size || this.rankEpoch !== this.podEpoch) {
      const ips = Float64Array.from(byIp.keys()).sort();
      this.uni = { ips, pods: Array.from(ips, (ip) => byIp.get(ip)!.obj) };
      this.rankOf = new Map(Array.from(ips, (ip, k) => [byIp.get(ip)!.uid, k]));
      this.rankEpoch = this.podEpoch;
    }
    const nodeRanges: number[] = [];
    for (const ip of model.nodeIps) {
      const n = parseIPv4(ip);
      nodeRanges.push(n, n);
    }
    const nodeKey = model.nodeIps.join(',');
    const scratch = new Scratch(this.uni.ips.length);

    // which policies isolate each pod, per direction (ordered by policy id: stable keys)
    const isolating = new Map<number, [PolicyState[], PolicyState[]]>();
    const ordered = [...this.policies.values()].sort((a, b) => a.id - b.id);
    for (const p of ordered) {
      if (!p.isolates[0] && !p.isolates[1]) continue;
      for (const uid of this.selectors.get(p.target)!.members) {
        let e = isolating.get(uid);
        if (!e) isolating.set(uid, (e = [[], []]));
        if (p.isolates[INGRESS]) e[INGRESS].push(p);
        if (p.isolates[EGRESS]) e[EGRESS].push(p);
      }
    }

    let built = 0;
    let reused = 0;
    const blocks: CachedRuleset[] = [];
    const blockIndex = new Map<CachedRuleset, number>();
    const podDir = new Int32Array(2 * tablePods.length).fill(-1);
    tablePods.forEach((st, i) => {
      const iso = isolating.get(st.uid);
      if (!iso) return;
      for (const dir of [INGRESS, EGRESS]) {
        const ps = iso[dir];
        if (ps.length === 0) continue;
        const rs = this.ruleset(dir, ps, st, nodeKey, nodeRanges, scratch);
        if (rs.used === this.generation) reused++;
        else if (rs.used === -1) built++;
        else reused++;
        rs.used = this.generation;
        let bi = blockIndex.get(rs);
        if (bi === undefined) {
          bi = blocks.length;
          blocks.push(rs);
          blockIndex.set(rs, bi);
        }
        podDir[2 * i + dir] = bi;
      }
    });
    for (const [h, list] of this.rulesets) {
      const live = list.filter((rs) => rs.used === this.generation);
      if (live.length === 0) this.rulesets.delete(h);
      else if (live.length !== list.length) this.rulesets.set(h, live);
    }

    // rules buffer: header, pod directory, then the blocks
    let size = HDR + podDir.length;
    const offsets = blocks.map((b) => {
      const o = size;
      size += b.block.length;
      return o;
    });
    const buf = new SharedArrayBuffer(size * 4);
    const d = new Int32Array(buf);
    d[0] = MAGIC;
    d[1] = VERSION;
    d[2] = size;
    d[3] = tablePods.length;
    for (let i = 0; i < podDir.length; i++) d[HDR + i] = podDir[i] < 0 ? 0 : offsets[podDir[i]];
    blocks.forEach((b, i) => d.set(b.block, offsets[i]));

    const lpm = new Lpm4Builder();
    tablePods.forEach((st, i) => lpm.set(st.ip, 32, i + 1));

    // meta JSON from cached fragments: a recompile does not re-serialize 10k policies
    const pols: string[] = [];
    const rules: string[] = [];
    for (const p of ordered) {
      pols.push(`"${p.id}":${JSON.stringify(p.name)}`);
      if (p.metaRules) rules.push(p.metaRules);
    }
    const json =
      `{"pods":${JSON.stringify(tablePods.map((st) => `${st.obj.namespace}/${st.obj.name}`))},"policies":{${pols.join(',')}},` +
      `"rules":{${rules.join(',')}},"isolatedBy":{${blocks.map((b, i) => `"${offsets[i]}":${b.isolatedBy}`).join(',')}}}`;
    const bytes = new TextEncoder().encode(json);
    const metaBuf = new SharedArrayBuffer(bytes.length);
    new Uint8Array(metaBuf).set(bytes);

    this.lastStats = { ...this.lastStats, rulesetsBuilt: built, rulesetsReused: reused };
    return new PolicyTables({ pods: lpm.build().buffer, rules: buf, meta: metaBuf });
  }

  /** The cached rule set for these isolating policies, compiled if missing. */
  private ruleset(dir: number, ps: PolicyState[], st: PodState, nodeKey: string, nodeRanges: number[], scratch: Scratch): CachedRuleset {
    let named = false;
    let h1 = dir + 1;
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
    const hit = bucket?.find((rs) => rs.dir === dir && rs.extra === extra && rs.policies.length === ps.length && rs.policies.every((p, i) => p === ps[i] && rs.revs[i] === p.rev));
    if (hit) return hit;
    const inputs: RuleInput[] = [];
    // node IPs first: RULE_NODE is the lowest id, so it explains node traffic
    if (dir === INGRESS && nodeRanges.length) inputs.push({ ruleId: RULE_NODE, all: false, sels: [], ranges: nodeRanges, ports: null, named: false });
    for (const p of ps) for (const r of p.rules![dir]) inputs.push(this.resolve(r));
    const block = compileRuleset(inputs, { egress: dir === EGRESS, target: st.obj, uni: this.uni }, scratch);
    const rs: CachedRuleset = { block, dir, policies: ps, revs: ps.map((p) => p.rev), extra, isolatedBy: `[${ps.map((p) => p.id).join(',')}]`, used: -1 };
    if (bucket) bucket.push(rs);
    else this.rulesets.set(hash, [rs]);
    return rs;
  }
}

/** One-shot compile (no cache kept). */
export function compilePolicies(model: ClusterModel): PolicyTables {
  return new PolicyCompiler().compile(model);
}
