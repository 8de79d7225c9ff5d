// A batch: up to `size` packets in fixed slots of one worker's arena. Stages
// read and rewrite per-entry typed arrays; nothing is allocated per packet.
// Every receive path aims its read so the IP header lands at slot base +
// HEADROOM, which leaves room to prepend VXLAN + inner Ethernet in place.
export const HEADROOM = 64;

export class Batch {
  n = 0;
  readonly arena: Uint8Array;
  readonly base: Int32Array; // slot start, fixed
  readonly offs: Int32Array; // where the bytes to send (or just received) start
  readonly lens: Int32Array;
  readonly meta: Int32Array; // receive metadata: ingress ifindex (pods) or source IPv4 (VXLAN)
  readonly aux: Int32Array; // receive metadata: GRO segment size
  readonly src: Int32Array; // parsed inner IPv4 source
  readonly dst: Int32Array; // parsed inner IPv4 destination
  readonly l3len: Int32Array; // IP total length
  readonly flags: Int32Array; // bit 0: DF set
  // Outputs: per-entry destination, and one index list per output.
  readonly outIf: Int32Array;
  readonly outDst: Int32Array;
  readonly outPort: Int32Array;
  readonly tunIdx: Int32Array;
  readonly podIdx: Int32Array;
  readonly udpIdx: Int32Array;
  nTun = 0;
  nPod = 0;
  nUdp = 0;

  constructor(readonly size: number, readonly slotSize: number) {
    this.arena = new Uint8Array(new SharedArrayBuffer(size * slotSize));
    const a = () => new Int32Array(size);
    this.base = a(); this.offs = a(); this.lens = a(); this.meta = a(); this.aux = a();
    this.src = a(); this.dst = a(); this.l3len = a(); this.flags = a();
    this.outIf = a(); this.outDst = a(); this.outPort = a();
    this.tunIdx = a(); this.podIdx = a(); this.udpIdx = a();
    for (let i = 0; i < size; i++) this.base[i] = i * slotSize;
  }

  /** Point every slot's receive offset at base + HEADROOM - lead (lead = bytes before the IP header). */
  aim(lead: number): void {
    const off = HEADROOM - lead;
    for (let i = 0; i < this.size; i++) this.offs[i] = this.base[i] + off;
  }

  /** Bytes a receive may write into one slot after aiming with `lead`. */
  capacity(lead: number): number { return this.slotSize - HEADROOM + lead; }

  clearOutputs(): void { this.nTun = 0; this.nPod = 0; this.nUdp = 0; }
  toTun(i: number): void { this.tunIdx[this.nTun++] = i; }
  toPod(i: number, ifindex: number): void { this.outIf[i] = ifindex; this.podIdx[this.nPod++] = i; }
  toUdp(i: number, dst: number, port: number): void { this.outDst[i] = dst; this.outPort[i] = port; this.udpIdx[this.nUdp++] = i; }
}
