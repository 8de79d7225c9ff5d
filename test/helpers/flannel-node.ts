// A flannel node beside a lab's twill nodes: a node namespace on the lab's
// underlay whose overlay is the kernel's VXLAN device, set up exactly as flannel
// sets up flannel.1 (bench/peers/kernel-vxlan.ts), with one kernel-wired pod
// running the lab workload. How the twill nodes learn it is the caller's part.
import { ipn, sysctl } from '../../lib/sh.js';
import { launchWorkload } from '../../lab/workload-process.js';
import { addFlannelVxlan, addKernelPod } from '../../bench/peers/kernel-vxlan.js';
import type { LabPod, LabState } from '../../lab/state.js';

export interface FlannelNode { name: string; underlayIP: string; podCIDR: string; vtepMAC: string }

/** Builds the node and its pod `<node>-k1`; the pod's workload listens before this returns. */
export async function addFlannelNode(s: LabState, fl: FlannelNode): Promise<LabPod> {
  const ns = `${s.prefix}${fl.name}`, podNs = `${s.prefix}pod-${fl.name}-k1`;
  ipn('', 'netns', 'add', ns);
  ipn(ns, 'link', 'set', 'lo', 'up');
  ipn(s.underlayNs, 'link', 'add', `u-${fl.name}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
  ipn(s.underlayNs, 'link', 'set', `u-${fl.name}`, 'master', 'br0', 'up');
  ipn(ns, 'addr', 'add', `${fl.underlayIP}/24`, 'dev', 'eth0');
  ipn(ns, 'link', 'set', 'eth0', 'up');
  sysctl(ns, 'net.ipv4.ip_forward', '1');
  sysctl(ns, 'net.ipv4.conf.all.rp_filter', '1');
  // The underlay keeps the kernel's default offloads, tunnel segmentation included,
  // as a kind node's eth0 (a veth to Docker's bridge) does: flannel.1 then sends
  // 64 KB VXLAN super-packets (SKB_GSO_UDP_TUNNEL) over it unsplit, and a twill
  // node's overlay socket receives each as one datagram. Switching
  // tx-udp_tnl-segmentation off here would hide that path from the tests.
  addFlannelVxlan({ netns: ns, underlayDev: 'eth0', ...fl }, s.nodes.map((n) => ({ podCIDR: n.podCIDR, underlayIP: n.underlayIP, vtepMAC: n.vtepMAC })));
  const ip = addKernelPod(ns, podNs, 'vethk1', fl.podCIDR);
  const workloadPid = await launchWorkload(podNs);
  return { name: `${fl.name}-k1`, namespace: 'default', node: fl.name, netns: podNs, ip, mac: '', hostIf: 'vethk1', containerId: '', workloadPid };
}
