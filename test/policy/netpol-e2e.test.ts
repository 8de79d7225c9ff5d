// Cases of the upstream NetworkPolicy e2e suite (kubernetes test/e2e/network/netpol/
// network_policy.go) over the full x,y,z × a,b,c cluster; the case table and the
// expected matrices are in ./netpol-cases.ts (shared with test/policy-lab/, which runs
// the same cases on a real lab). Every verdict here comes from the compiled tables
// through reachabilityMatrix(), the function `twill policy matrix` uses.
import { describe, expect, it } from 'vitest';
import { PolicyCompiler, compilePolicies } from '../../policy/compile.js';
import type { ClusterModel, Protocol } from '../../policy/model.js';
import { reachabilityMatrix } from '../../policy/matrix.js';
import { PODS, e2eModel, ipOf, policy } from './fixture.js';
import { M, e2eCases } from './netpol-cases.js';

function render(model: ClusterModel, tables = compilePolicies(model), port = 80, protocol: Protocol = 'TCP'): string[] {
  const m = reachabilityMatrix(model, tables, port, protocol);
  expect(m.pods).toEqual(PODS);
  return m.allowed.map((row) => row.map((a) => (a ? '.' : 'X')).join(''));
}

const podSel = (pod: string) => ({ matchLabels: { pod } });
const cases = e2eCases();

describe('upstream NetworkPolicy e2e cases, through the compiled tables', () => {
  for (const c of cases) {
    it(c.name, () => {
      const model = e2eModel(c.policies);
      const tables = compilePolicies(model);
      for (const [port, protocol, expected] of c.probes) {
        expect({ port, protocol, matrix: render(model, tables, port, protocol) }).toEqual({ port, protocol, matrix: expected });
      }
    });
  }
  it('counts at least 30 cases', () => expect(cases.length).toBeGreaterThanOrEqual(30));
});

// Upstream tests that change the cluster between two checks: run through one
// incremental PolicyCompiler, and compare with a fresh compile each time.
describe('upstream cases with updates, through the incremental compiler', () => {
  function step(c: PolicyCompiler, model: ClusterModel, port: number, expected: string[]) {
    expect(render(model, c.compile(model), port)).toEqual(expected);
    expect(render(model, compilePolicies(model), port)).toEqual(expected);
  }

  it('should enforce updated policy (allow-all mutated to deny-all)', () => {
    const c = new PolicyCompiler();
    const model = e2eModel([policy('x', 'allow-all-mutate-to-deny-all', {}, { ingress: [{}] })]);
    step(c, model, 81, M.allTrue);
    model.policies = [policy('x', 'allow-all-mutate-to-deny-all', {}, { ingress: [] })];
    step(c, model, 81, M.denyIngressX);
  });

  it('should allow ingress access from updated namespace', () => {
    const c = new PolicyCompiler();
    const model = e2eModel([policy('x', 'allow-client-a-via-ns-selector', podSel('a'), { ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns2: 'updated' } } }] }] })]);
    step(c, model, 80, M.xaDenyAll);
    model.namespaces = model.namespaces.map((n) => (n.name === 'y' ? { ...n, labels: { ...n.labels, ns2: 'updated' } } : n));
    step(c, model, 80, M.nsYUpdated);
  });

  it('should allow ingress access from updated pod', () => {
    const c = new PolicyCompiler();
    const model = e2eModel([policy('x', 'allow-client-a-via-pod-selector', podSel('a'), { ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b', pod2: 'updated' } } }] }] })]);
    step(c, model, 80, M.xaDenyAll);
    model.pods = model.pods.map((p) => (p.namespace === 'x' && p.name === 'b' ? { ...p, labels: { ...p.labels, pod2: 'updated' } } : p));
    step(c, model, 80, M.xaFromXb);
  });

  it('should deny ingress access to updated pod', () => {
    const c = new PolicyCompiler();
    const model = e2eModel([policy('x', 'deny-ingress-via-label-selector', { matchLabels: { target: 'isolated' } }, { ingress: [] })]);
    step(c, model, 80, M.allTrue);
    model.pods = model.pods.map((p) => (p.namespace === 'x' && p.name === 'a' ? { ...p, labels: { ...p.labels, target: 'isolated' } } : p));
    step(c, model, 80, M.xaDenyAll);
  });

  it('should enforce multiple ingress policies with ingress allow-all policy taking precedence', () => {
    const c = new PolicyCompiler();
    const model = e2eModel([policy('x', 'allow-ingress-port-80', {}, { ingress: [{ ports: [{ port: 80 }] }] })]);
    step(c, model, 81, M.denyIngressX);
    model.policies = [...model.policies, policy('x', 'allow-ingress', {}, { ingress: [{}] })];
    step(c, model, 81, M.allTrue);
  });

  it('should enforce multiple egress policies with egress allow-all policy taking precedence', () => {
    const c = new PolicyCompiler();
    const model = e2eModel([policy('x', 'allow-egress-port-80', {}, { egress: [{ ports: [{ port: 80 }] }] })]);
    step(c, model, 81, M.denyEgressX);
    model.policies = [...model.policies, policy('x', 'allow-egress', {}, { egress: [{}] })];
    step(c, model, 81, M.allTrue);
  });

  it('should stop enforcing policies after they are deleted', () => {
    const c = new PolicyCompiler();
    const model = e2eModel([policy('x', 'deny-all', {}, { ingress: [], egress: [] })]);
    step(c, model, 80, M.denyAllX);
    model.policies = [];
    step(c, model, 80, M.allTrue);
  });

  it('should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed', () => {
    const c = new PolicyCompiler();
    const model = e2eModel([policy('x', 'allow-client-a-via-cidr-egress-rule', podSel('a'), { egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/4', except: [`${ipOf('x', 'b')}/32`] } }] }] })]);
    step(c, model, 80, M.xaNotToXb);
    model.policies = [policy('x', 'allow-client-a-via-cidr-egress-rule', podSel('a'), { egress: [{ to: [{ ipBlock: { cidr: `${ipOf('x', 'b')}/32` } }] }] })];
    step(c, model, 80, M.xaEgressToXbOnly);
  });
});
