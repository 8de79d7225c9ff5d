// Wires one pod to the node the way the engine expects it: a veth whose node
// side has no address, and whose pod side holds the pod's address(es) and a
// default route via the node's gateway, per family. Used by the CNI plugin.
//
// IPv6 (dual-stack or IPv6-only pods): the pod's eth0 gets accept_ra=0 and
// accept_dad=0 before it comes up, and its address is added `nodad`, so it
// works at once (no tentative period) and the pod never solicits routers; its
// default route is ::/0 via the node's IPv6 gateway. A pod without an IPv6
// address has IPv6 disabled on eth0, as before. The node side always has IPv6
// disabled (disable_ipv6=1, set before it comes up), so the node's stack sends
// no router solicitations, MLD reports or DAD probes into the pod.
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
  ip?: string; // IPv4; absent on an IPv6-only pod
  prefixLen?: number;
  gateway?: string;
  ip6?: string; // IPv6; absent on an IPv4-only pod
  prefixLen6?: number;
  gateway6?: string;
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

// $1 ifname, $2 IPv4 address/len or "", $3 its gateway, $4 "on" to keep TX offload, $5 IPv6 address/len or "",
// $6 its gateway. The sysctls are builtin writes: /proc/sys/net answers for the netns of the process that
// opens it, and nsenter put us in the pod's. They come before the link is up (no RS, no DAD on the link-local).
const POD_SCRIPT = `set -e
c=/proc/sys/net/ipv6/conf/"$1"
if [ -n "$5" ]; then echo 0 > "$c"/accept_ra; echo 0 > "$c"/accept_dad; echo 0 > "$c"/disable_ipv6; else echo 1 > "$c"/disable_ipv6; fi
[ "$4" = on ] || ethtool -K "$1" tx off >/dev/null
{ echo 'link set lo up'
  [ -z "$2" ] || echo "addr add $2 dev $1"
  [ -z "$5" ] || echo "addr add $5 dev $1 nodad"
  echo "link set $1 up"
  [ -z "$3" ] || echo "route add default via $3 dev $1"
  [ -z "$6" ] || echo "route add ::/0 via $6 dev $1"
} | ip -batch -
`;

export function wirePod(s: WireSpec): { podMac: string; hostMac: string } {
  if (!s.ip && !s.ip6) throw new Error('wirePod: no address to give the pod');
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
    podExec(s.podNs, 'sh', '-c', POD_SCRIPT, 'sh', s.podIf, s.ip ? `${s.ip}/${s.prefixLen}` : '', s.ip ? s.gateway ?? '' : '',
      s.txOffload ? 'on' : 'off', s.ip6 ? `${s.ip6}/${s.prefixLen6}` : '', s.ip6 ? s.gateway6 ?? '' : '');
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
