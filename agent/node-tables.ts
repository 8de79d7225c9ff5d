// What this node's engine forwards by, built from the cluster view and the
// node's pods: the FIB (its pods from the registry, the other nodes' pod ranges
// from the view) and the NetworkPolicy tables, compiled incrementally whenever
// the view changes.
import type { Logger } from 'pino';
import { native } from '../dataplane/native/index.js';
import { compileFib, type FibInput } from '../dataplane/tables/fib.js';
import type { PolicyTables } from '../dataplane/tables/policy.js';
import type { StageTables } from '../dataplane/stages/context.js';
import { PolicyCompiler } from '../policy/compile.js';
import type { ClusterView } from './sources/index.js';
import type { PodRegistry } from './pods.js';

export interface NodeFacts {
  name: string;
  podCIDR: string;
  gatewayIP: string;
  podCIDR6?: string; // with IPv6 pods: their range and gateway, and the IPv6 Service range
  gatewayIP6?: string;
  serviceCIDR6?: string;
  // This node's own addresses: its gateway on TUN, its underlay address (the
  // announced one, and the local one when a NAT's is announced).
  hostIPs: string[];
  serviceCIDR: string;
}

export class NodeTables {
  // NetworkPolicy. Tables are published even when there is no policy (nobody
  // isolated: every packet allowed), so the engine tracks every flow from its first
  // packet: a flow first seen after policies appear could otherwise be seen first by
  // its reply and recorded backwards, which lets a denied flow through and drops an
  // allowed one (test/policy-lab/under-traffic.test.ts). The generation moves only
  // when the tables do: it makes tracked flows be judged again.
  private readonly compiler = new PolicyCompiler();
  private policy: { tables?: PolicyTables; gen: number; rev: number } = { gen: 0, rev: -1 }; // rev: the view's they are of

  constructor(private readonly node: NodeFacts, public view: ClusterView, private readonly pods: PodRegistry, private readonly log: Logger) {
    this.compilePolicy();
  }

  /** The view's revision whose policies the tables hold (a view whose policies did not compile is not). */
  get policyRev(): number { return this.policy.rev; }

  /** A new view: its policies compiled (the ones in force stay if they do not compile). */
  setView(v: ClusterView): void {
    this.view = v;
    try {
      this.compilePolicy();
    } catch (e) {
      this.log.error({ err: e }, 'network policies did not compile; the ones in force stay');
    }
  }

  /** Everything the engine's workers take, in fresh buffers. */
  published(): StageTables {
    return { ...this.fib(), gatewayIP: this.node.gatewayIP, gatewayIP6: this.node.gatewayIP6, policy: this.policy.tables?.buffers, policyGen: this.policy.gen };
  }

  private fib() {
    const { view, node } = this;
    const input: FibInput = {
      clusterCIDR: view.clusterCIDR, podCIDR: node.podCIDR, hostIPs: node.hostIPs, serviceCIDR: node.serviceCIDR,
      ...(node.podCIDR6 ? { clusterCIDR6: view.clusterCIDR6, podCIDR6: node.podCIDR6, serviceCIDR6: node.serviceCIDR6 } : {}),
      pods: [], remotes: view.nodes.filter((n) => n.name !== node.name),
    };
    for (const p of this.pods.list()) {
      try {
        input.pods.push({ ip: p.ip, ip6: p.ip6, mac: p.mac, ifname: p.hostIf, ifindex: native.ifIndex(p.hostIf) });
      } catch {
        this.log.warn({ pod: `${p.namespace}/${p.name}`, hostIf: p.hostIf }, 'veth of a registered pod is gone; not serving it');
      }
    }
    return compileFib(input);
  }

  private compilePolicy(): void {
    const m = this.view.model, view = this.view;
    if (!m) {
      this.policy = { gen: this.policy.gen + (this.policy.tables ? 1 : 0), rev: view.rev };
      return;
    }
    // Only this node is exempt (kubelet probes, hostNetwork pods here): as Kubernetes
    // defines it, and as Calico and Cilium do, other nodes' traffic is judged like
    // any source, and an ipBlock can select their addresses. A node's host traffic
    // to pods carries its gateway address (10.244.N.1, the route's src on its TUN
    // device; test/e2e/node-policy.test.ts captures it). This node's own traffic
    // may also come from its underlay address (a socket bound to it).
    const t0 = performance.now();
    const tables = this.compiler.compile({ ...m, nodeIps: this.node.hostIPs });
    if (tables === this.policy.tables) {
      this.policy.rev = view.rev;
      return;
    }
    this.policy = { tables, gen: this.policy.gen + 1, rev: view.rev };
    const st = this.compiler.lastStats;
    this.log.info({ policies: m.policies.length, pods: m.pods.length, ms: +(performance.now() - t0).toFixed(1), rulesetsBuilt: st.rulesetsBuilt, rev: view.rev }, 'network policies compiled');
  }
}
