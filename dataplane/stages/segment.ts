// What pods with TX offload on hand us, made fit for a path that cannot take
// it as it is (engine/config.ts podTso):
//   - a partial checksum (virtio NEEDS_CSUM): the field holds the pseudo-header
//     sum; summing from csum_start to the end and folding finishes it.
//   - a super-frame (GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4): cut into gso_size pieces, each
//     with its own copy of the headers (IPv4 length, id and checksum, or the IPv6 payload length; TCP
//     sequence number, flags and checksum; UDP length and checksum). FIN and
//     PSH stay on the last piece only, CWR on the first only.
// The forward stage has already written whatever goes in front of the IP
// header (VXLAN + inner Ethernet, or Ethernet, or nothing for TUN): `lead`
// bytes before l3, copied in front of every piece. Each piece is a chain of
// two entries (stages/batch.ts): its headers, written to the out region (back
// to back, 4-aligned), and its payload, left in place in the super-frame.
// Entries come from bt.top up, in order, so a run of pieces leaves as one
// UDP_SEGMENT message and the kernel's copy on send is the only one.
import { csumAdd, csumAdd32, csumFold, pseudoHeaderSum4, pseudoHeaderSum6 } from '../packet/checksum.js';
import { C } from './counters.js';
import type { Batch } from './batch.js';
import type { StageContext } from './context.js';
import { OUT_POD, OUT_TUN, OUT_UDP, OUT_UDP6 } from './ids.js';
import * as virtio from '../packet/virtio.js';

const { VNET_GSO_TCPV4: GSO_TCPV4, VNET_GSO_TCPV6: GSO_TCPV6, VNET_GSO_UDP_L4: GSO_UDP_L4 } = virtio; // module-level consts V8 folds
const TCP_FIN = 0x01, TCP_PSH = 0x08, TCP_CWR = 0x80;

/** Finishes entry i's partial checksum in place; false when its virtio offsets do not fit the packet. */
export function completePartial(bt: Batch, i: number): boolean {
  const b = bt.arena, l3 = bt.l3[i], start = bt.csumStart[i], at = start + bt.csumOff[i], end = l3 + bt.l3len[i];
  if (start < l3 || at + 2 > end) return false;
  let v = csumFold(csumAdd32(b, bt.words, start, end - start, 0));
  if (v === 0 && (b[l3] >> 4 === 6 ? b[l3 + 6] : b[l3 + 9]) === 17) v = 0xffff;
  b[at] = v >>> 8; b[at + 1] = v & 0xff;
  return true;
}

/**
 * Cuts super-frame i into pieces queued on output `out` (dst, port: the UDP
 * destination; for OUT_UDP6 dst is where ctx.nh holds the IPv6 address, for
 * OUT_POD the ifindex). Returns false (and counts why)
 * when it cannot: the caller then drops the frame.
 */
export function segment(ctx: StageContext, bt: Batch, i: number, lead: number, out: number, dst: number, port: number): boolean {
  const b = bt.arena, c = ctx.counters;
  const l3 = bt.l3[i], l3len = bt.l3len[i], mss = bt.gso[i], type = (bt.vflags[i] >>> 8) & 0x7f;
  const six = b[l3] >> 4 === 6, ihl = six ? 40 : (b[l3] & 15) << 2, l4 = l3 + ihl, proto = six ? b[l3 + 6] : b[l3 + 9];
  let thl: number;
  if ((six ? type === GSO_TCPV6 : type === GSO_TCPV4) && proto === 6) thl = (b[l4 + 12] >>> 4) << 2;
  else if (type === GSO_UDP_L4 && proto === 17) thl = 8;
  else { c[C.drop_gso_unsupported]++; return false; }
  const hdr = ihl + thl, payload = l3len - hdr;
  if (mss <= 0 || payload <= 0) { c[C.drop_malformed]++; return false; }
  const nseg = Math.ceil(payload / mss);
  const bytes = nseg * ((lead + hdr + 3) & ~3);
  if (bt.top + 2 * nseg > bt.entries || bt.outTop + bytes > bt.outEnd) {
    ctx.flush?.(); // send what is queued so far: frees the out region
    if (bt.top + 2 * nseg > bt.entries || bt.outTop + bytes > bt.outEnd) { c[C.drop_gso_unsupported]++; return false; }
  }
  const words = bt.words, src = bt.src[i], dip = bt.dst[i];
  const id0 = (b[l3 + 4] << 8) | b[l3 + 5];
  const seq0 = ((b[l4 + 4] << 24) | (b[l4 + 5] << 16) | (b[l4 + 6] << 8) | b[l4 + 7]) >>> 0;
  const flags = b[l4 + 13], tcp = thl !== 8, field = tcp ? 16 : 6;
  const from = l3 - lead, hend = l3 + hdr, last = nseg - 1;
  let w = bt.outTop;
  for (let k = 0; k < nseg; k++) {
    const plen = k === last ? payload - k * mss : mss;
    const p0 = hend + k * mss;
    b.copyWithin(w, from, hend);
    const ip = w + lead, th = ip + ihl;
    const tot = hdr + plen, l4len = thl + plen, id = (id0 + k) & 0xffff;
    if (six) {
      b[ip + 4] = l4len >>> 8; b[ip + 5] = l4len & 0xff;
    } else {
      b[ip + 2] = tot >>> 8; b[ip + 3] = tot & 0xff;
      b[ip + 4] = id >>> 8; b[ip + 5] = id & 0xff;
      b[ip + 10] = 0; b[ip + 11] = 0;
      const hc = csumFold(csumAdd(b, ip, ihl, 0));
      b[ip + 10] = hc >>> 8; b[ip + 11] = hc & 0xff;
    }
    if (tcp) {
      const seq = (seq0 + k * mss) >>> 0;
      b[th + 4] = seq >>> 24; b[th + 5] = (seq >>> 16) & 0xff; b[th + 6] = (seq >>> 8) & 0xff; b[th + 7] = seq & 0xff;
      let fl = flags;
      if (k > 0) fl &= ~TCP_CWR;
      if (k < last) fl &= ~(TCP_FIN | TCP_PSH);
      b[th + 13] = fl;
    } else {
      b[th + 4] = l4len >>> 8; b[th + 5] = l4len & 0xff;
    }
    b[th + field] = 0; b[th + field + 1] = 0;
    // thl is even, so the payload's 16-bit words line up after the header's.
    const sum = csumAdd(b, th, thl, six ? pseudoHeaderSum6(b, ip + 8, ip + 24, proto, l4len) : pseudoHeaderSum4(src, dip, proto, l4len));
    let v = csumFold(csumAdd32(b, words, p0, plen, sum));
    if (v === 0 && !tcp) v = 0xffff;
    b[th + field] = v >>> 8; b[th + field + 1] = v & 0xff;
    const h = bt.top++, e = bt.top++;
    bt.offs[h] = w; bt.lens[h] = lead + hdr;
    bt.offs[e] = p0; bt.lens[e] = plen;
    if (out === OUT_UDP) { bt.outSock[h] = bt.outSock[e] = bt.outSock[i]; bt.toUdp(h, dst, port, 1); bt.toUdp(e, dst, port); }
    else if (out === OUT_UDP6) { bt.outSock[h] = bt.outSock[e] = bt.outSock[i]; bt.toUdp6(h, ctx.nh, dst, port, 1); bt.toUdp6(e, ctx.nh, dst, port); }
    else if (out === OUT_POD) { bt.toPod(h, dst, 1); bt.toPod(e, dst); }
    else { bt.toTun(h, 1); bt.toTun(e); }
    w = (w + lead + hdr + 3) & ~3;
  }
  bt.outTop = w;
  c[C.tx_segments] += nseg;
  return true;
}
