// The node's own stack: the TUN device that carries host ↔ pod traffic, its
// addresses (the pods' gateways, IPv4 and IPv6) and the routes for the
// cluster's pod ranges. The device is persistent so an agent restart finds it,
// routes and all. The iptables rules below are written for each family the
// cluster has (iptables, ip6tables).
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

function ip(...args: string[]): string { return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }); }

export function linkExists(name: string): boolean {
  try { ip('link', 'show', 'dev', name); return true; } catch { return false; }
}

export interface HostSetup {
  tunName: string; mtu: number; gatewayIP: string; clusterCIDR: string;
  gatewayIP6?: string; clusterCIDR6?: string; podCIDR6?: string; mtu6?: number; // IPv6: mtu6 to other nodes' pods (the IPv6 overlay's), mtu to this node's
  warn?: (msg: string) => void;
}

export function ensureHost(h: HostSetup): void {
  if (!linkExists(h.tunName)) ip('tuntap', 'add', 'dev', h.tunName, 'mode', 'tun', 'multi_queue');
  ip('link', 'set', 'dev', h.tunName, 'mtu', String(h.mtu), 'up');
  if (h.gatewayIP) ip('addr', 'replace', `${h.gatewayIP}/32`, 'dev', h.tunName); // '': an IPv6-only node
  // Service traffic leaves the stack by the device it came in on (TUN to TUN,
  // after kube-proxy's DNAT), for which the kernel would send the pod ICMP
  // redirects; they are useless here and spend the pod's ICMP rate budget, so
  // a REJECT's port-unreachable would then be suppressed. The switch is
  // or-ed with conf/all, so both go off.
  // In a container /proc/sys is read-only (a DaemonSet without privileged):
  // then the kernel's redirects stay, which costs only that ICMP budget.
  for (const dev of ['all', h.tunName]) {
    const f = `/proc/sys/net/ipv4/conf/${dev}/send_redirects`;
    try {
      if (readFileSync(f, 'utf8').trim() !== '0') writeFileSync(f, '0');
    } catch (e) {
      h.warn?.(`cannot turn off ${f} (${(e as NodeJS.ErrnoException).code ?? String(e)}): pods may get ICMP redirects for Service traffic`);
    }
  }
  if (h.gatewayIP && h.clusterCIDR) ip('route', 'replace', h.clusterCIDR, 'dev', h.tunName, 'src', h.gatewayIP);
  if (h.gatewayIP6 && h.clusterCIDR6 && h.podCIDR6) {
    ip('-6', 'addr', 'replace', `${h.gatewayIP6}/128`, 'dev', h.tunName, 'nodad');
    // Other nodes' pods are behind the IPv6 overlay, whose MTU is 20 less than the
    // pods' (stages/to-overlay.ts): the route says so, so the stack's own packets fit.
    ip('-6', 'route', 'replace', h.clusterCIDR6, 'dev', h.tunName, 'src', h.gatewayIP6, ...(h.mtu6 ? ['mtu', String(h.mtu6)] : []));
    ip('-6', 'route', 'replace', h.podCIDR6, 'dev', h.tunName, 'src', h.gatewayIP6);
  }
}

type Family = 4 | 6;
const tool = (f: Family) => (f === 6 ? 'ip6tables' : 'iptables');

const CHAIN = 'TWILL-POSTROUTING';
const GUARD = 'TWILL-OVERLAY-GUARD'; // in mangle: after kube-proxy's DNAT, before its filter rules accept anything

/** Replaces chain `chain` of `table` with `rules` in one transaction (creating it if need be). */
function restore(f: Family, table: string, chain: string, rules: string[]): void {
  const input = [`*${table}`, `:${chain} - [0:0]`, ...rules, 'COMMIT', ''].join('\n');
  try {
    execFileSync(`${tool(f)}-restore`, ['-w', '5', '--noflush'], { input, stdio: ['pipe', 'ignore', 'pipe'] });
  } catch (e) {
    throw new Error(`${tool(f)}-restore: could not write ${table} ${chain}: ${String((e as { stderr?: Buffer }).stderr ?? e).trim()}`);
  }
}

function iptables(f: Family, ...args: string[]): boolean {
  try { execFileSync(tool(f), ['-w', '5', ...args], { stdio: 'ignore' }); return true; } catch { return false; }
}

/** Hooks `chain` into `hook` of `table` (at the top with insert, else at the end) unless it is hooked already. */
function hookChain(f: Family, table: string, hook: string, chain: string, match: string[], insert: boolean): void {
  if (iptables(f, '-t', table, '-C', hook, ...match, '-j', chain)) return;
  if (!iptables(f, '-t', table, ...(insert ? ['-I', hook, '1'] : ['-A', hook]), ...match, '-j', chain)) {
    throw new Error(`${tool(f)}: could not hook ${chain} into ${hook} (is ${tool(f)} installed?)`);
  }
}

/**
 * Pods must not reach any node's VXLAN port (a datagram from a pod, masqueraded
 * to its node's address, would pass the overlay's trust checks). The engine
 * drops what it sees (stages/forward.ts); this covers what only the stack
 * sees: a pod's packet that kube-proxy translated to a node's address (a
 * Service in front of a hostNetwork endpoint). Everything pods send reaches
 * the stack through the TUN device, so the rule matches what comes in on it.
 * Rewritten whole (iptables-restore) when the nodes change.
 */
export function ensureOverlayGuard(tunName: string, port: number, nodeIPs: string[], families: Family[] = [4]): void {
  for (const f of families) {
    const ips = [...new Set(nodeIPs)].filter((ip) => ip.includes(':') === (f === 6));
    restore(f, 'mangle', GUARD, ips.map((ip) => `-A ${GUARD} -d ${ip}/${f === 6 ? 128 : 32} -p udp -m udp --dport ${port} -j DROP`));
    for (const hook of ['INPUT', 'FORWARD']) hookChain(f, 'mangle', hook, GUARD, ['-i', tunName], true);
  }
}

/**
 * flannel's ipMasq: pod traffic that leaves the cluster's pod range (to other
 * nodes' addresses, services, the internet) goes through the node's own stack,
 * which masquerades it to the node's address. Replies, and hostPort DNAT's
 * un-NAT, then pass the node's conntrack as they would with flannel.
 */
/** clusterCIDR '': an IPv6-only cluster. */
export function ensureMasquerade(clusterCIDR: string, clusterCIDR6?: string): void {
  // One iptables-restore transaction: an agent that takes over from another
  // rewrites the chain while traffic flows, and no packet may see it empty.
  const ranges: [Family, string, string][] = clusterCIDR ? [[4, clusterCIDR, '224.0.0.0/4']] : [];
  if (clusterCIDR6) ranges.push([6, clusterCIDR6, 'ff00::/8']);
  for (const [f, cidr, multicast] of ranges) {
    restore(f, 'nat', CHAIN, [
      `-A ${CHAIN} -s ${cidr} -d ${cidr} -j RETURN`,
      `-A ${CHAIN} -s ${cidr} ! -d ${multicast} -j MASQUERADE --random-fully`,
    ]);
    hookChain(f, 'nat', 'POSTROUTING', CHAIN, [], false);
  }
}
