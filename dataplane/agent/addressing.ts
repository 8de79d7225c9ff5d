// Addresses derived from a node's pod CIDR: .1 is the pods' gateway (on the
// node's TUN device); the CNI plugin's IPAM hands out .2 and up.
import { parseCidr4, formatIPv4 } from '../tables/lpm4.js';

export function gatewayOf(podCIDR: string): string {
  const c = parseCidr4(podCIDR);
  return formatIPv4((c.prefix + 1) >>> 0);
}
