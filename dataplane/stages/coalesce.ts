// Receive-side coalescing (engine/config.ts podGso, tunTso): consecutive TCP
// segments of one flow that a UDP_GRO receive brought in become one GSO
// super-frame for the destination pod, sent on an AF_PACKET socket with
// PACKET_VNET_HDR, or one super-packet written to TUN for the host (no Ethernet
// header there). The stack then takes 64 KB per packet instead of 1.4 KB, as it
// would from kernel GRO. The rules follow the kernel's tcp_gro_receive:
//   - same addresses, ports, TOS, TTL, DF; no IP options, no fragments;
//   - the next segment starts where the last ended (sequence numbers);
//   - same ACK number, data offset, window and option bytes;
//   - flags ACK, or ACK|PSH on the last segment only;
//   - every segment but the last exactly the first's length (the MSS), the
//     last no longer; 64 KB of IP packet at most.
// The frame gets the first segment's headers with the total length, TTL - 1 (a
// pod's; the host's stack routes it on itself),
// the last segment's flags, and in place of the TCP checksum the pseudo-header
// sum: virtio NEEDS_CSUM (csum_start at TCP, csum_offset 16), GSO_TCPV4 with
// gso_size = MSS. IPv6 likewise (GSO_TCPV6): same traffic class and flow label,
// hop limit, no extension headers; the payload length instead of the total. It leaves as a chain (stages/batch.ts): those headers, in
// front of the virtio_net_hdr, written to the out region in a made entry,
// then the segments' own entries, pointed at their payloads where they were
// received.
import { csumAdd, csumFold, pseudoHeaderSum4, pseudoHeaderSum6 } from '../packet/checksum.js';
import { C } from './counters.js';
import type { Batch } from './batch.js';
import type { StageContext } from './context.js';
import * as virtio from '../packet/virtio.js';
import * as ethernet from '../packet/ethernet.js';

const ACK = 0x10, PSH = 0x08;
const { VNET_HLEN: VNET } = virtio, { ETH_HLEN: ETH } = ethernet; // module-level consts V8 folds
const MAX_IP = 65535;
const MAX_SEGS = 64; // segments per frame, as the kernel's GRO: bounds the chain the addon hands over

// Entries j and i: same version, traffic class, flow label, next header (TCP), hop limit, and addresses (as parsed).
function sameHeader6(bt: Batch, j: number, i: number): boolean {
  const b = bt.arena, q = bt.l3[j], l3 = bt.l3[i];
  if (b[q] !== b[l3] || b[q + 1] !== b[l3 + 1] || b[q + 2] !== b[l3 + 2] || b[q + 3] !== b[l3 + 3] || b[q + 6] !== 6 || b[q + 7] !== b[l3 + 7]) return false;
  const s = bt.src6, d = bt.dst6, x = 4 * j, y = 4 * i;
  return s[x] === s[y] && s[x + 1] === s[y + 1] && s[x + 2] === s[y + 2] && s[x + 3] === s[y + 3] &&
    d[x] === d[y] && d[x + 1] === d[y + 1] && d[x + 2] === d[y + 2] && d[x + 3] === d[y + 3];
}

function rd32(b: Uint8Array, o: number): number { return (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]; }

export const TO_TUN = -1; // coalesce's ifindex for the host

/**
 * Tries to coalesce entries i, i+1, ... (routed to local pod `ifindex`, MAC
 * hi/lo; or, with ifindex TO_TUN, to the host) into one super-frame. Returns
 * how many entries it took (>= 2), or 0 when entry i should go the plain way.
 */
export function coalesce(ctx: StageContext, bt: Batch, i: number, ifindex: number, macHi: number, macLo: number): number {
  const b = bt.arena, n = bt.n;
  if (i + 1 >= n || bt.proto[i] !== 6) return 0;
  const l3 = bt.l3[i], six = b[l3] >> 4 === 6, ih = six ? 40 : 20;
  if (six ? b[l3 + 6] !== 6 || b[l3 + 7] <= 1 : b[l3] !== 0x45 || (b[l3 + 6] & 0x3f) !== 0 || b[l3 + 7] !== 0 || b[l3 + 8] <= 1) return 0;
  const th = l3 + ih, thl = (b[th + 12] >>> 4) << 2, hdr = ih + thl;
  const mss = bt.l3len[i] - hdr;
  if (mss <= 0 || b[th + 13] !== ACK) return 0;
  const src = bt.src[i], dst = bt.dst[i], sport = bt.sport[i], dport = bt.dport[i];
  let seq = (rd32(b, th + 4) + mss) | 0, total = hdr + mss, j = i + 1;
  for (; j < n; j++) {
    if (bt.l3len[j] === 0 || bt.vflags[j] !== 0 || bt.src[j] !== src || bt.dst[j] !== dst || bt.sport[j] !== sport || bt.dport[j] !== dport || bt.proto[j] !== 6) break;
    const q = bt.l3[j], tq = q + ih;
    if (six ? !sameHeader6(bt, j, i) : b[q] !== 0x45 || b[q + 1] !== b[l3 + 1] || b[q + 6] !== b[l3 + 6] || b[q + 7] !== 0 || b[q + 8] !== b[l3 + 8]) break;
    const f = b[tq + 13];
    if ((f & ~PSH) !== ACK || b[tq + 12] !== b[th + 12] || rd32(b, tq + 4) !== seq || rd32(b, tq + 8) !== rd32(b, th + 8) ||
      b[tq + 14] !== b[th + 14] || b[tq + 15] !== b[th + 15]) break;
    let same = true;
    for (let o = 20; o < thl; o++) if (b[tq + o] !== b[th + o]) { same = false; break; }
    if (!same) break;
    const plen = bt.l3len[j] - hdr;
    if (plen <= 0 || plen > mss || total + plen > MAX_IP || j - i === MAX_SEGS) break;
    total += plen;
    seq = (seq + plen) | 0;
    if (plen < mss || (f & PSH) !== 0) { j++; break; }
  }
  const cnt = j - i;
  if (cnt < 2) return 0;
  const tun = ifindex === TO_TUN, lead = tun ? 0 : ETH;
  const hl = lead + hdr, need = (VNET + hl + 3) & ~3;
  if (bt.top >= bt.entries || bt.outTop + need > bt.outEnd) {
    ctx.flush?.();
    if (bt.top >= bt.entries || bt.outTop + need > bt.outEnd) return 0;
  }
  const w = bt.outTop, eth = w + VNET, ip = eth + lead, tcp = ip + ih;
  // virtio_net_hdr: NEEDS_CSUM, GSO_TCPV4 (GSO_TCPV6), hdr_len, gso_size, csum_start, csum_offset (little-endian)
  b[w] = 1; b[w + 1] = six ? 4 : 1; b[w + 2] = hl & 0xff; b[w + 3] = hl >>> 8;
  b[w + 4] = mss & 0xff; b[w + 5] = mss >>> 8; b[w + 6] = lead + ih; b[w + 7] = 0; b[w + 8] = 16; b[w + 9] = 0;
  if (!tun) {
    b[eth] = macHi >>> 8; b[eth + 1] = macHi & 0xff;
    b[eth + 2] = macLo >>> 24; b[eth + 3] = (macLo >>> 16) & 0xff; b[eth + 4] = (macLo >>> 8) & 0xff; b[eth + 5] = macLo & 0xff;
    const gw = ctx.gwMac;
    b[eth + 6] = gw[0]; b[eth + 7] = gw[1]; b[eth + 8] = gw[2]; b[eth + 9] = gw[3]; b[eth + 10] = gw[4]; b[eth + 11] = gw[5];
    b[eth + 12] = six ? 0x86 : 0x08; b[eth + 13] = six ? 0xdd : 0x00;
  }
  b.copyWithin(ip, l3, l3 + hdr);
  b[tcp + 13] = b[bt.l3[j - 1] + ih + 13]; // the last segment's flags (PSH)
  let ph: number;
  if (six) {
    const plen = total - 40;
    b[ip + 4] = plen >>> 8; b[ip + 5] = plen & 0xff;
    if (!tun) b[ip + 7]--;
    ph = ~csumFold(pseudoHeaderSum6(b, ip + 8, ip + 24, 6, plen)) & 0xffff;
  } else {
    b[ip + 2] = total >>> 8; b[ip + 3] = total & 0xff;
    if (!tun) b[ip + 8]--;
    b[ip + 10] = 0; b[ip + 11] = 0;
    const hc = csumFold(csumAdd(b, ip, 20, 0));
    b[ip + 10] = hc >>> 8; b[ip + 11] = hc & 0xff;
    ph = ~csumFold(pseudoHeaderSum4(src, dst, 6, total - 20)) & 0xffff;
  }
  b[tcp + 16] = ph >>> 8; b[tcp + 17] = ph & 0xff;
  const h = bt.top++;
  bt.offs[h] = w; bt.lens[h] = VNET + hl;
  if (tun) bt.toTun(h, 1); else bt.toPodVnet(h, ifindex, 1);
  for (let k = i; k < j; k++) {
    bt.offs[k] = bt.l3[k] + hdr; bt.lens[k] = bt.l3len[k] - hdr;
    if (tun) bt.toTun(k, k < j - 1 ? 1 : 0); else bt.toPodVnet(k, ifindex, k < j - 1 ? 1 : 0);
  }
  bt.outTop = w + need;
  const c = ctx.counters;
  c[C.coalesced_segments] += cnt;
  c[tun ? C.tx_tun_gso : C.tx_pod_gso]++;
  return cnt;
}
