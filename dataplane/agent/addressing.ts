// Addresses derived from a node's pod CIDR: .1 is the pods' gateway (on the
// node's TUN device), pods get .2 and up.
import { parseCidr4, formatIPv4 } from '../tables/lpm4.js';

export function gatewayOf(podCIDR: string): string {
  const c = parseCidr4(podCIDR);
  return formatIPv4((c.prefix + 1) >>> 0);
}

export function cidrHosts(podCIDR: string): { first: number; last: number; len: number } {
  const c = parseCidr4(podCIDR);
  const size = 2 ** (32 - c.len);
  return { first: (c.prefix >>> 0) + 2, last: (c.prefix >>> 0) + size - 2, len: c.len };
}
