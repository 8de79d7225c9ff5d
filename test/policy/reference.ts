// A deliberately naive NetworkPolicy evaluator, written from the API documentation and
// independent of policy/ (no shared helpers), used only to cross-check the compiled
// tables on generated clusters. Returns 1 allowed by a rule, 0 not isolated, -1 denied.
import { BlockList } from 'node:net';
import type { ClusterModel, LabelSelector, NetworkPolicyPeer, NetworkPolicyPort, Pod } from '../../policy/model.js';

const PROTO: Record<string, number> = { TCP: 6, UDP: 17, SCTP: 132 };

function sel(s: LabelSelector, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(s.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of s.matchExpressions ?? []) {
    const has = k(labels, e.key);
    const vals = e.values ?? [];
    if (e.operator === 'In' && !(has && vals.includes(labels[e.key]))) return false;
    if (e.operator === 'NotIn' && has && vals.includes(labels[e.key])) return false;
    if (e.operator === 'Exists' && !has) return false;
    if (e.operator === 'DoesNotExist' && has) return false;
  }
  return true;
}
const k = (o: object, key: string) => Object.keys(o).includes(key);

/** The verdict for IPv4 addresses as numbers (the compiled tables' form): referenceVerdictAt on their text. */
export function referenceVerdict(model: ClusterModel, ingress: boolean, podIp: number, peerIp: number, proto: number, port: number): number {
  const text = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
  return referenceVerdictAt(model, ingress, text(podIp), text(peerIp), proto, port);
}

// ---- the evaluator ---------------------------------------------------------------
// Over addresses as text, IPv4 or IPv6, written from the API
// documentation: a pod is found by its address of the packet's family (ip or ip6), an
// ipBlock matches only addresses of its own family (node:net's BlockList decides
// membership), and isolation is per pod whatever the family.

const family = (s: string): 'ipv4' | 'ipv6' => (s.includes(':') ? 'ipv6' : 'ipv4');
/** Canonical text (the WHATWG URL serializer for IPv6), so two spellings of one address compare equal. */
const canon = (s: string): string => (family(s) === 'ipv6' ? new URL(`http://[${s}]/`).hostname : s.split('.').map(Number).join('.'));
const blocks = new Map<string, BlockList>();
function inBlock(addr: string, cidr: string): boolean {
  if (family(addr) !== family(cidr)) return false; // BlockList would match IPv4 rules against IPv4-mapped IPv6: not NetworkPolicy
  let b = blocks.get(cidr);
  if (!b) {
    const [net, len] = cidr.split('/');
    b = new BlockList();
    b.addSubnet(net, Number(len), family(cidr));
    blocks.set(cidr, b);
  }
  return b.check(addr, family(addr));
}

/** The verdict for pod `podAddr` about peer `peerAddr` (both of one family, as text). */
export function referenceVerdictAt(model: ClusterModel, ingress: boolean, podAddr: string, peerAddr: string, proto: number, port: number): number {
  const fam = family(podAddr);
  const addrOf = (p: Pod): string | undefined => (fam === 'ipv6' ? p.ip6 : p.ip);
  const podC = canon(podAddr);
  const peerC = canon(peerAddr);
  const byAddr = (c: string): Pod | undefined => [...model.pods].reverse().find((p) => addrOf(p) !== undefined && canon(addrOf(p)!) === c);
  const pod = byAddr(podC);
  if (!pod) return 0;
  const nsLabels = (ns: string) => model.namespaces.find((n) => n.name === ns)?.labels ?? {};
  const applies = model.policies.filter((np) => {
    if (np.namespace !== pod.namespace || !sel(np.spec.podSelector, pod.labels)) return false;
    const types = np.spec.policyTypes?.length ? np.spec.policyTypes : np.spec.egress?.length ? ['Ingress', 'Egress'] : ['Ingress'];
    return types.includes(ingress ? 'Ingress' : 'Egress');
  });
  if (applies.length === 0) return 0;
  if (podC === peerC) return 1;
  if (ingress && model.nodeIps.some((n) => family(n) === fam && canon(n) === peerC)) return 1;
  const peerPod = byAddr(peerC);
  const dest = ingress ? pod : peerPod;
  const peerOk = (p: NetworkPolicyPeer, policyNs: string): boolean => {
    if (p.ipBlock) return inBlock(peerAddr, p.ipBlock.cidr) && !(p.ipBlock.except ?? []).some((e) => inBlock(peerAddr, e));
    if (!peerPod) return false;
    const nsOk = p.namespaceSelector ? sel(p.namespaceSelector, nsLabels(peerPod.namespace)) : peerPod.namespace === policyNs;
    return nsOk && sel(p.podSelector ?? {}, peerPod.labels);
  };
  const portOk = (pp: NetworkPolicyPort): boolean => {
    const pr = PROTO[pp.protocol ?? 'TCP'];
    if (pr !== proto) return false;
    if (pp.port === undefined) return true;
    if (typeof pp.port === 'number') return port >= pp.port && port <= (pp.endPort ?? pp.port);
    return (dest?.containerPorts ?? []).some((c) => c.name === pp.port && PROTO[c.protocol] === proto && c.containerPort === port);
  };
  for (const np of applies) {
    const rules = ingress ? (np.spec.ingress ?? []).map((r) => ({ peers: r.from, ports: r.ports })) : (np.spec.egress ?? []).map((r) => ({ peers: r.to, ports: r.ports }));
    for (const r of rules) {
      const pOk = !r.peers || r.peers.length === 0 || r.peers.some((p) => peerOk(p, np.namespace));
      const portsOk = !r.ports || r.ports.length === 0 || r.ports.some(portOk);
      if (pOk && portsOk) return 1;
    }
  }
  return -1;
}

/** src → dst allowed by the reference (src's egress and dst's ingress), addresses of one family. */
export function referenceAllowed(model: ClusterModel, src: string, dst: string, proto: number, port: number): boolean {
  if (canon(src) === canon(dst)) return true;
  return referenceVerdictAt(model, false, src, dst, proto, port) >= 0 && referenceVerdictAt(model, true, dst, src, proto, port) >= 0;
}
