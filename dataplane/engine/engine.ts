// The engine's main thread: starts one piscina worker per core, publishes
// forwarding tables to them, reads their counters and stops them. It does no
// per-packet work.
import { setFlagsFromString } from 'node:v8';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { Logger } from 'pino';
import { native, opener } from '../native/index.js';
import { CTL_ACK, CTL_GEN, CTL_HOLD, CTL_INTS, CTL_READY, CTL_STOP, MAX_WORKERS } from './control.js';
import { NCOUNTERS, sumCounters, workerCounters, type CounterName } from '../stages/counters.js';
import { distFile } from '../../lib/paths.js';
import type { EngineConfig } from './config.js';
import type { TablesMsg, WorkerTask } from './worker.js';
import type { Offloads, StageTables } from '../stages/context.js';
import { probeOffloads } from './offloads.js';
import { Conntrack } from '../tables/conntrack.js';
import { PodQueues } from './pod-queues.js';
import { flowSteering, OVERLAY_IP_AT } from './steering.js';

export class Engine {
  private readonly ctl = new Int32Array(new SharedArrayBuffer(4 * CTL_INTS));
  private readonly stats: Float64Array;
  private pool?: Piscina;
  private ports: MessagePort[] = [];
  private doorbells: number[] = [];
  private tasks: Promise<unknown>[] = [];
  private gen = 0;
  private exited = 0; // workers whose task has ended
  private readonly ct: Conntrack; // shared by all workers, swept here
  private readonly translated: Conntrack; // flows the node's stack translated (stages/translated.ts), likewise
  private readonly ct6: Conntrack; // the same two for IPv6 flows
  private readonly translated6: Conntrack;
  private sweeper?: NodeJS.Timeout;
  private readonly cpus: number[]; // worker k's CPU, empty when workers are not pinned
  private readonly pods: PodQueues;
  private overlay: number[] = []; // worker k's overlay UDP socket, bound k-th into the reuseport group
  private overlay6: number[] = []; // the same on the IPv6 underlay (empty without one)

  readonly offloads: Offloads; // in force: what the config asks, less what the kernel refuses (offloads.ts)

  /** cfg is the engine's for good: nothing changes it after this. */
  constructor(readonly cfg: Readonly<EngineConfig>, private readonly log: Logger) {
    if (cfg.workers < 1 || cfg.workers > MAX_WORKERS) throw new Error(`workers must be 1..${MAX_WORKERS}`);
    this.offloads = probeOffloads(cfg, log);
    this.stats = new Float64Array(new SharedArrayBuffer(8 * NCOUNTERS * cfg.workers));
    this.ct = Conntrack.create(cfg.conntrackSize);
    this.translated = Conntrack.create(cfg.translatedSize);
    this.ct6 = Conntrack.create(cfg.underlayIp6 ? cfg.conntrackSize : 16, 6);
    this.translated6 = Conntrack.create(cfg.underlayIp6 ? cfg.translatedSize : 16, 6);
    const cpus = native.cpus();
    this.cpus = cfg.pinWorkers && cfg.workers <= cpus.length ? cpus.slice(0, cfg.workers) : [];
    this.pods = new PodQueues(cfg, this.offloads.podTso, this.cpus.length > 0, log);
  }

  /**
   * Starts the workers with the first tables; resolves once every worker has opened its queues.
   * With hold, they leave their queues unread until release() (a take-over: agent/handover.ts).
   */
  async start(tables: StageTables, hold = false): Promise<void> {
    Atomics.store(this.ctl, CTL_HOLD, hold ? 1 : 0);
    const n = this.cfg.workers;
    this.openOverlay(); // first: when the port is taken, nothing else is left to undo
    tierUpSooner();
    this.pool = new Piscina({ filename: distFile('dataplane/engine/worker.js'), minThreads: n, maxThreads: n, idleTimeout: Infinity, concurrentTasksPerWorker: 1 });
    const shares = this.pods.sync(tables.ports, 0);
    // Sweep a few seconds behind the workers' clock (set once per batch): an entry a
    // worker has just looked up is then never freed, and its slot never recycled,
    // while the worker still holds the handle (tables/conntrack.ts).
    this.sweeper = setInterval(() => {
      const behind = ((Date.now() / 1000) | 0) - SWEEP_LAG_S;
      this.ct.sweep(behind);
      this.translated.sweep(behind);
      this.ct6.sweep(behind);
      this.translated6.sweep(behind);
    }, 5000);
    this.sweeper.unref();
    const failures: unknown[] = [];
    for (let w = 0; w < n; w++) {
      const ch = new MessageChannel();
      this.ports.push(ch.port1);
      const doorbell = native.eventfd();
      this.doorbells.push(doorbell);
      const first: TablesMsg = { ...tables, ...this.shared(), gen: 0, podFds: shares[w] };
      const task: WorkerTask = { index: w, cpu: this.cpus[w] ?? -1, udpFd: this.overlay[w], udp6Fd: this.overlay6[w] ?? -1, cfg: this.cfg, offloads: this.offloads, ctl: this.ctl.buffer as SharedArrayBuffer, stats: this.stats.buffer as SharedArrayBuffer, doorbell, port: ch.port2, tables: first };
      const p = this.pool.run(task, { transferList: [ch.port2] as never });
      p.catch((e) => { failures.push(e); this.log.error({ err: e, worker: w }, 'engine worker failed'); }).finally(() => { this.exited++; });
      this.tasks.push(p);
    }
    const deadline = Date.now() + 10_000;
    while (!this.allReady()) {
      if (failures.length) { await this.stop(); throw failures[0]; }
      if (Date.now() > deadline) { await this.stop(); throw new Error('engine workers did not start within 10 s'); }
      await new Promise((r) => setTimeout(r, 5));
    }
    this.log.info({ workers: n, cpus: this.cpus, tun: this.cfg.tunName, underlay: this.cfg.underlayIp, port: this.cfg.vxlanPort, vni: this.cfg.vni }, 'engine started');
  }

  private allReady(): boolean {
    for (let w = 0; w < this.cfg.workers; w++) if (Atomics.load(this.ctl, CTL_READY + w) !== 1) return false;
    return true;
  }

  // Overlay sockets in worker order, so the steering program's index k (or,
  // pinned, SO_INCOMING_CPU k) names worker k's socket.
  private openOverlay(): void {
    const { cfg } = this, open = opener(cfg.netns);
    try {
      for (let w = 0; w < cfg.workers; w++)
        this.overlay.push(open.udp(cfg.underlayIp, cfg.vxlanPort, { reusePort: true, gro: this.offloads.udpGro, ...(this.cpus.length ? { incomingCpu: this.cpus[w] } : {}) }));
      if (!this.cpus.length && cfg.workers > 1) native.udpSteer(this.overlay[0], flowSteering(OVERLAY_IP_AT, cfg.workers));
      if (cfg.underlayIp6) { // flannel-v6.<VNI>'s side: VXLAN over the IPv6 underlay, a reuseport group of its own
        for (let w = 0; w < cfg.workers; w++)
          this.overlay6.push(open.udp(cfg.underlayIp6, cfg.vxlanPort, { reusePort: true, gro: this.offloads.udpGro, ...(this.cpus.length ? { incomingCpu: this.cpus[w] } : {}) }));
        if (!this.cpus.length && cfg.workers > 1) native.udpSteer(this.overlay6[0], flowSteering(OVERLAY_IP_AT, cfg.workers));
      }
    } catch (e) {
      for (const fd of [...this.overlay, ...this.overlay6]) native.close(fd);
      this.overlay = []; this.overlay6 = [];
      throw e;
    }
  }

  /** Publishes new tables: post them to every worker, then move the generation and ring each doorbell. */
  publish(tables: StageTables): number {
    const gen = ++this.gen;
    const shares = this.pods.sync(tables.ports, gen);
    this.ports.forEach((p, w) => p.postMessage({ ...tables, ...this.shared(), gen, podFds: shares[w] } satisfies TablesMsg));
    Atomics.store(this.ctl, CTL_GEN, gen);
    for (const d of this.doorbells) native.eventfdSignal(d);
    void this.applied(gen).then((ok) => { if (ok) this.pods.release(gen); });
    return gen;
  }

  /** Resolves when every worker runs generation `gen` or later. */
  async applied(gen: number, timeoutMs = 2000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let all = true;
      for (let w = 0; w < this.cfg.workers; w++) if (Atomics.load(this.ctl, CTL_ACK + w) < gen) all = false;
      if (all) return true;
      if (Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  counters(): Record<CounterName, number> {
    return sumCounters(this.stats, this.cfg.workers);
  }

  /** Each worker's own counters, worker 0 first. */
  perWorker(): Record<CounterName, number>[] {
    return Array.from({ length: this.cfg.workers }, (_, w) => workerCounters(this.stats, w));
  }

  /** The tables every generation carries unchanged: the workers write them in place. */
  private shared(): Pick<StageTables, 'conntrack' | 'translated' | 'conntrack6' | 'translated6'> {
    return { conntrack: this.ct.buffer, translated: this.translated.buffer, conntrack6: this.ct6.buffer, translated6: this.translated6.buffer };
  }

  /**
   * The flow tables a successor takes over (agent/handover.ts): written as
   * their bytes once the workers have stopped, so nothing changes them while
   * they are read.
   */
  dumpFlows(dir: string): FlowFiles {
    const files: FlowFiles = {};
    for (const [name, t] of Object.entries(this.flowTables())) {
      files[name] = path.join(dir, `${name}.bin`);
      writeFileSync(files[name], new Uint8Array(t.buffer));
    }
    return files;
  }

  /** Takes over a predecessor's flows (dumpFlows' files); each is judged again by policy on its next packet. Returns how many, by table. */
  adoptFlows(files: FlowFiles): Record<string, number> {
    const read = (f: string) => { const b = readFileSync(f), sab = new SharedArrayBuffer(b.length); new Uint8Array(sab).set(b); return new Conntrack(sab); };
    const now = (Date.now() / 1000) | 0, out: Record<string, number> = {};
    for (const [name, t] of Object.entries(this.flowTables())) {
      if (files[name]) out[name] = t.adopt(read(files[name]), name.startsWith('conntrack') ? -1 : 0, now); // a predecessor without IPv6 has no such file
    }
    return out;
  }

  private flowTables(): Record<string, Conntrack> {
    return { conntrack: this.ct, translated: this.translated, conntrack6: this.ct6, translated6: this.translated6 };
  }

  /** Held workers start reading their queues. */
  release(): void {
    Atomics.store(this.ctl, CTL_HOLD, 0);
    for (const d of this.doorbells) native.eventfdSignal(d);
  }

  /** Every worker started and none has ended: the engine forwards. */
  running(): boolean { return this.tasks.length === this.cfg.workers && this.exited === 0 && this.allReady(); }

  /** Flows the node's stack translated, tracked for their replies (expired ones count until the next sweep). */
  translatedFlows(): number { return this.translated.count() + this.translated6.count(); }

  /** Live connection-tracking entries, both families (expired ones count until the next sweep). */
  conntrackEntries(): number { return this.ct.count() + this.ct6.count(); }

  async stop(): Promise<void> {
    clearInterval(this.sweeper);
    Atomics.store(this.ctl, CTL_STOP, 1);
    for (const d of this.doorbells) native.eventfdSignal(d);
    await Promise.allSettled(this.tasks);
    // The queues first: while they are open, the kernel still steers frames to
    // them that nobody reads (a successor in the same groups takes them once
    // they are closed: agent/handover.ts).
    this.pods.closeAll();
    for (const fd of [...this.overlay, ...this.overlay6]) native.close(fd);
    this.overlay = []; this.overlay6 = [];
    await this.pool?.destroy();
    for (const d of this.doorbells) native.close(d);
    for (const p of this.ports) p.close();
    this.doorbells = []; this.ports = []; this.tasks = []; this.pool = undefined; this.exited = 0;
  }
}

const SWEEP_LAG_S = 2;

/** dumpFlows' files by table name (conntrack, translated, conntrack6, translated6). */
export type FlowFiles = Record<string, string>;

/**
 * V8 optimizes a function after it has run about 67 KB of bytecode per tick,
 * a few ticks and more for big functions: with batches of one packet (a ping,
 * a request/response, each worker's first flows) the stages ran interpreted
 * for thousands of packets, at 5 to 20 µs a hop instead of well under one.
 * An eighth of that budget gets them optimized after a few hundred batches.
 * The flag is process-wide and read as budgets are reset, so it is set before
 * the workers start.
 */
function tierUpSooner(): void {
  // V8 12 (Node 22) counts invocations instead of bytecode budgets: an eighth of
  // its defaults (Maglev at 400, TurboFan at 3000) likewise.
  if (Number(process.versions.v8.split('.')[0]) >= 12) setFlagsFromString('--invocation-count-for-maglev=50 --invocation-count-for-turbofan=375');
  else setFlagsFromString('--interrupt-budget=8192');
}
