// The node's own stack: the TUN device that carries host ↔ pod traffic, its
// address (the pods' gateway) and the route for the cluster's pod range. The
// device is persistent so an agent restart finds it, routes and all.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

function ip(...args: string[]): string { return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }); }

export function linkExists(name: string): boolean {
  try { ip('link', 'show', 'dev', name); return true; } catch { return false; }
}

export interface HostSetup { tunName: string; mtu: number; gatewayIP: string; clusterCIDR: string; warn?: (msg: string) => void }

export function ensureHost(h: HostSetup): void {
  if (!linkExists(h.tunName)) ip('tuntap', 'add', 'dev', h.tunName, 'mode', 'tun', 'multi_queue');
  ip('link', 'set', 'dev', h.tunName, 'mtu', String(h.mtu), 'up');
  ip('addr', 'replace', `${h.gatewayIP}/32`, 'dev', h.tunName);
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
  ip('route', 'replace', h.clusterCIDR, 'dev', h.tunName, 'src', h.gatewayIP);
}

const CHAIN = 'TWILL-POSTROUTING';
const GUARD = 'TWILL-OVERLAY-GUARD'; // in mangle: after kube-proxy's DNAT, before its filter rules accept anything

/** Replaces chain `chain` of `table` with `rules` in one transaction (creating it if need be). */
function restore(table: string, chain: string, rules: string[]): void {
  const input = [`*${table}`, `:${chain} - [0:0]`, ...rules, 'COMMIT', ''].join('\n');
  try {
    execFileSync('iptables-restore', ['-w', '5', '--noflush'], { input, stdio: ['pipe', 'ignore', 'pipe'] });
  } catch (e) {
    throw new Error(`iptables-restore: could not write ${table} ${chain}: ${String((e as { stderr?: Buffer }).stderr ?? e).trim()}`);
  }
}

function iptables(...args: string[]): boolean {
  try { execFileSync('iptables', ['-w', '5', ...args], { stdio: 'ignore' }); return true; } catch { return false; }
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
export function ensureOverlayGuard(tunName: string, port: number, nodeIPs: string[]): void {
  restore('mangle', GUARD, [...new Set(nodeIPs)].map((ip) => `-A ${GUARD} -d ${ip}/32 -p udp -m udp --dport ${port} -j DROP`));
  for (const hook of ['INPUT', 'FORWARD']) {
    if (!iptables('-t', 'mangle', '-C', hook, '-i', tunName, '-j', GUARD) && !iptables('-t', 'mangle', '-I', hook, '1', '-i', tunName, '-j', GUARD)) {
      throw new Error(`iptables: could not hook ${GUARD} into ${hook}`);
    }
  }
}

/**
 * flannel's ipMasq: pod traffic that leaves the cluster's pod range (to other
 * nodes' addresses, services, the internet) goes through the node's own stack,
 * which masquerades it to the node's address. Replies, and hostPort DNAT's
 * un-NAT, then pass the node's conntrack as they would with flannel.
 */
export function ensureMasquerade(clusterCIDR: string): void {
  // One iptables-restore transaction: an agent that takes over from another
  // rewrites the chain while traffic flows, and no packet may see it empty.
  restore('nat', CHAIN, [
    `-A ${CHAIN} -s ${clusterCIDR} -d ${clusterCIDR} -j RETURN`,
    `-A ${CHAIN} -s ${clusterCIDR} ! -d 224.0.0.0/4 -j MASQUERADE --random-fully`,
  ]);
  if (!iptables('-t', 'nat', '-C', 'POSTROUTING', '-j', CHAIN) && !iptables('-t', 'nat', '-A', 'POSTROUTING', '-j', CHAIN)) {
    throw new Error(`iptables: could not hook ${CHAIN} into POSTROUTING (is iptables installed?)`);
  }
}
