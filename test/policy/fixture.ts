// The cluster of the upstream NetworkPolicy e2e suite (test/e2e/network/netpol):
// namespaces x, y, z (label ns=<name>, plus kubernetes.io/metadata.name), pods a, b, c
// in each (label pod=<name>) serving 80/81 over TCP, UDP and SCTP.
import { stringify } from 'yaml';
import { NS_NAME_LABEL, type ClusterModel, type NetworkPolicy, type NetworkPolicyEgressRule, type NetworkPolicyIngressRule, type LabelSelector, type Pod } from '../../policy/model.js';

export const NAMESPACES = ['x', 'y', 'z'] as const;
export const POD_NAMES = ['a', 'b', 'c'] as const;
export const PODS = NAMESPACES.flatMap((ns) => POD_NAMES.map((p) => `${ns}/${p}`));

export const ipOf = (ns: string, pod: string): string => `10.244.${NAMESPACES.indexOf(ns as 'x') + 1}.${POD_NAMES.indexOf(pod as 'a') + 1}`;
/** The IPv6 address of a dual-stack fixture pod, laid out as ipOf's: fd00:10:244:<ns>::<pod>. */
export const ip6Of = (ns: string, pod: string): string => `fd00:10:244:${NAMESPACES.indexOf(ns as 'x') + 1}::${POD_NAMES.indexOf(pod as 'a') + 1}`;

export function e2ePods(opts: { dualStack?: boolean } = {}): Pod[] {
  return NAMESPACES.flatMap((ns) =>
    POD_NAMES.map((name) => ({
      namespace: ns,
      name,
      labels: { pod: name },
      ip: ipOf(ns, name),
      ...(opts.dualStack ? { ip6: ip6Of(ns, name) } : {}),
      containerPorts: [
        { name: 'serve-80-tcp', containerPort: 80, protocol: 'TCP' as const },
        { name: 'serve-80-udp', containerPort: 80, protocol: 'UDP' as const },
        { name: 'serve-81-tcp', containerPort: 81, protocol: 'TCP' as const },
        { name: 'serve-81-udp', containerPort: 81, protocol: 'UDP' as const },
        { name: 'serve-80-sctp', containerPort: 80, protocol: 'SCTP' as const },
        { name: 'serve-81-sctp', containerPort: 81, protocol: 'SCTP' as const },
      ],
    })),
  );
}

export function e2eModel(policies: NetworkPolicy[] = [], opts: { dualStack?: boolean } = {}): ClusterModel {
  return {
    namespaces: NAMESPACES.map((name) => ({ name, labels: { ns: name, [NS_NAME_LABEL]: name } })),
    pods: e2ePods(opts),
    policies,
    nodeIps: [],
  };
}

// Builders shaped like upstream's GenNetworkPolicyWithNameAndPodSelector +
// SetSpecIngressRules/SetSpecEgressRules: each sets its rules and adds its policyType.
export function policy(ns: string, name: string, podSelector: LabelSelector, parts: { ingress?: NetworkPolicyIngressRule[]; egress?: NetworkPolicyEgressRule[] }): NetworkPolicy {
  const spec: NetworkPolicy['spec'] = { podSelector, policyTypes: [] };
  if (parts.ingress) {
    spec.ingress = parts.ingress;
    spec.policyTypes!.push('Ingress');
  }
  if (parts.egress) {
    spec.egress = parts.egress;
    spec.policyTypes!.push('Egress');
  }
  return { namespace: ns, name, spec };
}

/** The model as plain Kubernetes YAML (a List plus separate documents), for CLI tests. */
export function modelYaml(model: ClusterModel): string {
  const items = [
    ...model.namespaces.map((n) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: n.name, labels: n.labels } })),
    ...model.pods.map((p) => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { namespace: p.namespace, name: p.name, labels: p.labels },
      spec: { containers: [{ name: 'c', image: 'agnhost', ports: p.containerPorts }] },
      status: { podIP: p.ip ?? p.ip6, podIPs: [p.ip, p.ip6].filter((ip) => ip !== undefined).map((ip) => ({ ip })) },
    })),
  ];
  const pols = model.policies.map((np) => stringify({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { namespace: np.namespace, name: np.name }, spec: np.spec }));
  return [stringify({ apiVersion: 'v1', kind: 'List', items }), ...pols].join('---\n');
}
