// Stage: VXLAN datagrams from other nodes (RFC 7348), over the IPv4 underlay
// (inner IPv4) or the IPv6 one (inner IPv6), as flannel's flannel.<VNI> and
// flannel-v6.<VNI> devices carry them. Trusts only the cluster's
// nodes: a datagram must come from a peer's underlay address (the peers table,
// tables/fib.ts, updated with the cluster view; one search per run of datagrams
// from one source, which a GRO receive always is), and its inner packet must
// come from that peer's pod range or the peer itself, as a router's
// reverse-path check would have it. So neither a host on the underlay nor a pod
// (whose packets reach the underlay masqueraded as its node) can slip packets
// with forged sources past anti-spoofing and NetworkPolicy. Then it checks the
// VNI, takes the inner packet (of the underlay's family), and finishes inner checksums a kernel VXLAN peer left
// partial: over a veth underlay the kernel hands the frame on with checksum
// offload pending (CHECKSUM_PARTIAL), so the TCP/UDP field holds only the
// folded pseudo-header sum. A field that holds exactly that is completed; any
// other is left as it came, for the pod's stack to verify (checking it here
// would cost a pass over every payload byte). A complete checksum that
// happens to equal that sum is summed needlessly but keeps its value: with
// F = ~(D + P) = P, completion writes ~(D + F) = ~(D + P) = F.
//
// Tunnel super-packets: a kernel VXLAN peer on a veth underlay with the
// default offloads (a kind node) sends a pod's TCP super-packet as one 64 KB
// VXLAN datagram (SKB_GSO_UDP_TUNNEL), which a UDP socket receives whole, even
// with UDP_GRO. Its inner packet is longer than the pod MTU; it is taken as
// one GSO_TCPV4 (GSO_TCPV6) super-packet with a partial checksum (gso_size: the MSS the pod
// MTU allows), handed to the pod or the host whole with a virtio_net_hdr, or
// cut into segments where no such send exists (stages/forward.ts, segment.ts).
// Other oversized inner packets are marked (bt.flags OVERSIZED): the forward
// stage answers them with ICMP fragmentation-needed when DF is set.
import * as vxlan from '../packet/vxlan.js';
import * as ethernet from '../packet/ethernet.js';
import { parseIPv4 } from '../packet/ipv4.js';
import { parseIPv6 } from '../packet/ipv6.js';
import { csumAdd32, csumFold, pseudoHeaderSum4, pseudoHeaderSum6 } from '../packet/checksum.js';
import * as fields from '../packet/fields.js';
import * as l4 from '../packet/l4.js';
import { C } from './counters.js';
import { countParseDrop, takeIPv4, takeIPv6 } from './parse.js';
import * as virtio from '../packet/virtio.js';
import { OVERSIZED, type Batch } from './batch.js';
import { findPeer, findPeer6, peerOwns, peerOwns6 } from '../tables/fib.js';
import type { StageContext } from './context.js';

// V8 does not constant-fold imported bindings (every use in a hot loop is a
// module-cell load); module-level consts it does fold.
const { parseVxlan, VXLAN_HLEN } = vxlan;
const { parseEthernet, ETH_HLEN, ETH_P_IP, ETH_P_IPV6 } = ethernet;
const { F_ETHTYPE, F_L3OFF, F_L3LEN, F_PROTO, F_FRAG, F_L4OFF, F_L4LEN, F_SRC4, F_DST4, F_SRC6, F_IHL } = fields;
const { IPPROTO_TCP, IPPROTO_UDP } = l4;
const { VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, VNET_GSO_TCPV6 } = virtio;

/** Over the IPv4 underlay: bt.meta holds each datagram's source address. */
export function ingressVxlan(ctx: StageContext, bt: Batch): void { ingressOverlay(ctx, bt, false); }

/** Over the IPv6 underlay: bt.meta holds each datagram's receive, whose source is in bt.from6. */
export function ingressVxlan6(ctx: StageContext, bt: Batch): void { ingressOverlay(ctx, bt, true); }

function lookup(ctx: StageContext, bt: Batch, six: boolean, from: number): number {
  return six ? findPeer6(ctx.peers6, bt.from6, 4 * from) : findPeer(ctx.peers, from);
}

function ingressOverlay(ctx: StageContext, bt: Batch, six: boolean): void {
  const b = bt.arena, f = ctx.f, c = ctx.counters, mtu = ctx.podMtu, peers = six ? ctx.peers6 : ctx.peers;
  const want = six ? ETH_P_IPV6 : ETH_P_IP;
  let from = 0, peer = -1; // the last source looked up, and its peer record
  if (bt.n > 0) { from = bt.meta[0]; peer = lookup(ctx, bt, six, from); }
  for (let i = 0; i < bt.n; i++) {
    bt.l3len[i] = 0;
    bt.vflags[i] = 0; bt.gso[i] = 0; // the batch's arrays are shared with the pod and TUN paths, which set them
    if (bt.meta[i] !== from) { from = bt.meta[i]; peer = lookup(ctx, bt, six, from); }
    if (peer < 0) { c[C.drop_unknown_vtep]++; continue; }
    const off = bt.offs[i], len = bt.lens[i];
    const vni = parseVxlan(b, off, len);
    if (vni < 0) { countParseDrop(c, -vni); continue; }
    if (vni !== ctx.vni) { c[C.drop_bad_vni]++; continue; }
    const eth = off + VXLAN_HLEN;
    let r = parseEthernet(b, eth, len - VXLAN_HLEN, f);
    if (r !== 0) { countParseDrop(c, r); continue; }
    if (f[F_L3OFF] !== eth + ETH_HLEN) { c[C.drop_not_ip]++; continue; }
    if (f[F_ETHTYPE] !== want) { c[f[F_ETHTYPE] === ETH_P_IP || f[F_ETHTYPE] === ETH_P_IPV6 ? C.drop_wrong_family : C.drop_not_ip]++; continue; }
    r = six ? parseIPv6(b, eth + ETH_HLEN, len - VXLAN_HLEN - ETH_HLEN, f) : parseIPv4(b, eth + ETH_HLEN, len - VXLAN_HLEN - ETH_HLEN, f, false);
    if (r !== 0) { countParseDrop(c, r); continue; }
    if (six ? !peerOwns6(peers, peer, f, F_SRC6) : !peerOwns(peers, peer, f[F_SRC4])) { c[C.drop_foreign_source]++; continue; }
    let oversized = false;
    if (f[F_L3LEN] > mtu) {
      if (takeSuper(bt, i, f, mtu, six)) c[C.rx_vxlan_gso]++;
      else oversized = true;
    } else if (ctx.completeInnerChecksums && f[F_FRAG] === 0) completeChecksum(b, bt.words, f, c, six);
    if (six) takeIPv6(bt, i, f); else takeIPv4(bt, i, f);
    if (oversized) bt.flags[i] |= OVERSIZED;
  }
}

// A TCP super-packet: its offload facts as a virtio_net_hdr would give them, the
// checksum field set to the pseudo-header sum NEEDS_CSUM expects (it already
// holds that when the peer left it partial, as a veth does).
function takeSuper(bt: Batch, i: number, f: Int32Array, mtu: number, six: boolean): boolean {
  if (f[F_PROTO] !== IPPROTO_TCP || f[F_FRAG] !== 0) return false;
  const b = bt.arena, l4 = f[F_L4OFF], l4len = f[F_L4LEN];
  if (l4len < 20) return false;
  const thl = (b[l4 + 12] >>> 4) << 2, mss = mtu - f[F_IHL] - thl;
  if (thl < 20 || thl > l4len || mss <= 0) return false;
  if (six && f[F_IHL] !== 40) return false; // extension headers: the segmenters take none
  const ph = ~csumFold(pseudo(b, f, IPPROTO_TCP, l4len, six)) & 0xffff;
  b[l4 + 16] = ph >> 8; b[l4 + 17] = ph & 0xff;
  bt.gso[i] = mss;
  bt.vflags[i] = VNET_F_NEEDS_CSUM | ((six ? VNET_GSO_TCPV6 : VNET_GSO_TCPV4) << 8);
  bt.csumStart[i] = l4;
  bt.csumOff[i] = 16;
  return true;
}

function pseudo(b: Uint8Array, f: Int32Array, proto: number, l4len: number, six: boolean): number {
  const l3 = f[F_L3OFF];
  return six ? pseudoHeaderSum6(b, l3 + 8, l3 + 24, proto, l4len) : pseudoHeaderSum4(f[F_SRC4], f[F_DST4], proto, l4len);
}

function completeChecksum(b: Uint8Array, w: Uint32Array, f: Int32Array, c: Float64Array, six: boolean): void {
  const proto = f[F_PROTO];
  let field: number;
  if (proto === IPPROTO_TCP) field = 16;
  else if (proto === IPPROTO_UDP) field = 6;
  else return;
  const l4 = f[F_L4OFF], l4len = f[F_L4LEN];
  if (l4len < field + 2) return;
  const at = l4 + field, v0 = (b[at] << 8) | b[at + 1];
  if (proto === IPPROTO_UDP && v0 === 0) return; // UDP without checksum
  if (v0 !== (~csumFold(pseudo(b, f, proto, l4len, six)) & 0xffff)) return; // not partial
  let v = csumFold(csumAdd32(b, w, l4, l4len, 0));
  if (v === 0 && proto === IPPROTO_UDP) v = 0xffff;
  b[at] = v >> 8; b[at + 1] = v & 0xff;
  c[C.inner_csum_completed]++;
}
