// A flannel node beside a lab's twill nodes: a node namespace on the lab's
// underlay whose overlay is the kernel's VXLAN device, set up exactly as flannel
// sets up flannel.1 (bench/peers/kernel-vxlan.ts), with one kernel-wired pod
// running the lab workload. How the twill nodes learn it is the caller's part.
//
// Dual-stack: given podCIDR6, underlayIP6 and vtepMAC6 the node also gets
// flannel-v6.1, set up as flanneld's vxlan backend sets it up with EnableIPv6
// (flannel pkg/backend/vxlan/{vxlan,device,vxlan_network}.go): its own VXLAN
// device, VNI 1, dstport 8472, nolearning, `local` = the node's IPv6 public
// address on eth0, MTU asked = eth0's MTU - 50 (flannel takes 50 for IPv6 too; the
// kernel clamps it to eth0's MTU - 70), its own
// MAC (the backend-v6-data VtepMAC), accept_ra 0, address <podCIDR6 network>/128;
// and per remote node, in flannel's order: a permanent neighbour for the remote
// subnet's network address, a permanent FDB entry to its IPv6 public address,
// and `route <podCIDR6> via <network> dev flannel-v6.1 onlink`. The pod gets an
// IPv6 address too. IPv4 traffic stays on flannel.1 as before.
import { ipn, sysctl } from '../../lib/sh.js';
import { launchWorkload } from '../../lab/workload-process.js';
import { addFlannelVxlan, addFlannelVxlan6, addKernelPod, addKernelPod6, type RemoteVtep6 } from '../../bench/peers/kernel-vxlan.js';
import type { LabPod, LabState } from '../../lab/state.js';

export interface FlannelNode {
  name: string; underlayIP: string; podCIDR: string; vtepMAC: string;
  /** IPv6 pod range, e.g. fd00:10:244:9::/64 (flannel's IPv6Subnet lease). With underlayIP6 and vtepMAC6: the node is dual-stack. */
  podCIDR6?: string;
  /** IPv6 address put on the node's eth0: flannel's PublicIPv6, flannel-v6.1's local address. */
  underlayIP6?: string;
  /** flannel-v6.1's MAC (backend-v6-data VtepMAC); flannel gives it a MAC of its own, not flannel.1's. */
  vtepMAC6?: string;
  /** Prefix length of underlayIP6 on eth0 (default 64). */
  underlayPrefixLen6?: number;
  /** Remote VTEPs flannel-v6.1 points at; default: the lab nodes that carry podCIDR6, underlayIP6 and vtepMAC6. */
  remotes6?: RemoteVtep6[];
}

/** The node spec's IPv6 side, when it has all of it. */
export function flannelV6Of(n: Partial<RemoteVtep6>): RemoteVtep6 | undefined {
  return n.podCIDR6 && n.underlayIP6 && n.vtepMAC6 ? { podCIDR6: n.podCIDR6, underlayIP6: n.underlayIP6, vtepMAC6: n.vtepMAC6 } : undefined;
}

/** Builds the node and its pod `<node>-k1`; the pod's workload listens before this returns. The pod has `ip6` when the node is dual-stack. */
export async function addFlannelNode(s: LabState, fl: FlannelNode): Promise<LabPod & { ip6?: string }> {
  const ns = `${s.prefix}${fl.name}`, podNs = `${s.prefix}pod-${fl.name}-k1`;
  const v6 = flannelV6Of(fl);
  ipn('', 'netns', 'add', ns);
  ipn(ns, 'link', 'set', 'lo', 'up');
  ipn(s.underlayNs, 'link', 'add', `u-${fl.name}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
  ipn(s.underlayNs, 'link', 'set', `u-${fl.name}`, 'master', 'br0', 'up');
  ipn(ns, 'addr', 'add', `${fl.underlayIP}/24`, 'dev', 'eth0');
  if (v6) ipn(ns, '-6', 'addr', 'add', `${v6.underlayIP6}/${fl.underlayPrefixLen6 ?? 64}`, 'dev', 'eth0', 'nodad');
  ipn(ns, 'link', 'set', 'eth0', 'up');
  sysctl(ns, 'net.ipv4.ip_forward', '1');
  sysctl(ns, 'net.ipv4.conf.all.rp_filter', '1');
  // The underlay keeps the kernel's default offloads, tunnel segmentation included,
  // as a kind node's eth0 (a veth to Docker's bridge) does: flannel.1 then sends
  // 64 KB VXLAN super-packets (SKB_GSO_UDP_TUNNEL) over it unsplit, and a twill
  // node's overlay socket receives each as one datagram. Switching
  // tx-udp_tnl-segmentation off here would hide that path from the tests.
  addFlannelVxlan({ netns: ns, underlayDev: 'eth0', ...fl }, s.nodes.map((n) => ({ podCIDR: n.podCIDR, underlayIP: n.underlayIP, vtepMAC: n.vtepMAC })));
  if (v6) {
    const remotes = fl.remotes6 ?? s.nodes.map((n) => flannelV6Of(n as Partial<RemoteVtep6>)).filter((r): r is RemoteVtep6 => !!r);
    addFlannelVxlan6(ns, 'eth0', v6, remotes);
  }
  const ip = addKernelPod(ns, podNs, 'vethk1', fl.podCIDR);
  const ip6 = v6 ? addKernelPod6(ns, podNs, 'vethk1', v6.podCIDR6) : undefined;
  const workloadPid = await launchWorkload(podNs);
  return { name: `${fl.name}-k1`, namespace: 'default', node: fl.name, netns: podNs, ip, ...(ip6 ? { ip6 } : {}), mac: '', hostIf: 'vethk1', containerId: '', workloadPid };
}
