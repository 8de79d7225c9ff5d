// A policy change never drops a packet of a flow it still allows, and stops at once a
// flow it denies. Steady flows run between pods of a two-node lab while policies are
// applied and deleted, one change after another:
//   flow/a → flow/b: UDP 80 at 1000 datagrams/s with sequence numbers (echoed back by b)
//                    and a TCP stream on 80 (echoed back, checked byte for byte);
//                    every policy set below allows it, so not one datagram may be lost,
//                    and the stream may not reset, stall or lose a segment (a retransmit
//                    the receiver D-SACKs as a duplicate lost nothing);
//   flow/c → flow/b: UDP 81 at 500 datagrams/s; denied while flow/b is isolated for
//                    ingress by a policy that does not allow it (then not one echo may
//                    come back for a datagram sent after the change was enforced), and
//                    allowed otherwise (then not one may be lost).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { stringify } from 'yaml';
import { labDown, labPolicies, labUp } from '../../lab/lab.js';
import { type LabState } from '../../lab/state.js';
import type { NetworkPolicy } from '../../policy/model.js';
import { policy } from '../policy/fixture.js';
import { ensureBuilt, Flow, policiesYaml, policyLabName, Prober, seqsIn, tcpCounters, tmpDir, writeFile, type FlowMark } from './helpers.js';

const name = policyLabName();
let s: LabState;
let dir: string;
const flows: Flow[] = [];

const ports = [
  { name: 'serve-80-tcp', containerPort: 80, protocol: 'TCP' },
  { name: 'serve-80-udp', containerPort: 80, protocol: 'UDP' },
  { name: 'serve-81-tcp', containerPort: 81, protocol: 'TCP' },
  { name: 'serve-81-udp', containerPort: 81, protocol: 'UDP' },
];
const pods: [string, string][] = [['flow', 'a'], ['flow', 'b'], ['flow', 'c'], ['other', 'd']]; // round-robin: a, c on node1; b, d on node2

beforeAll(async () => {
  ensureBuilt();
  dir = tmpDir();
  const items = [
    ...['flow', 'other'].map((n) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: n, labels: { ns: n } } })),
    ...pods.map(([ns, p]) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { namespace: ns, name: p, labels: { pod: p } }, spec: { containers: [{ name: 'c', ports }] } })),
  ];
  s = await labUp({ name, nodes: 2, manifests: [writeFile(dir, 'cluster.yaml', stringify({ apiVersion: 'v1', kind: 'List', items }))] });
  const prober = await Prober.start(s.pods);
  try {
    await prober.waitAllAnswer([[80, 'TCP'], [80, 'UDP'], [81, 'UDP']]);
  } finally {
    await prober.close();
  }
}, 240_000);

afterAll(async () => {
  for (const f of flows) f.kill();
  await labDown(name);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const pod = (ns: string, n: string) => s.pods.find((p) => p.namespace === ns && p.name === n)!;
const podSel = (p: string) => ({ matchLabels: { pod: p } });

// Every set of these policies that the steps below put in force allows a → b on TCP/UDP 80.
const P: Record<string, NetworkPolicy> = {
  A: policy('flow', 'b-from-a', podSel('b'), { ingress: [{ from: [{ podSelector: podSel('a') }], ports: [{ protocol: 'TCP', port: 80 }, { protocol: 'UDP', port: 80 }] }] }),
  B: policy('flow', 'b-from-flow-ns', podSel('b'), { ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'flow' } } }], ports: [{ protocol: 'UDP', port: 80 }, { protocol: 'TCP', port: 79, endPort: 80 }] }] }),
  C: policy('flow', 'a-egress-to-b', podSel('a'), { egress: [{ to: [{ podSelector: podSel('b') }], ports: [{ protocol: 'TCP', port: 'serve-80-tcp' }, { protocol: 'UDP', port: 'serve-80-udp' }] }] }),
  D: policy('flow', 'b-egress-deny', podSel('b'), { egress: [] }), // b's echoes are replies: still allowed
  E: policy('other', 'other-deny-all', {}, { ingress: [], egress: [] }), // unrelated
  F: policy('flow', 'c-egress-all', podSel('c'), { egress: [{}] }), // unrelated to b's ingress
  G: policy('flow', 'a-ingress-deny', podSel('a'), { ingress: [] }), // a's echoes back are replies: still allowed
  H: policy('flow', 'b-from-c-81', podSel('b'), { ingress: [{ from: [{ podSelector: podSel('c') }], ports: [{ protocol: 'UDP', port: 81 }] }] }),
};
// The policy sets in force, one after another (s0 = none).
const STATES = ['', 'A', 'AE', 'AEC', 'AECH', 'AECHD', 'AECD', 'ABECD', 'BECD', 'BECDG', 'BEDG', 'EDG', 'EDGF', 'DGF', 'ADGF', 'ABCDGF', ''];
// c → b on UDP 81 (upstream semantics, by hand): allowed unless b is isolated for ingress (A or B) without H.
const cAllowed = (st: string) => !(st.includes('A') || st.includes('B')) || st.includes('H');

it('policy changes never drop a packet of a flow they still allow, and stop a flow they deny', async () => {
  const a = pod('flow', 'a'), b = pod('flow', 'b'), c = pod('flow', 'c');
  expect([a.node, b.node, c.node]).toEqual(['node1', 'node2', 'node1']); // both flows cross nodes
  const tcpBefore = [tcpCounters(a.netns), tcpCounters(b.netns)];
  const fa = await Flow.start(a, { udp: { ip: b.ip, port: 80, pps: 1000 }, tcp: { ip: b.ip, port: 80, chunk: 8192, everyMs: 5 } });
  flows.push(fa);
  const fc = await Flow.start(c, { udp: { ip: b.ip, port: 81, pps: 500 } });
  flows.push(fc);
  const windows: { state: string; from: FlowMark; to?: FlowMark }[] = [];
  let enforceMs = 0;
  await new Promise((r) => setTimeout(r, 300));
  windows.push({ state: '', from: await fc.mark('start') });
  for (let i = 1; i < STATES.length; i++) {
    const was = new Set(STATES[i - 1]), now = new Set(STATES[i]);
    const add = [...now].filter((k) => !was.has(k)).map((k) => P[k]);
    const del = [...was].filter((k) => !now.has(k)).map((k) => P[k]);
    windows[windows.length - 1].to = await fc.mark(`before ${i}`); // packets from here to the next mark may go either way
    await fa.mark(`before ${i}`);
    if (add.length) enforceMs = Math.max(enforceMs, (await labPolicies(name, [writeFile(dir, `s${i}-add.yaml`, policiesYaml(add))])).ms);
    if (del.length) enforceMs = Math.max(enforceMs, (await labPolicies(name, [writeFile(dir, `s${i}-del.yaml`, policiesYaml(del))], true)).ms);
    windows.push({ state: STATES[i], from: await fc.mark(`after ${i}`) });
    await fa.mark(`after ${i}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  windows[windows.length - 1].to = await fc.mark('end');
  const [ra, rc] = await Promise.all([fa.stop(), fc.stop()]);
  const tcpAfter = [tcpCounters(a.netns), tcpCounters(b.netns)];
  // both ends send on the stream (a its data, b the echo): a segment lost either way is retransmitted
  const retrans = tcpAfter.reduce((n, x, k) => n + x.retrans - tcpBefore[k].retrans, 0);
  const duplicates = tcpAfter.reduce((n, x, k) => n + x.dsackRecvSegs - tcpBefore[k].dsackRecvSegs, 0);
  const timeouts = tcpAfter.reduce((n, x, k) => n + x.timeouts - tcpBefore[k].timeouts, 0);

  const problems: string[] = [];
  // a → b, allowed throughout: every datagram echoed, the stream intact
  const lostA = seqsIn(ra.udp!.echoed, 0, ra.udp!.sent, false);
  if (lostA.length) problems.push(`a → b UDP 80: ${lostA.length} of ${ra.udp!.sent} datagrams lost (seq ${lostA.slice(0, 20).join(', ')}${lostA.length > 20 ? ', ...' : ''})`);
  const t = ra.tcp!;
  if (t.errors.length || t.closedEarly) problems.push(`a → b TCP 80: ${t.closedEarly ? 'closed' : ''} ${t.errors.join(', ')}`);
  if (t.corrupt) problems.push('a → b TCP 80: the echoed stream differs from what was sent');
  if (t.echoed !== t.sent) problems.push(`a → b TCP 80: ${t.sent} bytes sent, ${t.echoed} echoed`);
  if (t.maxGapMs > 500) problems.push(`a → b TCP 80: stalled for ${t.maxGapMs} ms`);
  if (retrans > duplicates || timeouts > 0) problems.push(`a → b TCP 80: ${retrans} segments retransmitted, ${duplicates} of them reported back as duplicates, ${timeouts} retransmission timeouts: a segment was lost`);
  // c → b: per window between two enforced changes, all through or nothing through
  for (const w of windows) {
    const lo = w.from.seq, hi = w.to!.seq;
    if (cAllowed(w.state)) {
      const lost = seqsIn(rc.udp!.echoed, lo, hi, false);
      if (lost.length) problems.push(`c → b UDP 81 with {${[...w.state].join(',')}} (allowed): ${lost.length} of ${hi - lo} datagrams lost`);
    } else {
      const through = seqsIn(rc.udp!.echoed, lo, hi, true);
      if (through.length) problems.push(`c → b UDP 81 with {${[...w.state].join(',')}} (denied): ${through.length} of ${hi - lo} datagrams sent after the change was enforced came back`);
    }
  }
  const denied = windows.filter((w) => !cAllowed(w.state));
  process.stdout.write(
    `under traffic: ${STATES.length - 1} policy changes in ${(ra.ms / 1000).toFixed(1)} s (slowest enforced in ${enforceMs.toFixed(0)} ms); ` +
      `a → b: ${ra.udp!.sent} datagrams, ${(t.sent / 1e6).toFixed(1)} MB of TCP, ${retrans} retransmits (${duplicates} needless: D-SACKed), longest echo gap ${t.maxGapMs} ms; ` +
      `c → b: ${denied.length} denied windows (${denied.reduce((n, w) => n + w.to!.seq - w.from.seq, 0)} datagrams), ${windows.length - denied.length} allowed\n`,
  );
  expect(problems.join('\n')).toBe('');
  // the checks had something to check
  expect(ra.udp!.sent).toBeGreaterThan(2000);
  expect(t.sent).toBeGreaterThan(1e6);
  expect(denied.length).toBeGreaterThanOrEqual(5);
  expect(denied.every((w) => w.to!.seq - w.from.seq >= 50)).toBe(true);
}, 120_000);
