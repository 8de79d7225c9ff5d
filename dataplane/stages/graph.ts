// The packet graph, declared once (VPP's vector graph and its .next_nodes,
// Snabb's apps and links). A worker moves a batch from one source through that
// source's ingress stage and the forward stage, which hands each packet to its
// next hop's handler; the handlers queue it on an output; egress sends each
// output's queue in one call.
//
//   source (receive.ts)                ingress               forward.ts                 next hop handler          output (egress.ts)
//   pod veth: AF_PACKET fanout  ─▶ ingress-pod.ts   ─┐                         ┌▶ NH_LOCAL  to-pod.ts     ─▶ pod (AF_PACKET; vnet)
//   node stack: TUN queue       ─▶ ingress-tun.ts   ─┼─▶ LPM, guards, policy, ─┼▶ NH_REMOTE to-overlay.ts ─▶ udp (UDP_SEGMENT runs)
//   overlay: UDP 8472, GRO      ─▶ ingress-vxlan.ts ─┤   translated flows      └▶ NH_HOST   to-host.ts    ─▶ tun (TUN write)
//   overlay over IPv6 (8472)    ─▶ ingress-vxlan.ts ─┘   (IPv4: LPM4; IPv6: LPM6)                          udp6 (IPv6 packets to NH_REMOTE)
//                                                        (NH_SERVICE, NH_OUTSIDE and translated replies go to NH_HOST; NH_DROP is counted)
//
// IPv6 is a family of the same stages, not a path of its own: the ingress
// stages mark an entry V6 (stages/batch.ts), forward looks it up in the IPv6
// LPM, and each handler writes the header fields of the entry's family.
// A new path (an encrypted peer, a Service load balancer) is a next-hop
// kind in tables/fib.ts, a handler here, a case in forward's switch, and, for a
// new receive call, a source here. The hot loop keeps direct calls: this is a
// declaration, not a dispatcher.
import { ingressPod } from './ingress-pod.js';
import { ingressTun } from './ingress-tun.js';
import { ingressVxlan, ingressVxlan6 } from './ingress-vxlan.js';
import { receiveOverlay, receiveOverlay6, receivePod, receiveTun } from './receive.js';
import { toPod } from './to-pod.js';
import { toOverlay } from './to-overlay.js';
import { toHost } from './to-host.js';
import { FROM_POD, FROM_TUN, FROM_VXLAN, FROM_VXLAN6, OUT_POD, OUT_TUN, OUT_UDP, OUT_UDP6 } from './ids.js';
import { C, type CounterName } from './counters.js';
import * as fib from '../tables/fib.js';
import type { Batch } from './batch.js';
import type { StageContext } from './context.js';

export { FROM_POD, FROM_TUN, FROM_VXLAN, FROM_VXLAN6, OUT_POD, OUT_TUN, OUT_UDP, OUT_UDP6 };

export interface Source {
  name: string;
  from: number; // what forward() is told
  received: CounterName; // counts the packets
  receive(ctx: StageContext, bt: Batch, fd: number): number;
  ingress(ctx: StageContext, bt: Batch): void;
}

/** Indexed by FROM_*: a worker's queues are tagged with these. */
export const SOURCES: readonly Source[] = [
  { name: 'pod', from: FROM_POD, received: 'rx_pod', receive: receivePod, ingress: ingressPod },
  { name: 'tun', from: FROM_TUN, received: 'rx_tun', receive: receiveTun, ingress: ingressTun },
  { name: 'vxlan', from: FROM_VXLAN, received: 'rx_vxlan', receive: receiveOverlay, ingress: ingressVxlan },
  { name: 'vxlan6', from: FROM_VXLAN6, received: 'rx_vxlan6', receive: receiveOverlay6, ingress: ingressVxlan6 },
];
export const RECEIVED = SOURCES.map((s) => C[s.received]);

/** Next-hop kinds (tables/fib.ts) and their handlers, as forward()'s switch calls them. */
export const NEXT_HOPS = [
  { kind: fib.NH_LOCAL, name: 'local pod', handler: toPod, output: OUT_POD },
  { kind: fib.NH_REMOTE, name: 'remote node', handler: toOverlay, output: OUT_UDP }, // OUT_UDP6 for IPv6 packets
  { kind: fib.NH_HOST, name: 'node stack', handler: toHost, output: OUT_TUN },
] as const;

/** The outputs, in the order egress sends them. */
export const OUTPUTS = [OUT_TUN, OUT_POD, OUT_UDP, OUT_UDP6] as const;
