// kube-proxy's rules for the lab's Services, in the shape kube-proxy itself writes
// them (pkg/proxy/iptables and pkg/proxy/nftables of kubernetes/kubernetes): the
// same chains, maps, comments and hashed names, so what a lab node's iptables-save
// or `nft list table ip kube-proxy` shows is what a kind node shows. One node's
// view goes in, one iptables-restore or nft -f transaction comes out: rendering is
// pure, applying it is one command per node, and a re-render replaces the last one
// whole. Dual-stack as kube-proxy does it: one proxier per IP family, each with its
// own view (the family's ClusterIPs, endpoint addresses, cluster and Service CIDRs);
// the IPv6 one writes the same chains with ip6tables-restore, or `table ip6 kube-proxy`.
import { createHash } from 'node:crypto';
import { run } from '../lib/sh.js';
import { maskPrefix, parseIPv4Address, parseIPv4Cidr } from '../lib/ipv4.js';
import { formatIPv6Address, inIPv6Cidr, isIPv6, parseIPv6Address, parseIPv6Cidr } from '../lib/ipv6.js';

export type ProxyMode = 'iptables' | 'nftables';
export const PROXY_MODES: readonly ProxyMode[] = ['iptables', 'nftables'];
export type ServiceProtocol = 'TCP' | 'UDP';
/** Kubernetes' IPFamily: which of kube-proxy's two proxiers a view is for. */
export type IPFamily = 'IPv4' | 'IPv6';

export interface ServicePortSpec {
  name?: string; // absent: the Service's only port, named "" as in the API
  protocol: ServiceProtocol;
  port: number;
  targetPort?: number; // default: port
  nodePort?: number; // 30000-32767; makes the Service a NodePort Service
}

export interface ServiceSpec {
  namespace: string;
  name: string;
  clusterIP: string; // IPv4 (an IPv6 one makes an IPv6 single-stack Service)
  clusterIP6?: string; // a dual-stack Service's IPv6 ClusterIP (spec.clusterIPs[1]), in the IPv6 Service CIDR
  ports: ServicePortSpec[];
  endpoints?: string[]; // pod names in the Service's namespace; absent: every pod of the namespace (a selector they all match)
  externalTrafficPolicy?: 'Cluster' | 'Local'; // default Cluster
}

/**
 * A ready endpoint: a pod's address and the node it runs on. `ip` is of the view's
 * family; `ip6` is the pod's IPv6 address when an IPv4 view also describes a
 * dual-stack cluster (ipv6ProxyView reads it).
 */
export interface Endpoint { ip: string; node: string; ip6?: string }

/** What one of a node's kube-proxy proxiers sees: every address in it is of `family`. */
export interface ProxyView {
  node: string;
  family?: IPFamily; // absent: IPv4
  clusterCIDR: string; // kube-proxy's --cluster-cidr of this family: its local-traffic detector
  serviceCIDR: string; // this family's Service CIDR
  services: { spec: ServiceSpec; endpoints: Endpoint[] }[];
}

export const SERVICE_CIDR = '10.96.0.0/16'; // kind's serviceSubnet
export const SERVICE_CIDR6 = 'fd00:10:96::/112'; // kind's IPv6 serviceSubnet
export const NODE_PORT_RANGE = [30000, 32767] as const;
const MASQ_MARK = '0x4000'; // kube-proxy's default --masquerade-bit 14

// RFC 4648 base32, as Go's base32.StdEncoding writes it (the padding never matters: names keep a prefix).
const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
function base32(b: Buffer): string {
  let out = '', bits = 0, acc = 0;
  for (const byte of b) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5) { out += B32[(acc >>> (bits - 5)) & 31]; bits -= 5; }
  }
  if (bits > 0) out += B32[(acc << (5 - bits)) & 31];
  return out;
}
const hash = (s: string) => base32(createHash('sha256').update(s).digest());

/** kube-proxy's ServicePortName.String(): "ns/name:port", or "ns/name" for an unnamed port. */
export function servicePortName(spec: Pick<ServiceSpec, 'namespace' | 'name'>, p: Pick<ServicePortSpec, 'name'>): string {
  return `${spec.namespace}/${spec.name}${p.name ? `:${p.name}` : ''}`;
}

/** iptables chain names: a prefix and 16 base32 characters of sha256(port name + protocol [+ endpoint]). */
export function iptablesChains(spn: string, protocol: string) {
  const h = hash(spn + protocol).slice(0, 16);
  return { svc: `KUBE-SVC-${h}`, svl: `KUBE-SVL-${h}`, ext: `KUBE-EXT-${h}`, sep: (endpoint: string) => `KUBE-SEP-${hash(spn + protocol + endpoint).slice(0, 16)}` };
}

/** kube-proxy's endpoint string (net.JoinHostPort): 10.244.1.2:8080, [fd00:10:244:1::2]:8080. */
export function endpointString(ip: string, port: number): string {
  return isIPv6(ip) ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** The Service's ClusterIP of `family`, if it has one. */
export function clusterIPOf(spec: Pick<ServiceSpec, 'clusterIP' | 'clusterIP6'>, family: IPFamily): string | undefined {
  return [spec.clusterIP, spec.clusterIP6].find((ip) => ip !== undefined && isIPv6(ip) === (family === 'IPv6'));
}

/**
 * The IPv6 proxier's view of the same node and Services, from a dual-stack IPv4 view
 * whose endpoints carry `ip6`: the Services with an IPv6 ClusterIP, each endpoint by
 * its IPv6 address (an endpoint without one is not an IPv6 endpoint).
 */
export function ipv6ProxyView(v: ProxyView, clusterCIDR6: string, serviceCIDR6: string = SERVICE_CIDR6): ProxyView {
  return {
    node: v.node, family: 'IPv6', clusterCIDR: clusterCIDR6, serviceCIDR: serviceCIDR6,
    services: v.services.filter(({ spec }) => clusterIPOf(spec, 'IPv6')).map(({ spec, endpoints }) => ({
      spec, endpoints: endpoints.flatMap((e) => (e.ip6 ? [{ ip: e.ip6, node: e.node }] : isIPv6(e.ip) ? [{ ip: e.ip, node: e.node }] : [])),
    })),
  };
}

/** nftables chain names: the readable name behind 8 base32 characters of its own hash. */
export function nftChains(spec: Pick<ServiceSpec, 'namespace' | 'name'>, p: Pick<ServicePortSpec, 'name'>, protocol: string) {
  const base = `${spec.namespace}/${spec.name}/${protocol}/${p.name ?? ''}`;
  const named = (n: string) => `${hash(n).slice(0, 8)}-${n}`;
  return {
    service: `service-${named(base)}`, local: `local-${named(base)}`, external: `external-${named(base)}`,
    endpoint: (ip: string, port: number) => `endpoint-${named(`${base}__${ip.replaceAll(':', '.')}/${port}`)}`, // colons are not allowed in a chain name
  };
}

/** Every Service port of the view's family with what kube-proxy derives from it on `node`. */
function servicePorts(v: ProxyView) {
  const family = v.family ?? 'IPv4';
  return v.services.flatMap(({ spec, endpoints }) => {
    const clusterIP = clusterIPOf(spec, family);
    if (!clusterIP) return []; // a single-stack Service of the other family
    const mine = endpoints.filter((e) => isIPv6(e.ip) === (family === 'IPv6')); // EndpointSlices are per family
    return spec.ports.map((p) => ({ spec, clusterIP, endpoints: mine, p }));
  }).map(({ spec, clusterIP, endpoints, p }) => {
    const protocol = p.protocol.toLowerCase();
    const targetPort = p.targetPort ?? p.port;
    const eps = endpoints.map((e) => ({ ip: e.ip, node: e.node, str: endpointString(e.ip, targetPort), port: targetPort }));
    const local = eps.filter((e) => e.node === v.node);
    const externalLocal = !!p.nodePort && spec.externalTrafficPolicy === 'Local';
    return {
      spec, clusterIP, p, protocol, spn: servicePortName(spec, p), eps, local, externalLocal,
      hasEndpoints: eps.length > 0,
      hasExternalEndpoints: externalLocal ? local.length > 0 : eps.length > 0,
    };
  });
}

// kube-proxy's "%0.10f" of 1/n for the n-th from last endpoint.
const probability = (n: number) => (1 / n).toFixed(10);
const q = (s: string) => `"${s}"`;

/**
 * One node's rules as `iptables-restore --noflush` input (`ip6tables-restore` for an
 * IPv6 view). `saved` is the node's current `iptables-save` (filter and nat) of the
 * same family: service chains no longer wanted are flushed and deleted, and the jumps
 * from the built-in chains are inserted once, inside the same transaction.
 *
 * The IPv6 proxier differs from the IPv4 one only where kube-proxy's does: no
 * localhost NodePorts (route_localnet is IPv4's), so KUBE-FIREWALL carries no rule
 * (kube-proxy only ensures the chain and its jumps) and NodePorts skip ::1;
 * endpoints are written [ip]:port, which is also what their KUBE-SEP names hash.
 */
export function renderIptables(v: ProxyView, saved: string): string {
  const v6 = v.family === 'IPv6';
  const filterChains = ['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-FORWARD', 'KUBE-NODEPORTS', 'KUBE-PROXY-FIREWALL'];
  // IPv4: kube-proxy writes kubelet's KUBE-FIREWALL rule itself; IPv6: it only ensures the (empty) chain, for the jumps to it.
  if (!v6 || !savedChains(saved).filter.has('KUBE-FIREWALL')) filterChains.push('KUBE-FIREWALL');
  const natChains = ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ'];
  const filter: string[] = [], nat: string[] = [];
  const active = new Set<string>();
  const chain = (c: string) => { if (!active.has(c)) { active.add(c); natChains.push(c); } };

  nat.push(`-A KUBE-POSTROUTING -m mark ! --mark ${MASQ_MARK}/${MASQ_MARK} -j RETURN`);
  nat.push(`-A KUBE-POSTROUTING -j MARK --xor-mark ${MASQ_MARK}`); // so a packet that loops through the stack again is not masqueraded twice
  nat.push(`-A KUBE-POSTROUTING -m comment --comment ${q('kubernetes service traffic requiring SNAT')} -j MASQUERADE --random-fully`);
  nat.push(`-A KUBE-MARK-MASQ -j MARK --or-mark ${MASQ_MARK}`);
  // route_localnet=1 (localhost NodePorts, kind's default) opens 127/8 to the outside; kubelet and kube-proxy close it again.
  if (!v6) filter.push(`-A KUBE-FIREWALL -m comment --comment ${q('block incoming localnet connections')} -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP`);

  for (const s of servicePorts(v)) {
    const { svc, svl, ext, sep } = iptablesChains(s.spn, s.protocol);
    const m = `-m ${s.protocol} -p ${s.protocol}`;
    const cip = `-d ${s.clusterIP} --dport ${s.p.port}`;
    const noEps = s.hasEndpoints ? '' : `${s.spn} has no endpoints`;
    const externalVerdict = s.hasEndpoints ? 'DROP' : 'REJECT';
    const externalComment = s.hasEndpoints ? `${s.spn} has no local endpoints` : noEps;
    const externalPolicy = s.externalLocal ? svl : svc;

    if (s.hasEndpoints) nat.push(`-A KUBE-SERVICES -m comment --comment ${q(`${s.spn} cluster IP`)} ${m} ${cip} -j ${svc}`);
    else filter.push(`-A KUBE-SERVICES -m comment --comment ${q(noEps)} ${m} ${cip} -j REJECT`);
    if (s.p.nodePort) {
      if (s.hasEndpoints) nat.push(`-A KUBE-NODEPORTS -m comment --comment ${s.spn} ${m} --dport ${s.p.nodePort} -j ${ext}`);
      if (!s.hasExternalEndpoints) filter.push(`-A KUBE-EXTERNAL-SERVICES -m comment --comment ${q(externalComment)} -m addrtype --dst-type LOCAL ${m} --dport ${s.p.nodePort} -j ${externalVerdict}`);
    }
    if (!s.hasEndpoints) continue;

    // Sources outside the cluster CIDR (a node, another host routed here) are masqueraded, so replies come back through this node.
    chain(svc);
    nat.push(`-A ${svc} -m comment --comment ${q(`${s.spn} cluster IP`)} ${m} ${cip} ! -s ${v.clusterCIDR} -j KUBE-MARK-MASQ`);
    if (s.p.nodePort) {
      chain(ext);
      if (!s.externalLocal) {
        nat.push(`-A ${ext} -m comment --comment ${q(`masquerade traffic for ${s.spn} external destinations`)} -j KUBE-MARK-MASQ`);
      } else {
        // Local keeps the client's address, so only this node's endpoints may serve; pods and the node itself short-circuit to every endpoint.
        nat.push(`-A ${ext} -m comment --comment ${q(`pod traffic for ${s.spn} external destinations`)} -s ${v.clusterCIDR} -j ${svc}`);
        nat.push(`-A ${ext} -m comment --comment ${q(`masquerade LOCAL traffic for ${s.spn} external destinations`)} -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ`);
        nat.push(`-A ${ext} -m comment --comment ${q(`route LOCAL traffic for ${s.spn} external destinations`)} -m addrtype --src-type LOCAL -j ${svc}`);
      }
      if (s.hasExternalEndpoints) nat.push(`-A ${ext} -j ${externalPolicy}`);
    }
    const spread = (from: string, eps: typeof s.eps) => eps.forEach((e, i) => {
      const stat = i < eps.length - 1 ? ` -m statistic --mode random --probability ${probability(eps.length - i)}` : '';
      nat.push(`-A ${from} -m comment --comment ${q(`${s.spn} -> ${e.str}`)}${stat} -j ${sep(e.str)}`);
    });
    spread(svc, s.eps);
    if (s.externalLocal && s.local.length) { chain(svl); spread(svl, s.local); }
    for (const e of s.eps) { // internal traffic policy is always Cluster here: every endpoint is reachable
      chain(sep(e.str));
      nat.push(`-A ${sep(e.str)} -m comment --comment ${s.spn} -s ${e.ip} -j KUBE-MARK-MASQ`); // hairpin: a pod reaching itself must see the reply come back through here
      nat.push(`-A ${sep(e.str)} -m comment --comment ${s.spn} ${m} -j DNAT --to-destination ${e.str}`);
    }
  }
  // localhost NodePorts never work on IPv6: kube-proxy leaves ::1 out
  nat.push(`-A KUBE-SERVICES -m comment --comment ${q('kubernetes service nodeports; NOTE: this must be the last rule in this chain')} -m addrtype --dst-type LOCAL${v6 ? ' ! -d ::1/128' : ''} -j KUBE-NODEPORTS`);
  filter.push('-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP');
  filter.push(`-A KUBE-FORWARD -m comment --comment ${q('kubernetes forwarding rules')} -m mark --mark ${MASQ_MARK}/${MASQ_MARK} -j ACCEPT`);
  filter.push(`-A KUBE-FORWARD -m comment --comment ${q('kubernetes forwarding conntrack rule')} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`);

  // Chains of ours from an earlier render that nothing uses now: flush (declare) and delete.
  const existing = savedChains(saved);
  const stale = [...existing.nat].filter((c) => /^KUBE-(SVC|SVL|EXT|FW|SEP)-/.test(c) && !active.has(c));
  const jumps = missingJumps(saved);
  return [
    '*filter', ...filterChains.map((c) => `:${c} - [0:0]`), ...jumps.filter, ...filter, 'COMMIT',
    '*nat', ...[...natChains, ...stale].map((c) => `:${c} - [0:0]`), ...jumps.nat, ...nat, ...stale.map((c) => `-X ${c}`), 'COMMIT', '',
  ].join('\n');
}

// kube-proxy's (and kubelet's) jumps from the built-in chains, as kube-proxy ensures them: prepended, once.
const JUMPS: { table: 'filter' | 'nat'; from: string; to: string; rule: string }[] = [
  { table: 'filter', from: 'INPUT', to: 'KUBE-EXTERNAL-SERVICES', rule: `-m conntrack --ctstate NEW -m comment --comment ${q('kubernetes externally-visible service portals')}` },
  { table: 'filter', from: 'FORWARD', to: 'KUBE-EXTERNAL-SERVICES', rule: `-m conntrack --ctstate NEW -m comment --comment ${q('kubernetes externally-visible service portals')}` },
  { table: 'filter', from: 'INPUT', to: 'KUBE-NODEPORTS', rule: `-m comment --comment ${q('kubernetes health check service ports')}` },
  { table: 'filter', from: 'FORWARD', to: 'KUBE-SERVICES', rule: `-m conntrack --ctstate NEW -m comment --comment ${q('kubernetes service portals')}` },
  { table: 'filter', from: 'OUTPUT', to: 'KUBE-SERVICES', rule: `-m conntrack --ctstate NEW -m comment --comment ${q('kubernetes service portals')}` },
  { table: 'filter', from: 'FORWARD', to: 'KUBE-FORWARD', rule: `-m comment --comment ${q('kubernetes forwarding rules')}` },
  { table: 'filter', from: 'INPUT', to: 'KUBE-PROXY-FIREWALL', rule: `-m conntrack --ctstate NEW -m comment --comment ${q('kubernetes load balancer firewall')}` },
  { table: 'filter', from: 'OUTPUT', to: 'KUBE-PROXY-FIREWALL', rule: `-m conntrack --ctstate NEW -m comment --comment ${q('kubernetes load balancer firewall')}` },
  { table: 'filter', from: 'FORWARD', to: 'KUBE-PROXY-FIREWALL', rule: `-m conntrack --ctstate NEW -m comment --comment ${q('kubernetes load balancer firewall')}` },
  { table: 'nat', from: 'OUTPUT', to: 'KUBE-SERVICES', rule: `-m comment --comment ${q('kubernetes service portals')}` },
  { table: 'nat', from: 'PREROUTING', to: 'KUBE-SERVICES', rule: `-m comment --comment ${q('kubernetes service portals')}` },
  { table: 'nat', from: 'POSTROUTING', to: 'KUBE-POSTROUTING', rule: `-m comment --comment ${q('kubernetes postrouting rules')}` },
  { table: 'filter', from: 'INPUT', to: 'KUBE-FIREWALL', rule: '' },
  { table: 'filter', from: 'OUTPUT', to: 'KUBE-FIREWALL', rule: '' },
];

function savedTables(saved: string): Record<string, string[]> {
  const t: Record<string, string[]> = {};
  let cur = '';
  for (const line of saved.split('\n')) {
    if (line.startsWith('*')) { cur = line.slice(1); t[cur] = []; } else if (cur) t[cur].push(line);
  }
  return t;
}

function savedChains(saved: string): { nat: Set<string>; filter: Set<string> } {
  const t = savedTables(saved);
  const names = (lines: string[] = []) => new Set(lines.filter((l) => l.startsWith(':')).map((l) => l.slice(1).split(' ')[0]));
  return { nat: names(t.nat), filter: names(t.filter) };
}

function missingJumps(saved: string): { filter: string[]; nat: string[] } {
  const t = savedTables(saved);
  const out = { filter: [] as string[], nat: [] as string[] };
  for (const j of JUMPS) {
    const has = (t[j.table] ?? []).some((l) => l.startsWith(`-A ${j.from} `) && l.endsWith(` -j ${j.to}`));
    if (!has) out[j.table].push(`-I ${j.from} 1 ${j.rule ? `${j.rule} ` : ''}-j ${j.to}`);
  }
  return out;
}

/**
 * One node's rules as one `nft -f` transaction: the table is created (so the delete
 * cannot fail), deleted and made again whole, so a re-render never leaves a mix.
 * An IPv6 view makes `table ip6 kube-proxy`: ip6 matches, ipv6_addr keys, ::1
 * instead of 127.0.0.0/8, endpoint chains named with the address's colons as dots.
 */
export function renderNft(v: ProxyView): string {
  const v6 = v.family === 'IPv6';
  const T = v6 ? 'ip6 kube-proxy' : 'ip kube-proxy';
  const ipX = v6 ? 'ip6' : 'ip', addr = v6 ? 'ipv6_addr' : 'ipv4_addr', noLocalhost = v6 ? 'ip6 daddr != ::1' : 'ip daddr != 127.0.0.0/8';
  const head = [
    `add table ${T}`, `delete table ${T}`,
    `add table ${T} { comment "rules for kube-proxy" ; }`,
    `add set ${T} cluster-ips { type ${addr} ; comment "Active ClusterIPs" ; }`,
    `add map ${T} firewall-ips { type ${addr} . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }`,
    `add map ${T} no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }`,
    `add map ${T} no-endpoint-services { type ${addr} . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }`,
    `add map ${T} service-ips { type ${addr} . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }`,
    `add map ${T} service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }`,
    `add chain ${T} cluster-ips-check`,
    // filtering sees the destination before DNAT (dstnat - 10); the rest sits at the hooks' usual priorities
    `add chain ${T} filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }`,
    `add chain ${T} filter-output-pre-dnat { type filter hook output priority -110 ; }`,
    `add chain ${T} filter-forward { type filter hook forward priority 0 ; }`,
    `add chain ${T} filter-input { type filter hook input priority 0 ; }`,
    `add chain ${T} filter-output { type filter hook output priority 0 ; }`,
    `add chain ${T} firewall-check`,
    `add chain ${T} mark-for-masquerade`,
    `add chain ${T} masquerading`,
    `add chain ${T} nat-output { type nat hook output priority -100 ; }`,
    `add chain ${T} nat-postrouting { type nat hook postrouting priority 100 ; }`,
    `add chain ${T} nat-prerouting { type nat hook prerouting priority -100 ; }`,
    `add chain ${T} nodeport-endpoints-check`,
    `add chain ${T} reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }`,
    `add chain ${T} services`,
    `add chain ${T} service-endpoints-check`,
    `add rule ${T} cluster-ips-check ${ipX} daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"`,
    `add rule ${T} cluster-ips-check ${ipX} daddr { ${v.serviceCIDR} } drop comment "Drop traffic to unallocated ClusterIPs"`,
    `add rule ${T} filter-prerouting-pre-dnat ct state new jump firewall-check`,
    `add rule ${T} filter-forward ct state new jump service-endpoints-check`,
    `add rule ${T} filter-forward ct state new jump cluster-ips-check`,
    `add rule ${T} filter-input ct state new jump nodeport-endpoints-check`,
    `add rule ${T} filter-input ct state new jump service-endpoints-check`,
    `add rule ${T} filter-output ct state new jump service-endpoints-check`,
    `add rule ${T} filter-output-pre-dnat ct state new jump firewall-check`,
    `add rule ${T} filter-output ct state new jump cluster-ips-check`,
    `add rule ${T} firewall-check ${ipX} daddr . meta l4proto . th dport vmap @firewall-ips`,
    `add rule ${T} mark-for-masquerade mark set mark or ${MASQ_MARK}`,
    `add rule ${T} masquerading mark and ${MASQ_MARK} == 0 return`,
    `add rule ${T} masquerading mark set mark xor ${MASQ_MARK}`,
    `add rule ${T} masquerading masquerade fully-random`,
    `add rule ${T} nat-output jump services`,
    `add rule ${T} nat-postrouting jump masquerading`,
    `add rule ${T} nat-prerouting jump services`,
    // NodePorts on every local address but loopback (nodePortAddresses unset: fib daddr type local)
    `add rule ${T} nodeport-endpoints-check ${noLocalhost} meta l4proto . th dport vmap @no-endpoint-nodeports`,
    `add rule ${T} reject-chain reject`,
    `add rule ${T} services ${ipX} daddr . meta l4proto . th dport vmap @service-ips`,
    `add rule ${T} services fib daddr type local ${noLocalhost} meta l4proto . th dport vmap @service-nodeports`,
    `add rule ${T} service-endpoints-check ${ipX} daddr . meta l4proto . th dport vmap @no-endpoint-services`,
  ];
  const chains: string[] = [], rules: string[] = [], elements: string[] = [];
  const made = new Set<string>(), clusterIPs = new Set<string>();
  const chain = (c: string) => { if (!made.has(c)) { made.add(c); chains.push(`add chain ${T} ${c}`); } };
  for (const s of servicePorts(v)) {
    const c = nftChains(s.spec, s.p, s.protocol);
    const key = `${s.clusterIP} . ${s.protocol} . ${s.p.port}`;
    const externalVerdict = s.hasEndpoints ? 'drop' : 'goto reject-chain';
    if (!clusterIPs.has(s.clusterIP)) { clusterIPs.add(s.clusterIP); elements.push(`add element ${T} cluster-ips { ${s.clusterIP} }`); }
    if (s.hasEndpoints) elements.push(`add element ${T} service-ips { ${key} : goto ${c.service} }`);
    else elements.push(`add element ${T} no-endpoint-services { ${key} comment "${s.spn}" : goto reject-chain }`);
    if (s.p.nodePort) {
      if (s.hasEndpoints) elements.push(`add element ${T} service-nodeports { ${s.protocol} . ${s.p.nodePort} : goto ${c.external} }`);
      if (!s.hasExternalEndpoints) elements.push(`add element ${T} no-endpoint-nodeports { ${s.protocol} . ${s.p.nodePort} comment "${s.spn}" : ${externalVerdict} }`);
    }
    if (!s.hasEndpoints) continue;

    chain(c.service);
    rules.push(`add rule ${T} ${c.service} ${ipX} daddr ${s.clusterIP} ${s.protocol} dport ${s.p.port} ${ipX} saddr != ${v.clusterCIDR} jump mark-for-masquerade`);
    if (s.p.nodePort) {
      chain(c.external);
      if (!s.externalLocal) {
        rules.push(`add rule ${T} ${c.external} jump mark-for-masquerade`);
      } else {
        rules.push(`add rule ${T} ${c.external} ${ipX} saddr ${v.clusterCIDR} goto ${c.service} comment "short-circuit pod traffic"`);
        rules.push(`add rule ${T} ${c.external} fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"`);
        rules.push(`add rule ${T} ${c.external} fib saddr type local goto ${c.service} comment "short-circuit local traffic"`);
      }
      if (s.hasExternalEndpoints) rules.push(`add rule ${T} ${c.external} goto ${s.externalLocal ? c.local : c.service}`);
    }
    const spread = (from: string, eps: typeof s.eps) => {
      rules.push(`add rule ${T} ${from} numgen random mod ${eps.length} vmap { ${eps.map((e, i) => `${i} : goto ${c.endpoint(e.ip, e.port)}`).join(' , ')} }`);
    };
    spread(c.service, s.eps);
    if (s.externalLocal && s.local.length) { chain(c.local); spread(c.local, s.local); }
    for (const e of s.eps) { // internal traffic policy is always Cluster here: every endpoint is reachable
      const ec = c.endpoint(e.ip, e.port);
      chain(ec);
      rules.push(`add rule ${T} ${ec} ${ipX} saddr ${e.ip} jump mark-for-masquerade`);
      rules.push(`add rule ${T} ${ec} meta l4proto ${s.protocol} dnat to ${e.str}`);
    }
  }
  return [...head, ...chains, ...rules, ...elements, ''].join('\n');
}

/**
 * Renders each view and applies it inside the node's namespace, replacing that
 * node's previous Service rules of the view's family in one transaction per family,
 * as kube-proxy's two proxiers do: `applyProxyRules(ns, mode, v4)` on a single-stack
 * node, `applyProxyRules(ns, mode, v4, ipv6ProxyView(v4, ...))` on a dual-stack one.
 */
export function applyProxyRules(netns: string, mode: ProxyMode, ...views: ProxyView[]): void {
  const exec = (cmd: string, args: string[], input?: string) => run('ip', ['netns', 'exec', netns, cmd, ...args], input);
  for (const v of views) {
    if (mode === 'nftables') {
      exec('nft', ['-f', '-'], renderNft(v));
      continue;
    }
    const [save, restore] = v.family === 'IPv6' ? ['ip6tables-save', 'ip6tables-restore'] : ['iptables-save', 'iptables-restore'];
    const saved = exec(save, ['-t', 'filter']) + exec(save, ['-t', 'nat']);
    exec(restore, ['--noflush'], renderIptables(v, saved));
  }
}

/** A Service definition's mistakes, named by field; throws on the first. */
export function validateService(spec: ServiceSpec, others: ServiceSpec[]): void {
  const where = `service ${spec.namespace}/${spec.name}`;
  const dns1123 = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
  if (!dns1123.test(spec.namespace) || !dns1123.test(spec.name)) throw new Error(`${where}: namespace and name must be DNS labels`);
  const checkIP = (field: string, ip: string, cidr: string) => {
    if (!inCidr(ip, cidr)) throw new Error(`${where}: ${field} ${ip} is not in the service CIDR ${cidr}`);
    if (isIPv6(ip) && formatIPv6Address(parseIPv6Address(ip)) !== ip) throw new Error(`${where}: ${field} ${ip} must be written as ${formatIPv6Address(parseIPv6Address(ip))}`);
    const taken = others.find((o) => (o.clusterIP === ip || o.clusterIP6 === ip) && !(o.namespace === spec.namespace && o.name === spec.name));
    if (taken) throw new Error(`${where}: ${field} ${ip} is already ${taken.namespace}/${taken.name}'s`);
  };
  checkIP('clusterIP', spec.clusterIP, isIPv6(spec.clusterIP) ? SERVICE_CIDR6 : SERVICE_CIDR);
  if (spec.clusterIP6 !== undefined) {
    if (isIPv6(spec.clusterIP)) throw new Error(`${where}: clusterIP6 is a dual-stack Service's second ClusterIP: clusterIP must then be IPv4`);
    checkIP('clusterIP6', spec.clusterIP6, SERVICE_CIDR6);
  }
  if (!spec.ports.length) throw new Error(`${where}: ports must not be empty`);
  if (spec.ports.length > 1 && spec.ports.some((p) => !p.name)) throw new Error(`${where}: ports.name is required when there are several ports`);
  const port = (n: unknown) => Number.isInteger(n) && (n as number) >= 1 && (n as number) <= 65535;
  for (const p of spec.ports) {
    if (p.protocol !== 'TCP' && p.protocol !== 'UDP') throw new Error(`${where}: ports.protocol must be TCP or UDP, not ${String(p.protocol)}`);
    if (!port(p.port) || (p.targetPort !== undefined && !port(p.targetPort))) throw new Error(`${where}: ports.port and ports.targetPort must be 1-65535`);
    if (p.nodePort !== undefined) {
      if (!Number.isInteger(p.nodePort) || p.nodePort < NODE_PORT_RANGE[0] || p.nodePort > NODE_PORT_RANGE[1]) throw new Error(`${where}: ports.nodePort ${p.nodePort} is outside ${NODE_PORT_RANGE.join('-')}`);
      const clash = others.find((o) => !(o.namespace === spec.namespace && o.name === spec.name) && o.ports.some((x) => x.nodePort === p.nodePort && x.protocol === p.protocol));
      if (clash) throw new Error(`${where}: nodePort ${p.nodePort}/${p.protocol} is already ${clash.namespace}/${clash.name}'s`);
    }
  }
  if (spec.externalTrafficPolicy && !['Cluster', 'Local'].includes(spec.externalTrafficPolicy)) throw new Error(`${where}: externalTrafficPolicy must be Cluster or Local`);
}

function inCidr(ip: string, cidr: string): boolean {
  try {
    if (isIPv6(cidr) || isIPv6(ip)) {
      if (!isIPv6(cidr) || !isIPv6(ip)) return false;
      const c = parseIPv6Cidr(cidr);
      return inIPv6Cidr(parseIPv6Address(ip), c.addr, c.len);
    }
    const c = parseIPv4Cidr(cidr);
    return maskPrefix(parseIPv4Address(ip), c.len) === c.prefix;
  } catch {
    return false; // not an address
  }
}
