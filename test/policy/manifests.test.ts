import { describe, expect, it } from 'vitest';
import { ManifestError, modelFromYaml } from '../../policy/manifests.js';

const np = (spec: string, name = 'deny', ns = 'x') => `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ${name}, namespace: ${ns}}
spec:
${spec}`;

function problems(yaml: string): string[] {
  try {
    modelFromYaml(yaml);
  } catch (e) {
    expect(e).toBeInstanceOf(ManifestError);
    return (e as ManifestError).problems;
  }
  throw new Error('expected a ManifestError');
}

describe('manifests', () => {
  it('reads multi-document YAML and kind: List, with namespace name labels and node IPs', () => {
    const m = modelFromYaml(`apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: x, labels: {ns: x}}}
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: x, labels: {pod: a}}
  spec: {containers: [{name: c, ports: [{name: http, containerPort: 80}, {containerPort: 53, protocol: UDP}]}]}
  status: {podIP: 10.244.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: h, namespace: y}
spec: {hostNetwork: true, containers: [{name: c}]}
status: {podIP: 10.0.0.9}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 10.0.0.9}, {type: Hostname, address: n1}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
---
${np('  podSelector: {}\n  policyTypes: [Ingress]')}
`);
    expect(m.namespaces).toEqual([
      { name: 'x', labels: { ns: 'x', 'kubernetes.io/metadata.name': 'x' } },
      { name: 'y', labels: { 'kubernetes.io/metadata.name': 'y' } },
    ]);
    expect(m.pods[0]).toEqual({
      namespace: 'x', name: 'a', labels: { pod: 'a' }, ip: '10.244.1.1',
      containerPorts: [{ name: 'http', containerPort: 80, protocol: 'TCP' }, { containerPort: 53, protocol: 'UDP' }],
    });
    expect(m.pods[1].ip).toBeUndefined(); // host network: not subject to policy
    expect(m.nodeIps).toEqual(['10.0.0.9']);
    expect(m.policies).toEqual([{ namespace: 'x', name: 'deny', spec: { podSelector: {}, policyTypes: ['Ingress'] } }]);
  });

  it('reads both families of status.podIPs: dual stack, IPv6-only (status.podIP IPv6), and nodes\' IPv6 addresses', () => {
    const m = modelFromYaml(`apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: dual, namespace: x}
  status: {podIP: 10.244.1.5, podIPs: [{ip: 10.244.1.5}, {ip: "fd00:10:244:1::5"}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: dual6first, namespace: x}
  status: {podIP: "fd00:10:244:1::6", podIPs: [{ip: "fd00:10:244:1::6"}, {ip: 10.244.1.6}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: only6, namespace: x}
  status: {podIP: "fd00:10:244:2::7", podIPs: [{ip: "fd00:10:244:2::7"}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: podip6, namespace: x}
  status: {podIP: "fd00:10:244:2::8"}
- apiVersion: v1
  kind: Pod
  metadata: {name: host, namespace: x}
  spec: {hostNetwork: true}
  status: {podIP: 172.18.0.2, podIPs: [{ip: 172.18.0.2}, {ip: "fc00:f853:ccd:e793::2"}]}
- apiVersion: v1
  kind: Node
  metadata: {name: n1}
  status: {addresses: [{type: InternalIP, address: 172.18.0.2}, {type: InternalIP, address: "fc00:f853:ccd:e793::2"}, {type: Hostname, address: n1}]}
`);
    expect(m.pods.map((p) => [p.name, p.ip, p.ip6])).toEqual([
      ['dual', '10.244.1.5', 'fd00:10:244:1::5'],
      ['dual6first', '10.244.1.6', 'fd00:10:244:1::6'],
      ['only6', undefined, 'fd00:10:244:2::7'],
      ['podip6', undefined, 'fd00:10:244:2::8'],
      ['host', undefined, undefined],
    ]);
    expect(m.nodeIps).toEqual(['172.18.0.2', 'fc00:f853:ccd:e793::2']);
  });

  const invalid: [string, string, string][] = [
    ['bad port number', '  podSelector: {}\n  ingress:\n  - ports: [{port: 80}, {port: 70000}]', 'NetworkPolicy x/deny: spec.ingress[0].ports[1].port: must be 1-65535 or an IANA_SVC_NAME'],
    ['bad port name', '  podSelector: {}\n  ingress:\n  - ports: [{port: Not_A_Name}]', 'NetworkPolicy x/deny: spec.ingress[0].ports[0].port: must be 1-65535 or an IANA_SVC_NAME'],
    ['bad operator', '  podSelector: {matchExpressions: [{key: a, operator: Equals, values: [b]}]}', 'NetworkPolicy x/deny: spec.podSelector.matchExpressions[0].operator: must be In, NotIn, Exists or DoesNotExist'],
    ['In without values', '  podSelector: {matchExpressions: [{key: a, operator: In}]}', "NetworkPolicy x/deny: spec.podSelector.matchExpressions[0].values: must be specified when `operator` is 'In' or 'NotIn'"],
    ['Exists with values', '  podSelector: {}\n  egress:\n  - to: [{namespaceSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}}]', "NetworkPolicy x/deny: spec.egress[0].to[0].namespaceSelector.matchExpressions[0].values: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"],
    ['endPort with a named port', '  podSelector: {}\n  ingress:\n  - ports: [{port: http, endPort: 90}]', 'NetworkPolicy x/deny: spec.ingress[0].ports[0].endPort: may not be specified when `port` is non-numeric'],
    ['endPort below port', '  podSelector: {}\n  ingress:\n  - ports: [{port: 90, endPort: 80}]', 'NetworkPolicy x/deny: spec.ingress[0].ports[0].endPort: must be greater than or equal to `port`'],
    ['endPort without port', '  podSelector: {}\n  ingress:\n  - ports: [{endPort: 80}]', 'NetworkPolicy x/deny: spec.ingress[0].ports[0].endPort: may not be specified when `port` is not specified'],
    ['bad cidr', '  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/33}}]', 'NetworkPolicy x/deny: spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR "10.0.0.0/33": must be a valid IPv4 or IPv6 CIDR such as 10.0.0.0/8'],
    ['except outside cidr', '  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]', 'NetworkPolicy x/deny: spec.ingress[0].from[0].ipBlock.except[0]: must be a strict subset of `cidr` (10.0.0.0/8)'],
    ['except equal to cidr', '  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}}]', 'NetworkPolicy x/deny: spec.ingress[0].from[0].ipBlock.except[0]: must be a strict subset of `cidr` (10.0.0.0/8)'],
    ['IPv6 except outside the cidr', '  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: "fd00:10:244::/56", except: ["fd00:10:245::/64"]}}]', 'NetworkPolicy x/deny: spec.ingress[0].from[0].ipBlock.except[0]: must be a strict subset of `cidr` (fd00:10:244::/56)'],
    ['IPv6 except equal to the cidr', '  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: "fd00::/8", except: ["fd00::/8"]}}]', 'NetworkPolicy x/deny: spec.ingress[0].from[0].ipBlock.except[0]: must be a strict subset of `cidr` (fd00::/8)'],
    ['an IPv4 except in an IPv6 cidr', '  podSelector: {}\n  egress:\n  - to: [{ipBlock: {cidr: "::/0", except: [10.0.0.0/8]}}]', 'NetworkPolicy x/deny: spec.egress[0].to[0].ipBlock.except[0]: must be a strict subset of `cidr` (::/0)'],
    ['an IPv6 except in an IPv4 cidr', '  podSelector: {}\n  egress:\n  - to: [{ipBlock: {cidr: 0.0.0.0/0, except: ["::ffff:0:0/96"]}}]', 'NetworkPolicy x/deny: spec.egress[0].to[0].ipBlock.except[0]: must be a strict subset of `cidr` (0.0.0.0/0)'],
    ['an IPv6 prefix over 128', '  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: "fd00::/129"}}]', 'NetworkPolicy x/deny: spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR "fd00::/129": must be a valid IPv4 or IPv6 CIDR such as 10.0.0.0/8'],
    ['an IPv6 cidr with a zone', '  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: "fe80::%eth0/64"}}]', 'NetworkPolicy x/deny: spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR "fe80::%eth0/64": must be a valid IPv4 or IPv6 CIDR such as 10.0.0.0/8'],
    ['ipBlock with a selector', '  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]', 'NetworkPolicy x/deny: spec.ingress[0].from[0]: may not specify both ipBlock and another peer'],
    ['empty peer', '  podSelector: {}\n  ingress:\n  - from: [{}]', 'NetworkPolicy x/deny: spec.ingress[0].from[0]: must specify a peer'],
    ['bad protocol', '  podSelector: {}\n  egress:\n  - ports: [{protocol: ICMP}]', 'NetworkPolicy x/deny: spec.egress[0].ports[0].protocol: unsupported value "ICMP": must be TCP, UDP or SCTP'],
    ['bad policyType', '  podSelector: {}\n  policyTypes: [Ingress, Sideways]', 'NetworkPolicy x/deny: spec.policyTypes[1]: unsupported value "Sideways": must be Ingress or Egress'],
    ['too many policyTypes', '  podSelector: {}\n  policyTypes: [Ingress, Egress, Ingress]', 'NetworkPolicy x/deny: spec.policyTypes: may not specify more than two policyTypes'],
    ['bad label key', '  podSelector: {matchLabels: {"-bad": x}}', 'NetworkPolicy x/deny: spec.podSelector.matchLabels: invalid label key "-bad": name part must be 1-63 alphanumerics, \'-\', \'_\' or \'.\', starting and ending with an alphanumeric'],
  ];
  for (const [what, spec, msg] of invalid) {
    it(`rejects ${what}, naming the field`, () => expect(problems(np(spec))).toContain(msg));
  }

  it('accepts what upstream accepts: named ports, endPort == port, IPv6 ipBlocks, empty rules', () => {
    const m = modelFromYaml(np(`  podSelector: {matchExpressions: [{key: a, operator: DoesNotExist}]}
  ingress:
  - {}
  - ports: [{port: serve-80-tcp}, {port: 80, endPort: 80, protocol: SCTP}]
    from: [{ipBlock: {cidr: "fd00::/8", except: ["fd00::/16"]}}]
  egress: []`));
    expect(m.policies[0].spec.ingress).toHaveLength(2);
    expect(m.policies[0].spec.egress).toEqual([]);
  });

  it('reports every problem, each prefixed with the source file', () => {
    try {
      modelFromYaml(np('  podSelector: {}\n  ingress:\n  - ports: [{port: 0}, {protocol: tcp}]'), 'pol.yaml');
      throw new Error('no error');
    } catch (e) {
      expect((e as ManifestError).problems).toEqual([
        'pol.yaml: NetworkPolicy x/deny: spec.ingress[0].ports[0].port: must be 1-65535 or an IANA_SVC_NAME',
        'pol.yaml: NetworkPolicy x/deny: spec.ingress[0].ports[1].protocol: unsupported value "tcp": must be TCP, UDP or SCTP',
      ]);
    }
  });
});
