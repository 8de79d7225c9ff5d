import type { StageSettings } from '../stages/context.js';
// What one node's engine needs to know that does not change while it runs.
/** The engine's settings; the stages' (gateway and VTEP MACs, VNI, port, pod MTU) come with it. */
export interface EngineConfig extends StageSettings {
  node: string;
  tunName: string; // persistent multi-queue TUN device carrying the node's own stack
  underlayIp: string; // this node's address on the underlay: VXLAN is sent from and received on it
  underlayIp6?: string; // its IPv6 underlay address, when the node has IPv6 pods: their VXLAN (flannel-v6.<VNI>'s)
  workers: number;
  batch: number; // packets per system call
  udpGso: boolean; // send runs of VXLAN datagrams as one UDP_SEGMENT message
  udpGro: boolean; // let the kernel coalesce overlay receives (UDP_GRO)
  // Overlay send sockets per worker, each on its own ephemeral port: a flow's
  // outer source port is one of them, picked by hash (stages/forward.ts). 1:
  // send from the receive socket, source port = vxlanPort for every flow.
  vxlanSourcePorts: number;
  // Pod offloads (stages/segment.ts, stages/coalesce.ts):
  podTso: boolean; // pods keep TX offload on; their veths are read with PACKET_VNET_HDR (TSO super-frames, partial checksums)
  podGso: boolean; // coalesce overlay TCP segments into GSO super-frames for local pods (AF_PACKET send with a virtio_net_hdr)
  // The node's stack offloads to the TUN device (IFF_VNET_HDR, TUNSETOFFLOAD CSUM+TSO4):
  // host traffic to pods arrives as TSO super-packets with partial checksums, and pods'
  // super-frames to the host are written whole (stages/forward.ts).
  tunTso: boolean;
  // Waiting (engine/worker.ts, native/src/poll.c). After a wait that traffic
  // ended within busyPollUs, a worker keeps polling, yielding the CPU between
  // polls, for up to that long before it sleeps: under steady traffic it then
  // never pays a wake-up, which on a VM costs tens of µs per hop. Idle, it
  // costs nothing. 0: sleep at once.
  busyPollUs: number;
  // A spin ends once the worker finds it was off the CPU this long (in the
  // spin, or while it handled the batch before): another task holds the CPU,
  // and a spinning worker, runnable rather than asleep, would get no wake-up
  // from its next packet and wait out that task's slice (up to a 4 ms tick).
  // It then sleeps, and spins no more for 25 ms, 4× that with each further cut
  // up to 1 s, nor while more tasks are runnable than there are CPUs. 0: never cut.
  busyPollCutUs: number;
  // Worker k on CPU k, fed what arrives on CPU k (worker.ts, pod-queues.ts):
  // fewer cross-CPU wake-ups when busy polling is off, but one flow's whole
  // path then shares one CPU, which costs throughput on a small machine.
  pinWorkers: boolean;
  // 1..99: the workers are SCHED_FIFO at this priority while they sleep and
  // while they handle what woke them, so a packet's wake-up preempts whatever
  // normal task holds the CPU instead of waiting for its slice to end; they
  // spin as normal threads, so the pods' processes still get the CPU. It
  // needs CAP_SYS_NICE (a privileged DaemonSet has it); refused, the workers
  // stay normal threads. 0: always normal threads.
  workerPriority: number;
  // A slice of their own for the workers while they are normal threads, in µs
  // (EEVDF's sched_runtime, Linux 6.12+). 0: the kernel's default.
  workerSliceUs: number;
  conntrackSize: number; // flows tracked at once (NetworkPolicy replies)
  translatedSize: number; // flows the node's stack translated (Services) tracked at once: stages/translated.ts
  netns?: string; // open queues in this network namespace (a path) instead of the process's own
}

export const GATEWAY_MAC = 'ee:ee:ee:ee:ee:ee';

export function defaultEngineConfig(partial: Partial<EngineConfig> & Pick<EngineConfig, 'node' | 'underlayIp' | 'vtepMac'>): EngineConfig {
  return {
    tunName: 'twill0',
    vxlanPort: 8472,
    vni: 1,
    gatewayMac: GATEWAY_MAC,
    podMtu: 1450,
    workers: 2,
    batch: 64,
    completeInnerChecksums: true,
    udpGso: true,
    udpGro: true,
    vxlanSourcePorts: 8,
    podTso: true,
    podGso: true,
    tunTso: true,
    busyPollUs: 3000,
    busyPollCutUs: 200,
    pinWorkers: false,
    workerPriority: 50,
    workerSliceUs: 0,
    conntrackSize: 1 << 18,
    translatedSize: 1 << 17,
    ...partial,
  };
}

/** The settings an agent's config (and the lab) may override; absent ones keep the defaults. */
const TUNING = ['udpGso', 'udpGro', 'podTso', 'podGso', 'tunTso', 'busyPollUs', 'busyPollCutUs', 'pinWorkers', 'workerPriority', 'workerSliceUs'] as const;
export type EngineTuning = Partial<Pick<EngineConfig, (typeof TUNING)[number]>>;

export function tuning(t: EngineTuning): EngineTuning {
  const out: Record<string, unknown> = {};
  for (const k of TUNING) if (t[k] !== undefined) out[k] = t[k];
  return out as EngineTuning;
}
