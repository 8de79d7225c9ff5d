// The compiled tables for IPv6 and dual stack, as compile.test.ts checks them for IPv4:
// verdict6() against the naive reference (./reference.ts) on generated dual-stack
// clusters, incremental recompiles against fresh ones, self and node traffic, explain6(),
// a worker reading the posted buffers, and the rules of families: a selector matches a
// pod by either address, an ipBlock only its own family, isolation is per pod.
import { describe, expect, it } from 'vitest';
import { Worker } from 'node:worker_threads';
import { PolicyCompiler, compilePolicies } from '../../policy/compile.js';
import { makeBenchModel, type BenchShape } from '../../bench/policy-model.js';
import type { ClusterModel, NetworkPolicy, NetworkPolicyPeer, Pod } from '../../policy/model.js';
import { EGRESS, INGRESS, PolicyTables, RULE_NODE, RULE_SELF, VERSION } from '../../dataplane/tables/policy.js';
import { words6 } from '../../policy/matrix.js';
import { parseIPv4Address } from '../../lib/ipv4.js';
import { e2eModel, ip6Of, ipOf, policy } from './fixture.js';
import { referenceVerdictAt } from './reference.js';
import { uniform } from '../../bench/prng.js';

const sign = (v: number) => (v > 0 ? 1 : v);
const w6 = words6;
const v6 = (t: PolicyTables, dir: number, pod: string, peer: string, proto: number, port: number) => t.verdict6(dir, w6(pod), 0, w6(peer), 0, proto, port);

/**
 * The bench cluster made dual stack: pod nsN/pJ gets fd00:10:N::J+1 (N in hex); every
 * tenth pod is IPv6-only, every seventh IPv4-only. Each ipBlock peer
 * (192.168.x.0/24 except a /28) gains an IPv6 twin peer that covers pods, namespace
 * x mod namespaces' /64 except a /124 of it, and the node addresses gain two IPv6 ones.
 */
function dualStack(model: ClusterModel, seed = 11): ClusterModel {
  const r = uniform(seed);
  const nsIndex = new Map(model.namespaces.map((n, i) => [n.name, i]));
  const pods: Pod[] = model.pods.map((p, k) => {
    const j = Number(p.name.slice(1));
    const ip6 = `fd00:10:${nsIndex.get(p.namespace)!.toString(16)}::${(j + 1).toString(16)}`;
    if (k % 10 === 3) return { ...p, ip: undefined, ip6 };
    if (k % 7 === 5) return p;
    return { ...p, ip6 };
  });
  const twin = (peer: NetworkPolicyPeer): NetworkPolicyPeer[] => {
    if (!peer.ipBlock) return [peer];
    const x = Number(peer.ipBlock.cidr.split('.')[2]) % model.namespaces.length;
    const sub = Math.floor(r() * 8) * 16;
    return [peer, { ipBlock: { cidr: `fd00:10:${x.toString(16)}::/64`, except: [`fd00:10:${x.toString(16)}::${sub.toString(16)}/124`] } }];
  };
  const policies: NetworkPolicy[] = model.policies.map((np) => ({
    ...np,
    spec: {
      ...np.spec,
      ...(np.spec.ingress ? { ingress: np.spec.ingress.map((rule) => ({ ...rule, ...(rule.from ? { from: rule.from.flatMap(twin) } : {}) })) } : {}),
      ...(np.spec.egress ? { egress: np.spec.egress.map((rule) => ({ ...rule, ...(rule.to ? { to: rule.to.flatMap(twin) } : {}) })) } : {}),
    },
  }));
  return { ...model, pods, policies, nodeIps: [...model.nodeIps, 'fd00:10:ffff::1', 'fc00:f853:ccd:e793::11'] };
}

function sampleAgainstReference(model: ClusterModel, t: PolicyTables, n: number, seed: number): void {
  const r = uniform(seed);
  const pods6 = model.pods.filter((p) => p.ip6).map((p) => p.ip6!);
  const pods4 = model.pods.filter((p) => p.ip).map((p) => p.ip!);
  const ext6 = ['fd00:10:0::3:0', 'fd00:10:1::ffff', 'fd00:10:2::21', 'fd00:10:1::1:0:0', '2001:db8::1', '::', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', ...model.nodeIps.filter((a) => a.includes(':'))];
  const ext4 = ['192.168.7.5', '8.8.8.8', ...model.nodeIps.filter((a) => !a.includes(':'))];
  const ports = [53, 80, 81, 8080, 8081, 8050, 8150, 9999, 443, 1, 1024];
  const first: string[] = [];
  let mismatches = 0;
  const seen = new Map<string, number>(); // family and outcome → count
  for (let i = 0; i < n; i++) {
    const six = r() < 0.7;
    const own = six ? pods6 : pods4;
    const pod = own[Math.floor(r() * own.length)];
    const ext = six ? ext6 : ext4;
    const peer = r() < 0.8 ? own[Math.floor(r() * own.length)] : ext[Math.floor(r() * ext.length)];
    const proto = [6, 17, 132][Math.floor(r() * 3)];
    const port = r() < 0.5 ? ports[Math.floor(r() * ports.length)] : 1 + Math.floor(r() * 1100);
    const ingress = r() < 0.5;
    const dir = ingress ? INGRESS : EGRESS;
    const got = sign(six ? v6(t, dir, pod, peer, proto, port) : t.verdict(dir, parseIPv4Address(pod), parseIPv4Address(peer), proto, port));
    const want = referenceVerdictAt(model, ingress, pod, peer, proto, port);
    seen.set(`${six ? 6 : 4}:${want}`, (seen.get(`${six ? 6 : 4}:${want}`) ?? 0) + 1);
    if (got !== want) {
      mismatches++;
      if (first.length < 5) first.push(`${ingress ? 'in' : 'eg'} pod=${pod} peer=${peer} ${proto}/${port}: got ${got} want ${want}`);
    }
  }
  expect(first).toEqual([]);
  expect(mismatches).toBe(0);
  // the sample saw both outcomes in IPv6 (the bench cluster isolates every pod both ways)
  for (const k of ['6:1', '6:-1']) expect(seen.get(k) ?? 0, `${k} in ${JSON.stringify([...seen])}`).toBeGreaterThan(n / 100);
}

describe('compiled tables, IPv6 and dual stack', () => {
  it('10,000 policies over 1,000 dual-stack pods: verdict6() and verdict() agree with a naive reference on a sample', () => {
    const model = dualStack(makeBenchModel());
    expect(model.pods.filter((p) => p.ip6 && p.ip).length).toBeGreaterThan(700);
    expect(model.pods.filter((p) => p.ip6 && !p.ip).length).toBe(100);
    const t = compilePolicies(model);
    sampleAgainstReference(model, t, 2500, 7);
  });

  it('incremental recompiles agree with the reference and a fresh compile after random changes', () => {
    const shape: BenchShape = { namespaces: 3, podsPerNamespace: 30, policies: 300, apps: 6 };
    let model = dualStack(makeBenchModel(shape, 3));
    const c = new PolicyCompiler();
    sampleAgainstReference(model, c.compile(model), 600, 1);
    const r = uniform(99);
    const donor = dualStack(makeBenchModel(shape, 4), 5);
    for (let step = 0; step < 16; step++) {
      model = { ...model, pods: model.pods.slice(), policies: model.policies.slice(), namespaces: model.namespaces.slice() };
      const what = step % 8;
      const i = Math.floor(r() * model.policies.length);
      const j = Math.floor(r() * model.pods.length);
      if (what === 0) model.policies[i] = { ...donor.policies[i], name: model.policies[i].name, namespace: model.policies[i].namespace };
      else if (what === 1) model.policies.splice(i, 1);
      else if (what === 2) model.pods[j] = { ...model.pods[j], labels: { ...model.pods[j].labels, app: `app${Math.floor(r() * 6)}` } };
      else if (what === 3) model.namespaces[1] = { ...model.namespaces[1], labels: { ...model.namespaces[1].labels, team: `t${step % 3}` } };
      else if (what === 4) model.pods[j] = { ...model.pods[j], ip6: `fd00:10:${step % 3}::${(0x100 + step).toString(16)}` }; // renumbered, maybe into an ipBlock
      else if (what === 5) model.pods[j] = model.pods[j].ip ? { ...model.pods[j], ip6: undefined } : { ...model.pods[j], ip: `10.200.0.${step + 1}` }; // single stack
      else if (what === 6) model.nodeIps = [...model.nodeIps.slice(0, -1), `fd00:10:${step % 3}::${(0x200 + step).toString(16)}`];
      else {
        model.pods.splice(j, 1);
        model.policies.push({ ...donor.policies[i], name: `extra${step}` });
      }
      const inc = c.compile(model);
      sampleAgainstReference(model, inc, 500, step);
      // and the same verdicts as a from-scratch compile
      const fresh = compilePolicies(model);
      const ips = model.pods.filter((p) => p.ip6).map((p) => p.ip6!);
      for (const a of ips.slice(0, 25)) {
        for (const b of ips) {
          for (const [proto, port] of [[6, 80], [6, 8080], [17, 53]]) {
            expect(sign(v6(inc, INGRESS, a, b, proto, port))).toBe(sign(v6(fresh, INGRESS, a, b, proto, port)));
            expect(sign(v6(inc, EGRESS, a, b, proto, port))).toBe(sign(v6(fresh, EGRESS, a, b, proto, port)));
          }
        }
      }
    }
  });

  it('a changed policy rebuilds only the rule sets of the pods it selects, in each family they have', () => {
    const model = e2eModel([policy('x', 'a', { matchLabels: { pod: 'a' } }, { ingress: [] }), policy('y', 'b', {}, { ingress: [{}] })], { dualStack: true });
    const c = new PolicyCompiler();
    c.compile(model);
    model.policies = [model.policies[0], policy('y', 'b', {}, { ingress: [{ ports: [{ port: 80 }] }] })];
    c.compile(model);
    expect(c.lastStats.changedPolicies).toBe(1);
    expect(c.lastStats.rulesetsBuilt).toBe(2); // y/a, y/b, y/c share one rule set per family
    expect(c.lastStats.rulesetsReused).toBe(6);
  });

  it('self traffic and node (kubelet) traffic are allowed to isolated pods over IPv6; explain6 names policy and rule', () => {
    const model = e2eModel([
      policy('x', 'deny', {}, { ingress: [], egress: [] }),
      policy('x', 'allow-b', { matchLabels: { pod: 'a' } }, { ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'c' } } }] }, { from: [{ podSelector: { matchLabels: { pod: 'b' } } }], ports: [{ port: 80 }] }] }),
    ], { dualStack: true });
    model.nodeIps = ['10.0.0.1', 'fd00:10:244:1::fe'];
    const t = compilePolicies(model);
    expect(VERSION).toBe(3);
    const xa = ip6Of('x', 'a');
    const xb = ip6Of('x', 'b');
    expect(v6(t, INGRESS, xa, xa, 6, 80)).toBe(RULE_SELF);
    expect(v6(t, INGRESS, xa, 'fd00:10:244:1::fe', 6, 10250)).toBe(RULE_NODE);
    expect(v6(t, INGRESS, xa, 'fd00:10:244:1:0:0:0:fe', 6, 10250)).toBe(RULE_NODE); // another spelling
    expect(v6(t, INGRESS, xa, 'fd00:10:244:1::2:1', 6, 10250)).toBe(-1);
    expect(v6(t, EGRESS, xa, 'fd00:10:244:1::fe', 6, 10250)).toBe(-1); // egress to the node is not special
    expect(v6(t, INGRESS, xa, xb, 17, 80)).toBe(-1);
    // the node's IPv4 address is not an IPv6 one, nor the reverse
    expect(t.verdict(INGRESS, parseIPv4Address(ipOf('x', 'a')), parseIPv4Address('10.0.0.1'), 6, 10250)).toBe(RULE_NODE);
    const e = t.explain6(INGRESS, w6(xa), w6(xb), 6, 80);
    expect(e).toMatchObject({ allowed: true, policy: 'x/allow-b', rule: 'ingress[1]', pod: 'x/a' });
    const d = t.explain6(INGRESS, w6(xa), w6(xb), 6, 81);
    expect(d.allowed).toBe(false);
    expect(d.isolatedBy).toEqual(['x/deny', 'x/allow-b']);
    expect(d.reason).toBe('x/a is isolated for ingress by x/deny, x/allow-b and no rule allows fd00:10:244:1::2 port 81/TCP');
    expect(t.explain6(INGRESS, w6(xa), w6('fd00:10:244:1::fe'), 6, 10250).reason).toBe('fd00:10:244:1::fe is a node IP: traffic from the node (kubelet probes) is always allowed');
    expect(t.explain6(INGRESS, w6(ip6Of('y', 'a')), w6(xb), 6, 81)).toMatchObject({ verdict: 0, allowed: true, pod: 'y/a' });
    expect(t.explain6(INGRESS, w6('2001:db8::1'), w6(xb), 6, 81)).toMatchObject({ verdict: 0, allowed: true, reason: '2001:db8::1 is not a known pod: no policy applies' });
  });

  it('a selector matches a pod by either address; an ipBlock only its own family; isolation is per pod', () => {
    const model = e2eModel([
      // x/a: from pods b (a selector), from 0.0.0.0/0 on 81 (IPv4 only), from fd00:10:244:3::/64 on 82 (IPv6 only)
      policy('x', 'a', { matchLabels: { pod: 'a' } }, {
        ingress: [
          { from: [{ podSelector: { matchLabels: { pod: 'b' } }, namespaceSelector: {} }] },
          { from: [{ ipBlock: { cidr: '0.0.0.0/0' } }], ports: [{ port: 81 }] },
          { from: [{ ipBlock: { cidr: 'fd00:10:244:3::/64' } }], ports: [{ port: 82 }] },
        ],
      }),
      // x/b: egress only to ::/0 (no IPv4 peer at all)
      policy('x', 'b', { matchLabels: { pod: 'b' } }, { egress: [{ to: [{ ipBlock: { cidr: '::/0' } }] }] }),
    ], { dualStack: true });
    // z/b IPv6-only, y/c IPv4-only
    model.pods = model.pods.map((p) => (p.namespace === 'z' && p.name === 'b' ? { ...p, ip: undefined } : p.namespace === 'y' && p.name === 'c' ? { ...p, ip6: undefined } : p));
    const t = compilePolicies(model);
    const xa6 = ip6Of('x', 'a');
    const xa4 = parseIPv4Address(ipOf('x', 'a'));
    // pods labelled b, by either family (z/b has only IPv6)
    expect(v6(t, INGRESS, xa6, ip6Of('y', 'b'), 6, 80)).toBeGreaterThan(0);
    expect(v6(t, INGRESS, xa6, ip6Of('z', 'b'), 6, 80)).toBeGreaterThan(0);
    expect(t.verdict(INGRESS, xa4, parseIPv4Address(ipOf('y', 'b')), 6, 80)).toBeGreaterThan(0);
    expect(v6(t, INGRESS, xa6, ip6Of('y', 'a'), 6, 80)).toBe(-1);
    // 0.0.0.0/0 admits every IPv4 peer on 81, no IPv6 one
    expect(t.verdict(INGRESS, xa4, parseIPv4Address('203.0.113.9'), 6, 81)).toBeGreaterThan(0);
    expect(v6(t, INGRESS, xa6, '2001:db8::9', 6, 81)).toBe(-1);
    expect(v6(t, INGRESS, xa6, ip6Of('y', 'a'), 6, 81)).toBe(-1);
    expect(v6(t, INGRESS, xa6, '::ffff:203.0.113.9', 6, 81)).toBe(-1); // IPv4-mapped is IPv6
    // fd00:10:244:3::/64 admits z's pods and others in it on 82, over IPv6 only
    expect(v6(t, INGRESS, xa6, ip6Of('z', 'c'), 6, 82)).toBeGreaterThan(0);
    expect(v6(t, INGRESS, xa6, 'fd00:10:244:3:ffff:ffff:ffff:ffff', 6, 82)).toBeGreaterThan(0);
    expect(v6(t, INGRESS, xa6, 'fd00:10:244:4::', 6, 82)).toBe(-1);
    expect(t.verdict(INGRESS, xa4, parseIPv4Address(ipOf('z', 'c')), 6, 82)).toBe(-1);
    // x/b is isolated for egress in both families: IPv6 peers pass, IPv4 ones do not
    expect(v6(t, EGRESS, ip6Of('x', 'b'), '2001:db8::1', 17, 53)).toBeGreaterThan(0);
    expect(t.verdict(EGRESS, parseIPv4Address(ipOf('x', 'b')), parseIPv4Address('8.8.8.8'), 17, 53)).toBe(-1);
    // y/c has no IPv6 address: no IPv6 pod there; z/b has no IPv4 one
    expect(v6(t, INGRESS, ip6Of('y', 'c'), xa6, 6, 80)).toBe(0);
    expect(t.verdict(INGRESS, parseIPv4Address(ipOf('z', 'b')), xa4, 6, 80)).toBe(0);
  });

  it('IPv6 ipBlocks at the edges of the address space, and pods there', () => {
    const top = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
    const model = e2eModel([
      policy('x', 'edges', { matchLabels: { pod: 'a' } }, {
        ingress: [{ from: [{ ipBlock: { cidr: '::/0', except: ['::/128', `${top}/128`, 'ffff::/16'] } }], ports: [{ port: 80 }] }, { from: [{ ipBlock: { cidr: 'ffff:ffff::/32' } }], ports: [{ port: 81 }] }],
      }),
    ], { dualStack: true });
    model.pods = model.pods.map((p) => (p.namespace === 'z' && p.name === 'c' ? { ...p, ip6: top } : p.namespace === 'z' && p.name === 'b' ? { ...p, ip6: '::1' } : p));
    const t = compilePolicies(model);
    const xa = ip6Of('x', 'a');
    for (const [peer, port, want] of [
      ['::', 80, -1], ['::1', 80, 1], ['::2', 80, 1], ['fffe:ffff::', 80, 1], ['ffff::', 80, -1], [top, 80, -1], ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe', 80, -1],
      [top, 81, 1], ['ffff:ffff::', 81, 1], ['ffff:fffe:ffff::', 81, -1], ['2001:db8::', 81, -1],
    ] as const) {
      expect({ peer, port, v: sign(v6(t, INGRESS, xa, peer, 6, port)) }).toEqual({ peer, port, v: want });
      expect(referenceVerdictAt(model, true, xa, peer, 6, port)).toBe(want);
    }
    // the pod at the top of the space is one too
    expect(v6(t, INGRESS, top, xa, 6, 80)).toBe(0);
    expect(sign(v6(t, EGRESS, xa, top, 6, 80))).toBe(0);
  });

  it('tables without any IPv6 pod: no pods6 buffer, verdict6() says "not a pod"', () => {
    const model = e2eModel([policy('x', 'deny', {}, { ingress: [] })]);
    const t = compilePolicies(model);
    expect(t.buffers.pods6).toBeUndefined();
    expect(v6(t, INGRESS, 'fd00:10:244:1::fe', 'fd00:10:244:2::1', 6, 80)).toBe(0);
    expect(t.verdict(INGRESS, parseIPv4Address(ipOf('x', 'a')), parseIPv4Address(ipOf('y', 'a')), 6, 80)).toBe(-1);
  });

  it('verdict6 reads the addresses at the indices given (batch arrays, 4 words per entry)', () => {
    const model = e2eModel([policy('x', 'from-y', {}, { ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }] })], { dualStack: true });
    const t = compilePolicies(model);
    const src = new Int32Array(4 * 8);
    const dst = new Int32Array(4 * 8);
    src.set(w6(ip6Of('y', 'c')), 4 * 5);
    dst.set(w6(ip6Of('x', 'b')), 4 * 5);
    src.set(w6(ip6Of('z', 'c')), 4 * 6);
    dst.set(w6(ip6Of('x', 'b')), 4 * 6);
    expect(t.verdict6(INGRESS, dst, 20, src, 20, 6, 80)).toBeGreaterThan(0);
    expect(t.verdict6(INGRESS, dst, 24, src, 24, 6, 80)).toBe(-1);
  });

  it('a worker wraps the posted buffers and answers the same verdict6() and verdict()', async () => {
    const model = e2eModel([policy('x', 'deny', {}, { ingress: [] }), policy('x', 'p', { matchLabels: { pod: 'a' } }, { ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }, { ipBlock: { cidr: 'fd00:10:244:3::/64', except: ['fd00:10:244:3::2/128'] } }], ports: [{ port: 80 }] }] })], { dualStack: true });
    const t = compilePolicies(model);
    const ips = model.pods.map((p) => Array.from(w6(p.ip6!)));
    const queries: number[][] = [];
    for (const a of ips) for (const b of ips) queries.push([INGRESS, ...a, ...b, 6, 80], [INGRESS, ...a, ...b, 6, 81], [EGRESS, ...a, ...b, 17, 80]);
    const src = `
      const { parentPort, workerData } = require('node:worker_threads');
      import(workerData.url).then(({ PolicyTables }) => {
        const t = new PolicyTables(workerData.buffers);
        parentPort.postMessage(workerData.queries.map((q) => t.verdict6(q[0], Int32Array.from(q.slice(1, 5)), 0, Int32Array.from(q.slice(5, 9)), 0, q[9], q[10])));
      });`;
    const { buildSync } = await import('esbuild');
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { pathToFileURL, fileURLToPath } = await import('node:url');
    const out = join(mkdtempSync(join(tmpdir(), 'twill-policy6-')), 'tables.mjs');
    buildSync({ entryPoints: [fileURLToPath(new URL('../../dataplane/tables/policy.ts', import.meta.url))], bundle: true, format: 'esm', platform: 'node', outfile: out, logLevel: 'silent' });
    const w = new Worker(src, { eval: true, workerData: { url: pathToFileURL(out).href, buffers: t.buffers, queries } });
    const got: number[] = await new Promise((res, rej) => {
      w.once('message', res);
      w.once('error', rej);
    });
    await w.terminate();
    const want = queries.map((q) => t.verdict6(q[0], Int32Array.from(q.slice(1, 5)), 0, Int32Array.from(q.slice(5, 9)), 0, q[9], q[10]));
    expect(got).toEqual(want);
    expect(want.filter((v) => v > 0).length).toBeGreaterThan(5);
    expect(want.filter((v) => v < 0).length).toBeGreaterThan(20);
  });
});
