// Stage: hand each output's share of the batch to the kernel in one call per
// output. A send the kernel refuses (a full queue, an unreachable underlay
// address) costs that packet, never the batch or the worker.
import { native } from '../native/index.js';
import { C } from '../engine/counters.js';
import type { Batch } from './batch.js';
import type { StageContext } from './context.js';

export interface Outputs { tun: number; pod: number; udp: number; podVnet: number } // podVnet: -1 when not open
const MAX_SEGS = 64; // UDP_MAX_SEGMENTS on older kernels
const MAX_GSO_BYTES = 65000; // one UDP datagram's worth of payload, under 65507
const TUN = 0, POD = 1, UDP = 2;

export function egress(ctx: StageContext, bt: Batch, out: Outputs): void {
  const c = ctx.counters;
  if (bt.nTun > 0) c[C.tx_tun] += sendAll(c, bt, out, TUN, bt.tunIdx, bt.nTun);
  if (bt.nPod > 0) c[C.tx_pod] += out.podVnet < 0 ? sendAll(c, bt, out, POD, bt.podIdx, bt.nPod) : sendPods(ctx, bt, out);
  if (bt.nUdp > 0) c[C.tx_vxlan] += ctx.udpGso ? sendRuns(ctx, bt, out) : sendAll(c, bt, out, UDP, bt.udpIdx, bt.nUdp);
  bt.clearOutputs();
}

function send(bt: Batch, out: Outputs, kind: number, idx: Int32Array, n: number): number {
  if (kind === TUN) return native.tunWrite(out.tun, bt.arena, bt.offs, bt.lens, idx, n);
  if (kind === POD) return native.packetSend(out.pod, bt.arena, bt.offs, bt.lens, idx, n, bt.outIf);
  return native.udpSend(out.udp, bt.arena, bt.offs, bt.lens, idx, n, bt.outDst, bt.outPort);
}

// Sends idx[0..n); on a short count or an error, drops the packet that stopped
// the call and goes on with the rest. The common case is one call.
function sendAll(c: Float64Array, bt: Batch, out: Outputs, kind: number, idx: Int32Array, n: number): number {
  let done = 0, sent = 0;
  while (done < n) {
    let k: number;
    try {
      k = send(bt, out, kind, done === 0 ? idx : idx.subarray(done), n - done);
    } catch {
      k = -1;
    }
    if (k >= 0) sent += k;
    if (k === n - done) break;
    done += Math.max(k, 0) + 1;
    c[k < 0 ? C.tx_errors : C.drop_tx_busy]++;
  }
  return sent;
}

// Pod frames when a vnet socket is open: the podIdx list in order, cut into
// stretches of plain frames (the plain socket) and frames that start with a
// virtio_net_hdr (the vnet socket), so a flow's frames keep their order. If
// the kernel refuses a vnet frame (EINVAL: a GSO it will not take), the worker
// stops making them: the refused frames are lost once, TCP sends them again.
function sendPods(ctx: StageContext, bt: Batch, out: Outputs): number {
  const idx = bt.podIdx, n = bt.nPod, vn = bt.podVnet, c = ctx.counters;
  let sent = 0;
  for (let k = 0; k < n;) {
    const v = vn[idx[k]];
    let e = k + 1;
    while (e < n && vn[idx[e]] === v) e++;
    let part = idx;
    if (k !== 0 || e !== n) { part = bt.scratch; for (let q = k; q < e; q++) part[q - k] = idx[q]; } // no subarray: no allocation
    if (v === 0) sent += sendAll(c, bt, out, POD, part, e - k);
    else sent += sendVnet(ctx, bt, out, part, e - k);
    k = e;
  }
  return sent;
}

function sendVnet(ctx: StageContext, bt: Batch, out: Outputs, idx: Int32Array, n: number): number {
  let done = 0, sent = 0;
  while (done < n) {
    let k: number;
    try {
      k = native.packetSend(out.podVnet, bt.arena, bt.offs, bt.lens, done === 0 ? idx : idx.subarray(done), n - done, bt.outIf);
    } catch (e) {
      if ((e as { code?: string }).code === 'EINVAL' && ctx.podVnetTx) {
        ctx.podVnetTx = false;
        ctx.onOffloadRefused?.('pod-vnet-send', e);
      }
      k = -1;
    }
    if (k >= 0) sent += k;
    if (k === n - done) break;
    done += Math.max(k, 0) + 1;
    ctx.counters[k < 0 ? C.tx_errors : C.drop_tx_busy]++;
  }
  return sent;
}

// UDP GSO: consecutive datagrams to one node, all the size of the first but a
// shorter last one, go out as one UDP_SEGMENT message: the kernel moves them
// through its stack as one packet. If the kernel refuses (an old kernel, a
// device without checksum offload), GSO is turned off for this worker.
function sendRuns(ctx: StageContext, bt: Batch, out: Outputs): number {
  const idx = bt.udpIdx, n = bt.nUdp, lens = bt.lens, dst = bt.outDst, port = bt.outPort, runs = bt.runs;
  let nr = 0;
  for (let k = 0; k < n;) {
    const first = idx[k], seg = lens[first];
    let len = 1, bytes = seg;
    while (k + len < n && len < MAX_SEGS) {
      const j = idx[k + len];
      if (dst[j] !== dst[first] || port[j] !== port[first] || lens[j] > seg || bytes + lens[j] > MAX_GSO_BYTES) break;
      len++;
      bytes += lens[j];
      if (lens[j] < seg) break; // only the last segment may be shorter
    }
    runs[nr++] = len;
    k += len;
  }
  try {
    const sent = native.udpSendRuns(out.udp, bt.arena, bt.offs, bt.lens, idx, n, dst, port, runs, nr);
    if (sent < n) ctx.counters[C.drop_tx_busy] += n - sent;
    return sent;
  } catch (e) {
    ctx.udpGso = false;
    ctx.onOffloadRefused?.('udp-gso', e);
    return sendAll(ctx.counters, bt, out, UDP, idx, n);
  }
}
