// Compiles one (pod, direction) rule set — the rules of every policy isolating the pod
// in that direction — into a self-contained block of the arena, in the layout tables.ts
// reads (offsets inside are relative, so a block can be moved as is).
//
// Peer IPs fall in two kinds of places: pod IPs (where selector peers match) and the
// space between them (only ipBlock peers and "every peer" rules match there). Pods are
// handled by rank in the cluster's sorted pod-IP list: each rule adds a 64-bit hash of
// itself to the pods it covers, so pods covered by the same rules land in the same class
// without building a set per pod; the gaps are split only at ipBlock edges, and a sweep
// over those edges gives each gap the same kind of hash. The work arrays live in a
// Scratch reused across the rule sets of one compile: a compile builds thousands of
// rule sets, and per-set garbage was a third of its time.
import { PROTO_NUM, type Pod } from './model.js';
import { KeyTable } from './key-table.js';
import type { BlockArena, Placed } from './arena.js';

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
  portsId: Int32Array; // by rank: equal ids = equal container ports (named ports resolve alike)
}

export interface RulesetContext {
  egress: boolean;
  target?: Pod; // ingress: named ports are the pod's own
  uni: PodUniverse; // egress: named ports resolve against the destination pod
  targetPortsId?: number; // ingress: the target's ports id (as PodUniverse.portsId)
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

function mix(x: number, seed: number): number {
  let h = Math.imul(x ^ seed, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  return h ^ (h >>> 16);
}

function grown(a: Int32Array<ArrayBuffer>, need: number): Int32Array<ArrayBuffer> {
  if (need <= a.length) return a;
  const b = new Int32Array(Math.max(need, a.length * 2));
  b.set(a);
  return b;
}

/** A rule's ranges as sorted, disjoint [lo, hi] pairs (two ipBlock peers of one rule may overlap). */
function disjoint(r: readonly number[]): readonly number[] {
  let sorted = true;
  for (let i = 2; i < r.length; i += 2) if (r[i] <= r[i - 1] + 1) sorted = false;
  if (sorted) return r;
  const pairs: [number, number][] = [];
  for (let i = 0; i < r.length; i += 2) pairs.push([r[i], r[i + 1]]);
  pairs.sort((p, q) => p[0] - q[0]);
  const out: number[] = [];
  for (const [lo, hi] of pairs) {
    if (out.length && lo <= out[out.length - 1] + 1) out[out.length - 1] = Math.max(out[out.length - 1], hi);
    else out.push(lo, hi);
  }
  return out;
}

/** Per-pod working arrays, the class table and the block being written, reused across the rule sets of one compile. */
export class Scratch {
  readonly h1: Int32Array;
  readonly h2: Int32Array;
  readonly stamp: Int32Array;
  readonly head: Int32Array;
  readonly named: Uint8Array;
  // per-pod linked lists of covering rules (entries < 0 name a group of rules)
  next = new Int32Array(1024);
  val = new Int32Array(1024);
  // this rule set's classes: (rule hash, ports id) → body offset + 1 (0: deny)
  readonly classes = new KeyTable();
  // every class body compiled in this compile, shared by the rule sets: a class is a set of
  // rules (they keep their ids while they exist) and where named ports resolve, so most
  // recur across the rule sets of pods that share policies
  readonly bodies = new KeyTable(4096);
  store = new Int32Array(1 << 16);
  storeEnd = 0;
  // the block under construction: runs, and class bodies
  runStart = new Int32Array(1024);
  runClass = new Int32Array(1024);
  body = new Int32Array(4096);
  members = new Int32Array(256);
  // compileClass: claimed port segments, and the merged result
  readonly lo: number[] = [];
  readonly hi: number[] = [];
  readonly id: number[] = [];
  readonly keys: number[] = [];
  readonly ids: number[] = [];

  constructor(readonly n: number) {
    this.h1 = new Int32Array(n);
    this.h2 = new Int32Array(n);
    this.stamp = new Int32Array(n);
    this.head = new Int32Array(n);
    this.named = new Uint8Array(n);
  }
}

/**
 * Appends a class body to s.store: [m, keys..., ruleIds...], rule id 0 marking a gap;
 * returns its offset. Members come in ascending rule id order and a term only
 * claims what earlier (lower id) terms left free, so the lowest rule id explains an overlap.
 */
function compileClass(rules: readonly RuleInput[], members: Int32Array, count: number, dest: Pod | undefined, s: Scratch): number {
  // claimed segments, sorted and disjoint: lo[i]..hi[i] owned by id[i]
  const { lo, hi, id, keys, ids } = s;
  lo.length = hi.length = id.length = keys.length = ids.length = 0;
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
  for (let j = 0; j < count; j++) {
    const r = rules[members[j]];
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
  const m = keys.length;
  const at = s.storeEnd;
  s.store = grown(s.store, at + 1 + 2 * m);
  const body = s.store;
  body[at] = m;
  for (let i = 0; i < m; i++) {
    body[at + 1 + i] = keys[i];
    body[at + 1 + m + i] = ids[i];
  }
  s.storeEnd = at + 1 + 2 * m;
  return at;
}

/**
 * Compiles the rule set into the arena; returns where it is.
 *
 * IPv6 (`wide` given): the addresses are coordinates of a compressed line, coordinate c
 * standing for the 128-bit addresses [wide[c], wide[c + 1]) (four words each, the first
 * ::), so that every pod address, the address after it and every range edge is a
 * coordinate of its own: the same sweep as IPv4 then runs over coordinates (pod
 * universe `ips` and rule ranges given in them), and the runs are written with their
 * 128-bit starts (the layout of an IPv6 rule set in dataplane/tables/policy.ts). Runs from
 * coordinate wide.length / 4 on stand for no address and are dropped.
 */
export function compileRuleset(rules: readonly RuleInput[], ctx: RulesetContext, s: Scratch, arena: BlockArena, wide?: Int32Array): Placed {
  const { ips, pods, portsId } = ctx.uni;
  const n = ips.length;
  s.h1.fill(0);
  s.h2.fill(0);
  s.stamp.fill(-1);
  s.head.fill(-1);
  s.named.fill(0);
  let entries = 0;
  const allRules: number[] = [];
  const blockRules: number[] = [];
  const blockRanges: (readonly number[])[] = []; // by position in blockRules: sorted, disjoint
  const gapEdges: number[] = [0];
  let allNamed = false;
  const push = (k: number, v: number): void => {
    if (entries === s.val.length) {
      s.val = grown(s.val, entries + 1);
      s.next = grown(s.next, entries + 1);
    }
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
      const rg = disjoint(r.ranges);
      blockRules.push(ri);
      blockRanges.push(rg);
      for (let i = 0; i < rg.length; i += 2) {
        const lo = rg[i];
        const hi = rg[i + 1];
        gapEdges.push(lo, hi + 1);
        for (let k = lowerBound(ips, lo); k < n && ips[k] <= hi; k++) covered(k);
      }
    }
  }
  const groupRules: number[][] = [];
  for (const [ranks, g] of groups) {
    const code = -1 - groupRules.length;
    groupRules.push(g.rules);
    for (let i = 0; i < ranks.length; i++) {
      const k = ranks[i];
      s.h1[k] += g.a;
      s.h2[k] += g.b;
      if (g.named) s.named[k] = 1;
      push(k, code);
    }
  }

  // gap boundaries (sorted, unique, below 2^32), and each gap's hash by a sweep: a
  // rule's hash is added where one of its ranges starts and taken off past its end
  const gb = Float64Array.from(gapEdges.filter((e) => e < TOP)).sort();
  let ng = 0;
  for (let i = 0; i < gb.length; i++) if (i === 0 || gb[i] !== gb[ng - 1]) gb[ng++] = gb[i];
  const edges = gb.subarray(0, ng);
  const g1 = new Int32Array(ng + 1);
  const g2 = new Int32Array(ng + 1);
  // and each gap's block rules, as linked lists (the members of a gap class)
  const gapHead = new Int32Array(ng).fill(-1);
  const gapNext: number[] = [];
  const gapRule: number[] = [];
  blockRules.forEach((ri, j) => {
    const a = mix(rules[ri].ruleId, 0x9e3779b9);
    const b = mix(rules[ri].ruleId, 0x85ebca6b);
    const rg = blockRanges[j];
    for (let i = 0; i < rg.length; i += 2) {
      const from = lowerBound(edges, rg[i]);
      const to = rg[i + 1] + 1 < TOP ? lowerBound(edges, rg[i + 1] + 1) : ng;
      g1[from] += a;
      g2[from] += b;
      g1[to] -= a;
      g2[to] -= b;
      for (let g = from; g < to; g++) {
        gapNext.push(gapHead[g]);
        gapRule.push(ri);
        gapHead[g] = gapRule.length - 1;
      }
    }
  });
  for (let g = 1; g < ng; g++) {
    g1[g] = (g1[g] + g1[g - 1]) | 0;
    g2[g] = (g2[g] + g2[g - 1]) | 0;
  }

  // classes: by the hash of their rules (plus, where named ports resolve per destination
  // pod, that pod's ports); the body is compiled the first time a hash is seen
  s.classes.clear(n + ng + 1);
  let allA = 0;
  let allB = 0;
  for (const ri of allRules) {
    allA = (allA + mix(rules[ri].ruleId, 0x9e3779b9)) | 0;
    allB = (allB + mix(rules[ri].ruleId, 0x85ebca6b)) | 0;
  }
  const fixedDest = ctx.egress ? undefined : ctx.target;
  const fixedPorts = ctx.egress ? 0 : -2 - (ctx.targetPortsId ?? 0); // ingress: named ports are the target's
  let bodyEnd = 0;
  let mc = 0; // members gathered in s.members
  const member = (ri: number): void => {
    if (mc === s.members.length) s.members = grown(s.members, mc + 1);
    s.members[mc++] = ri;
  };
  /** Gathers the members of gap g (k < 0: -1 - g) or pod k. */
  const gather = (k: number): void => {
    mc = 0;
    for (const ri of allRules) member(ri);
    if (k < 0) {
      for (let e = gapHead[-1 - k]; e >= 0; e = gapNext[e]) member(gapRule[e]);
      return;
    }
    for (let e = s.head[k]; e >= 0; e = s.next[e]) {
      const v = s.val[e];
      if (v >= 0) member(v);
      else for (const ri of groupRules[-1 - v]) member(ri);
    }
  };
  /**
   * The class of the rules hashing to (a, b) for pod k or gap -1 - k, p naming the
   * destination's ports where they resolve per destination: its offset in this block + 1,
   * 0 for deny. The body comes from this compile's store, compiled there on first sight.
   */
  const classOf = (a: number, b: number, p: number, k: number, dest: Pod | undefined): number => {
    let c = s.classes.get(a, b, p);
    if (c !== -1) return c;
    const ka = (a + allA) | 0; // the key of the whole rule set: every-peer rules too
    const kb = (b + allB) | 0;
    const kp = ctx.egress ? p : fixedPorts;
    let at = s.bodies.get(ka, kb, kp); // body offset + 1, 0: deny
    if (at === -1) {
      gather(k);
      if (mc) s.members.subarray(0, mc).sort();
      at = mc ? compileClass(rules, s.members, mc, dest, s) + 1 : 0;
      s.bodies.set(ka, kb, kp, at);
    }
    c = 0;
    if (at) {
      const len = 1 + 2 * s.store[at - 1];
      s.body = grown(s.body, bodyEnd + len);
      s.body.set(s.store.subarray(at - 1, at - 1 + len), bodyEnd);
      c = bodyEnd + 1;
      bodyEnd += len;
    }
    s.classes.set(a, b, p, c);
    return c;
  };
  const gapClass = new Int32Array(ng);
  for (let g = 0; g < ng; g++) gapClass[g] = classOf(g1[g], g2[g], 0, -1 - g, fixedDest);
  const podClass = (k: number): number => {
    const perDest = ctx.egress && (allNamed || s.named[k] === 1);
    return classOf(s.h1[k], s.h2[k], perDest ? portsId[k] + 1 : 0, k, perDest ? pods[k] : fixedDest);
  };

  let nr = 0;
  const emit = (pos: number, cls: number): void => {
    if (nr && s.runClass[nr - 1] === cls) return;
    if (nr === s.runStart.length) {
      s.runStart = grown(s.runStart, nr + 1);
      s.runClass = grown(s.runClass, nr + 1);
    }
    s.runStart[nr] = pos | 0; // read back through a Uint32Array view
    s.runClass[nr++] = cls;
  };
  let gi = 0;
  const gapsUntil = (cur: number, end: number): void => {
    while (cur < end) {
      while (gi + 1 < ng && gb[gi + 1] <= cur) gi++;
      emit(cur, gapClass[gi]);
      cur = Math.min(end, gi + 1 < ng ? gb[gi + 1] : TOP);
    }
  };
  let cur = 0;
  for (let k = 0; k < n; k++) {
    gapsUntil(cur, ips[k]);
    emit(ips[k], podClass(k));
    cur = ips[k] + 1;
  }
  gapsUntil(cur, TOP);

  if (wide) return placeWide(s, nr, bodyEnd, arena, wide);
  // [n runs, run starts, class offsets (relative; 0 = deny), class bodies]
  const base = 1 + 2 * nr;
  const len = base + bodyEnd;
  const at = arena.reserve(len);
  const out = arena.b;
  out[at] = nr;
  out.set(s.runStart.subarray(0, nr), at + 1);
  for (let j = 0; j < nr; j++) {
    const c = s.runClass[j];
    out[at + 1 + nr + j] = c === 0 ? 0 : base + c - 1;
  }
  out.set(s.body.subarray(0, bodyEnd), at + base);
  return { at, len };
}

/** Writes an IPv6 rule set: [n runs, 4-word run starts, class offsets (relative; 0 = deny), class bodies]. */
function placeWide(s: Scratch, nr: number, bodyEnd: number, arena: BlockArena, wide: Int32Array): Placed {
  const coords = wide.length >>> 2;
  while (nr > 1 && s.runStart[nr - 1] >= coords) nr--; // past the last address
  const base = 1 + 5 * nr;
  const len = base + bodyEnd;
  const at = arena.reserve(len);
  const out = arena.b;
  out[at] = nr;
  for (let j = 0; j < nr; j++) {
    const c = s.runStart[j];
    out.set(wide.subarray(4 * c, 4 * c + 4), at + 1 + 4 * j);
    const cls = s.runClass[j];
    out[at + 1 + 4 * nr + j] = cls === 0 ? 0 : base + cls - 1;
  }
  out.set(s.body.subarray(0, bodyEnd), at + base);
  return { at, len };
}
