// Stage: route each parsed IPv4 packet by longest-prefix match on its
// destination, then write the headers its next hop needs in front of it, in
// place, and queue it on the right output:
//   local pod → Ethernet (gateway MAC → pod MAC), AF_PACKET out of its veth
//   remote node → VXLAN + inner Ethernet (our VTEP MAC → theirs), UDP to its underlay IP
//   host → the bare IP packet into TUN
// A DF packet over the pod MTU headed for the overlay gets ICMP
// fragmentation-needed back (RFC 1191) instead.
//
// Services (stages/translated.ts): the Service range goes to the host, where
// kube-proxy translates it; what the stack sends back with a local pod's source
// is recorded, and the replies of those flows go back through the stack.
//
// Offloads: a frame from a pod, a packet from the host's TUN, or a kernel VXLAN
// peer's tunnel super-packet may carry a partial checksum or be a TSO
// super-packet (bt.vflags, bt.gso; stages/vnet.ts, ingress-vxlan.ts, segment.ts). A local pod takes it as it is, with a virtio_net_hdr, on the vnet
// socket; so does TUN (a pod's TCP super-frame to the host); the overlay gets it
// finished and cut into pieces. Overlay TCP for a local pod is coalesced
// into super-frames when it can be (stages/coalesce.ts).
import * as vxlan from '../packet/vxlan.js';
import * as ethernet from '../packet/ethernet.js';
import { decTtl } from '../packet/ipv4.js';
import * as virtio from '../packet/virtio.js';
import { writeVnet, zeroVnet } from '../packet/virtio.js';
import { writeIcmpFragNeeded } from '../packet/icmp.js';
import * as fib from '../tables/fib.js';
import { C } from './counters.js';
import { admit, admitDeferred } from './policy.js';
import { isTranslatedReply, recordTranslated } from './translated.js';
import { coalesce, TO_TUN } from './coalesce.js';
import { completePartial, segment, OUT_POD, OUT_TUN, OUT_UDP } from './segment.js';
import { OVERSIZED, DF, type Batch } from './batch.js';
import type { StageContext } from './context.js';

export const FROM_POD = 0, FROM_TUN = 1, FROM_VXLAN = 2;

// V8 does not constant-fold imported bindings (every use in a hot loop is a
// module-cell load); module-level consts it does fold.
const { NH_STRIDE, NH_KIND, NH_IFINDEX, NH_IP, NH_MAC_HI, NH_MAC_LO, NH_LOCAL, NH_REMOTE, NH_HOST, NH_DROP, NH_SERVICE, NH_OUTSIDE, findPeer } = fib;
const { writeVxlan, VXLAN_HLEN } = vxlan;
const { ETH_HLEN, ETH_P_IP, ethReplyInPlace } = ethernet;
const UDP = 17;
const { VNET_HLEN, VNET_F_NEEDS_CSUM, VNET_GSO_UDP_L4 } = virtio;

// Byte stores: TypedArray.prototype.set costs a builtin call (~15 ns) for 6 bytes.
function copyMac(b: Uint8Array, off: number, mac: Uint8Array): void {
  b[off] = mac[0]; b[off + 1] = mac[1]; b[off + 2] = mac[2]; b[off + 3] = mac[3]; b[off + 4] = mac[4]; b[off + 5] = mac[5];
}

function writeMac(b: Uint8Array, off: number, hi: number, lo: number): void {
  b[off] = hi >>> 8; b[off + 1] = hi & 0xff;
  b[off + 2] = lo >>> 24; b[off + 3] = (lo >>> 16) & 0xff; b[off + 4] = (lo >>> 8) & 0xff; b[off + 5] = lo & 0xff;
}

function writeEthType(b: Uint8Array, off: number): void { b[off + 12] = ETH_P_IP >> 8; b[off + 13] = ETH_P_IP & 0xff; }

export function forward(ctx: StageContext, bt: Batch, from: number): void {
  const b = bt.arena, c = ctx.counters, nh = ctx.nh, lpm = ctx.route4;
  bt.resetMade();
  const coalescing = from === FROM_VXLAN && ctx.podGso && ctx.vnetSend;
  // Replies of translated flows (T2) are looked for only while such flows exist,
  // once per run of one flow's packets (the verdict of the run's first holds).
  const replies = from !== FROM_TUN && ctx.translated.count() > 0;
  let rSrc = 0, rDst = 0, rPorts = -1, rProto = -1, rVia = false;
  for (let i = 0; i < bt.n; i++) {
    const l3len = bt.l3len[i];
    if (l3len === 0) continue;
    const l3 = bt.l3[i];
    const p = lpm.lookup(bt.dst[i]) * NH_STRIDE;
    let kind = nh[p + NH_KIND];
    let fromPod = from === FROM_POD;
    if (fromPod && bt.dport[i] === ctx.vxlanPort && bt.proto[i] === UDP && isNode(ctx, kind, bt.dst[i])) {
      c[C.drop_overlay_port]++; // a pod must not speak VXLAN to a node: it would forge what the overlay trusts
      continue;
    }
    if (kind === NH_OUTSIDE || kind === NH_SERVICE) {
      if (from === FROM_VXLAN) { c[C.drop_overlay_dst]++; continue; } // no node sends these through the overlay
    }
    if (from === FROM_TUN && (kind === NH_LOCAL || kind === NH_REMOTE) && nh[lpm.lookup(bt.src[i]) * NH_STRIDE + NH_KIND] === NH_LOCAL) {
      recordTranslated(ctx, bt, i); // T1: a local pod's packet, translated by the stack
      fromPod = true; // its egress is judged now, on the translated destination
    }
    if (kind === NH_SERVICE) {
      if (ctx.policy !== undefined && fromPod) admitDeferred(ctx, bt, i); // judged once the stack has translated it
      kind = NH_HOST;
    } else {
      if (kind === NH_OUTSIDE) kind = NH_HOST;
      if (ctx.policy !== undefined && kind !== NH_DROP && !admit(ctx, bt, i, fromPod, kind === NH_LOCAL)) continue;
    }
    if (replies && kind === NH_LOCAL) {
      const ports = (bt.sport[i] << 16) | bt.dport[i];
      if (bt.src[i] !== rSrc || bt.dst[i] !== rDst || ports !== rPorts || bt.proto[i] !== rProto) {
        rSrc = bt.src[i]; rDst = bt.dst[i]; rPorts = ports; rProto = bt.proto[i];
        rVia = isTranslatedReply(ctx, bt, i);
      }
      if (rVia) kind = NH_HOST; // T2: back through the stack, which un-DNATs it
    }
    const vf = bt.vflags[i]; // partial checksum / super-packet from a pod, the host or a kernel VXLAN peer
    if (kind === NH_LOCAL) {
      if ((bt.flags[i] & OVERSIZED) !== 0) { tooBig(ctx, bt, i, l3, from); continue; }
      if (coalescing && vf === 0) {
        const k = coalesce(ctx, bt, i, nh[p + NH_IFINDEX], nh[p + NH_MAC_HI], nh[p + NH_MAC_LO]);
        if (k > 0) { i += k - 1; continue; }
      }
      if (from !== FROM_TUN && !ttlOk(b, l3, c)) continue;
      const eth = l3 - ETH_HLEN;
      writeMac(b, eth, nh[p + NH_MAC_HI], nh[p + NH_MAC_LO]);
      copyMac(b, eth + 6, ctx.gwMac);
      writeEthType(b, eth);
      if (vf !== 0) {
        if (ctx.vnetSend) { // a pod's virtio_net_hdr is still in front of its Ethernet header; the host's is written there
          if (from !== FROM_POD) writeVnetFor(bt, i, eth);
          bt.offs[i] = eth - VNET_HLEN; bt.lens[i] = l3len + ETH_HLEN + VNET_HLEN;
          bt.toPodVnet(i, nh[p + NH_IFINDEX]);
          continue;
        }
        if (bt.gso[i] > 0) { segment(ctx, bt, i, ETH_HLEN, OUT_POD, nh[p + NH_IFINDEX], 0); continue; }
        if (!finish(bt, i, c)) continue;
      }
      bt.offs[i] = eth; bt.lens[i] = l3len + ETH_HLEN;
      bt.toPod(i, nh[p + NH_IFINDEX]);
    } else if (kind === NH_REMOTE) {
      if (from === FROM_VXLAN) { c[C.drop_hairpin]++; continue; }
      const g = vf !== 0 ? bt.gso[i] : 0;
      if ((g > 0 ? pieceLen(b, l3, g) : l3len) > ctx.podMtu) { tooBig(ctx, bt, i, l3, from); continue; }
      if (from === FROM_POD && !ttlOk(b, l3, c)) continue;
      const eth = l3 - ETH_HLEN;
      encapHeaders(ctx, bt, i, eth, p);
      if (g > 0) { segment(ctx, bt, i, ETH_HLEN + VXLAN_HLEN, OUT_UDP, nh[p + NH_IP], ctx.vxlanPort); continue; }
      if (vf !== 0 && !finish(bt, i, c)) continue;
      bt.offs[i] = eth - VXLAN_HLEN; bt.lens[i] = l3len + ETH_HLEN + VXLAN_HLEN;
      bt.toUdp(i, nh[p + NH_IP], ctx.vxlanPort);
    } else if (kind === NH_HOST) {
      if (from === FROM_TUN) { c[C.drop_hairpin]++; continue; }
      if ((bt.flags[i] & OVERSIZED) !== 0) { tooBig(ctx, bt, i, l3, from); continue; } // the TUN device's MTU is the pods'
      if (from === FROM_VXLAN && ctx.tunTso && vf === 0) {
        const k = coalesce(ctx, bt, i, TO_TUN, 0, 0);
        if (k > 0) { i += k - 1; continue; }
      }
      const lead = ctx.tunTso ? VNET_HLEN : 0; // with it, every TUN write starts with a virtio_net_hdr
      if (lead !== 0 && vf !== 0 && ((vf >>> 8) & 0x7f) !== VNET_GSO_UDP_L4) { // the stack takes a TCP super-frame or partial checksum as it is
        writeVnetFor(bt, i, l3);
        if (bt.gso[i] > 0) c[C.tx_tun_gso]++;
      } else {
        if (lead !== 0) zeroVnet(b, l3 - VNET_HLEN);
        if (vf !== 0) {
          if (bt.gso[i] > 0) { segment(ctx, bt, i, lead, OUT_TUN, 0, 0); continue; }
          if (!finish(bt, i, c)) continue;
        }
      }
      bt.offs[i] = l3 - lead; bt.lens[i] = l3len + lead;
      bt.toTun(i);
    } else {
      c[C.drop_no_route]++;
    }
  }
}

// Entry i's offload facts as a virtio_net_hdr right before `start` (its packet's
// first byte: Ethernet for a pod's veth, IP for TUN), offsets counted from there.
function writeVnetFor(bt: Batch, i: number, start: number): void {
  const b = bt.arena, l3 = bt.l3[i], vf = bt.vflags[i], type = (vf >>> 8) & 0x7f, gso = bt.gso[i];
  const ihl = (b[l3] & 15) << 2, l4hdr = b[l3 + 9] === 6 ? (b[l3 + ihl + 12] >>> 4) << 2 : 8;
  const partial = (vf & 1) !== 0;
  writeVnet(b, start - VNET_HLEN, partial ? VNET_F_NEEDS_CSUM : 0, gso > 0 ? type : 0, gso > 0 ? l3 - start + ihl + l4hdr : 0, gso,
    partial ? bt.csumStart[i] - start : 0, partial ? bt.csumOff[i] : 0);
}

// A partial checksum from a pod, finished for a path that needs it finished.
function finish(bt: Batch, i: number, c: Float64Array): boolean {
  if ((bt.vflags[i] & 1) === 0) return true;
  if (!completePartial(bt, i)) { c[C.drop_malformed]++; return false; }
  c[C.pod_csum_completed]++;
  return true;
}

// The IP length of one piece of a super-frame cut at gso_size g.
function pieceLen(b: Uint8Array, l3: number, g: number): number {
  const ihl = (b[l3] & 15) << 2;
  return ihl + (b[l3 + 9] === 6 ? (b[l3 + ihl + 12] >>> 4) << 2 : 8) + g;
}

function ttlOk(b: Uint8Array, l3: number, c: Float64Array): boolean {
  if (b[l3 + 8] <= 1) { c[C.drop_ttl]++; return false; }
  decTtl(b, l3);
  return true;
}

// VXLAN and the inner Ethernet header in front of the inner packet (its first
// byte at eth + ETH_HLEN) for the peer of next hop p, and the flow's send socket.
function encapHeaders(ctx: StageContext, bt: Batch, i: number, eth: number, p: number): void {
  const b = bt.arena, nh = ctx.nh;
  writeMac(b, eth, nh[p + NH_MAC_HI], nh[p + NH_MAC_LO]);
  copyMac(b, eth + 6, ctx.vtepMac);
  writeEthType(b, eth);
  writeVxlan(b, eth - VXLAN_HLEN, ctx.vni);
  bt.outSock[i] = ctx.udpSources > 1 ? sourceOf(bt, i, ctx.udpSources) : 0;
}

// A packet over the pod MTU: dropped, and with DF set answered with ICMP
// fragmentation-needed (RFC 1191), to a local pod directly or to a remote one
// through the overlay. The node's stack needs none: it sees the TUN MTU itself.
function tooBig(ctx: StageContext, bt: Batch, i: number, l3: number, from: number): void {
  const b = bt.arena, c = ctx.counters, src = bt.src[i];
  c[C.drop_too_big]++;
  if ((bt.flags[i] & DF) === 0 || from === FROM_TUN) return;
  const eth = l3 - ETH_HLEN;
  if (from === FROM_POD) {
    ethReplyInPlace(b, eth, ctx.gwMac); // back to the sender
    const n = writeIcmpFragNeeded(b, l3, b, l3, bt.l3len[i], ctx.podMtu, ctx.gatewayIp, src);
    bt.offs[i] = eth; bt.lens[i] = n + ETH_HLEN;
    bt.toPod(i, bt.meta[i]);
  } else {
    const q = ctx.route4.lookup(src) * NH_STRIDE;
    if (ctx.nh[q + NH_KIND] !== NH_REMOTE) return; // ingress-vxlan.ts let in only a peer's own sources
    const n = writeIcmpFragNeeded(b, l3, b, l3, bt.l3len[i], ctx.podMtu, ctx.gatewayIp, src);
    bt.src[i] = ctx.gatewayIp; bt.dst[i] = src; bt.proto[i] = 1; // the flow sourceOf hashes
    encapHeaders(ctx, bt, i, eth, q);
    bt.offs[i] = eth - VXLAN_HLEN; bt.lens[i] = n + ETH_HLEN + VXLAN_HLEN;
    bt.toUdp(i, ctx.nh[q + NH_IP], ctx.vxlanPort);
  }
  c[C.icmp_frag_needed_sent]++;
}

/** Whether `dst` (whose next hop kind is `kind`) is a node's address: this node's own, or a peer's underlay address. */
function isNode(ctx: StageContext, kind: number, dst: number): boolean {
  return kind === NH_HOST || (kind === NH_OUTSIDE && findPeer(ctx.peers, dst) >= 0);
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
