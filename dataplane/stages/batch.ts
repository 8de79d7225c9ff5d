// A batch: the packets one receive call brought in, as entries over one
// worker's arena. Stages read and rewrite per-entry typed arrays; nothing is
// allocated per packet.
//
// The arena has two regions. Slots (one packet each) take reads from TUN and
// pod veths; each read is aimed so the IP header lands at slot base +
// HEADROOM, which leaves room to prepend VXLAN + inner Ethernet in place. GRO
// slots (64 KB each) take overlay receives, which the kernel may coalesce
// (UDP_GRO): one receive then holds many VXLAN datagrams back to back, and
// splitting it yields one entry per datagram.
//
// With pod offloads on (engine/config.ts podTso, podGso) two more regions
// follow: big slots (one pod receive each: a virtio_net_hdr and a frame of up
// to 64 KB, a TSO super-frame) and the out region, where the segment and
// coalesce stages write the packets they make. Made packets take entries from
// `top` up (entries below n are the receives).
//
// A packet on an output list may be a chain of entries: more[e] = 1 says that
// entry e's bytes continue in the next entry of the same list. The segment and
// coalesce stages write headers to the out region and leave payloads where
// they were received; the addon hands a chain to the kernel as one iovec list,
// so the kernel's copy on send is the only one.
export const HEADROOM = 64;
export const GRO_SLOT = 65536;
// Room in front of each GRO slot: a tunnel super-packet (stages/ingress-vxlan.ts)
// leaves with a virtio_net_hdr written over its VXLAN header and 2 bytes more.
const GRO_HEADROOM = 64;
const GRO_STRIDE = GRO_SLOT + GRO_HEADROOM;
export const BIG_SLOT = 65536 + 512; // virtio_net_hdr + Ethernet + a 64 KB IP packet, after HEADROOM
export const GEN_ENTRIES = 4096; // entries for made packets (segment headers and payloads) per batch
// bt.flags: don't-fragment set (always for IPv6: routers never fragment it); longer than the pod MTU and not a
// super-packet (ingress-vxlan.ts); an IPv6 packet (addresses in src6/dst6).
export const DF = 1, OVERSIZED = 2, V6 = 4;

export interface BigRegions { bigSlots: number; outBytes: number }

export class Batch {
  n = 0; // entries in use
  readonly arena: Uint8Array;
  readonly base: Int32Array; // slot starts (first `slots` entries), fixed
  readonly groBase: number;
  readonly offs: Int32Array; // where the bytes to send (or just received) start
  readonly lens: Int32Array;
  readonly meta: Int32Array; // receive metadata: ingress ifindex (pods), source IPv4 (VXLAN over IPv4) or receive index (over IPv6: from6)
  readonly aux: Int32Array; // receive metadata: GRO segment size
  readonly l3: Int32Array; // IP header offset, set by the ingress stages
  readonly src: Int32Array; // parsed IPv4 source; IPv6: its words xor-folded (a flow hash's input only)
  readonly dst: Int32Array; // parsed IPv4 destination; IPv6: likewise
  readonly src6: Int32Array; // IPv6 (flags V6): the addresses, 4 words per entry at 4*i
  readonly dst6: Int32Array;
  readonly from6: Int32Array; // overlay receives over IPv6: the sender's address, 4 words per receive (meta holds the receive's index)
  readonly l3len: Int32Array; // IP total length; 0 = nothing for the forward stage
  readonly flags: Int32Array; // DF, OVERSIZED
  readonly proto: Int32Array; // parsed upper protocol
  readonly sport: Int32Array; // TCP/UDP/SCTP ports; ICMP echo: the identifier in both
  readonly dport: Int32Array;
  readonly tcpFlags: Int32Array; // low 8 bits of the TCP flags (0 for other protocols)
  readonly more: Uint8Array; // 1: the packet continues in the next entry of its output list (a chain)
  // Outputs: per-entry destination, and one index list per output.
  readonly outIf: Int32Array;
  readonly outDst: Int32Array;
  readonly outDst6: Int32Array; // the IPv6 underlay destination, 4 words per entry at 4*i
  readonly outPort: Int32Array;
  readonly outSock: Int32Array; // overlay send socket (outer source port) of the entry's flow
  readonly tunIdx: Int32Array;
  readonly podIdx: Int32Array;
  readonly udpIdx: Int32Array;
  readonly udp6Idx: Int32Array; // the overlay over IPv6
  readonly runs: Int32Array; // UDP send runs (see egress)
  // Offloads (pods with PACKET_VNET_HDR): per-entry virtio_net_hdr facts.
  readonly gso: Int32Array; // gso_size, 0 = not a super-frame
  readonly vflags: Int32Array; // virtio flags | gso_type << 8; 0 = nothing pending
  readonly csumStart: Int32Array; // NEEDS_CSUM: absolute offset where the sum starts
  readonly csumOff: Int32Array; // NEEDS_CSUM: checksum field offset from csumStart
  readonly podVnet: Int32Array; // 1: offs points at a virtio_net_hdr, send on the vnet socket
  readonly scratch: Int32Array; // an index list egress builds (one stretch of pod frames)
  readonly words: Uint32Array; // the arena as words, for csumAdd32
  readonly bigBase: number;
  readonly bigSlots: number;
  readonly outBase: number;
  readonly outEnd: number;
  top = 0; // next free entry for made packets
  outTop = 0; // next free byte of the out region
  nTun = 0;
  nPod = 0;
  nUdp = 0;
  nUdp6 = 0;

  constructor(readonly slots: number, readonly slotSize: number, readonly groSlots: number, readonly entries: number, big?: BigRegions) {
    if (entries < slots) throw new Error('a batch needs at least one entry per slot');
    this.groBase = slots * slotSize;
    this.bigBase = this.groBase + groSlots * GRO_STRIDE;
    this.bigSlots = big?.bigSlots ?? 0;
    this.outBase = this.bigBase + this.bigSlots * BIG_SLOT;
    this.outEnd = this.outBase + (big?.outBytes ?? 0);
    if (this.bigSlots > entries) throw new Error('a batch needs at least one entry per big slot');
    this.arena = new Uint8Array(new SharedArrayBuffer(this.outEnd));
    this.words = new Uint32Array(this.arena.buffer, 0, this.outEnd >>> 2);
    const a = () => new Int32Array(entries);
    this.base = a(); this.offs = a(); this.lens = a(); this.meta = a(); this.aux = a(); this.l3 = a();
    this.src = a(); this.dst = a(); this.l3len = a(); this.flags = a(); this.proto = a(); this.sport = a(); this.dport = a(); this.tcpFlags = a();
    this.outIf = a(); this.outDst = a(); this.outPort = a(); this.outSock = a();
    this.tunIdx = a(); this.podIdx = a(); this.udpIdx = a(); this.udp6Idx = a(); this.runs = a();
    this.src6 = new Int32Array(4 * entries); this.dst6 = new Int32Array(4 * entries); this.outDst6 = new Int32Array(4 * entries);
    this.from6 = new Int32Array(4 * groSlots);
    this.more = new Uint8Array(entries);
    this.gso = a(); this.vflags = a(); this.csumStart = a(); this.csumOff = a(); this.podVnet = a(); this.scratch = a();
    for (let i = 0; i < slots; i++) this.base[i] = i * slotSize;
  }

  /** Point every slot's receive offset at base + HEADROOM - lead (lead = bytes before the IP header). */
  aim(lead: number): void {
    const off = HEADROOM - lead;
    for (let i = 0; i < this.slots; i++) this.offs[i] = this.base[i] + off;
  }

  /** Bytes a receive may write into one slot after aiming with `lead`. */
  capacity(lead: number): number { return this.slotSize - HEADROOM + lead; }

  /** Point the first groSlots receive offsets at the GRO slots. */
  aimGro(): void {
    for (let i = 0; i < this.groSlots; i++) this.offs[i] = this.groBase + i * GRO_STRIDE + GRO_HEADROOM;
  }

  /** Point the first bigSlots receive offsets at the big slots (lead as for aim). */
  aimBig(lead: number): void {
    const off = this.bigBase + HEADROOM - lead;
    for (let i = 0; i < this.bigSlots; i++) this.offs[i] = off + i * BIG_SLOT;
  }

  bigCapacity(lead: number): number { return BIG_SLOT - HEADROOM + lead; }

  /** Forget the packets made so far (after they were sent, or at a batch's start). */
  resetMade(): void { this.top = this.n; this.outTop = this.outBase; }

  clearOutputs(): void { this.nTun = 0; this.nPod = 0; this.nUdp = 0; this.nUdp6 = 0; }
  // Queue entry i on an output. `more` = 1: the packet goes on in the entry
  // queued next on the same output (a chain; the last piece has more = 0).
  toTun(i: number, more = 0): void { this.more[i] = more; this.tunIdx[this.nTun++] = i; }
  toPod(i: number, ifindex: number, more = 0): void { this.outIf[i] = ifindex; this.podVnet[i] = 0; this.more[i] = more; this.podIdx[this.nPod++] = i; }
  /** offs[i] points at a virtio_net_hdr: the frame leaves on the vnet socket. */
  toPodVnet(i: number, ifindex: number, more = 0): void { this.outIf[i] = ifindex; this.podVnet[i] = 1; this.more[i] = more; this.podIdx[this.nPod++] = i; }
  toUdp(i: number, dst: number, port: number, more = 0): void { this.outDst[i] = dst; this.outPort[i] = port; this.more[i] = more; this.udpIdx[this.nUdp++] = i; }
  /** To the IPv6 underlay address in words w[at..at+3]. */
  toUdp6(i: number, w: Int32Array, at: number, port: number, more = 0): void {
    const o = 4 * i, d = this.outDst6;
    d[o] = w[at]; d[o + 1] = w[at + 1]; d[o + 2] = w[at + 2]; d[o + 3] = w[at + 3];
    this.outPort[i] = port; this.more[i] = more; this.udp6Idx[this.nUdp6++] = i;
  }
}

/**
 * Splits the n receives in entries 0..n-1 (aux[i] = GRO segment size, 0 when not
 * coalesced) into one entry per datagram; returns the new entry count. Works
 * back to front: datagram i's pieces land at indices >= i, so no entry is
 * overwritten before it is read. (The kernel coalesces at most 64 datagrams per
 * receive, so entries = 64 per GRO slot always suffices.)
 */
export function splitGro(bt: Batch, n: number): number {
  let total = 0;
  for (let i = 0; i < n; i++) total += pieces(bt.aux[i], bt.lens[i]);
  if (total > bt.entries) throw new Error(`GRO receive of ${total} datagrams exceeds the batch (${bt.entries})`);
  let w = total;
  for (let i = n - 1; i >= 0; i--) {
    const seg = bt.aux[i], len = bt.lens[i], off = bt.offs[i], src = bt.meta[i]; // the source (IPv4) or the receive's index (IPv6)
    const parts = pieces(seg, len);
    if (parts === 1) { w--; bt.offs[w] = off; bt.lens[w] = len; bt.meta[w] = src; continue; }
    for (let k = parts - 1; k >= 0; k--) {
      w--;
      bt.offs[w] = off + k * seg;
      bt.lens[w] = Math.min(seg, len - k * seg);
      bt.meta[w] = src;
    }
  }
  return total;
}

function pieces(seg: number, len: number): number { return seg > 0 && len > seg ? Math.ceil(len / seg) : 1; }
