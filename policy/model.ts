// The cluster model NetworkPolicy is evaluated against: namespaces, pods and
// networking.k8s.io/v1 NetworkPolicies (field names as in the API), plus the node IPs
// (IPv4 or IPv6) whose traffic to pods is always allowed (kubelet probes come from the host).

export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export type PolicyType = 'Ingress' | 'Egress';

export interface LabelSelectorRequirement {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  values?: string[];
}
export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: LabelSelectorRequirement[];
}
export interface IPBlock {
  cidr: string;
  except?: string[];
}
export interface NetworkPolicyPeer {
  podSelector?: LabelSelector;
  namespaceSelector?: LabelSelector;
  ipBlock?: IPBlock;
}
export interface NetworkPolicyPort {
  protocol?: Protocol; // default TCP
  port?: number | string; // number, or an IANA_SVC_NAME resolved against the destination pod
  endPort?: number;
}
export interface NetworkPolicyIngressRule {
  from?: NetworkPolicyPeer[];
  ports?: NetworkPolicyPort[];
}
export interface NetworkPolicyEgressRule {
  to?: NetworkPolicyPeer[];
  ports?: NetworkPolicyPort[];
}
export interface NetworkPolicySpec {
  podSelector: LabelSelector;
  ingress?: NetworkPolicyIngressRule[];
  egress?: NetworkPolicyEgressRule[];
  policyTypes?: PolicyType[];
}
export interface NetworkPolicy {
  namespace: string;
  name: string;
  spec: NetworkPolicySpec;
}
export interface Namespace {
  name: string;
  labels: Record<string, string>;
}
export interface ContainerPort {
  name?: string;
  containerPort: number;
  protocol: Protocol;
}
export interface Pod {
  namespace: string;
  name: string;
  labels: Record<string, string>;
  ip?: string; // IPv4; a pod without one is in the model but matches no IPv4 traffic
  ip6?: string; // IPv6 (status.podIPs); a dual-stack pod has both, an IPv6-only pod only this
  containerPorts: ContainerPort[];
}
export interface ClusterModel {
  namespaces: Namespace[];
  pods: Pod[];
  policies: NetworkPolicy[];
  nodeIps: string[];
}

export const PROTO_NUM: Record<Protocol, number> = { TCP: 6, UDP: 17, SCTP: 132 };

/** The label every namespace carries since Kubernetes 1.21 (set by the API server). */
export const NS_NAME_LABEL = 'kubernetes.io/metadata.name';

export function emptyModel(): ClusterModel {
  return { namespaces: [], pods: [], policies: [], nodeIps: [] };
}

/** Selector semantics of metav1.LabelSelector: all terms ANDed; an empty selector matches everything. */
export function selectorMatches(sel: LabelSelector, labels: Record<string, string>): boolean {
  if (sel.matchLabels) {
    for (const k in sel.matchLabels) if (labels[k] !== sel.matchLabels[k]) return false;
  }
  if (sel.matchExpressions) {
    for (const e of sel.matchExpressions) {
      const has = Object.prototype.hasOwnProperty.call(labels, e.key);
      switch (e.operator) {
        case 'In':
          if (!has || !(e.values ?? []).includes(labels[e.key])) return false;
          break;
        case 'NotIn': // a pod without the key satisfies NotIn (upstream behaviour)
          if (has && (e.values ?? []).includes(labels[e.key])) return false;
          break;
        case 'Exists':
          if (!has) return false;
          break;
        case 'DoesNotExist':
          if (has) return false;
          break;
      }
    }
  }
  return true;
}

/** policyTypes after API defaulting: Ingress always, Egress when spec.egress is non-empty. */
export function effectivePolicyTypes(spec: NetworkPolicySpec): PolicyType[] {
  if (spec.policyTypes && spec.policyTypes.length > 0) return spec.policyTypes;
  return spec.egress && spec.egress.length > 0 ? ['Ingress', 'Egress'] : ['Ingress'];
}

export const podKey = (p: { namespace: string; name: string }): string => `${p.namespace}/${p.name}`;

/** Canonical text of a value (object keys sorted) for cache keys and change detection. */
export function canonical(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
    .join(',')}}`;
}
