// Dual-stack Services as kube-proxy makes them (lab/services.ts) and the cluster DNS
// answering both families (lab/dns.ts). Rendering: kube-proxy's own IPv6 test vectors
// (pkg/proxy/iptables and pkg/proxy/nftables proxier_test.go), the IPv6 proxier's
// differences from the IPv4 one, and IPv4 output unchanged byte for byte. Then one
// real check in a network namespace this file makes and deletes: both families
// applied with ip(6)tables-restore and nft, read back, and TCP, UDP and DNS (AAAA)
// through the IPv6 ClusterIPs.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  applyProxyRules, clusterIPOf, endpointString, iptablesChains, ipv6ProxyView, nftChains, renderIptables, renderNft, validateService,
  type Endpoint, type ProxyMode, type ProxyView, type ServiceSpec,
} from '../../lab/services.js';
import { DNS_SERVICE, DNS_SERVICE_IP6, dashedAddress, dnsRecords, dnsService, launchDns, podResolvConf, writeDnsRecords } from '../../lab/dns.js';
import { ipn, netnsDel, netnsList } from '../../lib/sh.js';
import { sh } from '../helpers/lab.js';

const echoPorts = (np?: number) => [
  { name: 'tcp-echo', protocol: 'TCP' as const, port: 8080, nodePort: np },
  { name: 'udp-echo', protocol: 'UDP' as const, port: 8081, nodePort: np && np + 1 },
];
const lines = (text: string) => text.split('\n');

describe('IPv4 output is unchanged by dual-stack', () => {
  // The lab's kinds of Service (ClusterIP, NodePort Cluster and Local, no endpoints, an unnamed port with a
  // targetPort) on three nodes, with and without an earlier iptables-save, and the DNS records: rendered by
  // lab/services.ts and lab/dns.ts as they were before dual-stack, these hashed to the figure below.
  const ECHO: ServiceSpec[] = [
    { namespace: 'default', name: 'echo', clusterIP: '10.96.0.100', ports: echoPorts() },
    { namespace: 'default', name: 'echo-nodeport', clusterIP: '10.96.0.101', ports: echoPorts(30080), externalTrafficPolicy: 'Cluster' },
    { namespace: 'default', name: 'echo-local', clusterIP: '10.96.0.102', ports: echoPorts(30180), externalTrafficPolicy: 'Local' },
    { namespace: 'default', name: 'empty', clusterIP: '10.96.1.6', ports: echoPorts(31999), endpoints: ['none'], externalTrafficPolicy: 'Local' },
    { namespace: 'ns', name: 'single', clusterIP: '10.96.1.7', ports: [{ protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30500 }] },
  ];
  const eps: Endpoint[] = [{ ip: '10.244.1.2', node: 'node1' }, { ip: '10.244.1.3', node: 'node1' }, { ip: '10.244.2.2', node: 'node2' }, { ip: '10.244.2.3', node: 'node2' }];
  const SAVED = '*filter\n:INPUT ACCEPT [0:0]\n:KUBE-FIREWALL - [0:0]\n-A INPUT -j KUBE-FIREWALL\n-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\nCOMMIT\n*nat\n:KUBE-SVC-OLD1234567890123 - [0:0]\n:KUBE-SEP-AAAAAAAAAAAAAAAA - [0:0]\n:OTHER - [0:0]\n-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\nCOMMIT\n';
  const render = (dual: boolean) => {
    // dual: the same cluster described dual-stack (second ClusterIPs, endpoints' IPv6 addresses); the IPv4 proxier must not see it
    const specs = [dual ? dnsService('dual') : DNS_SERVICE, ...ECHO.map((s, i) => (dual ? { ...s, clusterIP6: `fd00:10:96::${(0x64 + i).toString(16)}` } : s))];
    const withIP6 = (e: Endpoint, i: number) => (dual ? { ...e, ip6: `fd00:10:244:${e.node.slice(4)}::${i + 2}` } : e);
    const services = [
      { spec: specs[0], endpoints: [withIP6({ ip: '10.244.1.4', node: 'node1' }, 9)] },
      ...specs.slice(1).map((spec) => ({ spec, endpoints: spec.name === 'empty' ? [] : eps.map(withIP6) })),
    ];
    const out: string[] = [];
    for (const node of ['node1', 'node2', 'node3']) {
      const v: ProxyView = { node, clusterCIDR: '10.244.0.0/16', serviceCIDR: '10.96.0.0/16', services };
      out.push(renderIptables(v, ''), renderIptables(v, SAVED), renderNft(v));
    }
    out.push(dnsRecords([DNS_SERVICE, ...ECHO], [{ name: 'a', namespace: 'default', ip: '10.244.1.2' }, { name: 'b', namespace: 'x', ip: '' }]));
    return out.join('\n=====\n');
  };
  test('the IPv4 renders hash as they did before dual-stack', () => {
    expect(createHash('sha256').update(render(false)).digest('hex')).toBe('00f4bbc03bfcdfe6dc5e002a5610729aa068203a60ad4e746922c64e5929c1a8');
  });
  test('an IPv4 view of a dual-stack cluster renders the same IPv4 rules', () => {
    expect(render(true)).toBe(render(false));
  });
  test('a pod\'s resolv.conf is what it was: the IPv4 kube-dns only', () => {
    expect(podResolvConf('default')).toBe('search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n');
  });
});

// kube-proxy's iptables TestEnableLocalhostNodePortsIPv6: ns1/svc1:p80, ClusterIP fd00:ab34::20, NodePort 30001,
// externalTrafficPolicy Local, endpoints ff06::c1 (another node) and ff06::c2 (this one).
describe('iptables, IPv6: kube-proxy\'s vectors', () => {
  const spec: ServiceSpec = { namespace: 'ns1', name: 'svc1', clusterIP: 'fd00:ab34::20', ports: [{ name: 'p80', protocol: 'TCP', port: 80, nodePort: 30001 }], externalTrafficPolicy: 'Local' };
  const v: ProxyView = { node: 'testHostname', family: 'IPv6', clusterCIDR: 'fd00:10::/64', serviceCIDR: 'fd00:ab34::/112', services: [{ spec, endpoints: [{ ip: 'ff06::c1', node: 'other' }, { ip: 'ff06::c2', node: 'testHostname' }] }] };
  const out = renderIptables(v, '');
  test('KUBE-SEP names hash the endpoint as [ip]:port', () => {
    expect(endpointString('ff06::c1', 80)).toBe('[ff06::c1]:80');
    expect(iptablesChains('ns1/svc1:p80', 'tcp').sep('[ff06::c1]:80')).toBe('KUBE-SEP-LIGRYQQLSZN4UWQ5');
    expect(iptablesChains('ns1/svc1:p80', 'tcp').sep('[ff06::c2]:80')).toBe('KUBE-SEP-XJJ5QXWGJG344QDZ');
  });
  test('the rules kube-proxy writes for it (those its local-traffic detector does not add)', () => {
    for (const l of [
      '-A KUBE-NODEPORTS -m comment --comment ns1/svc1:p80 -m tcp -p tcp --dport 30001 -j KUBE-EXT-XPGD46QRK7WJZT7O',
      '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d fd00:ab34::20 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O',
      '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d ::1/128 -j KUBE-NODEPORTS',
      '-A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment "masquerade LOCAL traffic for ns1/svc1:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
      '-A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment "route LOCAL traffic for ns1/svc1:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-XPGD46QRK7WJZT7O',
      '-A KUBE-EXT-XPGD46QRK7WJZT7O -j KUBE-SVL-XPGD46QRK7WJZT7O',
      '-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000',
      '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
      '-A KUBE-SEP-LIGRYQQLSZN4UWQ5 -m comment --comment ns1/svc1:p80 -s ff06::c1 -j KUBE-MARK-MASQ',
      '-A KUBE-SEP-LIGRYQQLSZN4UWQ5 -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination [ff06::c1]:80',
      '-A KUBE-SEP-XJJ5QXWGJG344QDZ -m comment --comment ns1/svc1:p80 -s ff06::c2 -j KUBE-MARK-MASQ',
      '-A KUBE-SEP-XJJ5QXWGJG344QDZ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination [ff06::c2]:80',
      '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> [ff06::c1]:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-LIGRYQQLSZN4UWQ5',
      '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> [ff06::c2]:80" -j KUBE-SEP-XJJ5QXWGJG344QDZ',
      '-A KUBE-SVL-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> [ff06::c2]:80" -j KUBE-SEP-XJJ5QXWGJG344QDZ',
    ]) expect(lines(out), l).toContain(l);
    // with a cluster CIDR (kind's --cluster-cidr): off-cluster sources are masqueraded, pods short-circuit to every endpoint
    expect(lines(out)).toContain('-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d fd00:ab34::20 --dport 80 ! -s fd00:10::/64 -j KUBE-MARK-MASQ');
    expect(lines(out)).toContain('-A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment "pod traffic for ns1/svc1:p80 external destinations" -s fd00:10::/64 -j KUBE-SVC-XPGD46QRK7WJZT7O');
  });
  test('no localhost NodePorts on IPv6: KUBE-FIREWALL only exists (for its jumps), without the localnet rule', () => {
    expect(out).not.toContain('127.0.0.0/8');
    expect(out).not.toMatch(/^-A KUBE-FIREWALL/m);
    expect(lines(out)).toContain(':KUBE-FIREWALL - [0:0]'); // made when missing, as kube-proxy's EnsureChain does
    expect(lines(out)).toContain('-I INPUT 1 -j KUBE-FIREWALL');
    const again = renderIptables(v, '*filter\n:KUBE-FIREWALL - [0:0]\n-A INPUT -j KUBE-FIREWALL\n-A OUTPUT -j KUBE-FIREWALL\nCOMMIT\n');
    expect(lines(again)).not.toContain(':KUBE-FIREWALL - [0:0]'); // an existing one is left alone, not flushed
    expect(again).not.toMatch(/-j KUBE-FIREWALL$/m);
  });
  test('the IPv4 proxier keeps its localhost NodePorts and kubelet\'s localnet rule', () => {
    const v4 = renderIptables({ ...v, family: undefined, clusterCIDR: '10.244.0.0/16', serviceCIDR: '10.96.0.0/16', services: [{ spec: { ...spec, clusterIP: '10.96.0.20' }, endpoints: [{ ip: '10.244.1.2', node: 'x' }] }] }, '');
    expect(v4).toContain('-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8');
    expect(v4).toContain('-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS');
  });
});

// kube-proxy's nftables TestNodePorts/ParseDump IPv6 case: ns1/svc1:p80 at fd00:172:30::41, endpoints
// fd00:10:180::1 and fd00:10:180::2:1, cluster CIDR fd00:10::/64, Service CIDR fd00:10:96::/112.
describe('nftables, IPv6: kube-proxy\'s vectors', () => {
  const spec: ServiceSpec = { namespace: 'ns1', name: 'svc1', clusterIP: 'fd00:172:30::41', ports: [{ name: 'p80', protocol: 'TCP', port: 80, nodePort: 3001 }] };
  const v: ProxyView = { node: 'node1', family: 'IPv6', clusterCIDR: 'fd00:10::/64', serviceCIDR: 'fd00:10:96::/112', services: [{ spec, endpoints: [{ ip: 'fd00:10:180::1', node: 'node1' }, { ip: 'fd00:10:180::2:1', node: 'node2' }] }] };
  const out = renderNft(v);
  test('endpoint chains name the address with its colons as dots', () => {
    const c = nftChains(spec, spec.ports[0], 'tcp');
    expect(c.endpoint('fd00:10:180::2:1', 80)).toBe('endpoint-2CRNCTTE-ns1/svc1/tcp/p80__fd00.10.180..2.1/80');
    expect(c.endpoint('fd00:10:180::1', 80)).toBe('endpoint-ZVRFLKHO-ns1/svc1/tcp/p80__fd00.10.180..1/80');
  });
  test('the table kube-proxy writes for it', () => {
    for (const l of [
      'add table ip6 kube-proxy { comment "rules for kube-proxy" ; }',
      'add set ip6 kube-proxy cluster-ips { type ipv6_addr ; comment "Active ClusterIPs" ; }',
      'add map ip6 kube-proxy firewall-ips { type ipv6_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }',
      'add map ip6 kube-proxy no-endpoint-services { type ipv6_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }',
      'add map ip6 kube-proxy service-ips { type ipv6_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }',
      'add rule ip6 kube-proxy cluster-ips-check ip6 daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"',
      'add rule ip6 kube-proxy cluster-ips-check ip6 daddr { fd00:10:96::/112 } drop comment "Drop traffic to unallocated ClusterIPs"',
      'add rule ip6 kube-proxy endpoint-2CRNCTTE-ns1/svc1/tcp/p80__fd00.10.180..2.1/80 ip6 saddr fd00:10:180::2:1 jump mark-for-masquerade',
      'add rule ip6 kube-proxy endpoint-2CRNCTTE-ns1/svc1/tcp/p80__fd00.10.180..2.1/80 meta l4proto tcp dnat to [fd00:10:180::2:1]:80',
      'add rule ip6 kube-proxy endpoint-ZVRFLKHO-ns1/svc1/tcp/p80__fd00.10.180..1/80 ip6 saddr fd00:10:180::1 jump mark-for-masquerade',
      'add rule ip6 kube-proxy endpoint-ZVRFLKHO-ns1/svc1/tcp/p80__fd00.10.180..1/80 meta l4proto tcp dnat to [fd00:10:180::1]:80',
      'add rule ip6 kube-proxy external-ULMVA6XW-ns1/svc1/tcp/p80 jump mark-for-masquerade',
      'add rule ip6 kube-proxy external-ULMVA6XW-ns1/svc1/tcp/p80 goto service-ULMVA6XW-ns1/svc1/tcp/p80',
      'add rule ip6 kube-proxy firewall-check ip6 daddr . meta l4proto . th dport vmap @firewall-ips',
      'add rule ip6 kube-proxy mark-for-masquerade mark set mark or 0x4000',
      'add rule ip6 kube-proxy masquerading mark and 0x4000 == 0 return',
      'add rule ip6 kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip6 daddr fd00:172:30::41 tcp dport 80 ip6 saddr != fd00:10::/64 jump mark-for-masquerade',
      'add rule ip6 kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-ZVRFLKHO-ns1/svc1/tcp/p80__fd00.10.180..1/80 , 1 : goto endpoint-2CRNCTTE-ns1/svc1/tcp/p80__fd00.10.180..2.1/80 }',
      'add rule ip6 kube-proxy service-endpoints-check ip6 daddr . meta l4proto . th dport vmap @no-endpoint-services',
      'add rule ip6 kube-proxy services ip6 daddr . meta l4proto . th dport vmap @service-ips',
      'add element ip6 kube-proxy cluster-ips { fd00:172:30::41 }',
      'add element ip6 kube-proxy service-ips { fd00:172:30::41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }',
    ]) expect(lines(out), l).toContain(l);
  });
  test('NodePorts on every local address but ::1 (nodePortAddresses unset)', () => {
    expect(lines(out)).toContain('add rule ip6 kube-proxy services fib daddr type local ip6 daddr != ::1 meta l4proto . th dport vmap @service-nodeports');
    expect(lines(out)).toContain('add rule ip6 kube-proxy nodeport-endpoints-check ip6 daddr != ::1 meta l4proto . th dport vmap @no-endpoint-nodeports');
    expect(out).not.toMatch(/\bip (daddr|saddr)\b|ipv4_addr|127\.0\.0\.0/);
  });
});

describe('dual-stack views', () => {
  const dual: ServiceSpec = { namespace: 'default', name: 'echo', clusterIP: '10.96.0.100', clusterIP6: 'fd00:10:96::64', ports: echoPorts(30080) };
  const v4only: ServiceSpec = { namespace: 'default', name: 'old', clusterIP: '10.96.0.50', ports: echoPorts() };
  const v6only: ServiceSpec = { namespace: 'default', name: 'six', clusterIP: 'fd00:10:96::70', ports: echoPorts() };
  const eps: Endpoint[] = [{ ip: '10.244.1.2', ip6: 'fd00:10:244:1::2', node: 'node1' }, { ip: '10.244.2.2', node: 'node2' }];
  const v4: ProxyView = { node: 'node1', clusterCIDR: '10.244.0.0/16', serviceCIDR: '10.96.0.0/16', services: [dual, v4only, v6only].map((spec) => ({ spec, endpoints: eps })) };
  const v6 = ipv6ProxyView(v4, 'fd00:10:244::/56');
  test('each Service\'s ClusterIP of a family', () => {
    expect([clusterIPOf(dual, 'IPv4'), clusterIPOf(dual, 'IPv6')]).toEqual(['10.96.0.100', 'fd00:10:96::64']);
    expect([clusterIPOf(v4only, 'IPv4'), clusterIPOf(v4only, 'IPv6')]).toEqual(['10.96.0.50', undefined]);
    expect([clusterIPOf(v6only, 'IPv4'), clusterIPOf(v6only, 'IPv6')]).toEqual([undefined, 'fd00:10:96::70']);
  });
  test('the IPv6 view: Services with an IPv6 ClusterIP, endpoints by their IPv6 address, kind\'s IPv6 CIDRs', () => {
    expect(v6).toMatchObject({ node: 'node1', family: 'IPv6', clusterCIDR: 'fd00:10:244::/56', serviceCIDR: 'fd00:10:96::/112' });
    expect(v6.services.map((s) => s.spec.name)).toEqual(['echo', 'six']);
    expect(v6.services[0].endpoints).toEqual([{ ip: 'fd00:10:244:1::2', node: 'node1' }]); // node2's pod has no IPv6 address
  });
  test('each proxier writes only its own family', () => {
    const ipt4 = renderIptables(v4, ''), ipt6 = renderIptables(v6, ''), nft4 = renderNft(v4), nft6 = renderNft(v6);
    for (const t of [ipt4, nft4]) { expect(t).toContain('10.96.0.100'); expect(t).not.toMatch(/fd00:/); }
    for (const t of [ipt6, nft6]) { expect(t).toContain('fd00:10:96::64'); expect(t).toContain('fd00:10:96::70'); expect(t).not.toMatch(/(^|[^.\w])10\.(96|244)\./m); } // (nft chain names spell fd00:10:244:1::2 fd00.10.244.1..2)
    expect(ipt6).toContain('-A KUBE-NODEPORTS -m comment --comment default/echo:tcp-echo -m tcp -p tcp --dport 30080 -j KUBE-EXT-'); // NodePorts on the node's IPv6 addresses too
    expect(nft6).toContain('add element ip6 kube-proxy service-nodeports { tcp . 30080 : goto external-');
    // the same chain names in both families: they hash the port name and protocol only
    const svc = iptablesChains('default/echo:tcp-echo', 'tcp').svc;
    expect(ipt4).toContain(`-j ${svc}`);
    expect(ipt6).toContain(`-j ${svc}`);
  });
  test('an IPv6 Service without endpoints is rejected; Local without local endpoints drops external traffic', () => {
    const spec: ServiceSpec = { namespace: 'ns', name: 'none', clusterIP: '10.96.9.9', clusterIP6: 'fd00:10:96::909', ports: [{ protocol: 'TCP', port: 80, nodePort: 30999 }], externalTrafficPolicy: 'Local' };
    const none: ProxyView = { node: 'node1', family: 'IPv6', clusterCIDR: 'fd00:10:244::/56', serviceCIDR: 'fd00:10:96::/112', services: [{ spec, endpoints: [] }] };
    expect(renderIptables(none, '')).toContain('-A KUBE-SERVICES -m comment --comment "ns/none has no endpoints" -m tcp -p tcp -d fd00:10:96::909 --dport 80 -j REJECT');
    expect(renderNft(none)).toContain('add element ip6 kube-proxy no-endpoint-services { fd00:10:96::909 . tcp . 80 comment "ns/none" : goto reject-chain }');
    const remote = { ...none, services: [{ spec, endpoints: [{ ip: 'fd00:10:244:2::5', node: 'node2' }] }] };
    expect(renderIptables(remote, '')).toContain('-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns/none has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30999 -j DROP');
    expect(renderNft(remote)).toContain('add element ip6 kube-proxy no-endpoint-nodeports { tcp . 30999 comment "ns/none" : drop }');
  });
  test('validation: the IPv6 ClusterIP in kind\'s IPv6 Service CIDR, canonical, not taken', () => {
    const ok: ServiceSpec = { ...dual, name: 'ok', clusterIP: '10.96.0.200', clusterIP6: 'fd00:10:96::c8', ports: echoPorts() };
    expect(() => validateService(ok, [dual])).not.toThrow();
    expect(() => validateService(v6only, [dual])).not.toThrow(); // an IPv6 single-stack Service
    expect(() => validateService({ ...ok, clusterIP6: 'fd00:10:97::1' }, [])).toThrow(/clusterIP6 fd00:10:97::1 is not in the service CIDR fd00:10:96::\/112/);
    expect(() => validateService({ ...ok, clusterIP6: '10.96.0.201' }, [])).toThrow(/clusterIP6 10\.96\.0\.201 is not in the service CIDR fd00:10:96::\/112/);
    expect(() => validateService({ ...ok, clusterIP6: 'fd00:10:96:0::c8' }, [])).toThrow(/must be written as fd00:10:96::c8/);
    expect(() => validateService({ ...ok, clusterIP6: 'fd00:10:96::64' }, [dual])).toThrow(/clusterIP6 fd00:10:96::64 is already default\/echo's/);
    expect(() => validateService({ ...v6only, name: 'six2' }, [v6only])).toThrow(/clusterIP fd00:10:96::70 is already default\/six's/);
    expect(() => validateService({ ...v6only, clusterIP6: 'fd00:10:96::71' }, [])).toThrow(/clusterIP must then be IPv4/);
    expect(() => validateService({ ...ok, clusterIP: '10.97.0.1' }, [])).toThrow(/clusterIP 10\.97\.0\.1 is not in the service CIDR 10\.96\.0\.0\/16/);
  });
});

describe('DNS, dual-stack', () => {
  test('CoreDNS\'s dashed pod names, both families', () => {
    expect(dashedAddress('10.244.1.2')).toBe('10-244-1-2');
    expect(dashedAddress('fd00:10:244:1::2')).toBe('fd00-10-244-1--2');
  });
  test('names answer A and AAAA: Services by both ClusterIPs, pods by both addresses', () => {
    const echo: ServiceSpec = { namespace: 'default', name: 'echo', clusterIP: '10.96.0.100', clusterIP6: 'fd00:10:96::64', ports: echoPorts() };
    expect(dnsRecords([dnsService('dual'), echo], [
      { name: 'p', namespace: 'default', ip: '10.244.1.2', ip6: 'fd00:10:244:1::2' }, { name: 'q', namespace: 'default', ip: '10.244.2.2' }, { name: 'r', namespace: 'default', ip: '' },
    ])).toBe([
      '10.96.0.10 kube-dns.kube-system.svc.cluster.local', 'fd00:10:96::a kube-dns.kube-system.svc.cluster.local',
      '10.96.0.100 echo.default.svc.cluster.local', 'fd00:10:96::64 echo.default.svc.cluster.local',
      '10.244.1.2 p.default.pod.cluster.local 10-244-1-2.default.pod.cluster.local',
      'fd00:10:244:1::2 p.default.pod.cluster.local fd00-10-244-1--2.default.pod.cluster.local',
      '10.244.2.2 q.default.pod.cluster.local 10-244-2-2.default.pod.cluster.local', '',
    ].join('\n'));
  });
  test('kube-dns: dual-stack only when asked; resolv.conf adds the IPv6 kube-dns only when asked (an IPv6-only lab)', () => {
    expect(DNS_SERVICE.clusterIP6).toBeUndefined();
    expect(dnsService('dual')).toMatchObject({ clusterIP: '10.96.0.10', clusterIP6: 'fd00:10:96::a' });
    expect(() => validateService(dnsService('dual'), [])).not.toThrow();
    expect(podResolvConf('kube-system', { ipv6Only: false })).toBe(podResolvConf('kube-system'));
    expect(podResolvConf('default', { ipv6Only: true })).toBe('search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver fd00:10:96::a\noptions ndots:5\n');
  });
});

// One namespace stands for a node whose pod addresses (10.244.1.2, fd00:10:244:1::2 for echo; ...::4 for DNS) sit on
// a veth inside it, with routes to the Service CIDRs, as a kind node reaches ClusterIPs. Services are applied in both
// families with applyProxyRules, read back, and used: TCP and UDP to the ClusterIPs, DNS through fd00:10:96::a.
describe.each(['iptables', 'nftables'] as ProxyMode[])('in a network namespace, kube-proxy in %s mode, both families', (mode) => {
  const ns = `tsvc6-${randomBytes(3).toString('hex')}`;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tsvc6-'));
  let dnsPid = 0;
  const echo: ServiceSpec = { namespace: 'default', name: 'echo', clusterIP: '10.96.0.100', clusterIP6: 'fd00:10:96::64', ports: echoPorts(30080) };
  const gone: ServiceSpec = { namespace: 'default', name: 'gone', clusterIP: '10.96.0.101', clusterIP6: 'fd00:10:96::65', ports: echoPorts() };
  const view = (specs: ServiceSpec[]): ProxyView => ({
    node: 'node1', clusterCIDR: '10.244.0.0/16', serviceCIDR: '10.96.0.0/16',
    services: [
      { spec: dnsService('dual'), endpoints: [{ ip: '10.244.1.4', ip6: 'fd00:10:244:1::4', node: 'node1' }] },
      ...specs.map((spec) => ({ spec, endpoints: [{ ip: '10.244.1.2', ip6: 'fd00:10:244:1::2', node: 'node1' }] })),
    ],
  });
  const apply = (specs: ServiceSpec[]) => { const v = view(specs); applyProxyRules(ns, mode, v, ipv6ProxyView(v, 'fd00:10:244::/56')); };
  const dump6 = () => (mode === 'iptables' ? sh(ns, ['ip6tables-save']).out : sh(ns, ['nft', 'list', 'table', 'ip6', 'kube-proxy']).out);
  const dump4 = () => (mode === 'iptables' ? sh(ns, ['iptables-save']).out : sh(ns, ['nft', 'list', 'table', 'ip', 'kube-proxy']).out);

  beforeAll(async () => {
    ipn('', 'netns', 'add', ns);
    ipn(ns, 'link', 'set', 'lo', 'up');
    ipn(ns, 'link', 'add', 'pod0', 'type', 'veth', 'peer', 'name', 'pod1');
    for (const a of ['10.244.1.2/24', '10.244.1.4/24']) ipn(ns, 'addr', 'add', a, 'dev', 'pod0');
    for (const a of ['fd00:10:244:1::2/64', 'fd00:10:244:1::4/64']) ipn(ns, 'addr', 'add', a, 'dev', 'pod0', 'nodad');
    ipn(ns, 'link', 'set', 'pod0', 'up');
    ipn(ns, 'link', 'set', 'pod1', 'up');
    ipn(ns, 'route', 'add', '10.96.0.0/16', 'dev', 'pod0');
    ipn(ns, '-6', 'route', 'add', 'fd00:10:96::/112', 'dev', 'pod0');
    apply([echo, gone]);
    apply([echo, gone]); // a second render over the first, as every sync is
    chmodSync(dir, 0o755); // dnsmasq reads its hosts file as nobody
    await writeDnsRecords(dir, dnsRecords([dnsService('dual'), echo], [{ name: 'p', namespace: 'default', ip: '10.244.1.2', ip6: 'fd00:10:244:1::2' }]));
    dnsPid = await launchDns(dir, ns);
    mkdirSync(`/etc/netns/${ns}`, { recursive: true });
    writeFileSync(`/etc/netns/${ns}/resolv.conf`, 'search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver fd00:10:96::a\noptions ndots:5\n');
  });
  afterAll(() => {
    if (dnsPid) { try { process.kill(dnsPid, 'SIGKILL'); } catch { /* gone */ } }
    netnsDel(ns);
    rmSync(`/etc/netns/${ns}`, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
    expect(netnsList()).not.toContain(ns);
  });

  test('read back: the IPv6 rules as the kernel holds them, and the IPv4 ones beside them', () => {
    const t6 = dump6(), t4 = dump4();
    const svc = iptablesChains('default/echo:tcp-echo', 'tcp').svc, sep = iptablesChains('default/echo:tcp-echo', 'tcp').sep('[fd00:10:244:1::2]:8080');
    if (mode === 'iptables') {
      for (const l of [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        '-A INPUT -j KUBE-FIREWALL',
        `-A KUBE-SERVICES -d fd00:10:96::64/128 -p tcp -m comment --comment "default/echo:tcp-echo cluster IP" -m tcp --dport 8080 -j ${svc}`,
        `-A ${svc} ! -s fd00:10:244::/56 -d fd00:10:96::64/128 -p tcp -m comment --comment "default/echo:tcp-echo cluster IP" -m tcp --dport 8080 -j KUBE-MARK-MASQ`,
        `-A ${svc} -m comment --comment "default/echo:tcp-echo -> [fd00:10:244:1::2]:8080" -j ${sep}`,
        `-A ${sep} -s fd00:10:244:1::2/128 -m comment --comment "default/echo:tcp-echo" -j KUBE-MARK-MASQ`,
        `-A ${sep} -p tcp -m comment --comment "default/echo:tcp-echo" -m tcp -j DNAT --to-destination [fd00:10:244:1::2]:8080`,
        '-A KUBE-SERVICES ! -d ::1/128 -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
      ]) expect(lines(t6), l).toContain(l);
      expect(t6.match(/^-A INPUT -j KUBE-FIREWALL$/gm)).toHaveLength(1); // the jumps once, however many renders
      expect(t6).not.toMatch(/^-A KUBE-FIREWALL/m);
      expect(t4).toContain(`-A KUBE-SERVICES -d 10.96.0.100/32 -p tcp -m comment --comment "default/echo:tcp-echo cluster IP" -m tcp --dport 8080 -j ${svc}`);
      expect(t4).toContain('-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections"');
    } else {
      const c = nftChains(echo, echo.ports[0], 'tcp');
      expect(t6).toMatch(/^table ip6 kube-proxy \{/);
      for (const l of [
        `fd00:10:96::64 . tcp . 8080 : goto ${c.service}`,
        `ip6 daddr fd00:10:96::64 tcp dport 8080 ip6 saddr != fd00:10:244::/56 jump mark-for-masquerade`,
        `ip6 saddr fd00:10:244:1::2 jump mark-for-masquerade`,
        'meta l4proto tcp dnat to [fd00:10:244:1::2]:8080',
        'fib daddr type local ip6 daddr != ::1 meta l4proto . th dport vmap @service-nodeports',
        'ip6 daddr fd00:10:96::/112 drop comment "Drop traffic to unallocated ClusterIPs"',
        `chain ${c.endpoint('fd00:10:244:1::2', 8080)} {`,
      ]) expect(t6, l).toContain(l);
      expect(t4).toContain(`10.96.0.100 . tcp . 8080 : goto ${c.service}`);
    }
  });

  const echoThrough = (pod: string, clusterIP: string) => {
    const script = `
      const net = require('net'), dgram = require('dgram'), fam = net.isIPv6('${clusterIP}') ? 'udp6' : 'udp4', out = {};
      net.createServer((s) => s.pipe(s)).listen(8080, '${pod}', () => {
        const u = dgram.createSocket(fam); u.on('message', (m, r) => u.send(m, r.port, r.address));
        u.bind(8081, '${pod}', () => {
          const c = net.connect(8080, '${clusterIP}', () => c.write('t'));
          c.on('data', () => { out.tcp = c.remoteAddress; c.destroy(); udp(); });
          c.on('error', (e) => { out.tcp = e.code; udp(); });
        });
      });
      function udp() {
        const k = dgram.createSocket(fam);
        k.on('message', (m, r) => { out.udp = r.address; done(); });
        k.on('error', (e) => { out.udp = e.code; done(); });
        k.connect(8081, '${clusterIP}', () => k.send('u'));
        setTimeout(() => { out.udp = out.udp || 'timeout'; done(); }, 2000);
      }
      function done() { console.log(JSON.stringify(out)); process.exit(0); }`;
    const r = sh(ns, [process.execPath, '-e', script]);
    return JSON.parse(r.out.trim().split('\n').pop() ?? '{}') as { tcp?: string; udp?: string };
  };

  test('TCP and UDP to the IPv6 ClusterIP reach the pod, and the replies come from the ClusterIP (and IPv4 still works)', () => {
    expect(echoThrough('fd00:10:244:1::2', 'fd00:10:96::64')).toEqual({ tcp: 'fd00:10:96::64', udp: 'fd00:10:96::64' });
    expect(echoThrough('10.244.1.2', '10.96.0.100')).toEqual({ tcp: '10.96.0.100', udp: '10.96.0.100' });
  });

  test('DNS through kube-dns\'s IPv6 ClusterIP: dnsmasq answers on the pod\'s IPv6 address, AAAA and A', () => {
    const q = (db: string, name: string) => sh(ns, ['getent', db, name], 15_000).out.split(/\s+/)[0];
    expect(q('ahostsv6', 'echo')).toBe('fd00:10:96::64');
    expect(q('ahostsv4', 'echo')).toBe('10.96.0.100');
    expect(q('ahostsv6', 'fd00-10-244-1--2.default.pod.cluster.local')).toBe('fd00:10:244:1::2');
    expect(q('ahostsv6', 'kube-dns.kube-system')).toBe(DNS_SERVICE_IP6);
    expect(sh(ns, ['getent', 'ahostsv6', 'outside.invalid'], 15_000).code).not.toBe(0); // never forwarded
  });

  test('a re-render replaces the previous IPv6 rules whole: a deleted Service leaves nothing behind', () => {
    const marks = mode === 'iptables' ? [iptablesChains('default/gone:tcp-echo', 'tcp').svc, 'fd00:10:96::65'] : ['default/gone/', 'fd00:10:96::65'];
    for (const m of marks) expect(dump6()).toContain(m);
    apply([echo]);
    for (const m of marks) expect(dump6()).not.toContain(m);
    expect(dump4()).not.toContain('10.96.0.101');
    expect(echoThrough('fd00:10:244:1::2', 'fd00:10:96::64')).toEqual({ tcp: 'fd00:10:96::64', udp: 'fd00:10:96::64' });
  });
});
