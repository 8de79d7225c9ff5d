// Barrel for convenience; hot paths may import the individual modules directly.
export * from './reasons.js';
export * from './fields.js';
export * from './checksum.js';
export * from './ethernet.js';
export * from './arp.js';
export * from './l4.js';
export * from './ipv4.js';
export * from './ipv6.js';
export * from './icmp.js';
export * from './udp.js';
export * from './tcp.js';
export * from './vxlan.js';
