// The node's socket protocol (agent/socket.ts carries it: one JSON request per
// line, one reply per line). The CNI plugin adds and deletes pods; `twill` and
// the lab ask for status, counters and metrics; a new agent asks for the
// hand-over (agent/handover.ts).
import type { Handler } from './socket.js';
import type { PodRecord } from './pods.js';

/**
 * The `status` reply. The CNI plugin reads podCIDR/gatewayIP (IPv4) and podCIDR6/gatewayIP6 (IPv6):
 * a dual-stack node sends all four; an IPv6-only node sends podCIDR6 and gatewayIP6, and podCIDR ''
 * (or none); an IPv4-only node sends no podCIDR6. Its pods then get one address per family.
 */
export interface NodeStatus {
  node: string;
  podCIDR: string; // the node's IPv4 pod range, '' on an IPv6-only node
  gatewayIP: string; // its .1, on the node's TUN ('' on an IPv6-only node)
  podCIDR6?: string; // the node's IPv6 pod range (fd00:10:244:N::/64)
  gatewayIP6?: string; // its ::1, on the node's TUN
  mtu: number; // the pods' MTU
  podTxOffload?: boolean;
  pods?: number;
  pid?: number;
  rev?: number;
  policies?: number;
  handedOver?: boolean;
}

/** The `add` reply: the gateways the pod's routes go through, and the pods' MTU. */
export interface AddReply { gatewayIP: string; gatewayIP6?: string; mtu: number }

/**
 * Requests: {op:'add', pod: PodRecord} → AddReply (the plugin sends ip '' and ip6 for an IPv6-only pod,
 * ip and ip6 for a dual-stack one); {op:'del', containerId} → {removed}; {op:'pods'} → PodRecord[];
 * {op:'status'} → NodeStatus; counters, metrics, handover as below.
 */
export interface NodeOps {
  /** Registers a pod; resolves once the engine serves its veth. */
  add(p: PodRecord): Promise<AddReply>;
  del(containerId: string): Promise<{ removed: boolean }>;
  pods(): unknown;
  status(): NodeStatus;
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
