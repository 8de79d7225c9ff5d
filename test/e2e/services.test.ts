// Services in the lab as kind has them: kube-proxy's rules on every node (iptables
// and nftables modes) and CoreDNS's Service. Real clients on connected sockets, so
// a reply counts only when it comes back from the address the client dialled:
// pods to a ClusterIP whose endpoint is on their node and on the other node, a pod
// reaching itself (hairpin), NodePorts with both external traffic policies from
// another node, the node itself to a ClusterIP, and names through the DNS Service.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { existsSync, readdirSync } from 'node:fs';
import { addPod, defineService, deleteService, labDown, labUp, proxyView } from '../../lab/lab.js';
import { labPrefix, type LabState } from '../../lab/state.js';
import { iptablesChains, nftChains, renderIptables, renderNft, type ServiceSpec } from '../../lab/services.js';
import { DNS_SERVICE_IP } from '../../lab/dns.js';
import { netnsList } from '../../lib/sh.js';
import { connectedEcho, sh, testLabName } from '../helpers/lab.js';

// kube-proxy's own test vectors (pkg/proxy/iptables and nftables proxier_test.go) and
// the kube-dns chains every cluster has: the names are computed as kube-proxy computes them.
describe('chain names, as kube-proxy hashes them', () => {
  test('iptables: KUBE-SVC/SVL/SEP of sha256 + base32', () => {
    expect(iptablesChains('ns1/svc1:p80', 'tcp').svc).toBe('KUBE-SVC-XPGD46QRK7WJZT7O');
    expect(iptablesChains('ns1/svc1:p80', 'tcp').sep('10.180.0.1:80')).toBe('KUBE-SEP-SXIVWICOYRO3J4NJ');
    expect(iptablesChains('ns2/svc2:p80', 'tcp').svl).toBe('KUBE-SVL-GNZBNJ2PO5MGZ6GT');
    expect(iptablesChains('kube-system/kube-dns:dns', 'udp').svc).toBe('KUBE-SVC-TCOU7JCQXEZGVUNU');
    expect(iptablesChains('kube-system/kube-dns:dns-tcp', 'tcp').svc).toBe('KUBE-SVC-ERIFXISQEP7F7OF4');
  });
  test('nftables: service-/external-/endpoint- with an 8-character hash of the readable name', () => {
    const c = nftChains({ namespace: 'ns1', name: 'svc1' }, { name: 'p80' }, 'tcp');
    expect(c.service).toBe('service-ULMVA6XW-ns1/svc1/tcp/p80');
    expect(c.endpoint('10.180.0.1', 80)).toBe('endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80');
    expect(nftChains({ namespace: 'ns2', name: 'svc2' }, { name: 'p80' }, 'tcp').external).toBe('external-42NFTM6N-ns2/svc2/tcp/p80');
  });
  test('a Service without endpoints is rejected, not DNATed; Local without local endpoints drops external traffic', () => {
    const spec: ServiceSpec = { namespace: 'ns', name: 'none', clusterIP: '10.96.9.9', ports: [{ protocol: 'TCP', port: 80, nodePort: 30999 }], externalTrafficPolicy: 'Local' };
    const v = { node: 'node1', clusterCIDR: '10.244.0.0/16', serviceCIDR: '10.96.0.0/16', services: [{ spec, endpoints: [] }] };
    const ipt = renderIptables(v, '');
    expect(ipt).toContain('-A KUBE-SERVICES -m comment --comment "ns/none has no endpoints" -m tcp -p tcp -d 10.96.9.9 --dport 80 -j REJECT');
    expect(ipt).toContain('-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns/none has no endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30999 -j REJECT');
    expect(ipt).not.toMatch(/KUBE-SVC-|KUBE-SEP-/);
    expect(renderNft(v)).toContain('add element ip kube-proxy no-endpoint-services { 10.96.9.9 . tcp . 80 comment "ns/none" : goto reject-chain }');
    const remote = { ...v, services: [{ spec, endpoints: [{ ip: '10.244.2.5', node: 'node2' }] }] };
    expect(renderIptables(remote, '')).toContain('-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns/none has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30999 -j DROP');
    expect(renderNft(remote)).toContain('add element ip kube-proxy no-endpoint-nodeports { tcp . 30999 comment "ns/none" : drop }');
  });
});

describe.each(['iptables', 'nftables'] as const)('Services, kube-proxy in %s mode', (mode) => {
  const name = testLabName();
  let s: LabState;
  const pod = (n: string) => s.pods.find((p) => p.name === n)!;
  const node = (n: string) => s.nodes.find((x) => x.name === n)!;
  const echoPorts = (np?: number) => [
    { name: 'tcp', protocol: 'TCP' as const, port: 8080, nodePort: np },
    { name: 'udp', protocol: 'UDP' as const, port: 8081, nodePort: np && np + 1 },
  ];
  // One endpoint each, so which node serves is known.
  const ON_NODE1: ServiceSpec = { namespace: 'default', name: 'on-node1', clusterIP: '10.96.1.1', ports: echoPorts(), endpoints: ['node1-p2'] };
  const ON_NODE2: ServiceSpec = { namespace: 'default', name: 'on-node2', clusterIP: '10.96.1.2', ports: echoPorts(), endpoints: ['node2-p2'] };
  const SELF: ServiceSpec = { namespace: 'default', name: 'self', clusterIP: '10.96.1.3', ports: echoPorts(), endpoints: ['node1-p1'] };
  const NP_CLUSTER: ServiceSpec = { namespace: 'default', name: 'np-cluster', clusterIP: '10.96.1.4', ports: echoPorts(31080), endpoints: ['node2-p2'], externalTrafficPolicy: 'Cluster' };
  const NP_LOCAL: ServiceSpec = { namespace: 'default', name: 'np-local', clusterIP: '10.96.1.5', ports: echoPorts(31180), endpoints: ['node1-p2'], externalTrafficPolicy: 'Local' };
  const EMPTY: ServiceSpec = { namespace: 'default', name: 'empty', clusterIP: '10.96.1.6', ports: echoPorts(), endpoints: ['no-such-pod'] };

  beforeAll(async () => {
    s = await labUp({ name, nodes: 2, podsPerNode: 2, proxyMode: mode });
    for (const spec of [ON_NODE1, ON_NODE2, SELF, NP_CLUSTER, NP_LOCAL, EMPTY]) await defineService(s, spec);
  });
  afterAll(async () => {
    await labDown(name);
  });

  const expectEcho = (ns: string, ip: string, tcpPort = 8080, udpPort = 8081) => {
    const r = connectedEcho(ns, ip, tcpPort, udpPort);
    expect(r.tcp, `TCP ${ns} → ${ip}:${tcpPort}`).toEqual({ ok: true, from: ip });
    expect(r.udp, `UDP ${ns} → ${ip}:${udpPort}`).toEqual({ ok: true, from: ip });
  };

  test('the rules have kube-proxy\'s shape on every node', () => {
    for (const n of s.nodes) {
      if (mode === 'iptables') {
        const nat = sh(n.netns, ['iptables-save', '-t', 'nat']).out, filter = sh(n.netns, ['iptables-save', '-t', 'filter']).out;
        const dns = iptablesChains('kube-system/kube-dns:dns', 'udp').svc;
        expect(nat).toContain('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES');
        expect(nat).toContain('-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES');
        expect(nat).toContain('-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING');
        expect(nat).toContain(`-A KUBE-SERVICES -d ${DNS_SERVICE_IP}/32 -p udp -m comment --comment "kube-system/kube-dns:dns cluster IP" -m udp --dport 53 -j ${dns}`);
        expect(nat).toContain(`-A ${dns} ! -s 10.244.0.0/16 -d ${DNS_SERVICE_IP}/32 -p udp -m comment --comment "kube-system/kube-dns:dns cluster IP" -m udp --dport 53 -j KUBE-MARK-MASQ`);
        expect(nat).toContain('-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000');
        expect(nat).toContain('-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully');
        // four echo endpoints: three random picks at 1/4, 1/3, 1/2, then the last one
        const echo = iptablesChains('default/echo:tcp-echo', 'tcp');
        const picks = nat.split('\n').filter((l) => l.startsWith(`-A ${echo.svc} `) && l.includes('-j KUBE-SEP-'));
        expect(picks.map((l) => l.match(/--probability (\S+)/)?.[1] ?? 'last')).toEqual(['0.25000000000', '0.33333333349', '0.50000000000', 'last']);
        const sep = echo.sep(`${pod('node2-p1').ip}:8080`);
        expect(nat).toContain(`-A ${sep} -s ${pod('node2-p1').ip}/32 -m comment --comment "default/echo:tcp-echo" -j KUBE-MARK-MASQ`);
        expect(nat).toContain(`-A ${sep} -p tcp -m comment --comment "default/echo:tcp-echo" -m tcp -j DNAT --to-destination ${pod('node2-p1').ip}:8080`);
        const lastService = nat.split('\n').filter((l) => l.startsWith('-A KUBE-SERVICES ')).pop();
        expect(lastService).toBe('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS');
        // NodePort, externalTrafficPolicy Cluster: masquerade; Local: only this node's endpoint, in KUBE-SVL
        const c = iptablesChains('default/np-cluster:tcp', 'tcp'), l = iptablesChains('default/np-local:tcp', 'tcp');
        expect(nat).toContain(`-A KUBE-NODEPORTS -p tcp -m comment --comment "default/np-cluster:tcp" -m tcp --dport 31080 -j ${c.ext}`);
        expect(nat).toContain(`-A ${c.ext} -m comment --comment "masquerade traffic for default/np-cluster:tcp external destinations" -j KUBE-MARK-MASQ`);
        expect(nat).toContain(`-A ${c.ext} -j ${c.svc}`);
        if (n.name === 'node1') {
          expect(nat).toContain(`-A ${l.ext} -j ${l.svl}`);
          expect(nat).toContain(`-A ${l.svl} -m comment --comment "default/np-local:tcp -> ${pod('node1-p2').ip}:8080" -j ${l.sep(`${pod('node1-p2').ip}:8080`)}`);
        } else {
          expect(nat).not.toContain(`:${l.svl} `);
          expect(filter).toContain('-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "default/np-local:tcp has no local endpoints" -m addrtype --dst-type LOCAL -m tcp --dport 31180 -j DROP');
        }
        expect(filter).toContain('-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT');
        expect(filter).toContain('-A KUBE-SERVICES -d 10.96.1.6/32 -p tcp -m comment --comment "default/empty:tcp has no endpoints" -m tcp --dport 8080 -j REJECT --reject-with icmp-port-unreachable');
      } else {
        const t = sh(n.netns, ['nft', 'list', 'table', 'ip', 'kube-proxy']).out;
        const dns = nftChains({ namespace: 'kube-system', name: 'kube-dns' }, { name: 'dns' }, 'udp');
        expect(t).toMatch(/chain nat-prerouting \{\s+type nat hook prerouting priority dstnat; policy accept;\s+jump services\s+\}/);
        expect(t).toMatch(/chain nat-output \{\s+type nat hook output priority -100; policy accept;\s+jump services\s+\}/);
        expect(t).toMatch(/chain nat-postrouting \{\s+type nat hook postrouting priority srcnat; policy accept;\s+jump masquerading\s+\}/);
        expect(t).toMatch(/chain masquerading \{\s+meta mark & 0x00004000 == 0x00000000 return\s+meta mark set meta mark \^ 0x00004000\s+masquerade fully-random\s+\}/);
        expect(t).toContain('ip daddr . meta l4proto . th dport vmap @service-ips');
        expect(t).toContain('fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports');
        expect(t).toContain(`${DNS_SERVICE_IP} . udp . 53 : goto ${dns.service}`);
        expect(t).toContain(`chain ${dns.service} {`);
        expect(t).toContain(`ip daddr ${DNS_SERVICE_IP} udp dport 53 ip saddr != 10.244.0.0/16 jump mark-for-masquerade`);
        expect(t).toContain(`meta l4proto udp dnat to ${s.dnsPod!.ip}:53`);
        expect(t).toMatch(/numgen random mod 4 vmap \{ 0 : goto endpoint-\S+-default\/echo\/tcp\/tcp-echo__/);
        const l = nftChains({ namespace: 'default', name: 'np-local' }, { name: 'tcp' }, 'tcp');
        expect(t).toContain(`tcp . 31180 : goto ${l.external}`);
        if (n.name === 'node1') expect(t).toContain(`goto ${l.local}`);
        else expect(t).toMatch(/tcp \. 31180 comment "default\/np-local:tcp" : drop/);
      }
    }
  });

  // First traffic of the lab on purpose: Service traffic that leaves a node the way it came
  // (twill0 in and out) makes the node's kernel send ICMP redirects to the client pod, which
  // use up the kernel's per-destination ICMP budget, and a REJECT's port-unreachable to that
  // pod is then suppressed for a while (IcmpOutRateLimitHost). The node host is not limited.
  test('a Service without endpoints is refused at once, from a pod and from the node', () => {
    for (const ns of [pod('node1-p1').netns, node('node1').netns]) {
      const r = connectedEcho(ns, EMPTY.clusterIP, 8080, 8081, 1500);
      expect(r.tcp.err, ns).toBe('ECONNREFUSED');
      expect(r.udp.err, ns).toBe('ECONNREFUSED');
    }
  });

  test('a re-render replaces the previous rules whole: a deleted Service leaves nothing behind', async () => {
    const extra: ServiceSpec = { namespace: 'default', name: 'short-lived', clusterIP: '10.96.2.1', ports: echoPorts(31280), endpoints: ['node2-p1'] };
    await defineService(s, extra);
    const dump = () => (mode === 'iptables' ? sh(node('node1').netns, ['iptables-save']).out : sh(node('node1').netns, ['nft', 'list', 'table', 'ip', 'kube-proxy']).out);
    const marks = mode === 'iptables' ? [iptablesChains('default/short-lived:tcp', 'tcp').svc, iptablesChains('default/short-lived:tcp', 'tcp').ext, '10.96.2.1'] : ['short-lived', '10.96.2.1', '31280'];
    for (const m of marks) expect(dump()).toContain(m);
    expectEcho(pod('node1-p1').netns, extra.clusterIP);
    await deleteService(s, 'default', 'short-lived');
    for (const m of marks) expect(dump()).not.toContain(m);
    expect(connectedEcho(pod('node1-p1').netns, extra.clusterIP, 8080, 8081, 800).tcp.ok).toBe(false);
  });

  test('pods reach a ClusterIP (TCP and UDP) whose endpoint is on their node and on the other node; replies come from the ClusterIP', () => {
    for (const client of ['node1-p1', 'node2-p1']) {
      expectEcho(pod(client).netns, ON_NODE1.clusterIP);
      expectEcho(pod(client).netns, ON_NODE2.clusterIP);
    }
  });

  test('every pod reaches the echo Service, spread over four endpoints', () => {
    for (const p of s.pods) expectEcho(p.netns, '10.96.0.100');
  });

  test('hairpin: a pod reaches itself through a Service whose only endpoint it is', () => {
    expectEcho(pod('node1-p1').netns, SELF.clusterIP);
  });

  test('the node itself (a hostNetwork client) reaches ClusterIPs with endpoints on either node', () => {
    for (const n of s.nodes) {
      expectEcho(n.netns, ON_NODE1.clusterIP);
      expectEcho(n.netns, ON_NODE2.clusterIP);
    }
  });

  test('NodePort, externalTrafficPolicy Cluster: any node forwards, from another node\'s host', () => {
    expectEcho(node('node2').netns, node('node1').underlayIP, 31080, 31081); // node1 has no endpoint: masqueraded to node2's
    expectEcho(node('node1').netns, node('node2').underlayIP, 31080, 31081);
    expectEcho(node('node2').netns, node('node1').underlayIP, 30080, 30081); // the lab's echo-nodeport
  });

  test('NodePort, externalTrafficPolicy Local: only the node with the endpoint answers', () => {
    expectEcho(node('node2').netns, node('node1').underlayIP, 31180, 31181);
    const r = connectedEcho(node('node1').netns, node('node2').underlayIP, 31180, 31181, 1500);
    expect(r.tcp.ok, 'node2 has no local endpoint: it must not answer').toBe(false);
    expect(r.udp.ok).toBe(false);
  });

  test('every pod resolves Services and pods through the DNS Service', () => {
    const n2 = pod('node2-p1');
    const want: [string, string][] = [
      ['echo', '10.96.0.100'], ['echo.default.svc.cluster.local', '10.96.0.100'], ['kube-dns.kube-system', DNS_SERVICE_IP],
      [`${n2.name}.default.pod.cluster.local`, n2.ip], [`${n2.ip.replace(/\./g, '-')}.default.pod.cluster.local`, n2.ip],
    ];
    for (const p of s.pods) {
      for (const [q, ip] of want) {
        const r = sh(p.netns, ['getent', 'hosts', q], 15_000);
        expect(r.code, `${p.name}: getent hosts ${q}\n${r.out}`).toBe(0);
        expect(r.out.split(/\s+/)[0], `${p.name}: ${q}`).toBe(ip);
      }
      expect(sh(p.netns, ['getent', 'hosts', 'nosuch.default.svc.cluster.local'], 15_000).code).not.toBe(0);
      expect(sh(p.netns, ['getent', 'hosts', 'outside.invalid'], 15_000).code).not.toBe(0); // never forwarded: no upstream
    }
  });

  test('a new pod becomes an endpoint and gets a name at once', async () => {
    const p = await addPod(s, node('node2'), 'node2-p3', 'default');
    const r = sh(pod('node1-p1').netns, ['getent', 'hosts', 'node2-p3.default.pod.cluster.local']);
    expect(r.out.split(/\s+/)[0]).toBe(p.ip);
    const view = proxyView(s, 'node1').services.find((x) => x.spec.name === 'echo')!;
    expect(view.endpoints.map((e) => e.ip)).toContain(p.ip);
    if (mode === 'iptables') {
      const echo = iptablesChains('default/echo:tcp-echo', 'tcp');
      expect(sh(node('node1').netns, ['iptables-save', '-t', 'nat']).out).toContain(`-A ${echo.sep(`${p.ip}:8080`)} -p tcp`);
    } else {
      expect(sh(node('node1').netns, ['nft', 'list', 'table', 'ip', 'kube-proxy']).out).toMatch(/numgen random mod 5 vmap \{ 0 : goto endpoint-\S+-default\/echo\/tcp\/tcp-echo__/);
    }
    const defined: ServiceSpec = { namespace: 'default', name: 'only-new', clusterIP: '10.96.2.2', ports: echoPorts(), endpoints: ['node2-p3'] };
    await defineService(s, defined);
    expect(sh(pod('node1-p1').netns, ['getent', 'hosts', 'only-new']).out.split(/\s+/)[0]).toBe(defined.clusterIP);
    expectEcho(pod('node1-p1').netns, defined.clusterIP);
  });

  test('Services are validated before anything changes', async () => {
    await expect(defineService(s, { ...ON_NODE1, name: 'bad-port', clusterIP: '10.96.3.1', ports: [{ protocol: 'TCP', port: 80, nodePort: 80 }] })).rejects.toThrow(/nodePort 80 is outside 30000-32767/);
    await expect(defineService(s, { ...ON_NODE1, name: 'bad-ip', clusterIP: '10.97.0.1' })).rejects.toThrow(/not in the service CIDR/);
    await expect(defineService(s, { ...ON_NODE1, name: 'same-ip' })).rejects.toThrow(/already default\/on-node1's/);
    expect(s.services!.some((x) => x.name.startsWith('bad') || x.name === 'same-ip')).toBe(false);
  });

  test('lab down removes the pods\' /etc/netns entries with the namespaces (the rules go with them)', async () => {
    const prefix = labPrefix(name);
    expect(existsSync(`/etc/netns/${pod('node1-p1').netns}/resolv.conf`)).toBe(true);
    await labDown(name);
    expect(netnsList().filter((n) => n.startsWith(prefix))).toEqual([]);
    expect(existsSync('/etc/netns') ? readdirSync('/etc/netns').filter((d) => d.startsWith(prefix)) : []).toEqual([]);
  });
});
