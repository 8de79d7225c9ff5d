// One engine worker (a piscina thread). It owns its own queues: a TUN queue
// (IFF_MULTI_QUEUE), an overlay UDP socket (SO_REUSEPORT), a fanout member on
// every pod veth, and a send socket. It blocks in poll() when idle, pushes
// each received batch through the stages, and picks up new tables between
// batches when the generation number moves (the tables arrive on its
// MessagePort; receiveMessageOnPort takes them without yielding).
import os from 'node:os';
import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { native, opener } from '../native/index.js';
import { Batch, GEN_ENTRIES } from '../stages/batch.js';
import { pino } from 'pino';
import { StageContext } from '../stages/context.js';
import { forward } from '../stages/forward.js';
import { SOURCES, RECEIVED, FROM_POD, FROM_TUN, FROM_VXLAN, FROM_VXLAN6 } from '../stages/graph.js';
import { egress, type Outputs } from '../stages/egress.js';
import { CTL_ACK, CTL_GEN, CTL_HOLD, CTL_READY, CTL_STOP } from './control.js';
import { C } from '../stages/counters.js';
import type { EngineConfig } from './config.js';
import type { PodFds } from './pod-queues.js';
import type { Offloads, StageTables } from '../stages/context.js';

export interface TablesMsg extends StageTables { gen: number; podFds: PodFds }
export interface WorkerTask {
  index: number;
  cpu: number; // pin to this CPU; -1: not pinned
  udpFd: number; // this worker's overlay socket (the engine's: opened and closed there)
  udp6Fd: number; // the same over the IPv6 underlay; -1 without one
  cfg: EngineConfig;
  offloads: Offloads; // as the engine decided them (engine/offloads.ts)
  ctl: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  doorbell: number; // this worker's eventfd
  port: MessagePort;
  tables: TablesMsg;
}

const ROUNDS = 8; // batches per ready fd before looking at the others again
const OUT_BYTES = 2 << 20; // segments and coalesced frames made per batch (stages/segment.ts, coalesce.ts)
const GRO_SLOTS = 8; // 64 KB overlay receives per batch
const SPIN_CUT = 3; // native.poll's wait[0]: the thread was descheduled while it spun
const CALM_MIN_MS = 25, CALM_MAX_MS = 1000; // no spinning for this long after a cut, 4× per cut: 25, 100, 400, 1000 ms
const CALM_RESET_MS = 5000; // back to CALM_MIN_MS once this long has passed without a cut
const DOORBELL = -1; // the poll set's first fd; the others are tagged with their source (stages/graph.ts)

export default function runWorker(task: WorkerTask): { index: number } {
  const { cfg, index, offloads } = task;
  const ctl = new Int32Array(task.ctl);
  const ctx = new StageContext(cfg, offloads, task.stats, index);
  const slot = Math.ceil((cfg.podMtu + 256) / 1024) * 1024;
  const offload = offloads.podTso || offloads.podGso || offloads.tunTso;
  const bt = new Batch(cfg.batch, slot, GRO_SLOTS, Math.max(cfg.batch, GRO_SLOTS * 64) + (offload ? GEN_ENTRIES : 0),
    offload ? { bigSlots: offloads.podTso || offloads.tunTso ? cfg.batch : 0, outBytes: OUT_BYTES } : undefined);
  // Pinned, worker k runs on CPU k and gets what arrives on that CPU (pod
  // frames by PACKET_FANOUT_CPU, see pod-queues.ts; datagrams by
  // SO_INCOMING_CPU): the wake-up after a send stays on the sender's CPU
  // instead of interrupting an idle one, which on a VM costs tens of µs.
  if (task.cpu >= 0) native.pinThread(task.cpu);
  const log = pino({ base: { node: cfg.node, worker: index } });
  try { native.threadName(`twill-w${index}`); } catch { /* only a name, for ps -L, perf and ftrace */ }
  try {
    native.waitPolicy(cfg.busyPollCutUs, cfg.workerPriority, cfg.workerSliceUs);
  } catch (e) {
    log.warn({ workerPriority: cfg.workerPriority, workerSliceUs: cfg.workerSliceUs, err: String(e) }, 'kernel refused the workers\' scheduling; they stay normal threads');
    try { native.waitPolicy(cfg.busyPollCutUs, 0, cfg.workerSliceUs); } catch { /* normal threads with the default slice */ }
  }
  const open = opener(cfg.netns);
  // Send-only overlay sockets on ephemeral ports (config.ts vxlanSourcePorts);
  // nothing is ever sent to them, so they are never read.
  const sources = cfg.vxlanSourcePorts > 1
    ? Array.from({ length: cfg.vxlanSourcePorts }, () => open.udp(cfg.underlayIp, 0, {}))
    : [task.udpFd];
  ctx.udpSources = sources.length;
  const sources6 = task.udp6Fd < 0 ? [] : cfg.vxlanSourcePorts > 1
    ? Array.from({ length: cfg.vxlanSourcePorts }, () => open.udp(cfg.underlayIp6!, 0, {}))
    : [task.udp6Fd];
  const out: Outputs = {
    tun: open.tun(cfg.tunName, { multiQueue: true, vnetHdr: offloads.tunTso }),
    udpTx: sources,
    udp6Tx: sources6,
    pod: open.packet('', {}),
    podVnet: -1,
  };
  const refused = new Set<string>();
  ctx.onOffloadRefused = (what, err) => {
    if (refused.has(what)) return;
    refused.add(what);
    log.warn({ offload: what, err: String(err) }, 'kernel refused an offload; continuing without it');
  };
  if (offloads.vnetSend) {
    // Frames with a virtio_net_hdr (super-frames, partial checksums) to local pods.
    try {
      out.podVnet = open.packet('', { vnetHdr: true });
    } catch (e) {
      ctx.vnetSend = false;
      ctx.onOffloadRefused('pod-vnet-send', e);
    }
  }
  ctx.flush = () => { egress(ctx, bt, out); bt.resetMade(); };
  const pods = new Map<number, number>(); // ifindex → fd (the engine's: opened and closed there)
  let fds = new Int32Array(0), kinds = new Int32Array(0), ready = new Int32Array(0);
  let gen = -1;

  const apply = (t: TablesMsg) => {
    ctx.setTables(t);
    pods.clear();
    for (const [ifx, fd] of t.podFds) pods.set(ifx, fd);
    rebuild();
    gen = t.gen;
    Atomics.store(ctl, CTL_ACK + index, gen);
  };
  const rebuild = () => {
    const six = task.udp6Fd >= 0 ? [task.udp6Fd] : [];
    const list = [task.doorbell, out.tun, task.udpFd, ...six, ...pods.values()];
    fds = Int32Array.from(list);
    kinds = Int32Array.from(list, (_, i) => (i === 0 ? DOORBELL : i === 1 ? FROM_TUN : i === 2 ? FROM_VXLAN : i === 3 && six.length ? FROM_VXLAN6 : FROM_POD));
    ready = new Int32Array(list.length);
  };

  apply(task.tables);
  // Busy poll only while it pays, as the kernel's haltpoll does: after a wait
  // that traffic ended within busyPollUs. Sparse traffic never spins, and
  // spinning that catches nothing turns itself off. A spin the thread was
  // descheduled in (cut) means another task wants this CPU: a spinning worker
  // would then wait out that task's slice whenever it is off the CPU, so it
  // sleeps instead (woken at once by a packet, at workerPriority) and stays
  // calm, without spinning, for a while that grows with each cut (25 ms to
  // 1 s; back to 25 ms after 5 s without one). When the calm ends, it spins
  // again only if no task on the machine is waiting for a CPU.
  const spinMs = cfg.busyPollUs / 1000;
  const cpus = Math.max(1, os.cpus().length); // the machine's: runnable() counts the machine's tasks
  const wait = new Float64Array(4); // native.poll's account: [outcome, entered ms, returned ms, spin CPU µs]
  let spin = false, calm = 0, calmUntil = 0, lastCut = 0, returned = -1;
  Atomics.store(ctl, CTL_READY + index, 1);
  while (Atomics.load(ctl, CTL_STOP) === 0) {
    if (Atomics.load(ctl, CTL_GEN) !== gen) {
      let m, latest: TablesMsg | undefined;
      while ((m = receiveMessageOnPort(task.port))) latest = m.message as TablesMsg;
      if (latest) apply(latest);
    }
    if (Atomics.load(ctl, CTL_HOLD) !== 0) { // queued packets wait in the kernel until the engine releases us
      native.poll(fds, 1, ready, 1000, 0); // the doorbell only
      if (ready[0] !== 0) native.eventfdDrain(fds[0]);
      returned = -1; // the wait held is no batch's handling (busy_us)
      continue;
    }
    let spinning = spin;
    if (spinning && calm > 0 && returned < calmUntil) spinning = false;
    else if (spinning && calm > 0 && native.runnable() > cpus) { calmUntil = returned + calm; spinning = false; }
    const got = native.poll(fds, fds.length, ready, 1000, spinning ? cfg.busyPollUs : 0, wait);
    if (returned >= 0) ctx.counters[C.busy_us] += (wait[1] - returned) * 1000; // since the last poll: handling a batch
    returned = wait[2];
    if (spinning) {
      ctx.counters[C.spin_us] += wait[3];
      if (wait[0] === SPIN_CUT) {
        calm = Math.min(Math.max(calm * 4, CALM_MIN_MS), CALM_MAX_MS);
        calmUntil = returned + calm;
        lastCut = returned;
      } else if (calm > 0 && returned - lastCut > CALM_RESET_MS) calm = 0;
    }
    spin = got > 0 && wait[2] - wait[1] <= spinMs;
    if (got === 0) continue;
    for (let k = 0; k < fds.length; k++) {
      if (ready[k] === 0) continue;
      const kind = kinds[k];
      if (kind === DOORBELL) native.eventfdDrain(fds[k]);
      else if (!drain(ctx, bt, out, fds[k], kind) && kind === FROM_POD) {
        // A veth that errors would keep poll() hot: stop reading it until the next publication.
        for (const [ifx, fd] of pods) if (fd === fds[k]) pods.delete(ifx);
        rebuild();
        break;
      }
    }
  }
  native.close(out.tun); native.close(out.pod);
  if (sources[0] !== task.udpFd) for (const fd of sources) native.close(fd);
  if (sources6.length && sources6[0] !== task.udp6Fd) for (const fd of sources6) native.close(fd);
  if (out.podVnet >= 0) native.close(out.podVnet);
  return { index };
}

// Returns false when the fd failed. `from` is the queue's source (stages/graph.ts).
function drain(ctx: StageContext, bt: Batch, out: Outputs, fd: number, from: number): boolean {
  const c = ctx.counters, src = SOURCES[from], received = RECEIVED[from];
  for (let round = 0; round < ROUNDS; round++) {
    let n: number;
    try {
      n = src.receive(ctx, bt, fd);
    } catch {
      c[C.rx_errors]++; // e.g. a pod's veth going down while we read it
      return false;
    }
    if (n === 0) return true;
    bt.n = n;
    ctx.now = (Date.now() / 1000) | 0;
    c[C.batches]++;
    c[received] += n;
    src.ingress(ctx, bt);
    forward(ctx, bt, from);
    egress(ctx, bt, out);
    if (n < bt.slots) return true;
  }
  return true;
}
