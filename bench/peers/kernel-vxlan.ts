// The kernel's VXLAN, set up the way flannel's vxlan backend sets up flannel.1:
// VNI 1, UDP 8472, nolearning, and per remote node a permanent neighbor for its
// VTEP address, an FDB entry for its VTEP MAC, and an onlink route to its
// subnet. Used as the benchmark peer and as the interop peer in tests.
import { ipn, run, netnsDel, sysctl } from '../../lib/sh.js';
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
    const nodes = [1, 2].map((i) => ({ netns: ns(`n${i}`), underlayDev: 'ul0', underlayIP: `172.31.250.${i}`, podCIDR: `10.250.${i}.0/24`, vtepMAC: `02:00:00:00:0${i}:00` }));
    for (const n of nodes) { ipn(n.netns, 'addr', 'add', `${n.underlayIP}/24`, 'dev', 'ul0'); ipn(n.netns, 'link', 'set', 'ul0', 'up'); }
    addFlannelVxlan(nodes[0], [nodes[1]]);
    addFlannelVxlan(nodes[1], [nodes[0]]);
    const pods = [
      { netns: ns('p1'), ip: addKernelPod(nodes[0].netns, ns('p1'), 'veth0', nodes[0].podCIDR) },
      { netns: ns('p2'), ip: addKernelPod(nodes[1].netns, ns('p2'), 'veth0', nodes[1].podCIDR) },
      { netns: ns('p3'), ip: addKernelPod(nodes[0].netns, ns('p3'), 'veth1', nodes[0].podCIDR, 3) },
    ];
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
