// Stage: hand each output's share of the batch to the kernel in one call per
// output. A send the kernel refuses (a full queue, an unreachable underlay
// address) costs that packet, never the batch or the worker.
//
// An output list holds packets as chains of entries (bt.more, stages/batch.ts):
// the addon sends each chain as one message, reports how many entries went
// out (whole chains only), and the counters here count packets.
import { native } from '../native/index.js';
import { C } from './counters.js';
import type { Batch } from './batch.js';
import type { StageContext } from './context.js';

// udpTx: the overlay send sockets, one per outer source port; a flow is sent
// from bt.outSock's (forward.ts). udp6Tx: the same over the IPv6 underlay
// (empty without one). podVnet: -1 when not open.
export interface Outputs { tun: number; pod: number; udpTx: number[]; udp6Tx: number[]; podVnet: number }
const MAX_SEGS = 64; // UDP_MAX_SEGMENTS on older kernels
const MAX_GSO_BYTES = 65000; // one UDP datagram's worth of payload, under 65507
const MAX_IOV = 1024; // UIO_MAXIOV: entries in one message
const TUN = 0, POD = 1, UDP = 2, VNET = 3, UDP6 = 4;

export function egress(ctx: StageContext, bt: Batch, out: Outputs): void {
  const c = ctx.counters;
  if (bt.nTun > 0) c[C.tx_tun] += sendAll(ctx, bt, out, TUN, bt.tunIdx, bt.nTun);
  if (bt.nPod > 0) c[C.tx_pod] += out.podVnet < 0 ? sendAll(ctx, bt, out, POD, bt.podIdx, bt.nPod) : sendPods(ctx, bt, out);
  if (bt.nUdp > 0) c[C.tx_vxlan] += sendUdp(ctx, bt, out.udpTx, bt.udpIdx, bt.nUdp, false);
  if (bt.nUdp6 > 0) c[C.tx_vxlan6] += sendUdp(ctx, bt, out.udp6Tx, bt.udp6Idx, bt.nUdp6, true);
  bt.clearOutputs();
}

/** Where the chain starting at idx[k] ends (the position after its last entry), within n. */
function chainEnd(more: Uint8Array, idx: Int32Array, k: number, n: number): number {
  while (k < n && more[idx[k]] !== 0) k++;
  return k < n ? k + 1 : n;
}

/** Packets (chains) among idx[from, to). */
function packets(more: Uint8Array, idx: Int32Array, from: number, to: number): number {
  let p = 0;
  for (let k = from; k < to; k++) if (more[idx[k]] === 0) p++;
  return p;
}

function send(bt: Batch, out: Outputs, kind: number, idx: Int32Array, n: number, fd: number): number {
  if (kind === TUN) return native.tunWrite(out.tun, bt.arena, bt.offs, bt.lens, idx, n, bt.more);
  if (kind === POD) return native.packetSend(out.pod, bt.arena, bt.offs, bt.lens, idx, n, bt.outIf, bt.more);
  if (kind === VNET) return native.packetSend(out.podVnet, bt.arena, bt.offs, bt.lens, idx, n, bt.outIf, bt.more);
  return native.udpSend(fd, bt.arena, bt.offs, bt.lens, idx, n, kind === UDP6 ? bt.outDst6 : bt.outDst, bt.outPort, bt.more);
}

// Sends idx[0..n) and returns the packets sent; on a short count or an error,
// drops the packet that stopped the call and goes on with the rest. The common
// case is one call. If the kernel refuses a vnet frame (EINVAL: a GSO it will
// not take), the worker stops making them: the refused frames are lost once,
// TCP sends them again.
function sendAll(ctx: StageContext, bt: Batch, out: Outputs, kind: number, idx: Int32Array, n: number, fd = -1): number {
  const more = bt.more, c = ctx.counters;
  let done = 0, sent = 0;
  while (done < n) {
    let k: number;
    try {
      k = send(bt, out, kind, done === 0 ? idx : idx.subarray(done), n - done, fd);
    } catch (e) {
      if (kind === VNET && (e as { code?: string }).code === 'EINVAL' && ctx.vnetSend) {
        ctx.vnetSend = false;
        ctx.onOffloadRefused?.('pod-vnet-send', e);
      }
      k = -1;
    }
    if (k > 0) sent += packets(more, idx, done, done + k);
    if (k === n - done) break;
    done = chainEnd(more, idx, done + Math.max(k, 0), n);
    c[k < 0 ? C.tx_errors : C.drop_tx_busy]++;
  }
  return sent;
}

// Pod frames when a vnet socket is open: the podIdx list in order, cut into
// stretches of plain frames (the plain socket) and frames that start with a
// virtio_net_hdr (the vnet socket), so a flow's frames keep their order. The
// entries of one chain share their socket, so a stretch holds whole chains.
function sendPods(ctx: StageContext, bt: Batch, out: Outputs): number {
  const idx = bt.podIdx, n = bt.nPod, vn = bt.podVnet;
  let sent = 0;
  for (let k = 0; k < n;) {
    const v = vn[idx[k]];
    let e = k + 1;
    while (e < n && vn[idx[e]] === v) e++;
    let part = idx;
    if (k !== 0 || e !== n) { part = bt.scratch; for (let q = k; q < e; q++) part[q - k] = idx[q]; } // no subarray: no allocation
    sent += sendAll(ctx, bt, out, v === 0 ? POD : VNET, part, e - k);
    k = e;
  }
  return sent;
}

// A UDP list (over the IPv4 or the IPv6 underlay), one send per source socket
// in use. A flow (and so a chain) stays on one socket, so each socket's share
// keeps the flow's order. The usual batch (one flow, or one socket) goes out as
// it is, without a copy.
function sendUdp(ctx: StageContext, bt: Batch, tx: number[], idx: Int32Array, n: number, six: boolean): number {
  if (tx.length === 0) { ctx.counters[C.tx_errors] += n; return 0; } // no IPv6 underlay: fib.ts makes no such next hop
  const sock = bt.outSock;
  let q = 1;
  while (q < n && sock[idx[q]] === sock[idx[0]]) q++;
  if (q === n) return sendVia(ctx, bt, tx[sock[idx[0]] % tx.length], idx, n, six);
  const part = bt.scratch;
  let sent = 0;
  for (let s = 0; s < tx.length; s++) {
    let m = 0;
    for (let q = 0; q < n; q++) if (sock[idx[q]] % tx.length === s) part[m++] = idx[q];
    if (m > 0) sent += sendVia(ctx, bt, tx[s], part, m, six);
  }
  return sent;
}

function sendVia(ctx: StageContext, bt: Batch, fd: number, idx: Int32Array, n: number, six: boolean): number {
  return ctx.udpGso ? sendRuns(ctx, bt, fd, idx, n, six) : sendAll(ctx, bt, NO_OUTPUTS, six ? UDP6 : UDP, idx, n, fd);
}

const NO_OUTPUTS: Outputs = { tun: -1, pod: -1, udpTx: [], udp6Tx: [], podVnet: -1 }; // UDP sends take their socket as fd

/** Whether entries j and k go to the same underlay address and port. */
function sameDst(bt: Batch, j: number, k: number, six: boolean): boolean {
  if (bt.outPort[j] !== bt.outPort[k]) return false;
  if (!six) return bt.outDst[j] === bt.outDst[k];
  const d = bt.outDst6, a = 4 * j, b = 4 * k;
  return d[a] === d[b] && d[a + 1] === d[b + 1] && d[a + 2] === d[b + 2] && d[a + 3] === d[b + 3];
}

// UDP GSO: consecutive datagrams to one node, all the size of the first but a
// shorter last one, go out as one UDP_SEGMENT message: the kernel moves them
// through its stack as one packet. A datagram may be a chain; its size is the
// sum of its entries'. runs[r] counts the entries of run r. If the kernel
// refuses (an old kernel, a device without checksum offload), GSO is turned
// off for this worker.
function sendRuns(ctx: StageContext, bt: Batch, fd: number, idx: Int32Array, n: number, six: boolean): number {
  const lens = bt.lens, more = bt.more, dst = six ? bt.outDst6 : bt.outDst, port = bt.outPort, runs = bt.runs;
  let nr = 0, total = 0;
  for (let k = 0; k < n;) {
    const first = idx[k];
    let e = chainEnd(more, idx, k, n), seg = 0;
    for (let q = k; q < e; q++) seg += lens[idx[q]];
    let segs = 1, bytes = seg;
    while (e < n && segs < MAX_SEGS) {
      const j = idx[e];
      if (!sameDst(bt, j, first, six)) break;
      const f = chainEnd(more, idx, e, n);
      let len = 0;
      for (let q = e; q < f; q++) len += lens[idx[q]];
      if (seg === 0 || len > seg || bytes + len > MAX_GSO_BYTES || f - k > MAX_IOV) break;
      segs++;
      bytes += len;
      e = f;
      if (len < seg) break; // only the last segment may be shorter
    }
    runs[nr++] = e - k;
    total += segs;
    k = e;
  }
  try {
    const sent = native.udpSendRuns(fd, bt.arena, bt.offs, bt.lens, idx, n, dst, port, runs, nr, more);
    if (sent === n) return total;
    const p = packets(more, idx, 0, sent);
    ctx.counters[C.drop_tx_busy] += total - p;
    return p;
  } catch (e) {
    ctx.udpGso = false;
    ctx.onOffloadRefused?.('udp-gso', e);
    return sendAll(ctx, bt, NO_OUTPUTS, six ? UDP6 : UDP, idx, n, fd);
  }
}
