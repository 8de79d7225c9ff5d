// Everything a stage reads besides the batch: the published tables, the node's
// constants in packet form, the offloads in force, the worker's counters and
// parse scratch. What the stages need from above (settings, offloads, the
// tables' shape) is declared here; the engine fills it in.
import { Lpm4Table } from '../tables/lpm4.js';
import { Lpm6Table } from '../tables/lpm6.js';
import { parseIPv6Address } from '../../lib/ipv6.js';
import { parseIPv4Address } from '../../lib/ipv4.js';
import { parseMac } from '../packet/ethernet.js';
import { newFields } from '../packet/fields.js';
import { NCOUNTERS } from './counters.js';
import { Conntrack } from '../tables/conntrack.js';
import { PolicyTables, type PolicyBuffers } from '../tables/policy.js';
import type { FibTables } from '../tables/fib.js';

/**
 * VXLAN over IPv6 costs 20 bytes more than over IPv4 (the outer header: 40
 * against 20). Pods have one MTU for both families (flannel's FLANNEL_MTU, the
 * underlay's less 50); IPv6 packets to other nodes fit 20 bytes less, as the
 * kernel clamps flannel-v6.<VNI> (1430 on a 1500-byte underlay).
 */
export const V6_UNDERLAY_EXTRA = 20;

/** The node's constants the stages use. */
export interface StageSettings {
  gatewayMac: string; // the MAC pods see for their gateway (ARP answers, frames we deliver)
  vtepMac: string; // inner Ethernet source of what we encapsulate; peers address us by it
  vtepMac6?: string; // the same for IPv6 (flannel's flannel-v6.<VNI> has a MAC of its own); default vtepMac
  vni: number;
  vxlanPort: number;
  podMtu: number;
  completeInnerChecksums: boolean; // see stages/ingress-vxlan.ts
}

/** The offloads in force, decided once by the engine (engine/offloads.ts). */
export interface Offloads {
  podTso: boolean; // pod receives start with a virtio_net_hdr (TSO super-frames, partial checksums: stages/segment.ts)
  podGso: boolean; // overlay TCP for local pods is coalesced into GSO frames (stages/coalesce.ts)
  tunTso: boolean; // TUN reads and writes carry a virtio_net_hdr (the host's super-packets)
  udpGso: boolean; // runs of overlay datagrams leave as one UDP_SEGMENT send
  udpGro: boolean; // the kernel coalesces overlay receives (UDP_GRO)
  vnetSend: boolean; // frames with a virtio_net_hdr go to local pods on a PACKET_VNET_HDR socket
}

/** What the main thread publishes: forwarding tables, the shared flow tables, and NetworkPolicy tables when the cluster has policies. */
export interface StageTables extends FibTables {
  gatewayIP: string; // '' on an IPv6-only node
  gatewayIP6?: string; // the pods' IPv6 gateway, when the node has an IPv6 pod range
  policy?: PolicyBuffers;
  policyGen?: number;
  conntrack?: SharedArrayBuffer;
  translated?: SharedArrayBuffer;
  conntrack6?: SharedArrayBuffer; // the same two, for IPv6 flows
  translated6?: SharedArrayBuffer;
}

export class StageContext {
  route4!: Lpm4Table;
  nh!: Int32Array;
  ifmap!: Int32Array;
  peers!: Int32Array; // the other nodes' VTEPs (tables/fib.ts findPeer, peerOwns)
  podPrefix = 0; // this node's pod range: (address & podMask) === podPrefix
  podMask = -1;
  route6!: Lpm6Table;
  peers6!: Int32Array; // the other nodes' IPv6 VTEPs (tables/fib.ts findPeer6, peerOwns6)
  readonly podPrefix6 = new Int32Array(4); // this node's IPv6 pod range (fib.ts inRange6)
  readonly podMask6 = new Int32Array(4);
  readonly f = newFields(); // parse result of the packet at hand
  readonly gwMac: Uint8Array;
  readonly vtepMac: Uint8Array;
  readonly vtepMac6: Uint8Array;
  readonly vni: number;
  readonly vxlanPort: number;
  readonly podMtu: number;
  readonly overlayMtu6: number; // the largest IPv6 packet the IPv6 overlay carries
  readonly completeInnerChecksums: boolean;
  readonly podTso: boolean; // Offloads, as the engine decided them
  readonly podGso: boolean;
  readonly tunTso: boolean;
  // A send the kernel refuses after all (EINVAL) turns these off for this
  // worker (stages/egress.ts, logged once by onOffloadRefused).
  udpGso: boolean;
  vnetSend: boolean;
  udpSources = 1; // overlay send sockets (outer source ports): a flow's is picked in forward.ts
  flush?: () => void; // send everything queued and free the out region (set by the worker)
  onOffloadRefused?: (what: string, err: unknown) => void;
  policy?: PolicyTables; // undefined: no NetworkPolicy in the cluster, nothing to judge
  policyGen = 0;
  conntrack?: Conntrack;
  translated!: Conntrack; // flows the node's stack translated (stages/translated.ts)
  conntrack6?: Conntrack; // the same two, for IPv6 (Conntrack.create(n, 6))
  translated6!: Conntrack;
  now = 0; // seconds, refreshed once per batch: conntrack's clock
  gatewayIp = 0; // source of ICMP errors we generate: this node's pod gateway
  readonly gatewayIp6 = new Int32Array(4); // and of ICMPv6 errors (words, and bytes for the header writers)
  readonly gatewayIp6Bytes = new Uint8Array(16);
  readonly counters: Float64Array;

  constructor(cfg: StageSettings, offloads: Offloads, stats: SharedArrayBuffer, worker: number) {
    this.gwMac = parseMac(cfg.gatewayMac);
    this.vtepMac = parseMac(cfg.vtepMac);
    this.vtepMac6 = parseMac(cfg.vtepMac6 ?? cfg.vtepMac);
    this.vni = cfg.vni;
    this.vxlanPort = cfg.vxlanPort;
    this.podMtu = cfg.podMtu;
    this.overlayMtu6 = cfg.podMtu - V6_UNDERLAY_EXTRA;
    this.completeInnerChecksums = cfg.completeInnerChecksums;
    this.podTso = offloads.podTso;
    this.podGso = offloads.podGso;
    this.tunTso = offloads.tunTso;
    this.udpGso = offloads.udpGso;
    this.vnetSend = offloads.vnetSend;
    this.counters = new Float64Array(stats, worker * NCOUNTERS * 8, NCOUNTERS);
  }

  setTables(t: StageTables): void {
    this.route4 = new Lpm4Table(t.route4);
    this.nh = new Int32Array(t.nexthops);
    this.ifmap = new Int32Array(t.ifmap);
    this.peers = new Int32Array(t.peers);
    this.podPrefix = t.podPrefix; this.podMask = t.podMask;
    this.gatewayIp = t.gatewayIP ? parseIPv4Address(t.gatewayIP) | 0 : 0; // '' on an IPv6-only node
    this.route6 = new Lpm6Table(t.route6);
    this.peers6 = new Int32Array(t.peers6);
    this.podPrefix6.set(t.podPrefix6); this.podMask6.set(t.podMask6);
    const g6 = t.gatewayIP6 ? parseIPv6Address(t.gatewayIP6) : new Uint32Array(4);
    for (let k = 0; k < 4; k++) {
      this.gatewayIp6[k] = g6[k] | 0;
      for (let j = 0; j < 4; j++) this.gatewayIp6Bytes[4 * k + j] = (g6[k] >>> (24 - 8 * j)) & 0xff;
    }
    if (t.conntrack && (!this.conntrack || this.conntrack.buffer !== t.conntrack)) this.conntrack = new Conntrack(t.conntrack);
    if (t.translated) { if (this.translated?.buffer !== t.translated) this.translated = new Conntrack(t.translated); }
    else this.translated ??= Conntrack.create(16); // tables made without an engine (micro benchmarks, tests)
    if (t.conntrack6 && (!this.conntrack6 || this.conntrack6.buffer !== t.conntrack6)) this.conntrack6 = new Conntrack(t.conntrack6);
    if (t.translated6) { if (this.translated6?.buffer !== t.translated6) this.translated6 = new Conntrack(t.translated6); }
    else this.translated6 ??= Conntrack.create(16, 6);
    this.policy = t.policy ? new PolicyTables(t.policy) : undefined;
    this.policyGen = t.policyGen ?? 0;
  }
}
