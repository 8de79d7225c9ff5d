// The upstream NetworkPolicy e2e cases (./netpol-cases.ts) over a dual-stack cluster:
// the same x,y,z × a,b,c pods, each with an IPv4 address (10.244.<ns>.<pod>) and an IPv6
// one (fd00:10:244:<ns>::<pod>). Every verdict comes from the compiled tables through
// reachabilityMatrix() (verdict6() for IPv6), and every cell of both families' matrices is
// checked against the naive reference (./reference.ts), besides upstream's expectations.
//
// Upstream runs the ipBlock cases ("should allow egress access to server in CIDR block",
// "should enforce except clause while egress access to server in CIDR block", "should
// ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed") on an IPv6
// cluster with the pod's /128 and makeLargeCIDRForIP's /4 (f000::/4 around fd00::/8);
// here each case's ipBlocks are re-expressed in IPv6 (cidr6), in both families (the
// way a dual-stack policy is written), or kept in IPv4:
//   - IPv6 ipBlocks: the IPv6 matrix is upstream's; IPv4 traffic matches none of them
//     (but is isolated all the same: isolation is per pod);
//   - both: both matrices are upstream's;
//   - IPv4 ipBlocks: the IPv4 matrix is upstream's; IPv6 traffic matches none of them.
import { describe, expect, it } from 'vitest';
import { PolicyCompiler, compilePolicies } from '../../policy/compile.js';
import type { ClusterModel, NetworkPolicy, NetworkPolicyPeer, Protocol } from '../../policy/model.js';
import { reachabilityMatrix, type IPFamily } from '../../policy/matrix.js';
import type { PolicyTables } from '../../dataplane/tables/policy.js';
import { PODS, e2eModel, ip6Of, ipOf, policy } from './fixture.js';
import { M, e2eCases } from './netpol-cases.js';
import { referenceAllowed } from './reference.js';

const PROTO: Record<Protocol, number> = { TCP: 6, UDP: 17, SCTP: 132 };

/** The fixture's IPv4 CIDRs as their IPv6 counterparts (the same pods in them). */
function cidr6(cidr: string): string {
  const [ip, len] = cidr.split('/');
  if (cidr === '0.0.0.0/4') return 'f000::/4'; // makeLargeCIDRForIP: the /4 holding the pods' fd00::
  const o = ip.split('.').map(Number);
  if (o[0] !== 10 || o[1] !== 244) throw new Error(`no IPv6 counterpart for ${cidr}`);
  if (len === '16') return 'fd00:10:244::/56';
  if (len === '24') return `fd00:10:244:${o[2]}::/64`;
  if (len === '32') return `fd00:10:244:${o[2]}::${o[3]}/128`;
  throw new Error(`no IPv6 counterpart for ${cidr}`);
}

type Mode = 'v6' | 'both' | 'v4';
function rewrite(policies: NetworkPolicy[], mode: Mode): NetworkPolicy[] {
  const peers = (ps: NetworkPolicyPeer[] | undefined): NetworkPolicyPeer[] | undefined =>
    ps?.flatMap((p) => {
      if (!p.ipBlock) return [p];
      const v6: NetworkPolicyPeer = { ipBlock: { cidr: cidr6(p.ipBlock.cidr), ...(p.ipBlock.except ? { except: p.ipBlock.except.map(cidr6) } : {}) } };
      return mode === 'v6' ? [v6] : mode === 'both' ? [p, v6] : [p];
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

function render(model: ClusterModel, tables: PolicyTables, port: number, protocol: Protocol, family: IPFamily): string[] {
  const m = reachabilityMatrix(model, tables, port, protocol, family);
  expect(m.pods).toEqual(PODS);
  return m.allowed.map((row) => row.map((a) => (a ? '.' : 'X')).join(''));
}

/** The matrix the reference gives, for the family's addresses. */
function reference(model: ClusterModel, port: number, protocol: Protocol, family: IPFamily): string[] {
  const addr = PODS.map((k) => {
    const [ns, pod] = k.split('/');
    return family === 'IPv6' ? ip6Of(ns, pod) : ipOf(ns, pod);
  });
  return addr.map((s) => addr.map((d) => (referenceAllowed(model, s, d, PROTO[protocol], port) ? '.' : 'X')).join(''));
}

const cases = e2eCases();

describe('upstream NetworkPolicy e2e cases on a dual-stack cluster, through verdict() and verdict6()', () => {
  for (const c of cases) {
    const modes: Mode[] = hasIpBlock(c.policies) ? ['v6', 'both', 'v4'] : ['v6'];
    for (const mode of modes) {
      const label = hasIpBlock(c.policies) ? ` [ipBlocks ${mode === 'v6' ? 'IPv6' : mode === 'v4' ? 'IPv4' : 'of both families'}]` : '';
      it(`${c.name}${label}`, () => {
        const model = e2eModel(rewrite(c.policies, mode), { dualStack: true });
        const tables = compilePolicies(model);
        for (const [port, protocol, expected] of c.probes) {
          const six = render(model, tables, port, protocol, 'IPv6');
          const four = render(model, tables, port, protocol, 'IPv4');
          // upstream's expectation, in the family (or families) the ipBlocks are of
          if (mode !== 'v4') expect({ port, protocol, family: 'IPv6', matrix: six }).toEqual({ port, protocol, family: 'IPv6', matrix: expected });
          if (mode !== 'v6' || !hasIpBlock(c.policies)) expect({ port, protocol, family: 'IPv4', matrix: four }).toEqual({ port, protocol, family: 'IPv4', matrix: expected });
          // every cell of both, against the reference
          expect({ port, protocol, family: 'IPv6', matrix: six }).toEqual({ port, protocol, family: 'IPv6', matrix: reference(model, port, protocol, 'IPv6') });
          expect({ port, protocol, family: 'IPv4', matrix: four }).toEqual({ port, protocol, family: 'IPv4', matrix: reference(model, port, protocol, 'IPv4') });
        }
      });
    }
  }

  it('an ipBlock of one family matches no peer of the other: upstream\'s CIDR case, row x/a', () => {
    // x/a's egress: only y/b's /128. Over IPv4 x/a is isolated for egress and reaches no one.
    const [c] = cases.filter((x) => x.name === 'should allow egress access to server in CIDR block');
    const model = e2eModel(rewrite(c.policies, 'v6'), { dualStack: true });
    const t = compilePolicies(model);
    expect(render(model, t, 80, 'TCP', 'IPv6')).toEqual(M.xaEgressToYbOnly);
    expect(render(model, t, 80, 'TCP', 'IPv4')).toEqual(M.xaEgressDeny);
  });

  it('counts the ipBlock cases run in IPv6', () => {
    expect(cases.filter((c) => hasIpBlock(c.policies)).length).toBeGreaterThanOrEqual(5);
  });
});

// Upstream's update of an ipBlock policy, and the lab's own ipBlock cases
// (test/policy-lab/netpol-lab.test.ts), over the fixture's IPv6 addresses, through one
// incremental PolicyCompiler and a fresh compile each time.
describe('IPv6 ipBlock cases with updates, through the incremental compiler', () => {
  const podSel = (pod: string) => ({ matchLabels: { pod } });
  function step(c: PolicyCompiler, model: ClusterModel, port: number, protocol: Protocol, expected6: string[]) {
    for (const t of [c.compile(model), compilePolicies(model)]) {
      expect(render(model, t, port, protocol, 'IPv6')).toEqual(expected6);
      expect(render(model, t, port, protocol, 'IPv6')).toEqual(reference(model, port, protocol, 'IPv6'));
      expect(render(model, t, port, protocol, 'IPv4')).toEqual(reference(model, port, protocol, 'IPv4'));
    }
  }

  it('should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed (IPv6)', () => {
    const c = new PolicyCompiler();
    const model = e2eModel([policy('x', 'allow-client-a-via-cidr-egress-rule', podSel('a'), { egress: [{ to: [{ ipBlock: { cidr: 'f000::/4', except: [`${ip6Of('x', 'b')}/128`] } }] }] })], { dualStack: true });
    step(c, model, 80, 'TCP', M.xaNotToXb);
    model.policies = [policy('x', 'allow-client-a-via-cidr-egress-rule', podSel('a'), { egress: [{ to: [{ ipBlock: { cidr: `${ip6Of('x', 'b')}/128` } }] }] })];
    step(c, model, 80, 'TCP', M.xaEgressToXbOnly);
  });

  it('ingress ipBlock of the cluster range except ns y\'s /64: x/a admits x and z only', () => {
    const c = new PolicyCompiler();
    const model = e2eModel([policy('x', 'from-cidr-except-y', podSel('a'), { ingress: [{ from: [{ ipBlock: { cidr: 'fd00:10:244::/56', except: ['fd00:10:244:2::/64'] } }] }] })], { dualStack: true });
    const want = ['.........', '.........', '.........', 'X........', 'X........', 'X........', '.........', '.........', '.........'];
    step(c, model, 80, 'TCP', want);
    step(c, model, 81, 'UDP', want);
  });

  it('egress ipBlock of ns x\'s /64 except x/c: x/a reaches x/b only (and itself)', () => {
    const c = new PolicyCompiler();
    const model = e2eModel([policy('x', 'to-x-except-xc', podSel('a'), { egress: [{ to: [{ ipBlock: { cidr: 'fd00:10:244:1::/64', except: [`${ip6Of('x', 'c')}/128`] } }] }] })], { dualStack: true });
    const want = ['..XXXXXXX', ...M.allTrue.slice(1)];
    step(c, model, 80, 'TCP', want);
    step(c, model, 80, 'SCTP', want);
  });

  it('an ipBlock peer and a podSelector peer in one rule add up: x/a admits z/b (by IPv6 address) and x/b (by label)', () => {
    const c = new PolicyCompiler();
    const model = e2eModel([policy('x', 'ipblock-or-pod', podSel('a'), { ingress: [{ from: [{ ipBlock: { cidr: `${ip6Of('z', 'b')}/128` } }, { podSelector: podSel('b') }] }] })], { dualStack: true });
    const want = ['.........', '.........', 'X........', 'X........', 'X........', 'X........', 'X........', '.........', 'X........'];
    step(c, model, 81, 'TCP', want);
  });

  it('a pod moving into and out of an IPv6 ipBlock, and losing its IPv6 address', () => {
    const c = new PolicyCompiler();
    const model = e2eModel([policy('x', 'from-z-64', podSel('a'), { ingress: [{ from: [{ ipBlock: { cidr: 'fd00:10:244:3::/64' } }] }] })], { dualStack: true });
    const fromZ = ['.........', 'X........', 'X........', 'X........', 'X........', 'X........', '.........', '.........', '.........'];
    step(c, model, 80, 'TCP', fromZ);
    // y/b renumbered into z's /64
    model.pods = model.pods.map((p) => (p.namespace === 'y' && p.name === 'b' ? { ...p, ip6: 'fd00:10:244:3::99' } : p));
    const withYb = fromZ.map((r, i) => (i === 4 ? '.' + r.slice(1) : r));
    expect(render(model, c.compile(model), 80, 'TCP', 'IPv6')).toEqual(withYb);
    expect(render(model, compilePolicies(model), 80, 'TCP', 'IPv6')).toEqual(withYb);
    // z/c single-stack IPv4 now: it leaves the IPv6 matrix; x/a stays isolated over IPv4 too
    model.pods = model.pods.map((p) => (p.namespace === 'z' && p.name === 'c' ? { ...p, ip6: undefined } : p));
    const t = c.compile(model);
    const m = reachabilityMatrix(model, t, 80, 'TCP', 'IPv6');
    expect(m.pods).toEqual(PODS.filter((k) => k !== 'z/c'));
    const fresh = reachabilityMatrix(model, compilePolicies(model), 80, 'TCP', 'IPv6');
    expect(m.allowed).toEqual(fresh.allowed);
    expect(render(model, t, 80, 'TCP', 'IPv4')).toEqual(M.xaDenyAll);
  });
});
