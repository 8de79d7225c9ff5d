// Wires one pod to the node the way the engine expects it: a veth whose node
// side has no address, and whose pod side holds the pod's address and a
// default route via the node's gateway. Shared by the CNI plugin and the lab.
//
// Keeping the kernel out: pods address every unicast frame to the gateway MAC,
// which no kernel device owns (the node side keeps its own random MAC), so the
// kernel classes them PACKET_OTHERHOST and drops them right after the AF_PACKET
// taps have seen them. For broadcast ARP, arp_ignore=8 keeps it from answering.
// (A tc ingress drop would also do, but needs cls_matchall/act_gact, which kernels
// without modules often lack.)
import { ipn, nsExec, linkMac, run } from '../lab/sh.js';

export interface WireSpec {
  hostNs: string; // netns name of the node, or "" when we already run inside it
  podNs: string; // netns name (ip netns) or path of the pod
  hostIf: string; // node-side veth name (<= 15 chars)
  podIf: string; // usually eth0
  ip: string;
  prefixLen: number;
  gateway: string;
  mtu: number; // the pod's
  hostMtu: number; // the node side's: larger, so a pod set above the path MTU still reaches the engine and gets ICMP back
}

export function wirePod(s: WireSpec): { podMac: string } {
  ipn(s.hostNs, 'link', 'add', s.hostIf, 'mtu', String(s.hostMtu), 'type', 'veth', 'peer', 'name', s.podIf, 'mtu', String(s.mtu), 'netns', s.podNs);
  hostSysctl(s.hostNs, `net.ipv6.conf.${s.hostIf}.disable_ipv6`, '1');
  hostSysctl(s.hostNs, `net.ipv4.conf.${s.hostIf}.arp_ignore`, '8');
  hostSysctl(s.hostNs, `net.ipv4.conf.${s.hostIf}.rp_filter`, '1');
  ipn(s.hostNs, 'link', 'set', s.hostIf, 'up');
  // The pod side. Checksum offload off: the engine forwards frames as AF_PACKET
  // hands them over, so they must carry finished checksums and no TSO.
  nsExec(s.podNs, 'sysctl', '-qw', `net.ipv6.conf.${s.podIf}.disable_ipv6=1`);
  nsExec(s.podNs, 'ethtool', '-K', s.podIf, 'tx', 'off');
  ipn(s.podNs, 'link', 'set', 'lo', 'up');
  ipn(s.podNs, 'addr', 'add', `${s.ip}/${s.prefixLen}`, 'dev', s.podIf);
  ipn(s.podNs, 'link', 'set', s.podIf, 'up');
  ipn(s.podNs, 'route', 'add', 'default', 'via', s.gateway, 'dev', s.podIf);
  return { podMac: linkMac(s.podNs, s.podIf) };
}

export function unwirePod(hostNs: string, hostIf: string): void {
  try { ipn(hostNs, 'link', 'del', hostIf); } catch { /* already gone: DEL is idempotent */ }
}

function hostSysctl(ns: string, key: string, value: string): void {
  if (ns) nsExec(ns, 'sysctl', '-qw', `${key}=${value}`);
  else run('sysctl', ['-qw', `${key}=${value}`]);
}
