// Addresses derived from a node's pod CIDR: .1 is the pods' gateway (on the
// node's TUN device); the CNI plugin's IPAM hands out .2 and up. And the node's
// own VTEP MAC, derived from its name.
import { createHash } from 'node:crypto';
import { formatIPv4Address, parseIPv4Cidr } from '../lib/ipv4.js';

export function gatewayOf(podCIDR: string): string {
  const c = parseIPv4Cidr(podCIDR);
  return formatIPv4Address((c.prefix + 1) >>> 0);
}

/** A VTEP MAC of this node's own: stable across restarts, locally administered, unicast. */
export function vtepMacFor(node: string): string {
  const h = createHash('sha256').update(`twill-vtep/${node}`).digest();
  return ['02', ...[...h.subarray(0, 5)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}
