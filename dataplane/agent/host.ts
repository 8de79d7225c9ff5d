// The node's own stack: the TUN device that carries host ↔ pod traffic, its
// address (the pods' gateway) and the route for the cluster's pod range. The
// device is persistent so an agent restart finds it, routes and all.
import { execFileSync } from 'node:child_process';

function ip(...args: string[]): string { return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }); }

export function linkExists(name: string): boolean {
  try { ip('link', 'show', 'dev', name); return true; } catch { return false; }
}

export interface HostSetup { tunName: string; mtu: number; gatewayIP: string; clusterCIDR: string }

export function ensureHost(h: HostSetup): void {
  if (!linkExists(h.tunName)) ip('tuntap', 'add', 'dev', h.tunName, 'mode', 'tun', 'multi_queue');
  ip('link', 'set', 'dev', h.tunName, 'mtu', String(h.mtu), 'up');
  ip('addr', 'replace', `${h.gatewayIP}/32`, 'dev', h.tunName);
  ip('route', 'replace', h.clusterCIDR, 'dev', h.tunName, 'src', h.gatewayIP);
}
