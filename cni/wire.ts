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
//
// Namespaces: hostNs is the node's netns NAME (`ip -n`), or "" when we already
// run inside it (the CNI plugin: the runtime calls it in the node's netns).
// podNs is a netns NAME (lab) or a PATH such as /var/run/netns/x or
// /proc/<pid>/ns/net (CNI_NETNS). `ip -n` only takes names, so everything done
// inside the pod goes through `nsenter --net=<path>`; `ip link add ... netns`
// takes a path as well as a name.
//
// Speed (the CNI ADD budget is ~100 ms including process start): both MACs are
// chosen here rather than read back, the node-side sysctls are plain writes to
// /proc/sys when we run in the node's netns, and the whole pod side is ONE
// nsenter'd shell (a builtin write for the sysctl, ethtool, one `ip -batch`).
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { ipn, nsExec, run } from '../lib/sh.js';

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
  podMac?: string; // chosen at random when absent
  hostMac?: string; // chosen at random when absent
  txOffload?: boolean; // keep the pod's TX checksum offload and TSO on (the engine reads with PACKET_VNET_HDR: agent status podTxOffload)
}

/** A random locally administered unicast MAC. */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0] & 0xfc) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** The path of a pod netns given as a name or a path. */
export function netnsPath(ns: string): string {
  return ns.includes('/') ? ns : `/var/run/netns/${ns}`;
}

/** Runs a command inside the netns at a path (or name), without ip-netns-exec's mount namespace. */
export function podExec(podNs: string, cmd: string, ...args: string[]): string {
  return run('nsenter', [`--net=${netnsPath(podNs)}`, cmd, ...args]);
}

// $1 ifname, $2 address/len, $3 gateway, $4 "on" to keep TX offload. The sysctl is a builtin write: /proc/sys/net
// answers for the netns of the process that opens it, and nsenter put us in the pod's.
const POD_SCRIPT = `set -e
echo 1 > /proc/sys/net/ipv6/conf/"$1"/disable_ipv6
[ "$4" = on ] || ethtool -K "$1" tx off >/dev/null
printf 'link set lo up\\naddr add %s dev %s\\nlink set %s up\\nroute add default via %s dev %s\\n' "$2" "$1" "$1" "$3" "$1" | ip -batch -
`;

export function wirePod(s: WireSpec): { podMac: string; hostMac: string } {
  const podMac = s.podMac ?? randomMac();
  const hostMac = s.hostMac ?? randomMac();
  ipn(s.hostNs, 'link', 'add', s.hostIf, 'address', hostMac, 'mtu', String(s.hostMtu), 'type', 'veth',
    'peer', 'name', s.podIf, 'address', podMac, 'mtu', String(s.mtu), 'netns', s.podNs);
  try {
    hostSysctl(s.hostNs, `net/ipv6/conf/${s.hostIf}/disable_ipv6`, '1');
    hostSysctl(s.hostNs, `net/ipv4/conf/${s.hostIf}/arp_ignore`, '8');
    hostSysctl(s.hostNs, `net/ipv4/conf/${s.hostIf}/rp_filter`, '1');
    ipn(s.hostNs, 'link', 'set', s.hostIf, 'up');
    // The pod side. Checksum offload off unless the engine reads the veth with
    // PACKET_VNET_HDR: without it AF_PACKET hands frames over as they are, so
    // they must carry finished checksums and no TSO.
    podExec(s.podNs, 'sh', '-c', POD_SCRIPT, 'sh', s.podIf, `${s.ip}/${s.prefixLen}`, s.gateway, s.txOffload ? 'on' : 'off');
  } catch (e) {
    unwirePod(s.hostNs, s.hostIf); // deleting one end deletes the pair: nothing half-made stays
    throw e;
  }
  return { podMac, hostMac };
}

/** Removes the veth pair; true when it existed. Idempotent. */
export function unwirePod(hostNs: string, hostIf: string): boolean {
  try { ipn(hostNs, 'link', 'del', hostIf); return true; } catch { return false; /* already gone: DEL is idempotent */ }
}

function hostSysctl(ns: string, key: string, value: string): void {
  if (ns) nsExec(ns, 'sysctl', '-qw', `${key.replaceAll('/', '.')}=${value}`);
  else writeFileSync(`/proc/sys/${key}`, value);
}
