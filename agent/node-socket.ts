// The node's socket protocol (agent/socket.ts carries it: one JSON request per
// line, one reply per line). The CNI plugin adds and deletes pods; `twill` and
// the lab ask for status, counters and metrics; a new agent asks for the
// hand-over (agent/handover.ts).
import type { Handler } from './socket.js';
import type { PodRecord } from './pods.js';

export interface NodeOps {
  /** Registers a pod; resolves once the engine serves its veth. */
  add(p: PodRecord): Promise<{ gatewayIP: string; mtu: number }>;
  del(containerId: string): Promise<{ removed: boolean }>;
  pods(): unknown;
  status(): unknown;
  counters(): unknown;
  metrics(): string;
  handover(): Promise<unknown>;
  handedOver(): boolean;
}

export function nodeSocket(ops: NodeOps): Handler {
  return async (req) => {
    if (ops.handedOver() && req.op !== 'status') throw new Error('this agent has handed the node over to a new agent');
    switch (req.op) {
      case 'add': return ops.add(req.pod as PodRecord);
      case 'del': return ops.del(String(req.containerId));
      case 'pods': return ops.pods();
      case 'status': return ops.status();
      case 'handover': return ops.handover();
      case 'counters': return ops.counters();
      case 'metrics': return ops.metrics();
      default: throw new Error(`unknown op ${String(req.op)}`);
    }
  };
}
