// Compiles one (pod, direction) rule set — the rules of every policy isolating the pod
// in that direction — into a self-contained Int32Array block in the layout tables.ts
// reads (offsets inside are relative, so a cached block is copied as is).
//
// Peer IPs fall in two kinds of places: pod IPs (where selector peers match) and the
// space between them (only ipBlock peers and "every peer" rules match there). Pods are
// handled by rank in the cluster's sorted pod-IP list: each rule adds a hash of itself
// to the pods it covers, so pods covered by the same rules land in the same class
// without building a set per pod; the gaps are split only at ipBlock edges.
import { PROTO_NUM, type Pod } from './model.js';

export const ALL_KEYS_HI = 0xffffff; // (proto 255 << 16) | port 65535
const TOP = 0x100000000;

/** A port term: [lo, hi] over the key proto<<16|port, or a named port resolved per destination pod. */
export interface PortTerm {
  lo: number;
  hi: number;
  name?: string;
  proto: number;
}

export interface RuleInput {
  ruleId: number;
  all: boolean; // every peer IP
  sels: readonly Int32Array[]; // per selector peer, the pod ranks it matches (shared array per selector)
  ranges: readonly number[]; // ipBlock peers as [lo, hi, ...] (uint32, inclusive)
  ports: readonly PortTerm[] | null; // null: every protocol and port
  named: boolean;
}

/** The pods with an IP, sorted by IP (rank = index). */
export interface PodUniverse {
  ips: Float64Array;
  pods: Pod[];
}

export interface RulesetContext {
  egress: boolean;
  target?: Pod; // ingress: named ports are the pod's own
  uni: PodUniverse; // egress: named ports resolve against the destination pod
}

function lowerBound(a: ArrayLike<number>, x: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function sortedUnique(xs: number[]): Float64Array {
  const a = Float64Array.from(xs).sort();
  let n = 0;
  for (let i = 0; i < a.length; i++) if (i === 0 || a[i] !== a[n - 1]) a[n++] = a[i];
  return a.subarray(0, n);
}

function mix(x: number, seed: number): number {
  let h = Math.imul(x ^ seed, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  return h ^ (h >>> 16);
}

/**
 * Port segments of one peer class: [m, keys..., ruleIds...], rule id 0 marking a gap.
 * Members come in ascending rule id order and a term only claims what earlier (lower
 * id) terms left free, so the lowest rule id explains an overlap.
 */
function compileClass(rules: readonly RuleInput[], members: readonly number[], dest: Pod | undefined): number[] {
  // claimed segments, sorted and disjoint: lo[i]..hi[i] owned by id[i]
  const lo: number[] = [];
  const hi: number[] = [];
  const id: number[] = [];
  const claim = (a: number, b: number, rule: number): void => {
    let i = 0;
    while (a <= b) {
      while (i < lo.length && hi[i] < a) i++;
      if (i === lo.length || lo[i] > b) {
        lo.splice(i, 0, a);
        hi.splice(i, 0, b);
        id.splice(i, 0, rule);
        return;
      }
      if (lo[i] > a) {
        const end = lo[i] - 1;
        lo.splice(i, 0, a);
        hi.splice(i, 0, end);
        id.splice(i, 0, rule);
        i++;
      }
      a = hi[i] + 1;
    }
  };
  for (const m of members) {
    const r = rules[m];
    if (r.ports === null) {
      claim(0, ALL_KEYS_HI, r.ruleId);
      break; // everything is claimed: later (higher id) rules cannot change the result
    }
    for (const t of r.ports) {
      if (t.name === undefined) claim(t.lo, t.hi, r.ruleId);
      else {
        // a named port the destination pod does not have matches nothing
        for (const cp of dest?.containerPorts ?? []) {
          if (cp.name === t.name && PROTO_NUM[cp.protocol] === t.proto) {
            const k = (t.proto << 16) | cp.containerPort;
            claim(k, k, r.ruleId);
          }
        }
      }
    }
  }
  const keys: number[] = [];
  const ids: number[] = [];
  let end = 0; // first key not yet described
  for (let i = 0; i < lo.length; i++) {
    if (lo[i] > end) {
      keys.push(end);
      ids.push(0);
    }
    if (ids.length && ids[ids.length - 1] === id[i] && end === lo[i]) {
      end = hi[i] + 1;
      continue; // adjacent segment of the same rule
    }
    keys.push(lo[i]);
    ids.push(id[i]);
    end = hi[i] + 1;
  }
  if (end <= ALL_KEYS_HI && keys.length) {
    keys.push(end);
    ids.push(0);
  }
  return [keys.length, ...keys, ...ids];
}

/** Per-pod working arrays, reused across the rule sets of one compile. */
export class Scratch {
  h1: Int32Array;
  h2: Int32Array;
  stamp: Int32Array;
  head: Int32Array;
  named: Uint8Array;
  next = new Int32Array(1024);
  val = new Int32Array(1024);
  grow(): void {
    const g = (x: Int32Array) => {
      const y = new Int32Array(x.length * 2);
      y.set(x);
      return y;
    };
    this.val = g(this.val);
    this.next = g(this.next);
  }
  constructor(readonly n: number) {
    this.h1 = new Int32Array(n);
    this.h2 = new Int32Array(n);
    this.stamp = new Int32Array(n);
    this.head = new Int32Array(n);
    this.named = new Uint8Array(n);
  }
}

export function compileRuleset(rules: readonly RuleInput[], ctx: RulesetContext, s: Scratch): Int32Array {
  const { ips, pods } = ctx.uni;
  const n = ips.length;
  s.h1.fill(0);
  s.h2.fill(0);
  s.stamp.fill(-1);
  s.head.fill(-1);
  s.named.fill(0);
  let entries = 0;
  const allRules: number[] = [];
  const blockRules: number[] = [];
  const gapEdges: number[] = [0];
  let allNamed = false;
  const push = (k: number, v: number): void => {
    if (entries === s.val.length) s.grow();
    s.val[entries] = v;
    s.next[entries] = s.head[k];
    s.head[k] = entries++;
  };
  // Rules whose only peer is one selector are grouped by selector: the selector's pods
  // are walked once per rule set, not once per rule (many policies share selectors).
  const groups = new Map<Int32Array, { rules: number[]; a: number; b: number; named: boolean }>();
  for (let ri = 0; ri < rules.length; ri++) {
    const r = rules[ri];
    if (r.all) {
      allRules.push(ri);
      allNamed ||= r.named;
      continue;
    }
    const a = mix(r.ruleId, 0x9e3779b9);
    const b = mix(r.ruleId, 0x85ebca6b);
    if (r.sels.length === 1 && r.ranges.length === 0) {
      let g = groups.get(r.sels[0]);
      if (!g) groups.set(r.sels[0], (g = { rules: [], a: 0, b: 0, named: false }));
      g.rules.push(ri);
      g.a = (g.a + a) | 0;
      g.b = (g.b + b) | 0;
      g.named ||= r.named;
      continue;
    }
    const covered = (k: number): void => {
      if (s.stamp[k] === ri) return; // a pod matched by two peers of one rule counts once
      s.stamp[k] = ri;
      s.h1[k] += a;
      s.h2[k] += b;
      if (r.named) s.named[k] = 1;
      push(k, ri);
    };
    for (const ranks of r.sels) for (let i = 0; i < ranks.length; i++) covered(ranks[i]);
    if (r.ranges.length) {
      blockRules.push(ri);
      for (let i = 0; i < r.ranges.length; i += 2) {
        const lo = r.ranges[i];
        const hi = r.ranges[i + 1];
        gapEdges.push(lo, hi + 1);
        for (let k = lowerBound(ips, lo); k < n && ips[k] <= hi; k++) covered(k);
      }
    }
  }
  const groupRules: number[][] = [];
  for (const [ranks, g] of groups) {
    const code = -1 - groupRules.length; // linked-list entries < 0 name a group
    groupRules.push(g.rules);
    for (let i = 0; i < ranks.length; i++) {
      const k = ranks[i];
      s.h1[k] += g.a;
      s.h2[k] += g.b;
      if (g.named) s.named[k] = 1;
      push(k, code);
    }
  }

  const classKeys = new Map<number | string, number>();
  const blocks: number[][] = [[]]; // class 0: no rule (deny)
  const newClass = (key: number | string, members: number[], dest: Pod | undefined): number => {
    let c = 0;
    if (members.length) {
      c = blocks.length;
      blocks.push(compileClass(rules, members, dest));
    }
    classKeys.set(key, c);
    return c;
  };

  // gap classes: ipBlock elementary intervals (and every-peer rules)
  const gb = sortedUnique(gapEdges.filter((e) => e < TOP));
  const gapClass = new Int32Array(gb.length);
  for (let g = 0; g < gb.length; g++) {
    const x = gb[g];
    const members = [...allRules];
    for (const ri of blockRules) {
      const rg = rules[ri].ranges;
      for (let i = 0; i < rg.length; i += 2) {
        if (rg[i] <= x && x <= rg[i + 1]) {
          members.push(ri);
          break;
        }
      }
    }
    members.sort((p, q) => p - q);
    const key = `g${members.join(',')}`;
    gapClass[g] = classKeys.get(key) ?? newClass(key, members, ctx.egress ? undefined : ctx.target);
  }

  const podClass = (k: number): number => {
    const perDest = ctx.egress && (allNamed || s.named[k] === 1);
    const dest = ctx.egress ? (perDest ? pods[k] : undefined) : ctx.target;
    if (s.head[k] < 0 && !perDest) return classKeys.get('pod-none') ?? newClass('pod-none', allRules, dest);
    const hash = (s.h1[k] >>> 0) * 0x200000 + ((s.h2[k] >>> 0) & 0x1fffff);
    const key = perDest ? `${hash}@${k}` : hash;
    const known = classKeys.get(key);
    if (known !== undefined) return known;
    const m: number[] = [...allRules];
    for (let e = s.head[k]; e >= 0; e = s.next[e]) {
      const v = s.val[e];
      if (v >= 0) m.push(v);
      else for (const ri of groupRules[-1 - v]) m.push(ri);
    }
    return newClass(key, m.sort((p, q) => p - q), dest);
  };

  const runStarts: number[] = [];
  const runClass: number[] = [];
  const emit = (pos: number, cls: number): void => {
    if (runClass.length && runClass[runClass.length - 1] === cls) return;
    runStarts.push(pos);
    runClass.push(cls);
  };
  let gi = 0;
  const gapsUntil = (cur: number, end: number): void => {
    while (cur < end) {
      while (gi + 1 < gb.length && gb[gi + 1] <= cur) gi++;
      emit(cur, gapClass[gi]);
      cur = Math.min(end, gi + 1 < gb.length ? gb[gi + 1] : TOP);
    }
  };
  let cur = 0;
  for (let k = 0; k < n; k++) {
    gapsUntil(cur, ips[k]);
    emit(ips[k], podClass(k));
    cur = ips[k] + 1;
  }
  gapsUntil(cur, TOP);

  const nr = runStarts.length;
  let size = 1 + 2 * nr;
  const rel: number[] = [0];
  for (let c = 1; c < blocks.length; c++) {
    rel.push(size);
    size += blocks[c].length;
  }
  const out = new Int32Array(size);
  out[0] = nr;
  for (let j = 0; j < nr; j++) {
    out[1 + j] = runStarts[j] | 0; // read back through a Uint32Array view
    out[1 + nr + j] = rel[runClass[j]];
  }
  for (let c = 1; c < blocks.length; c++) out.set(blocks[c], rel[c]);
  return out;
}
