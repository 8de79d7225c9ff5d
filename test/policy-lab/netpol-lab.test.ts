// NetworkPolicy acceptance on a real lab: the upstream e2e cluster (namespaces x, y, z;
// pods a, b, c serving 80/81 on TCP, UDP and SCTP) on two nodes, and the upstream
// cases of test/policy/netpol-cases.ts applied one at a time with `lab apply`. Every
// ordered pair is probed with a real connection on each case's port and protocol
// (TCP connect + echo, UDP echo with retries, SCTP INIT as raw IP protocol 132 counted
// by a capture in the destination pod), and the observed matrix must equal upstream's
// expected one. The same expectations must come out of `twill policy matrix --json`
// for the lab's real pods and addresses.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { labDown, labModel, labPolicies, labUp } from '../../lab/lab.js';
import type { LabState } from '../../lab/state.js';
import type { NetworkPolicy, Protocol } from '../../policy/model.js';
import { PODS, policy } from '../policy/fixture.js';
import { M, e2eCases, type Probe } from '../policy/netpol-cases.js';
import { cliRows, diffRows, ensureBuilt, observe, podKey, policiesYaml, policyLabName, Prober, runPolicySteps, tmpDir, upstreamClusterYaml, writeFile } from './helpers.js';

const name = policyLabName();
let s: LabState;
let dir: string;
let prober: Prober | undefined;
const SERVED = new Set(['TCP/80', 'TCP/81', 'UDP/80', 'UDP/81']); // the echo servers of every pod
const served = (proto: Protocol, port: number) => SERVED.has(`${proto}/${port}`);

beforeAll(async () => {
  ensureBuilt();
  dir = tmpDir();
  s = await labUp({ name, nodes: 2, manifests: [writeFile(dir, 'cluster.yaml', upstreamClusterYaml())] });
  prober = await Prober.start(s.pods);
  await prober.waitAllAnswer([[80, 'TCP'], [81, 'TCP'], [80, 'UDP'], [81, 'UDP']]);
}, 240_000);

afterAll(async () => {
  await prober?.close();
  await labDown(name);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const ip = (ns: string, pod: string): string => {
  const p = s.pods.find((x) => x.namespace === ns && x.name === pod);
  if (!p) throw new Error(`no pod ${ns}/${pod} in the lab`);
  return p.ip;
};
const podSel = (pod: string) => ({ matchLabels: { pod } });

let caseCount = 0;
let pairsProbed = 0;

/** Applies `apply`, deletes `remove`, probes, and compares observed and CLI matrices with the expectations; '' when all agree. */
async function step(label: string, apply: NetworkPolicy[], probes: Probe[], remove: NetworkPolicy[] = []): Promise<string> {
  const t0 = performance.now();
  if (apply.length) await labPolicies(name, [writeFile(dir, `${label.replace(/\W+/g, '-').slice(0, 60)}-apply.yaml`, policiesYaml(apply))]);
  if (remove.length) await labPolicies(name, [writeFile(dir, `${label.replace(/\W+/g, '-').slice(0, 60)}-delete.yaml`, policiesYaml(remove))], true);
  const t1 = performance.now();
  const inForce = labModel(name).policies;
  const cli = Promise.all(probes.map(([port, proto]) => cliRows(s, dir, inForce, port, proto, PODS)));
  const { rows, reprobed } = await observe(s, prober!, PODS, probes, served);
  const t2 = performance.now();
  const problems: string[] = [];
  const cliMatrices = await cli;
  if (reprobed) process.stderr.write(`${label}: ${reprobed} cells differed at first and were probed again with a longer timeout\n`);
  if (process.env.TWILL_PL_TIMING) process.stderr.write(`${label}: apply ${(t1 - t0).toFixed(0)} ms, probe ${(t2 - t1).toFixed(0)} ms, cli ${(performance.now() - t1).toFixed(0)} ms\n`);
  probes.forEach(([port, proto, expected], k) => {
    const got = rows[k];
    pairsProbed += PODS.length * (PODS.length - 1);
    const d = diffRows(PODS, got, expected);
    if (d) problems.push(`${label}: ${port}/${proto} probed in the lab differs from upstream:\n${d}`);
    const c = diffRows(PODS, cliMatrices[k], expected);
    if (c) problems.push(`${label}: ${port}/${proto} from \`twill policy matrix --json\` differs from upstream:\n${c}`);
  });
  return problems.join('\n\n');
}

/** Runs a case's steps, then deletes every policy it left, whatever happened. */
async function runCase(_label: string, f: () => Promise<string[]>): Promise<void> {
  caseCount++;
  expect(await runPolicySteps(name, dir, f)).toBe('');
}

describe('the lab', () => {
  it('runs the upstream cluster; the pods sit where the ipBlock cases below assume', () => {
    expect(s.pods.map(podKey)).toEqual(PODS);
    // pods go round-robin over the nodes in manifest order
    const node1 = ['x/a', 'x/c', 'y/b', 'z/a', 'z/c'];
    for (const p of s.pods) {
      const n = node1.includes(podKey(p)) ? 'node1' : 'node2';
      expect(p.node, podKey(p)).toBe(n);
      expect(p.ip.startsWith(n === 'node1' ? '10.244.1.' : '10.244.2.'), `${podKey(p)} ${p.ip}`).toBe(true);
    }
  });

  it('with no policy, every pod reaches every other on 80/81 over TCP, UDP and SCTP', async () => {
    const all = M.allTrue;
    await runCase('no policies', async () => [await step('no policies', [], [[80, 'TCP', all], [81, 'TCP', all], [80, 'UDP', all], [81, 'UDP', all], [80, 'SCTP', all], [81, 'SCTP', all]])]);
  }, 60_000);
});

describe('upstream NetworkPolicy e2e cases in the lab (real probes) and through `twill policy matrix`', () => {
  // names and count at collection time; the policies are rebuilt with the lab's addresses in the test
  const names = e2eCases().map((c, k) => ({ c, k })).filter(({ c }) => !c.fixtureAddressing);
  for (const { c, k } of names) {
    it(c.name, async () => {
      const live = e2eCases(ip)[k];
      await runCase(live.name, async () => [await step(live.name, live.policies, live.probes)]);
    }, 60_000);
  }
});

describe('ipBlock cases over the lab\'s own addresses (expectations derived by hand from the placement checked above)', () => {
  // node1 (10.244.1.0/24): x/a x/c y/b z/a z/c; node2 (10.244.2.0/24): x/b y/a y/c z/b
  it('ingress ipBlock 10.244.0.0/16 except node2\'s pod CIDR: x/a admits node1\'s pods only', async () => {
    const pols = [policy('x', 'from-cidr-except-node2', podSel('a'), { ingress: [{ from: [{ ipBlock: { cidr: '10.244.0.0/16', except: ['10.244.2.0/24'] } }] }] })];
    const want = ['.........', 'X........', '.........', 'X........', '.........', 'X........', '.........', 'X........', '.........'];
    await runCase('ipBlock except subnet', async () => [await step('ipBlock except subnet', pols, [[80, 'TCP', want], [81, 'UDP', want]])]);
  }, 60_000);

  it('egress ipBlock node1\'s pod CIDR except x/c: x/a reaches y/b, z/a, z/c only', async () => {
    const pols = [policy('x', 'to-node1-except-xc', podSel('a'), { egress: [{ to: [{ ipBlock: { cidr: '10.244.1.0/24', except: [`${ip('x', 'c')}/32`] } }] }] })];
    const want = ['.XXX.X.X.', '.........', '.........', '.........', '.........', '.........', '.........', '.........', '.........'];
    await runCase('egress ipBlock except pod', async () => [await step('egress ipBlock except pod', pols, [[80, 'TCP', want], [80, 'SCTP', want]])]);
  }, 60_000);

  it('an ipBlock peer and a podSelector peer in one rule add up: x/a admits z/b (by IP) and x/b (by label)', async () => {
    const pols = [policy('x', 'ipblock-or-pod', podSel('a'), { ingress: [{ from: [{ ipBlock: { cidr: `${ip('z', 'b')}/32` } }, { podSelector: podSel('b') }] }] })];
    const want = ['.........', '.........', 'X........', 'X........', 'X........', 'X........', 'X........', '.........', 'X........'];
    await runCase('ipBlock or podSelector', async () => [await step('ipBlock or podSelector', pols, [[81, 'TCP', want]])]);
  }, 60_000);

  it('UDP-only ingress from node2\'s pod CIDR to every pod of x; TCP stays denied', async () => {
    const pols = [policy('x', 'udp-from-node2', {}, { ingress: [{ from: [{ ipBlock: { cidr: '10.244.2.0/24' } }], ports: [{ protocol: 'UDP', port: 80 }] }] })];
    const udp = ['.XX......', '.........', 'XX.......', '.........', 'XXX......', '.........', 'XXX......', '.........', 'XXX......'];
    await runCase('udp from node2', async () => [await step('udp from node2', pols, [[80, 'UDP', udp], [80, 'TCP', M.denyIngressX]])]);
  }, 60_000);
});

describe('upstream cases that change policies between two checks', () => {
  it('should enforce updated policy (allow-all mutated to deny-all)', async () => {
    await runCase('mutate', async () => [
      await step('allow-all', [policy('x', 'allow-all-mutate-to-deny-all', {}, { ingress: [{}] })], [[81, 'TCP', M.allTrue]]),
      await step('mutated to deny-all', [policy('x', 'allow-all-mutate-to-deny-all', {}, { ingress: [] })], [[81, 'TCP', M.denyIngressX]]),
    ]);
  }, 60_000);

  it('should enforce multiple ingress policies with ingress allow-all policy taking precedence', async () => {
    await runCase('ingress precedence', async () => [
      await step('port 80 only', [policy('x', 'allow-ingress-port-80', {}, { ingress: [{ ports: [{ port: 80 }] }] })], [[81, 'TCP', M.denyIngressX]]),
      await step('plus allow-all', [policy('x', 'allow-ingress', {}, { ingress: [{}] })], [[81, 'TCP', M.allTrue]]),
    ]);
  }, 60_000);

  it('should enforce multiple egress policies with egress allow-all policy taking precedence', async () => {
    await runCase('egress precedence', async () => [
      await step('port 80 only', [policy('x', 'allow-egress-port-80', {}, { egress: [{ ports: [{ port: 80 }] }] })], [[81, 'TCP', M.denyEgressX]]),
      await step('plus allow-all', [policy('x', 'allow-egress', {}, { egress: [{}] })], [[81, 'TCP', M.allTrue]]),
    ]);
  }, 60_000);

  it('should stop enforcing policies after they are deleted', async () => {
    const denyAll = [policy('x', 'deny-all', {}, { ingress: [], egress: [] })];
    await runCase('delete', async () => [
      await step('deny-all', denyAll, [[80, 'TCP', M.denyAllX], [80, 'UDP', M.denyAllX]]),
      await step('deleted', [], [[80, 'TCP', M.allTrue], [80, 'UDP', M.allTrue]], denyAll),
    ]);
  }, 60_000);

  it('should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed (update)', async () => {
    await runCase('ipBlock update', async () => [
      await step('except x/b', [policy('x', 'allow-client-a-via-cidr-egress-rule', podSel('a'), { egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/4', except: [`${ip('x', 'b')}/32`] } }] }] })], [[80, 'TCP', M.xaNotToXb]]),
      await step('x/b only', [policy('x', 'allow-client-a-via-cidr-egress-rule', podSel('a'), { egress: [{ to: [{ ipBlock: { cidr: `${ip('x', 'b')}/32` } }] }] })], [[80, 'TCP', M.xaEgressToXbOnly]]),
    ]);
  }, 60_000);
});

describe('coverage', () => {
  it('ran at least 30 upstream cases, each pair probed for real', () => {
    expect(caseCount).toBeGreaterThanOrEqual(30);
    expect(pairsProbed).toBeGreaterThan(30 * 72);
  });
});
