// Header writes the next-hop handlers share: MACs as byte stores, the
// EtherType, the TTL, VXLAN encapsulation, and the virtio_net_hdr facts of a
// packet with offloads.
import * as ethernet from '../packet/ethernet.js';
import { decTtl } from '../packet/ipv4.js';
import * as virtio from '../packet/virtio.js';
import { completePartial } from './segment.js';
import { C } from './counters.js';
import type { Batch } from './batch.js';
import type { StageContext } from './context.js';
import * as vxlan from '../packet/vxlan.js';
import * as fib from '../tables/fib.js';

const { ETH_P_IP, ETH_P_IPV6 } = ethernet; // module-level consts V8 folds (imported bindings are module-cell loads)
const { VNET_HLEN, VNET_F_NEEDS_CSUM, writeVnet } = virtio;
const { writeVxlan, VXLAN_HLEN } = vxlan;
const { NH_MAC_HI, NH_MAC_LO } = fib;

// Byte stores: TypedArray.prototype.set costs a builtin call (~15 ns) for 6 bytes.
export function copyMac(b: Uint8Array, off: number, mac: Uint8Array): void {
  b[off] = mac[0]; b[off + 1] = mac[1]; b[off + 2] = mac[2]; b[off + 3] = mac[3]; b[off + 4] = mac[4]; b[off + 5] = mac[5];
}

export function writeMac(b: Uint8Array, off: number, hi: number, lo: number): void {
  b[off] = hi >>> 8; b[off + 1] = hi & 0xff;
  b[off + 2] = lo >>> 24; b[off + 3] = (lo >>> 16) & 0xff; b[off + 4] = (lo >>> 8) & 0xff; b[off + 5] = lo & 0xff;
}

/** The EtherType of the Ethernet header at off, for the IP packet that follows it (its version nibble). */
export function writeEthType(b: Uint8Array, off: number): void {
  const t = b[off + 14] >> 4 === 6 ? ETH_P_IPV6 : ETH_P_IP;
  b[off + 12] = t >> 8; b[off + 13] = t & 0xff;
}

/** Decrements the TTL (IPv6: hop limit, no header checksum); false, counted, when it runs out. */
export function ttlOk(b: Uint8Array, l3: number, c: Float64Array): boolean {
  if (b[l3] >> 4 === 6) {
    if (b[l3 + 7] <= 1) { c[C.drop_ttl]++; return false; }
    b[l3 + 7]--;
    return true;
  }
  if (b[l3 + 8] <= 1) { c[C.drop_ttl]++; return false; }
  decTtl(b, l3);
  return true;
}

/** The IP header's length and upper protocol (IPv6: the fixed header; offloads take no extension headers). */
export function ipHeaderLen(b: Uint8Array, l3: number): number { return b[l3] >> 4 === 6 ? 40 : (b[l3] & 15) << 2; }
export function ipProto(b: Uint8Array, l3: number): number { return b[l3] >> 4 === 6 ? b[l3 + 6] : b[l3 + 9]; }

// Entry i's offload facts as a virtio_net_hdr right before `start` (its packet's
// first byte: Ethernet for a pod's veth, IP for TUN), offsets counted from there.
export function writeVnetFor(bt: Batch, i: number, start: number): void {
  const b = bt.arena, l3 = bt.l3[i], vf = bt.vflags[i], type = (vf >>> 8) & 0x7f, gso = bt.gso[i];
  const ihl = ipHeaderLen(b, l3), l4hdr = ipProto(b, l3) === 6 ? (b[l3 + ihl + 12] >>> 4) << 2 : 8;
  const partial = (vf & 1) !== 0;
  writeVnet(b, start - VNET_HLEN, partial ? VNET_F_NEEDS_CSUM : 0, gso > 0 ? type : 0, gso > 0 ? l3 - start + ihl + l4hdr : 0, gso,
    partial ? bt.csumStart[i] - start : 0, partial ? bt.csumOff[i] : 0);
}

// A partial checksum from a pod, finished for a path that needs it finished.
export function finish(bt: Batch, i: number, c: Float64Array): boolean {
  if ((bt.vflags[i] & 1) === 0) return true;
  if (!completePartial(bt, i)) { c[C.drop_malformed]++; return false; }
  c[C.pod_csum_completed]++;
  return true;
}

// VXLAN and the inner Ethernet header in front of the inner packet (its first
// byte at eth + ETH_HLEN) for the peer of next hop p, and the flow's send socket.
export function encapHeaders(ctx: StageContext, bt: Batch, i: number, eth: number, p: number): void {
  const b = bt.arena, nh = ctx.nh;
  writeMac(b, eth, nh[p + NH_MAC_HI], nh[p + NH_MAC_LO]);
  writeEthType(b, eth);
  copyMac(b, eth + 6, b[eth + 12] === 0x86 ? ctx.vtepMac6 : ctx.vtepMac);
  writeVxlan(b, eth - VXLAN_HLEN, ctx.vni);
  bt.outSock[i] = ctx.udpSources > 1 ? sourceOf(bt, i, ctx.udpSources) : 0;
}

// The overlay socket, and so the outer UDP source port, of entry i's flow: a
// hash of its inner addresses, ports and protocol, as the kernel's vxlan
// device picks a source port, so an underlay's ECMP and a NIC's RSS can tell
// flows apart.
function sourceOf(bt: Batch, i: number, n: number): number {
  let h = Math.imul(bt.src[i] ^ Math.imul(bt.dst[i], 0x9e3779b1) ^ ((bt.sport[i] << 16) | bt.dport[i]) ^ bt.proto[i], 0x85ebca6b);
  h ^= h >>> 15;
  return (h >>> 0) % n;
}
