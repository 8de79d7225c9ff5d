// Cases of the upstream NetworkPolicy e2e suite (kubernetes test/e2e/network/netpol/
// network_policy.go) over the full x,y,z × a,b,c cluster, shared by the compiled-table
// test (test/policy/netpol-e2e.test.ts) and the lab test (test/policy-lab/). The
// expected matrices are transcribed from upstream's Reachability expectations
// (ExpectPeer / ExpectAllIngress / ExpectAllEgress applied to all nine pods; the
// diagonal is "allowed": a pod reaching itself always is). Rows = source pod, columns =
// destination, order x/a x/b x/c y/a y/b y/c z/a z/b z/c; '.' allowed, 'X' denied.
import type { NetworkPolicy, Protocol } from '../../policy/model.js';
import { ipOf as fixtureIpOf, policy } from './fixture.js';

export const M = {
  denyIngressX: [
    '.XX......',
    'X.X......',
    'XX.......',
    'XXX......',
    'XXX......',
    'XXX......',
    'XXX......',
    'XXX......',
    'XXX......',
  ],
  denyAllX: [
    '.XXXXXXXX',
    'X.XXXXXXX',
    'XX.XXXXXX',
    'XXX......',
    'XXX......',
    'XXX......',
    'XXX......',
    'XXX......',
    'XXX......',
  ],
  xaFromXb: [
    '.........',
    '.........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
  ],
  targetAllowXa: [
    '.XX......',
    '..X......',
    '.X.......',
    '.XX......',
    '.XX......',
    '.XX......',
    '.XX......',
    '.XX......',
    '.XX......',
  ],
  allTrue: [
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
  ],
  xaFromNsY: [
    '.........',
    'X........',
    'X........',
    '.........',
    '.........',
    '.........',
    'X........',
    'X........',
    'X........',
  ],
  xaFromNotXorB: [
    '.........',
    '.........',
    'X........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
  ],
  xaFromNotXandB: [
    '.........',
    'X........',
    'X........',
    'X........',
    '.........',
    'X........',
    'X........',
    '.........',
    'X........',
  ],
  xaFromNotXandBC: [
    '.........',
    'X........',
    'X........',
    'X........',
    '.........',
    '.........',
    'X........',
    '.........',
    '.........',
  ],
  xaFromXbOrXc: [
    '.........',
    '.........',
    '.........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
  ],
  xaFromYa: [
    '.........',
    'X........',
    'X........',
    '.........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
  ],
  xaDenyAll: [
    '.........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
  ],
  xaFromY: [
    '.........',
    'X........',
    'X........',
    '.........',
    '.........',
    '.........',
    'X........',
    'X........',
    'X........',
  ],
  denyEgressX: [
    '.XXXXXXXX',
    'X.XXXXXXX',
    'XX.XXXXXX',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
  ],
  nsYUpdated: [
    '.........',
    'X........',
    'X........',
    '.........',
    '.........',
    '.........',
    'X........',
    'X........',
    'X........',
  ],
  xFromXOnly: [
    '.........',
    '.........',
    '.........',
    'XXX......',
    'XXX......',
    'XXX......',
    'XXX......',
    'XXX......',
    'XXX......',
  ],
  xaEgressDeny: [
    '.XXXXXXXX',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
  ],
  xaIngressXbEgressDeny: [
    '.XXXXXXXX',
    '.........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
  ],
  clientSideDeny: [
    '.XX.XXXXX',
    '...XX....',
    '...XX....',
    '....X....',
    '...X.....',
    '...XX....',
    '...XX....',
    '...XX....',
    '...XX....',
  ],
  xaEgressToYaOnly: [
    '.XX.XXXXX',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
  ],
  xaEgressToYbOnly: [
    '.XXX.XXXX',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
  ],
  xaEgressToXbOnly: [
    '..XXXXXXX',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
  ],
  xaNotToXb: [
    '.X.......',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
  ],
  xaNotToY: [
    '...XXX...',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
  ],
  xaFromXOnly: [
    '.........',
    '.........',
    '.........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
  ],
  egressXaToYOnly: [
    '.XX...XXX',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
    '.........',
  ],
  xaIngressXbEgressDenyNoXb: [
    '.XXXXXXXX',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
  ],
  xaFromXc: [
    '.........',
    'X........',
    '.........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
    'X........',
  ],
};

export type Probe = [port: number, protocol: Protocol, expected: string[]];
export interface Case {
  name: string;
  policies: NetworkPolicy[];
  probes: Probe[];
  /** The expectations hold only for the fixture's addresses (ipOf): a subnet of the fixture's layout is in an ipBlock. */
  fixtureAddressing?: true;
}

const all = {};
const podSel = (pod: string) => ({ matchLabels: { pod } });
const nsSel = (ns: string) => ({ matchLabels: { ns } });
const nsName = (ns: string) => ({ matchLabels: { 'kubernetes.io/metadata.name': ns } });
const tcp = (port: number | string) => ({ protocol: 'TCP' as const, port });

/** The cases; ipOf(ns, pod) gives the pod addresses ipBlock cases name (the fixture's by default). */
export function e2eCases(ipOf: (ns: string, pod: string) => string = fixtureIpOf): Case[] {
  return [
    { name: "should support a 'default-deny-ingress' policy", policies: [policy('x', 'deny-ingress', all, { ingress: [] })], probes: [[80, 'TCP', M.denyIngressX]] },
    { name: "should support a 'default-deny-all' policy", policies: [policy('x', 'deny-all', all, { ingress: [], egress: [] })], probes: [[80, 'TCP', M.denyAllX]] },
    {
      name: 'should enforce policy to allow traffic from pods within server namespace based on PodSelector',
      policies: [policy('x', 'x-a-allows-x-b', podSel('a'), { ingress: [{ from: [{ podSelector: podSel('b') }] }] })],
      probes: [[80, 'TCP', M.xaFromXb]],
    },
    {
      name: 'should enforce policy to allow ingress traffic for a target',
      policies: [
        policy('x', 'deny-all', all, { ingress: [] }),
        policy('x', 'allow-all-to-a', podSel('a'), { ingress: [{ from: [{ podSelector: {}, namespaceSelector: {} }] }] }),
      ],
      probes: [[80, 'TCP', M.targetAllowXa]],
    },
    {
      name: 'should enforce policy to allow ingress traffic from pods in all namespaces',
      policies: [policy('x', 'allow-from-another-ns', podSel('a'), { ingress: [{ from: [{ namespaceSelector: { matchLabels: {} } }] }] })],
      probes: [[80, 'TCP', M.allTrue]],
    },
    {
      name: 'should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector',
      policies: [policy('x', 'allow-client-a-via-ns-selector', podSel('a'), { ingress: [{ from: [{ namespaceSelector: nsSel('y') }] }] })],
      probes: [[80, 'TCP', M.xaFromNsY]],
    },
    {
      name: 'should enforce policy based on PodSelector with MatchExpressions',
      policies: [policy('x', 'x-a-allows-x-b', podSel('a'), { ingress: [{ from: [{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['b'] }] } }] }] })],
      probes: [[80, 'TCP', M.xaFromXb]],
    },
    {
      name: 'should enforce policy based on NamespaceSelector with MatchExpressions',
      policies: [policy('x', 'allow-ns-y-match-selector', podSel('a'), { ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'In', values: ['y'] }] } }] }] })],
      probes: [[80, 'TCP', M.xaFromNsY]],
    },
    {
      name: 'should enforce policy based on PodSelector or NamespaceSelector',
      policies: [
        policy('x', 'allow-ns-y-match-selector', podSel('a'), {
          ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'NotIn', values: ['x'] }] } }, { podSelector: podSel('b') }] }],
        }),
      ],
      probes: [[80, 'TCP', M.xaFromNotXorB]],
    },
    {
      name: 'should enforce policy based on PodSelector and NamespaceSelector',
      policies: [
        policy('x', 'allow-ns-y-podselector-and-nsselector', podSel('a'), {
          ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'NotIn', values: ['x'] }] }, podSelector: podSel('b') }] }],
        }),
      ],
      probes: [[80, 'TCP', M.xaFromNotXandB]],
    },
    {
      name: 'should enforce policy based on Multiple PodSelectors and NamespaceSelectors',
      policies: [
        policy('x', 'allow-ns-y-z-pod-b-c', podSel('a'), {
          ingress: [{
            from: [{
              namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'NotIn', values: ['x'] }] },
              podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['b', 'c'] }] },
            }],
          }],
        }),
      ],
      probes: [[80, 'TCP', M.xaFromNotXandBC]],
    },
    {
      name: 'should enforce policy based on any PodSelectors',
      policies: [policy('x', 'allow-ns-x-pod-b-c', podSel('a'), { ingress: [{ from: [{ podSelector: podSel('b') }, { podSelector: podSel('c') }] }] })],
      probes: [[80, 'TCP', M.xaFromXbOrXc]],
    },
    {
      name: 'should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector',
      policies: [policy('x', 'allow-ns-y-pod-a', podSel('a'), { ingress: [{ from: [{ namespaceSelector: nsSel('y'), podSelector: podSel('a') }] }] })],
      probes: [[80, 'TCP', M.xaFromYa]],
    },
    {
      name: 'should enforce policy based on Ports',
      policies: [policy('x', 'allow-client-a-via-ns-selector', podSel('a'), { ingress: [{ from: [{ namespaceSelector: nsSel('y') }], ports: [tcp(81)] }] })],
      probes: [[81, 'TCP', M.xaFromY], [80, 'TCP', M.xaDenyAll]],
    },
    {
      name: 'should enforce multiple, stacked policies with overlapping podSelectors',
      policies: [
        policy('x', 'allow-client-a-via-ns-selector', podSel('a'), { ingress: [{ from: [{ namespaceSelector: nsSel('y') }], ports: [tcp(81)] }] }),
        policy('x', 'allow-client-a-via-ns-selector-80', podSel('a'), { ingress: [{ from: [{ namespaceSelector: nsSel('y') }], ports: [tcp(80)] }] }),
      ],
      probes: [[81, 'TCP', M.xaFromY], [80, 'TCP', M.xaFromY]],
    },
    {
      name: 'should support allow-all policy',
      policies: [policy('x', 'allow-all', {}, { ingress: [{}] })],
      probes: [[80, 'TCP', M.allTrue], [81, 'TCP', M.allTrue]],
    },
    {
      name: 'should allow ingress access on one named port',
      policies: [policy('x', 'allow-all', {}, { ingress: [{ ports: [{ port: 'serve-81-tcp' }] }] })],
      probes: [[81, 'TCP', M.allTrue], [80, 'TCP', M.denyIngressX]],
    },
    {
      name: 'should allow ingress access from namespace on one named port',
      policies: [policy('x', 'allow-client-a-via-ns-selector-80', podSel('a'), { ingress: [{ from: [{ namespaceSelector: nsSel('y') }], ports: [tcp('serve-80-tcp')] }] })],
      probes: [[80, 'TCP', M.xaFromNsY], [81, 'TCP', M.xaDenyAll]],
    },
    {
      name: 'should allow egress access on one named port',
      policies: [policy('x', 'allow-egress', {}, { egress: [{ ports: [{ port: 'serve-80-tcp' }] }] })],
      probes: [[80, 'TCP', M.allTrue], [81, 'TCP', M.denyEgressX]],
    },
    {
      name: 'should deny ingress from pods on other namespaces',
      policies: [policy('x', 'deny-empty-policy', {}, { ingress: [{ from: [{ podSelector: { matchLabels: {} } }] }] })],
      probes: [[80, 'TCP', M.xFromXOnly]],
    },
    {
      name: 'should deny egress from pods based on PodSelector',
      policies: [policy('x', 'deny-egress-pod-a', podSel('a'), { egress: [] })],
      probes: [[80, 'TCP', M.xaEgressDeny]],
    },
    {
      name: 'should deny egress from all pods in a namespace',
      policies: [policy('x', 'deny-egress-ns-x', {}, { egress: [] })],
      probes: [[80, 'TCP', M.denyEgressX]],
    },
    {
      name: 'should work with Ingress, Egress specified together',
      policies: [{
        namespace: 'x',
        name: 'allow-client-a-via-pod-selector',
        spec: { podSelector: podSel('a'), ingress: [{ from: [{ podSelector: podSel('b') }] }], egress: [{ ports: [{ port: 80 }] }], policyTypes: ['Egress', 'Ingress'] },
      }],
      probes: [[80, 'TCP', M.xaFromXb], [81, 'TCP', M.xaIngressXbEgressDeny]],
    },
    {
      name: 'should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)',
      policies: [
        policy('x', 'allow-to-ns-y-pod-a', podSel('a'), { egress: [{ to: [{ namespaceSelector: nsName('y'), podSelector: podSel('a') }] }] }),
        policy('y', 'allow-from-xa-on-ya-match-selector', podSel('a'), { ingress: [{ from: [{ namespaceSelector: nsName('x'), podSelector: podSel('a') }] }] }),
        policy('y', 'allow-from-xa-on-yb-match-selector', podSel('b'), { ingress: [{ from: [{ namespaceSelector: nsName('x'), podSelector: podSel('a') }] }] }),
      ],
      probes: [[80, 'TCP', M.clientSideDeny]],
    },
    {
      name: 'should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector',
      policies: [policy('x', 'allow-to-ns-y-pod-a', podSel('a'), { egress: [{ to: [{ namespaceSelector: nsName('y'), podSelector: podSel('a') }] }] })],
      probes: [[80, 'TCP', M.xaEgressToYaOnly]],
    },
    {
      name: 'should enforce ingress policy allowing any port traffic to a server on a specific protocol',
      policies: [policy('x', 'allow-ingress-by-proto', podSel('a'), { ingress: [{ ports: [{ protocol: 'TCP' }] }] })],
      probes: [[80, 'TCP', M.allTrue], [80, 'UDP', M.xaDenyAll]],
    },
    {
      name: 'should allow egress access to server in CIDR block',
      policies: [policy('x', 'allow-client-a-via-cidr-egress-rule', podSel('a'), { egress: [{ to: [{ ipBlock: { cidr: `${ipOf('y', 'b')}/32` } }] }] })],
      probes: [[80, 'TCP', M.xaEgressToYbOnly]],
    },
    {
      // makeLargeCIDRForIP: the /4 around the pod's IP
      name: 'should enforce except clause while egress access to server in CIDR block',
      policies: [policy('x', 'allow-client-a-via-cidr-egress-rule', podSel('a'), { egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/4', except: [`${ipOf('x', 'b')}/32`] } }] }] })],
      probes: [[80, 'TCP', M.xaNotToXb]],
    },
    {
      // upstream's second step re-uses the policy name, so it replaces the first policy
      name: 'should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed (after the update)',
      policies: [policy('x', 'allow-client-a-via-cidr-egress-rule', podSel('a'), { egress: [{ to: [{ ipBlock: { cidr: `${ipOf('x', 'b')}/32` } }] }] })],
      probes: [[80, 'TCP', M.xaEgressToXbOnly]],
    },
    {
      name: 'ipBlock with except in one policy and the excepted IP allowed by another: the policies add up',
      policies: [
        policy('x', 'allow-large-cidr-except-xb', podSel('a'), { egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/4', except: [`${ipOf('x', 'b')}/32`] } }] }] }),
        policy('x', 'allow-xb', podSel('a'), { egress: [{ to: [{ ipBlock: { cidr: `${ipOf('x', 'b')}/32` } }] }] }),
      ],
      probes: [[80, 'TCP', M.allTrue]],
    },
    {
      name: 'ingress ipBlock with except (applies to pod IPs too)',
      fixtureAddressing: true,
      policies: [policy('x', 'from-cidr', podSel('a'), { ingress: [{ from: [{ ipBlock: { cidr: '10.244.0.0/16', except: ['10.244.2.0/24', '10.244.3.0/24'] } }] }] })],
      probes: [[80, 'TCP', M.xaFromXOnly]],
    },
    {
      name: 'should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector',
      policies: [
        policy('x', 'allow-egress-for-target', podSel('a'), { egress: [{}] }),
        policy('x', 'deny-ingress-via-label-selector', podSel('a'), { ingress: [] }),
      ],
      probes: [[80, 'TCP', M.xaDenyAll]],
    },
    {
      name: "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
      policies: [
        policy('x', 'deny-ingress', {}, { ingress: [] }),
        policy('x', 'allow-only-sctp-ingress-on-port-81', podSel('a'), { ingress: [{ ports: [{ protocol: 'SCTP', port: 81 }] }] }),
      ],
      probes: [[81, 'TCP', M.denyIngressX], [81, 'SCTP', M.targetAllowXa]],
    },
    {
      name: "should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP",
      policies: [policy('x', 'allow-only-sctp-ingress-on-port-80', podSel('a'), { ingress: [{ ports: [{ protocol: 'SCTP', port: 80 }] }] })],
      probes: [[81, 'TCP', M.xaDenyAll], [80, 'SCTP', M.allTrue]],
    },
    {
      name: 'should not allow access by TCP when a policy specifies only UDP',
      policies: [policy('x', 'allow-only-udp-ingress-on-port-81', podSel('a'), { ingress: [{ ports: [{ protocol: 'UDP', port: 81 }] }] })],
      probes: [[81, 'TCP', M.xaDenyAll], [81, 'UDP', M.allTrue]],
    },
    {
      name: 'should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label',
      policies: [policy('x', 'allow-client-a-via-ns-selector-for-immutable-ns-label', podSel('a'), { ingress: [{ from: [{ namespaceSelector: nsName('y') }] }] })],
      probes: [[80, 'TCP', M.xaFromNsY]],
    },
    {
      name: 'should enforce policy based on NamespaceSelector with MatchExpressions using default ns label',
      policies: [
        policy('x', 'allow-ns-y-match-selector-for-immutable-ns-label', podSel('a'), {
          egress: [{ to: [{ namespaceSelector: { matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: ['y'] }] } }] }],
        }),
      ],
      probes: [[80, 'TCP', M.xaNotToY]],
    },
    { name: "UDP: should support a 'default-deny-ingress' policy", policies: [policy('x', 'deny-all', {}, { ingress: [] })], probes: [[80, 'UDP', M.denyIngressX]] },
    {
      name: 'UDP: should enforce policy based on Ports',
      policies: [policy('x', 'allow-ingress-on-port-81-ns-x', podSel('a'), { ingress: [{ from: [{ namespaceSelector: nsSel('y') }], ports: [{ protocol: 'UDP', port: 81 }] }] })],
      probes: [[81, 'UDP', M.xaFromNsY], [81, 'TCP', M.xaDenyAll]],
    },
    {
      name: 'UDP: should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector',
      policies: [policy('x', 'allow-ns-y-pod-a', podSel('a'), { ingress: [{ from: [{ namespaceSelector: nsSel('y'), podSelector: podSel('a') }] }] })],
      probes: [[80, 'UDP', M.xaFromYa]],
    },
    { name: "SCTP: should support a 'default-deny-ingress' policy", policies: [policy('x', 'deny-all', {}, { ingress: [] })], probes: [[80, 'SCTP', M.denyIngressX]] },
    {
      name: 'SCTP: should enforce policy based on Ports',
      policies: [policy('x', 'allow-ingress-on-port-81-ns-x', podSel('a'), { ingress: [{ from: [{ namespaceSelector: nsSel('y') }], ports: [{ protocol: 'SCTP', port: 81 }] }] })],
      probes: [[81, 'SCTP', M.xaFromNsY], [81, 'UDP', M.xaDenyAll]],
    },
    {
      name: 'SCTP: should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector',
      policies: [policy('x', 'allow-ns-y-pod-a', podSel('a'), { ingress: [{ from: [{ namespaceSelector: nsSel('y'), podSelector: podSel('a') }] }] })],
      probes: [[80, 'SCTP', M.xaFromYa]],
    },
    {
      name: 'endPort: should allow ingress access on a range of ports from a namespace',
      policies: [policy('x', 'allow-80-81-from-y', podSel('a'), { ingress: [{ from: [{ namespaceSelector: nsSel('y') }], ports: [{ protocol: 'TCP', port: 80, endPort: 81 }] }] })],
      probes: [[80, 'TCP', M.xaFromY], [81, 'TCP', M.xaFromY], [82, 'TCP', M.xaDenyAll], [79, 'TCP', M.xaDenyAll]],
    },
    {
      name: 'endPort: egress to a range of ports',
      policies: [policy('x', 'egress-81-90', {}, { egress: [{ ports: [{ port: 81, endPort: 90 }] }] })],
      probes: [[80, 'TCP', M.denyEgressX], [81, 'TCP', M.allTrue], [90, 'TCP', M.allTrue], [91, 'TCP', M.denyEgressX]],
    },
    {
      name: 'matchExpressions Exists: from every pod with a pod label in the namespace',
      policies: [policy('x', 'exists', podSel('a'), { ingress: [{ from: [{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'Exists' }] } }] }] })],
      probes: [[80, 'TCP', M.xaFromXOnly]],
    },
    {
      name: 'matchExpressions DoesNotExist: selects no peer',
      policies: [policy('x', 'does-not-exist', podSel('a'), { ingress: [{ from: [{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'DoesNotExist' }] } }] }] })],
      probes: [[80, 'TCP', M.xaDenyAll]],
    },
    {
      name: 'matchExpressions NotIn on the target pod selector and on peers',
      policies: [
        policy('x', 'not-in', { matchExpressions: [{ key: 'pod', operator: 'NotIn', values: ['b', 'c'] }] }, {
          ingress: [{ from: [{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'NotIn', values: ['a', 'b'] }] } }] }],
        }),
      ],
      probes: [[80, 'TCP', M.xaFromXc]],
    },
    {
      name: 'egress to a namespace, with ports',
      policies: [policy('x', 'egress-to-y-80', podSel('a'), { egress: [{ to: [{ namespaceSelector: nsSel('y') }], ports: [tcp(80)] }] })],
      probes: [[80, 'TCP', M.egressXaToYOnly], [81, 'TCP', M.xaEgressDeny]],
    },
    {
      name: 'a named port the destination lacks (wrong protocol) matches nothing',
      policies: [policy('x', 'named-udp-as-tcp', podSel('a'), { ingress: [{ ports: [{ protocol: 'TCP', port: 'serve-80-udp' }] }] })],
      probes: [[80, 'TCP', M.xaDenyAll], [80, 'UDP', M.xaDenyAll]],
    },
    {
      name: 'policyTypes Egress only ignores the ingress rules of the policy',
      policies: [{ namespace: 'x', name: 'egress-only', spec: { podSelector: podSel('a'), ingress: [], egress: [{}], policyTypes: ['Egress'] } }],
      probes: [[80, 'TCP', M.allTrue]],
    },
    {
      name: 'policyTypes defaulting: no policyTypes and an egress section isolates both directions',
      policies: [{ namespace: 'x', name: 'defaulted', spec: { podSelector: podSel('a'), egress: [{ ports: [{ port: 81 }] }] } }],
      probes: [[80, 'TCP', M.xaIngressXbEgressDenyNoXb], [81, 'TCP', M.xaDenyAll]],
    },
    {
      name: 'policyTypes defaulting: "egress: []" without policyTypes isolates ingress only',
      policies: [{ namespace: 'x', name: 'defaulted-empty-egress', spec: { podSelector: podSel('a'), egress: [] } }],
      probes: [[80, 'TCP', M.xaDenyAll]],
    },
    {
      name: 'an empty from list allows every source ("from: []")',
      policies: [policy('x', 'empty-from', {}, { ingress: [{ from: [], ports: [tcp(80)] }] })],
      probes: [[80, 'TCP', M.allTrue], [81, 'TCP', M.denyIngressX]],
    },
  ];
}
