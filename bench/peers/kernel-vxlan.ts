// The kernel's VXLAN, set up the way flannel's vxlan backend sets up flannel.1:
// VNI 1, UDP 8472, nolearning, and per remote node a permanent neighbor for its
// VTEP address, an FDB entry for its VTEP MAC, and an onlink route to its
// subnet. Used as the benchmark peer and as the interop peer in tests.
import { ipn, run, netnsDel, sysctl } from '../../lib/sh.js';
import { addToIPv6, formatIPv6Address, parseIPv6Cidr } from '../../lib/ipv6.js';
import { applyProxyRules, SERVICE_CIDR } from '../../lab/services.js';
import { benchService, type PeerTopology } from './topology.js';

export interface FlannelNodeSpec {
  netns: string;
  underlayDev: string; // already in netns, with underlayIP on it
  underlayIP: string;
  podCIDR: string; // x.y.z.0/24
  vtepMAC: string;
}
export interface RemoteVtep { podCIDR: string; underlayIP: string; vtepMAC: string }

const net = (cidr: string) => cidr.split('/')[0];

/** Makes flannel.1 on a node namespace and points it at each remote VTEP. */
export function addFlannelVxlan(n: FlannelNodeSpec, remotes: RemoteVtep[], port = 8472, vni = 1, mtu = 1450): void {
  ipn(n.netns, 'link', 'add', 'flannel.1', 'type', 'vxlan', 'id', String(vni), 'local', n.underlayIP, 'dev', n.underlayDev, 'dstport', String(port), 'nolearning');
  ipn(n.netns, 'link', 'set', 'flannel.1', 'address', n.vtepMAC, 'mtu', String(mtu), 'up');
  ipn(n.netns, 'addr', 'add', `${net(n.podCIDR)}/32`, 'dev', 'flannel.1');
  for (const r of remotes) {
    ipn(n.netns, 'neigh', 'add', net(r.podCIDR), 'lladdr', r.vtepMAC, 'dev', 'flannel.1', 'nud', 'permanent');
    ipn(n.netns, 'route', 'add', r.podCIDR, 'via', net(r.podCIDR), 'dev', 'flannel.1', 'onlink');
    run('bridge', ['-n', n.netns, 'fdb', 'add', r.vtepMAC, 'dev', 'flannel.1', 'dst', r.underlayIP]);
  }
}

/**
 * A pod behind a kernel-routed node: a veth whose node side holds the gateway
 * (.1/32) and a host route to the pod, so several pods can share one node.
 */
export function addKernelPod(nodeNs: string, podNs: string, hostIf: string, podCIDR: string, hostNum = 2, mtu = 1450): string {
  const base = net(podCIDR).split('.').slice(0, 3).join('.');
  const ip = `${base}.${hostNum}`, gw = `${base}.1`;
  ipn('', 'netns', 'add', podNs);
  ipn(podNs, 'link', 'set', 'lo', 'up');
  ipn(nodeNs, 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', podNs);
  ipn(podNs, 'addr', 'add', `${ip}/32`, 'dev', 'eth0');
  ipn(podNs, 'link', 'set', 'eth0', 'mtu', String(mtu), 'up');
  ipn(podNs, 'route', 'add', gw, 'dev', 'eth0', 'scope', 'link');
  ipn(podNs, 'route', 'add', 'default', 'via', gw, 'dev', 'eth0');
  ipn(nodeNs, 'addr', 'add', `${gw}/32`, 'dev', hostIf);
  ipn(nodeNs, 'link', 'set', hostIf, 'up');
  ipn(nodeNs, 'route', 'add', `${ip}/32`, 'dev', hostIf);
  return ip;
}

// flannel-v6.<VNI>, as flanneld's vxlan backend sets it up with EnableIPv6 (flannel
// pkg/backend/vxlan): a VXLAN device of its own over the IPv6 underlay, its own MAC.
/** A node's IPv6 side as flannel publishes it: PublicIPv6, its IPv6 lease, BackendV6Data's VtepMAC. */
export interface RemoteVtep6 { podCIDR6: string; underlayIP6: string; vtepMAC6: string }

export const FLANNEL_V6_DEV = 'flannel-v6.1';

/** The network address of an IPv6 prefix (`fd00:10:244:2::/64` → `fd00:10:244:2::`): flannel's VTEP address for that lease. */
export function net6(cidr: string): string { return formatIPv6Address(parseIPv6Cidr(cidr).addr); }

/** Address `n` of an IPv6 prefix (n = 1: the gateway, 2: the first pod). */
export function host6(cidr: string, n: number): string { return formatIPv6Address(addToIPv6(parseIPv6Cidr(cidr).addr, n)); }

function linkMTU(ns: string, dev: string): number {
  return (JSON.parse(ipn(ns, '-j', 'link', 'show', dev)) as { mtu: number }[])[0].mtu;
}

/** One remote node on flannel-v6.<vni>, as flannel's handleSubnetEvents adds it (AddV6ARP, AddV6FDB, RouteReplace). */
export function addFlannelRemote6(netns: string, r: RemoteVtep6, dev = FLANNEL_V6_DEV): void {
  const gw = net6(r.podCIDR6);
  ipn(netns, '-6', 'neigh', 'replace', gw, 'lladdr', r.vtepMAC6, 'dev', dev, 'nud', 'permanent');
  run('bridge', ['-n', netns, 'fdb', 'replace', r.vtepMAC6, 'dev', dev, 'dst', r.underlayIP6, 'self', 'permanent']);
  ipn(netns, '-6', 'route', 'replace', r.podCIDR6, 'via', gw, 'dev', dev, 'onlink');
}

/** Removes what addFlannelRemote6 added (flannel's EventRemoved). */
export function delFlannelRemote6(netns: string, r: RemoteVtep6, dev = FLANNEL_V6_DEV): void {
  const gw = net6(r.podCIDR6);
  ipn(netns, '-6', 'route', 'del', r.podCIDR6, 'via', gw, 'dev', dev, 'onlink');
  run('bridge', ['-n', netns, 'fdb', 'del', r.vtepMAC6, 'dev', dev, 'dst', r.underlayIP6, 'self']);
  ipn(netns, '-6', 'neigh', 'del', gw, 'dev', dev);
}

/**
 * flannel-v6.<vni> on a node namespace whose `underlayDev` already holds `self.underlayIP6`,
 * pointed at each remote. `mtu` defaults to what flannel asks for: the underlay device's
 * MTU - 50; the kernel clamps it to the underlay's MTU - 70.
 */
export function addFlannelVxlan6(netns: string, underlayDev: string, self: RemoteVtep6, remotes: RemoteVtep6[], o: { port?: number; vni?: number; mtu?: number } = {}): void {
  const vni = o.vni ?? 1, dev = `flannel-v6.${vni}`;
  const mtu = o.mtu ?? linkMTU(netns, underlayDev) - 50;
  sysctl(netns, 'net.ipv6.conf.all.forwarding', '1');
  // MTU and MAC go in the create request, as flannel's netlink.LinkAdd sends them: the
  // kernel then clamps the MTU to the underlay's MTU - 70 (IPv6 VXLAN headroom), so
  // flannel-v6.1 ends up 1430 on a 1500 underlay although flannel asks for 1450 (and
  // pods still get 1450). `ip link set mtu 1450` would be refused (EINVAL) instead.
  ipn(netns, 'link', 'add', dev, 'address', self.vtepMAC6, 'mtu', String(mtu), 'type', 'vxlan', 'id', String(vni), 'local', self.underlayIP6, 'dev', underlayDev, 'dstport', String(o.port ?? 8472), 'nolearning');
  sysctl(netns, `net/ipv6/conf/${dev}/accept_ra`, '0');
  ipn(netns, 'link', 'set', dev, 'up');
  // flanneld adds it without IFA_F_NODAD; nodad here only skips the tentative second.
  ipn(netns, '-6', 'addr', 'add', `${net6(self.podCIDR6)}/128`, 'dev', dev, 'nodad');
  for (const r of remotes) addFlannelRemote6(netns, r, dev);
}

/**
 * Gives a pod made by addKernelPod its IPv6 address, wired as its IPv4 one is: the node
 * side of the veth holds the gateway (::1/128), fe80::1, and a /128 route to the pod.
 */
export function addKernelPod6(nodeNs: string, podNs: string, hostIf: string, podCIDR6: string, hostNum = 2): string {
  const ip6 = host6(podCIDR6, hostNum), gw6 = host6(podCIDR6, 1);
  ipn(podNs, '-6', 'addr', 'add', `${ip6}/128`, 'dev', 'eth0', 'nodad');
  ipn(podNs, '-6', 'route', 'add', `${gw6}/128`, 'dev', 'eth0');
  ipn(podNs, '-6', 'route', 'add', 'default', 'via', gw6, 'dev', 'eth0');
  ipn(nodeNs, '-6', 'addr', 'add', `${gw6}/128`, 'dev', hostIf, 'nodad');
  // A settled link-local on the node side: the node solicits a forwarded packet's next
  // hop from a link-local source, and the veth's own one stays tentative (DAD) for about
  // a second after it comes up, which would hold the first packets to the pod that long.
  ipn(nodeNs, '-6', 'addr', 'add', 'fe80::1/64', 'dev', hostIf, 'nodad');
  ipn(nodeNs, '-6', 'route', 'add', `${ip6}/128`, 'dev', hostIf);
  return ip6;
}

const CLUSTER_IP = '10.96.0.200';

/**
 * Two flannel-style nodes joined by a veth underlay; pods [node1, node2, node1
 * again]. The benchmark's kernel VXLAN row. Each node has kube-proxy's rules
 * (iptables mode, as in kind) for a ClusterIP whose one endpoint is the node 2
 * pod, as a flannel node in a cluster has: so conntrack runs in the nodes'
 * stacks for pod-to-pod traffic too, as it does there.
 */
export async function kernelVxlanPair(prefix: string): Promise<PeerTopology> {
  const ns = (s: string) => `${prefix}${s}`;
  const all = [ns('p1'), ns('p2'), ns('p3'), ns('n1'), ns('n2')];
  const teardown = async () => all.forEach(netnsDel);
  await teardown();
  try {
    for (const n of [ns('n1'), ns('n2')]) { ipn('', 'netns', 'add', n); ipn(n, 'link', 'set', 'lo', 'up'); sysctl(n, 'net.ipv4.ip_forward', '1'); }
    ipn(ns('n1'), 'link', 'add', 'ul0', 'type', 'veth', 'peer', 'name', 'ul0', 'netns', ns('n2'));
    // Dual-stack, as flannel runs it: flannel.1 over the IPv4 underlay, flannel-v6.1 over the IPv6 one.
    const nodes = [1, 2].map((i) => ({ netns: ns(`n${i}`), underlayDev: 'ul0', underlayIP: `172.31.250.${i}`, podCIDR: `10.250.${i}.0/24`, vtepMAC: `02:00:00:00:0${i}:00`,
      underlayIP6: `fc00:31:250::${i}`, podCIDR6: `fd00:250:${i}::/64`, vtepMAC6: `02:00:00:00:0${i}:06` }));
    for (const n of nodes) {
      ipn(n.netns, 'addr', 'add', `${n.underlayIP}/24`, 'dev', 'ul0');
      ipn(n.netns, '-6', 'addr', 'add', `${n.underlayIP6}/64`, 'dev', 'ul0', 'nodad');
      ipn(n.netns, 'link', 'set', 'ul0', 'up');
    }
    addFlannelVxlan(nodes[0], [nodes[1]]);
    addFlannelVxlan(nodes[1], [nodes[0]]);
    addFlannelVxlan6(nodes[0].netns, 'ul0', nodes[0], [nodes[1]]);
    addFlannelVxlan6(nodes[1].netns, 'ul0', nodes[1], [nodes[0]]);
    const pod = (n: (typeof nodes)[number], name: string, hostIf: string, k = 2) => {
      const ip = addKernelPod(n.netns, ns(name), hostIf, n.podCIDR, k);
      return { netns: ns(name), ip, ip6: addKernelPod6(n.netns, ns(name), hostIf, n.podCIDR6, k) };
    };
    const pods = [pod(nodes[0], 'p1', 'veth0'), pod(nodes[1], 'p2', 'veth0'), pod(nodes[0], 'p3', 'veth1', 3)];
    const spec = benchService(CLUSTER_IP, 'p2');
    for (const [i, n] of nodes.entries()) {
      applyProxyRules(n.netns, 'iptables', { node: `n${i + 1}`, clusterCIDR: '10.250.0.0/16', serviceCIDR: SERVICE_CIDR, services: [{ spec, endpoints: [{ ip: pods[1].ip, node: 'n2' }] }] });
    }
    return { pods, pids: [], service: CLUSTER_IP, teardown };
  } catch (e) {
    await teardown();
    throw e;
  }
}
