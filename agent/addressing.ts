// Addresses derived from a node's pod CIDR: .1 is the pods' gateway (on the
// node's TUN device); the CNI plugin's IPAM hands out .2 and up. The same for the
// node's IPv6 pod CIDR: ::1 is the gateway, ::2 and up the pods. And the node's
// own VTEP MACs, derived from its name: one for IPv4, another for IPv6 (flannel's
// vxlan backend has a device per family, flannel.1 and flannel-v6.1, each with its MAC).
import { createHash } from 'node:crypto';
import { formatIPv4Address, parseIPv4Cidr } from '../lib/ipv4.js';
import { addToIPv6, formatIPv6Address, parseIPv6Cidr } from '../lib/ipv6.js';

export function gatewayOf(podCIDR: string): string {
  const c = parseIPv4Cidr(podCIDR);
  return formatIPv4Address((c.prefix + 1) >>> 0);
}

/** The IPv6 pods' gateway: the ::1 of the node's IPv6 pod CIDR ("fd00:10:244:1::/64" → "fd00:10:244:1::1"). */
export function gatewayOf6(podCIDR6: string): string {
  return formatIPv6Address(addToIPv6(parseIPv6Cidr(podCIDR6).addr, 1));
}

/** A VTEP MAC of this node's own: stable across restarts, locally administered, unicast. */
export function vtepMacFor(node: string): string {
  const h = createHash('sha256').update(`twill-vtep/${node}`).digest();
  return ['02', ...[...h.subarray(0, 5)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

/** The node's IPv6 VTEP MAC (flannel's backend-v6-data): as stable as vtepMacFor, from another hash input, so not the IPv4 one. */
export function vtepMac6For(node: string): string {
  return vtepMacFor(`${node}/v6`);
}
