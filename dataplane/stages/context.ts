// Everything a stage reads besides the batch: the published tables, the node's
// constants in packet form, the worker's counters and parse scratch.
import { Lpm4Table, parseIPv4 } from '../tables/lpm4.js';
import { parseMac } from '../packet/ethernet.js';
import { newFields } from '../packet/fields.js';
import type { EngineConfig } from '../engine/config.js';
import type { Tables } from '../engine/worker.js';
import { NCOUNTERS } from '../engine/counters.js';
import { Conntrack } from '../tables/conntrack.js';
import { PolicyTables } from '../../policy/tables.js';

export class StageContext {
  route4!: Lpm4Table;
  nh!: Int32Array;
  ifmap!: Int32Array;
  peers!: Int32Array; // the other nodes' VTEPs (engine/fib.ts findPeer, peerOwns)
  readonly f = newFields(); // parse result of the packet at hand
  readonly gwMac: Uint8Array;
  readonly vtepMac: Uint8Array;
  readonly vni: number;
  readonly vxlanPort: number;
  readonly podMtu: number;
  readonly completeInnerChecksums: boolean;
  udpGso = false; // set by the worker once the socket is open and the kernel says yes
  udpSources = 1; // overlay send sockets (outer source ports): a flow's is picked in forward.ts
  readonly podTso: boolean; // pod receives start with a virtio_net_hdr (see stages/segment.ts)
  podGso: boolean; // coalesce overlay TCP for local pods (stages/coalesce.ts)
  podVnetTx = false; // the worker has a vnet send socket the kernel takes frames on
  readonly tunVnet: boolean; // TUN reads and writes carry a virtio_net_hdr (cfg.tunTso)
  flush?: () => void; // send everything queued and free the out region (set by the worker)
  onOffloadRefused?: (what: string, err: unknown) => void;
  policy?: PolicyTables; // undefined: no NetworkPolicy in the cluster, nothing to judge
  policyGen = 0;
  conntrack?: Conntrack;
  translated!: Conntrack; // flows the node's stack translated (stages/translated.ts)
  now = 0; // seconds, refreshed once per batch: conntrack's clock
  gatewayIp = 0; // source of ICMP errors we generate: this node's pod gateway
  readonly counters: Float64Array;

  constructor(cfg: EngineConfig, stats: SharedArrayBuffer, worker: number) {
    this.gwMac = parseMac(cfg.gatewayMac);
    this.vtepMac = parseMac(cfg.vtepMac);
    this.vni = cfg.vni;
    this.vxlanPort = cfg.vxlanPort;
    this.podMtu = cfg.podMtu;
    this.completeInnerChecksums = cfg.completeInnerChecksums;
    this.podTso = cfg.podTso;
    this.podGso = cfg.podGso;
    this.tunVnet = cfg.tunTso;
    this.counters = new Float64Array(stats, worker * NCOUNTERS * 8, NCOUNTERS);
  }

  setTables(t: Tables): void {
    this.route4 = new Lpm4Table(t.route4);
    this.nh = new Int32Array(t.nexthops);
    this.ifmap = new Int32Array(t.ifmap);
    this.peers = new Int32Array(t.peers);
    this.gatewayIp = parseIPv4(t.gatewayIP) | 0;
    if (t.conntrack && (!this.conntrack || this.conntrack.buffer !== t.conntrack)) this.conntrack = new Conntrack(t.conntrack);
    if (t.translated) { if (this.translated?.buffer !== t.translated) this.translated = new Conntrack(t.translated); }
    else this.translated ??= Conntrack.create(16); // tables made without an engine (micro benchmarks, tests)
    this.policy = t.policy ? new PolicyTables(t.policy) : undefined;
    this.policyGen = t.policyGen ?? 0;
  }
}
