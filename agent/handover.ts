// An agent that starts while another serves its node takes over without an
// outage (an upgrade: a DaemonSet with maxSurge, or `twill lab upgrade`):
//
//  1. The successor finds its predecessor answering on the node's socket.
//  2. It starts its engine while the predecessor still forwards, its workers
//     holding their queues unread. The queues join the predecessor's kernel
//     groups: the TUN device's queues and the overlay port's SO_REUSEPORT group
//     (the kernel spreads flows over both agents' members: the successor's share
//     waits in its queues), and each veth's fanout group (engine/pod-queues.ts),
//     whose programs keep steering to the first members, the predecessor's. No
//     frame reaches both. It forwards nothing before it has the predecessor's
//     flows: a reply of a translated flow forwarded without them would reach its
//     pod un-translated, and the pod's RST would end the connection.
//  3. Once ready, it asks the predecessor to hand over: the predecessor stops its
//     workers (each finishes its batch and closes its queues, so the kernel sends
//     everything to the successor's), writes its flow tables (conntrack, and the
//     flows the node's stack translated) to files, closes its socket and metrics
//     listeners, replies, and idles until it is stopped: it does not exit, so a
//     supervisor that restarts what exits does not start it again.
//  4. The successor adopts the flows (policy judges each again on its next
//     packet), releases its workers (what waited in their queues is forwarded)
//     and serves the node's socket and metrics.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { request } from './socket.js';
import type { Engine, FlowFiles } from '../dataplane/engine/engine.js';

/** The pid of an agent answering on `socket`, or undefined when none does. */
export async function predecessorOn(socket: string): Promise<number | undefined> {
  try {
    const st = (await request(socket, { op: 'status' }, 1000)) as { pid?: number; handedOver?: boolean };
    return st.handedOver ? undefined : st.pid;
  } catch {
    return undefined; // no socket, or nobody listening: a first start, or after a crash
  }
}

/** Step 3, the successor's side: asks for the hand-over and adopts the flows. */
export async function takeOver(socket: string, engine: Engine, pid: number, log: Logger): Promise<void> {
  const t0 = performance.now();
  try {
    const files = (await request(socket, { op: 'handover' }, 15_000)) as FlowFiles;
    const adopted = engine.adoptFlows(files);
    engine.release();
    log.info({ predecessor: pid, ...adopted, ms: +(performance.now() - t0).toFixed(1) }, 'took over from the agent that served this node');
  } catch (e) {
    engine.release();
    log.warn({ predecessor: pid, err: e }, 'the agent that served this node did not hand over; its queues stay in the groups until it stops');
  }
}

/** Step 3, the predecessor's side: returns the files, once its engine has stopped; `close` closes its listeners. */
export async function handOver(stateDir: string, engine: Engine, close: () => void, log: Logger): Promise<FlowFiles> {
  const t0 = performance.now();
  await engine.stop();
  const dir = path.join(stateDir, 'handover');
  mkdirSync(dir, { recursive: true });
  const files = engine.dumpFlows(dir);
  close();
  setInterval(() => undefined, 1 << 30); // idle, not gone: nothing else keeps the process alive now
  log.info({ ms: +(performance.now() - t0).toFixed(1) }, 'handed this node over to a new agent; idle until stopped');
  return files;
}
