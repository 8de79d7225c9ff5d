// The upstream NetworkPolicy cases that involve ipBlock, run again with IPv6 addresses
// in a real dual-stack lab (issue 19's acceptance). The same upstream e2e cluster as
// netpol-lab.test.ts (namespaces x, y, z; pods a, b, c serving 80/81) on two nodes of a
// `ipFamily: 'dual'` lab: every pod has an IPv6 address (`ip6`) beside its IPv4 one,
// node N's IPv6 pod range being fd00:10:244:N::/64. Each case's ipBlocks, which the
// IPv4 test computes from the lab's IPv4 addresses, are rewritten to IPv6 (a pod's /32
// becomes its /128, a node's pod CIDR its podCIDR6, the cluster CIDR the IPv6 cluster
// range, upstream's makeLargeCIDRForIP /4 the /4 around fd00::, as upstream's IPv6 run
// has it). The policy is applied with `lab apply`, every ordered pair is probed over
// IPv6 with real connections (TCP connect + echo, UDP echo, SCTP INIT over IPv6 as raw
// next header 132 counted by a capture in the destination pod), and the observed matrix
// must equal upstream's expected one, as must `twill policy matrix --json --ip-family
// IPv6` for the lab's real pods. The harness is netpol-lab.test.ts's (helpers.ts), given
// the address family.
//
// Isolation is per pod, not per family: an ipBlock of one family matches no peer of the
// other, yet the pod it selects is isolated in both. So the IPv6-only rewrites are also
// probed over IPv4 (x/a's egress is then denied everywhere), and an IPv4-only ipBlock
// policy is probed over IPv6 (x/a's IPv6 ingress is denied from everyone).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { labDown, labModel, labPolicies, labUp } from '../../lab/lab.js';
import type { LabState } from '../../lab/state.js';
import type { NetworkPolicy, NetworkPolicyPeer, Protocol } from '../../policy/model.js';
import { PODS, policy } from '../policy/fixture.js';
import { M, e2eCases, type Probe } from '../policy/netpol-cases.js';
import { cliRows, diffRows, ensureBuilt, observe, podKey, policiesYaml, policyLabName, Prober, runPolicySteps, tmpDir, upstreamClusterYaml, writeFile, type Family } from './helpers.js';

const name = policyLabName();
let s: LabState;
let dir: string;
let prober: Prober | undefined;
const SERVED = new Set(['TCP/80', 'TCP/81', 'UDP/80', 'UDP/81']); // the echo servers of every pod
const served = (proto: Protocol, port: number) => SERVED.has(`${proto}/${port}`);
const L4: [number, 'TCP' | 'UDP'][] = [[80, 'TCP'], [81, 'TCP'], [80, 'UDP'], [81, 'UDP']];

beforeAll(async () => {
  ensureBuilt();
  dir = tmpDir();
  s = await labUp({ name, nodes: 2, ipFamily: 'dual', manifests: [writeFile(dir, 'cluster.yaml', upstreamClusterYaml())] });
  prober = await Prober.start(s.pods);
  await prober.waitAllAnswer(L4, 30_000, 'IPv6');
  await prober.waitAllAnswer(L4, 30_000, 'IPv4');
}, 240_000);

afterAll(async () => {
  await prober?.close();
  await labDown(name);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const pod = (ns: string, p: string) => {
  const x = s.pods.find((q) => q.namespace === ns && q.name === p);
  if (!x) throw new Error(`no pod ${ns}/${p} in the lab`);
  return x;
};
const ip = (ns: string, p: string): string => pod(ns, p).ip;
const ip6 = (ns: string, p: string): string => {
  const a = pod(ns, p).ip6;
  if (!a) throw new Error(`pod ${ns}/${p} has no IPv6 address`);
  return a;
};
const podSel = (p: string) => ({ matchLabels: { pod: p } });

/**
 * The IPv6 counterpart, in this lab, of an IPv4 CIDR the cases write: a pod's /32 is
 * its /128, a node's pod CIDR its IPv6 one, the cluster CIDR the IPv6 cluster range,
 * and makeLargeCIDRForIP's /4 around 10.x (0.0.0.0/4) the /4 around fd00:: (f000::/4).
 */
function cidr6(cidr: string): string {
  if (cidr === '0.0.0.0/4') return 'f000::/4';
  const p = s.pods.find((x) => `${x.ip}/32` === cidr);
  if (p) return `${ip6(p.namespace, p.name)}/128`;
  const n = s.nodes.find((x) => x.podCIDR === cidr);
  if (n?.podCIDR6) return n.podCIDR6;
  if (cidr === s.clusterCIDR && s.clusterCIDR6) return s.clusterCIDR6;
  throw new Error(`no IPv6 counterpart in the lab for ${cidr}`);
}

/** The policies with every ipBlock in IPv6 ('v6'), or in both families, IPv4 peer then IPv6 peer ('both'). */
function rewrite(policies: NetworkPolicy[], mode: 'v6' | 'both'): NetworkPolicy[] {
  const peers = (ps: NetworkPolicyPeer[] | undefined): NetworkPolicyPeer[] | undefined =>
    ps?.flatMap((p) => {
      if (!p.ipBlock) return [p];
      const v6: NetworkPolicyPeer = { ipBlock: { cidr: cidr6(p.ipBlock.cidr), ...(p.ipBlock.except ? { except: p.ipBlock.except.map(cidr6) } : {}) } };
      return mode === 'v6' ? [v6] : [p, v6];
    });
  return policies.map((np) => ({
    ...np,
    spec: {
      ...np.spec,
      ...(np.spec.ingress ? { ingress: np.spec.ingress.map((r) => ({ ...r, ...(r.from ? { from: peers(r.from) } : {}) })) } : {}),
      ...(np.spec.egress ? { egress: np.spec.egress.map((r) => ({ ...r, ...(r.to ? { to: peers(r.to) } : {}) })) } : {}),
    },
  }));
}

const hasIpBlock = (ps: NetworkPolicy[]): boolean => JSON.stringify(ps).includes('ipBlock');
/** Every CIDR the policies' ipBlocks name, excepts included. */
const ipBlockCidrs = (ps: NetworkPolicy[]): string[] => ps
  .flatMap((np) => [...(np.spec.ingress ?? []).flatMap((r) => r.from ?? []), ...(np.spec.egress ?? []).flatMap((r) => r.to ?? [])])
  .flatMap((p) => (p.ipBlock ? [p.ipBlock.cidr, ...(p.ipBlock.except ?? [])] : []));

let caseCount = 0;
let upstreamIpBlockCases = 0;
const pairsProbed: Record<Family, number> = { IPv4: 0, IPv6: 0 };

/** What a step probes, by family: [port, protocol, expected rows]. */
type Checks = Partial<Record<Family, Probe[]>>;

/**
 * Applies `apply`, deletes `remove`, probes each family's checks (one family after the
 * other: each pod's probe process answers one request at a time) and compares the
 * observed and the CLI matrices with the expectations; '' when all agree.
 */
async function step(label: string, apply: NetworkPolicy[], checks: Checks, remove: NetworkPolicy[] = []): Promise<string> {
  const t0 = performance.now();
  const file = label.replace(/\W+/g, '-').slice(0, 60);
  if (apply.length) await labPolicies(name, [writeFile(dir, `${file}-apply.yaml`, policiesYaml(apply))]);
  if (remove.length) await labPolicies(name, [writeFile(dir, `${file}-delete.yaml`, policiesYaml(remove))], true);
  const t1 = performance.now();
  const inForce = labModel(name).policies;
  const families = (['IPv6', 'IPv4'] as const).filter((f) => checks[f]?.length);
  const cli = Promise.all(families.map((f) => Promise.all(checks[f]!.map(([port, proto]) => cliRows(s, dir, inForce, port, proto, PODS, f)))));
  const problems: string[] = [];
  const observed: string[][][] = [];
  for (const f of families) {
    const { rows, reprobed } = await observe(s, prober!, PODS, checks[f]!, served, f);
    if (reprobed) process.stderr.write(`${label} (${f}): ${reprobed} cells differed at first and were probed again with a longer timeout\n`);
    observed.push(rows);
  }
  const t2 = performance.now();
  const cliMatrices = await cli;
  if (process.env.TWILL_PL_TIMING) process.stderr.write(`${label}: apply ${(t1 - t0).toFixed(0)} ms, probe ${(t2 - t1).toFixed(0)} ms, cli ${(performance.now() - t1).toFixed(0)} ms\n`);
  families.forEach((f, i) => checks[f]!.forEach(([port, proto, expected], k) => {
    pairsProbed[f] += PODS.length * (PODS.length - 1);
    const d = diffRows(PODS, observed[i][k], expected);
    if (d) problems.push(`${label}: ${port}/${proto} over ${f} probed in the lab differs from the expectation:\n${d}`);
    const c = diffRows(PODS, cliMatrices[i][k], expected);
    if (c) problems.push(`${label}: ${port}/${proto} over ${f} from \`twill policy matrix --json${f === 'IPv6' ? ' --ip-family IPv6' : ''}\` differs from the expectation:\n${c}`);
  }));
  return problems.join('\n\n');
}

/** Runs a case's steps, then deletes every policy it left, whatever happened. */
async function runCase(_label: string, f: () => Promise<string[]>): Promise<void> {
  caseCount++;
  expect(await runPolicySteps(name, dir, f)).toBe('');
}

describe('the dual-stack lab', () => {
  it('runs the upstream cluster with an IPv6 address per pod; the pods sit where the ipBlock cases below assume', () => {
    expect(s.pods.map(podKey)).toEqual(PODS);
    expect(s.clusterCIDR6).toBe('fd00:10:244::/56');
    s.nodes.forEach((n, i) => expect(n.podCIDR6, n.name).toBe(`fd00:10:244:${i + 1}::/64`));
    // pods go round-robin over the nodes in manifest order, as in the IPv4 lab
    const node1 = ['x/a', 'x/c', 'y/b', 'z/a', 'z/c'];
    for (const p of s.pods) {
      const n = node1.includes(podKey(p)) ? 'node1' : 'node2';
      expect(p.node, podKey(p)).toBe(n);
      expect(p.ip.startsWith(n === 'node1' ? '10.244.1.' : '10.244.2.'), `${podKey(p)} ${p.ip}`).toBe(true);
      expect(p.ip6, podKey(p)).toMatch(n === 'node1' ? /^fd00:10:244:1::[0-9a-f]+$/ : /^fd00:10:244:2::[0-9a-f]+$/);
    }
  });

  it('with no policy, every pod reaches every other over IPv6 on 80/81 over TCP, UDP and SCTP', async () => {
    const all = M.allTrue;
    await runCase('no policies', async () => [await step('no policies', [], { IPv6: [[80, 'TCP', all], [81, 'TCP', all], [80, 'UDP', all], [81, 'UDP', all], [80, 'SCTP', all], [81, 'SCTP', all]] })]);
  }, 60_000);
});

describe('upstream NetworkPolicy e2e cases that involve ipBlock, with IPv6 ipBlocks, probed over IPv6 (and over IPv4: x/a stays isolated)', () => {
  // names and count at collection time; the policies are rebuilt with the lab's addresses in the test.
  // The fixtureAddressing case (an ipBlock of the fixture's per-namespace /24s) has no lab
  // counterpart, as in netpol-lab.test.ts: the first lab case below is its equivalent.
  const names = e2eCases().map((c, k) => ({ c, k })).filter(({ c }) => !c.fixtureAddressing && hasIpBlock(c.policies));
  it('finds the upstream ipBlock cases', () => {
    expect(names.length).toBeGreaterThanOrEqual(4);
  });
  for (const { c, k } of names) {
    it(`${c.name} [IPv6 ipBlocks]`, async () => {
      const live = e2eCases(ip)[k];
      const pols = rewrite(live.policies, 'v6');
      const cidrs = ipBlockCidrs(pols);
      expect(cidrs.length).toBeGreaterThan(0);
      expect(cidrs.filter((x) => !x.includes(':')), 'IPv4 CIDRs left').toEqual([]);
      // each of these policies selects x/a with egress rules of ipBlocks only: over IPv4 none matches, x/a reaches no one
      const egressOnlyIpBlocks = pols.every((np) => !np.spec.ingress && np.spec.egress?.every((r) => r.to?.every((p) => p.ipBlock)));
      upstreamIpBlockCases++;
      await runCase(`${live.name} [IPv6]`, async () => [await step(`${live.name} [IPv6]`, pols, {
        IPv6: live.probes,
        ...(egressOnlyIpBlocks ? { IPv4: live.probes.map(([port, proto]) => [port, proto, M.xaEgressDeny] as Probe) } : {}),
      })]);
    }, 60_000);
  }

  it('should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed (update) [IPv6 ipBlocks]', async () => {
    upstreamIpBlockCases++;
    await runCase('ipBlock update [IPv6]', async () => [
      await step('except x/b [IPv6]', [policy('x', 'allow-client-a-via-cidr-egress-rule', podSel('a'), { egress: [{ to: [{ ipBlock: { cidr: 'f000::/4', except: [`${ip6('x', 'b')}/128`] } }] }] })], { IPv6: [[80, 'TCP', M.xaNotToXb]] }),
      await step('x/b only [IPv6]', [policy('x', 'allow-client-a-via-cidr-egress-rule', podSel('a'), { egress: [{ to: [{ ipBlock: { cidr: `${ip6('x', 'b')}/128` } }] }] })], { IPv6: [[80, 'TCP', M.xaEgressToXbOnly]] }),
    ]);
  }, 60_000);
});

describe('the lab\'s own ipBlock cases (netpol-lab.test.ts) over the lab\'s IPv6 addresses and ranges', () => {
  // node1 (fd00:10:244:1::/64): x/a x/c y/b z/a z/c; node2 (fd00:10:244:2::/64): x/b y/a y/c z/b
  const fromNode1Only = ['.........', 'X........', '.........', 'X........', '.........', 'X........', '.........', 'X........', '.........'];

  it('ingress ipBlock fd00:10:244::/56 except node2\'s IPv6 pod CIDR: x/a admits node1\'s pods only', async () => {
    const pols = [policy('x', 'from-cidr-except-node2', podSel('a'), { ingress: [{ from: [{ ipBlock: { cidr: s.clusterCIDR6!, except: [s.nodes[1].podCIDR6!] } }] }] })];
    await runCase('ipBlock except subnet [IPv6]', async () => [await step('ipBlock except subnet [IPv6]', pols, { IPv6: [[80, 'TCP', fromNode1Only], [81, 'UDP', fromNode1Only]] })]);
  }, 60_000);

  it('egress ipBlock node1\'s IPv6 pod CIDR except x/c: x/a reaches y/b, z/a, z/c only (TCP, and SCTP over IPv6)', async () => {
    const pols = [policy('x', 'to-node1-except-xc', podSel('a'), { egress: [{ to: [{ ipBlock: { cidr: s.nodes[0].podCIDR6!, except: [`${ip6('x', 'c')}/128`] } }] }] })];
    const want = ['.XXX.X.X.', '.........', '.........', '.........', '.........', '.........', '.........', '.........', '.........'];
    await runCase('egress ipBlock except pod [IPv6]', async () => [await step('egress ipBlock except pod [IPv6]', pols, { IPv6: [[80, 'TCP', want], [80, 'SCTP', want]] })]);
  }, 60_000);

  it('an ipBlock peer and a podSelector peer in one rule add up: x/a admits z/b (by IPv6 address) and x/b (by label)', async () => {
    const pols = [policy('x', 'ipblock-or-pod', podSel('a'), { ingress: [{ from: [{ ipBlock: { cidr: `${ip6('z', 'b')}/128` } }, { podSelector: podSel('b') }] }] })];
    const want = ['.........', '.........', 'X........', 'X........', 'X........', 'X........', 'X........', '.........', 'X........'];
    await runCase('ipBlock or podSelector [IPv6]', async () => [await step('ipBlock or podSelector [IPv6]', pols, { IPv6: [[81, 'TCP', want]] })]);
  }, 60_000);

  it('UDP-only ingress from node2\'s IPv6 pod CIDR to every pod of x; TCP stays denied', async () => {
    const pols = [policy('x', 'udp-from-node2', {}, { ingress: [{ from: [{ ipBlock: { cidr: s.nodes[1].podCIDR6! } }], ports: [{ protocol: 'UDP', port: 80 }] }] })];
    const udp = ['.XX......', '.........', 'XX.......', '.........', 'XXX......', '.........', 'XXX......', '.........', 'XXX......'];
    await runCase('udp from node2 [IPv6]', async () => [await step('udp from node2 [IPv6]', pols, { IPv6: [[80, 'UDP', udp], [80, 'TCP', M.denyIngressX]] })]);
  }, 60_000);
});

describe('isolation is per pod, not per family', () => {
  const fromNode1Only = ['.........', 'X........', '.........', 'X........', '.........', 'X........', '.........', 'X........', '.........'];

  it('an IPv4-only ipBlock policy isolates x/a: node1\'s pods reach it over IPv4, no one over IPv6 (TCP, UDP, SCTP)', async () => {
    const pols = [policy('x', 'from-cidr-except-node2-v4', podSel('a'), { ingress: [{ from: [{ ipBlock: { cidr: s.clusterCIDR, except: [s.nodes[1].podCIDR] } }] }] })];
    expect(ipBlockCidrs(pols).every((x) => !x.includes(':'))).toBe(true);
    await runCase('IPv4-only ipBlock, IPv6 ingress', async () => [await step('IPv4-only ipBlock, IPv6 ingress', pols, {
      IPv4: [[80, 'TCP', fromNode1Only], [81, 'UDP', fromNode1Only]],
      IPv6: [[80, 'TCP', M.xaDenyAll], [81, 'UDP', M.xaDenyAll], [80, 'SCTP', M.xaDenyAll]],
    })]);
  }, 60_000);

  it('the same ipBlock written in both families (as a dual-stack policy is) gives the same matrix over IPv4 and IPv6', async () => {
    const pols = rewrite([policy('x', 'from-cidr-except-node2-dual', podSel('a'), { ingress: [{ from: [{ ipBlock: { cidr: s.clusterCIDR, except: [s.nodes[1].podCIDR] } }] }] })], 'both');
    await runCase('ipBlocks of both families', async () => [await step('ipBlocks of both families', pols, {
      IPv4: [[80, 'TCP', fromNode1Only]],
      IPv6: [[80, 'TCP', fromNode1Only], [81, 'UDP', fromNode1Only]],
    })]);
  }, 60_000);
});

describe('coverage', () => {
  it('ran every upstream ipBlock case over IPv6, each pair probed for real', () => {
    expect(upstreamIpBlockCases).toBeGreaterThanOrEqual(5);
    expect(caseCount).toBeGreaterThanOrEqual(12);
    expect(pairsProbed.IPv6).toBeGreaterThan(12 * 72);
    expect(pairsProbed.IPv4).toBeGreaterThan(0);
  });
});
