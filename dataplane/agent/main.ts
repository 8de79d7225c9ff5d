// twill-agent: one per node, inside the node's network namespace. Learns the
// cluster from its source, keeps the node's TUN device, runs the engine, and
// serves the CNI plugin on a unix socket.
import { readFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { availableParallelism } from 'node:os';
import { MAX_WORKERS } from '../engine/control.js';
import { pino, type Logger } from 'pino';
import { native } from '../native/index.js';
import { Engine } from '../engine/engine.js';
import { compileFib, type FibInput } from '../engine/fib.js';
import { defaultEngineConfig, tuning, VXLAN_OVERHEAD, type EngineConfig, type EngineTuning } from '../engine/config.js';
import { FileSource, type ClusterSource, type ClusterView } from './datastore.js';
import { KubeClient, inClusterConfig, type KubeConfig } from './kube-client.js';
import { KubeSource, announceNode } from './kube-source.js';
import { EtcdClient } from './etcd-client.js';
import { EtcdSource, leaseSubnet } from './etcd-source.js';
import { PodRegistry, type PodRecord } from './pods.js';
import { ensureHost, ensureMasquerade, ensureOverlayGuard } from './host.js';
import { serve } from './server.js';
import { handOver, predecessorOn, takeOver } from './handover.js';
import { renderMetrics, serveMetrics } from './metrics.js';
import { gatewayOf, vtepMacFor } from './addressing.js';
import { PolicyCompiler } from '../../policy/compile.js';
import type { PolicyTables } from '../../policy/tables.js';

export interface AgentConfig extends EngineTuning {
  node: string;
  // Where the cluster is learned: a datastore directory (the lab's, dataplane/agent/datastore.ts),
  // or the Kubernetes API ({} inside a cluster: the pod's service account).
  datastore?: string;
  kubernetes?: Partial<KubeConfig>;
  etcd?: { endpoints: string[]; prefix?: string }; // outside Kubernetes: flannel's etcd layout (dataplane/agent/etcd-source.ts)
  publicIP?: string; // with etcd: this node's underlay address (flanneld's --public-ip)
  clusterCIDR?: string; // with kubernetes: the pod network (flannel's net-conf.json "Network"); default 10.244.0.0/16
  serviceCIDR?: string; // ClusterIPs (kube-proxy's --service-cluster-ip-range); default kubeadm's 10.96.0.0/12, which holds kind's 10.96.0.0/16
  stateDir: string;
  socket: string;
  underlayMTU?: number;
  workers?: number; // engine workers; default one per core (a lab node gets its share of the machine's)
  vxlanPort?: number;
  vni?: number;
  ipMasq?: boolean; // masquerade pod traffic leaving the pod range, as flannel's --ip-masq (default true)
  metrics?: string; // "host:port" to serve Prometheus metrics at /metrics (absent: only on the agent's socket)
}

const DEFAULT_SERVICE_CIDR = '10.96.0.0/12';

// PACKET_VNET_HDR works on this kernel (a socket on lo with it set opens).
function vnetHdrWorks(): boolean {
  try { native.close(native.packetOpen('lo', { vnetHdr: true })); return true; } catch { return false; }
}

export async function runAgent(cfg: AgentConfig): Promise<void> {
  const log = pino({ base: { node: cfg.node } });
  mkdirSync(cfg.stateDir, { recursive: true });
  const source = await clusterSource(cfg, log);
  let view: ClusterView = await source.read();
  const me = view.nodes.find((n) => n.name === cfg.node);
  if (!me) throw new Error(`node ${cfg.node} is not in the cluster view (${cfg.datastore ?? cfg.kubernetes?.server ?? 'kubernetes'})`);
  const gatewayIP = gatewayOf(me.podCIDR);
  const ecfg: EngineConfig = defaultEngineConfig({
    node: cfg.node, underlayIp: me.underlayIP, vtepMac: me.vtepMAC,
    podMtu: (cfg.underlayMTU ?? 1500) - VXLAN_OVERHEAD,
    workers: cfg.workers ?? Math.min(MAX_WORKERS, availableParallelism()), vxlanPort: cfg.vxlanPort ?? 8472, vni: cfg.vni ?? 1,
    ...tuning(cfg),
  });
  if ((ecfg.podTso || ecfg.podGso) && !vnetHdrWorks()) {
    log.warn('PACKET_VNET_HDR is refused here: pod offloads off');
    ecfg.podTso = false; ecfg.podGso = false;
  }
  ensureHost({ tunName: ecfg.tunName, mtu: ecfg.podMtu, gatewayIP, clusterCIDR: view.clusterCIDR });
  if (cfg.ipMasq ?? true) ensureMasquerade(view.clusterCIDR);
  let guarded = '';
  const guardOverlay = () => { // only when the nodes' addresses change
    const ips = view.nodes.map((n) => n.underlayIP).sort();
    if (ips.join() === guarded) return;
    ensureOverlayGuard(ecfg.tunName, ecfg.vxlanPort, ips);
    guarded = ips.join();
  };
  guardOverlay();
  const pods = new PodRegistry(path.join(cfg.stateDir, 'pods.json'));

  const tables = () => {
    const input: FibInput = {
      clusterCIDR: view.clusterCIDR, podCIDR: me.podCIDR, hostIPs: [gatewayIP, me.underlayIP], serviceCIDR: cfg.serviceCIDR ?? DEFAULT_SERVICE_CIDR,
      pods: [], remotes: view.nodes.filter((n) => n.name !== cfg.node),
    };
    for (const p of pods.list()) {
      try {
        input.pods.push({ ip: p.ip, mac: p.mac, ifname: p.hostIf, ifindex: native.ifIndex(p.hostIf) });
      } catch {
        log.warn({ pod: `${p.namespace}/${p.name}`, hostIf: p.hostIf }, 'veth of a registered pod is gone; not serving it');
      }
    }
    return { ...compileFib(input), gatewayIP };
  };

  // NetworkPolicy: compiled (incrementally) whenever the cluster view changes. Tables are
  // published even when there is no policy (nobody isolated: every packet allowed), so the
  // engine tracks every flow from its first packet: a flow first seen after policies
  // appear could otherwise be seen first by its reply and recorded backwards, which lets
  // a denied flow through and drops an allowed one (test/policy-lab/under-traffic.test.ts).
  // The generation moves only when the tables do: it makes tracked flows be judged again.
  const compiler = new PolicyCompiler();
  let policy: { tables?: PolicyTables; gen: number; rev: number } = { gen: 0, rev: -1 }; // rev: the view's they are of
  const compilePolicy = () => {
    const m = view.model;
    if (!m) {
      policy = { gen: policy.gen + (policy.tables ? 1 : 0), rev: view.rev };
      return;
    }
    // Only this node is exempt (kubelet probes, hostNetwork pods here): as Kubernetes
    // defines it, and as Calico and Cilium do, other nodes' traffic is judged like
    // any source, and an ipBlock can select their addresses. A node's host traffic
    // to pods carries its gateway address (10.244.N.1, the route's src on its TUN
    // device; test/e2e/node-policy.test.ts captures it). This node's own traffic
    // may also come from its underlay address (a socket bound to it).
    const nodeIps = [gatewayIP, me.underlayIP];
    const t0 = performance.now();
    const tables = compiler.compile({ ...m, nodeIps });
    if (tables === policy.tables) {
      policy.rev = view.rev;
      return;
    }
    policy = { tables, gen: policy.gen + 1, rev: view.rev };
    const st = compiler.lastStats;
    log.info({ policies: m.policies.length, pods: m.pods.length, ms: +(performance.now() - t0).toFixed(1), rulesetsBuilt: st.rulesetsBuilt, rev: view.rev }, 'network policies compiled');
  };
  const published = () => ({ ...tables(), policy: policy.tables?.buffers, policyGen: policy.gen });
  let appliedRev = -1; // the datastore revision in force in the engine

  compilePolicy();
  const predecessor = await predecessorOn(cfg.socket); // an agent serving this node now: take over from it (handover.ts)
  const engine = new Engine(ecfg, log);
  await engine.start(published());
  if (predecessor !== undefined) await takeOver(cfg.socket, engine, predecessor, log);
  appliedRev = policy.rev;
  let handedOver = false;
  const publish = async () => {
    const rev = policy.rev; // a view whose policies did not compile is not in force
    const ok = await engine.applied(engine.publish(published()));
    if (ok) appliedRev = Math.max(appliedRev, rev);
    return ok;
  };
  const stopWatch = source.watch((v) => {
    view = v;
    try {
      guardOverlay();
    } catch (e) {
      log.error({ err: String(e) }, 'could not update the overlay guard rules');
    }
    try {
      compilePolicy();
    } catch (e) {
      log.error({ err: String(e) }, 'network policies did not compile; the ones in force stay');
    }
    void publish().then(() => log.info({ nodes: v.nodes.length, rev: v.rev }, 'cluster view applied'));
  });

  const server = serve(cfg.socket, async (req) => {
    if (handedOver && req.op !== 'status') throw new Error('this agent has handed the node over to a new agent');
    switch (req.op) {
      case 'add': {
        const p = req.pod as PodRecord;
        pods.put(p);
        if (!(await publish())) throw new Error('engine did not apply the new pod within 2 s');
        log.info({ pod: `${p.namespace}/${p.name}`, ip: p.ip, hostIf: p.hostIf }, 'pod added');
        return { gatewayIP, mtu: ecfg.podMtu };
      }
      case 'del': {
        const had = pods.remove(String(req.containerId));
        if (had) await publish();
        return { removed: had };
      }
      case 'pods': return pods.list();
      case 'status': return { node: cfg.node, podCIDR: me.podCIDR, gatewayIP, mtu: ecfg.podMtu, pods: pods.list().length, pid: process.pid, rev: appliedRev, policies: view.model?.policies.length ?? 0, podTxOffload: ecfg.podTso, handedOver };
      case 'handover': {
        if (handedOver) throw new Error('this agent has handed over already');
        handedOver = true;
        stopWatch();
        return handOver(cfg.stateDir, engine, () => { setImmediate(() => server.close()); metricsServer?.close(); }, log);
      }
      case 'counters': return engine.counters();
      case 'metrics': return metricsText();
      default: throw new Error(`unknown op ${String(req.op)}`);
    }
  });
  const metricsText = () => renderMetrics({
    node: cfg.node, podCIDR: me.podCIDR, vtepMAC: me.vtepMAC, counters: engine.counters(), workers: ecfg.workers,
    pods: pods.list().length, nodes: view.nodes.length, policies: view.model?.policies.length ?? 0,
    conntrackEntries: engine.conntrackEntries(), translatedFlows: engine.translatedFlows(), revision: appliedRev,
  });
  const metricsServer = cfg.metrics ? serveMetrics(cfg.metrics, metricsText, log) : undefined;
  log.info({ socket: cfg.socket, podCIDR: me.podCIDR, pods: pods.list().length }, 'agent ready');

  const shutdown = async (sig: string) => {
    log.info({ sig, counters: engine.counters() }, 'agent stopping');
    stopWatch();
    server.close();
    metricsServer?.close();
    await engine.stop();
    process.exit(0);
  };
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
  process.once('SIGINT', () => void shutdown('SIGINT'));
}

/** The configured cluster source; with Kubernetes, the node's VTEP is announced on its Node first. */
async function clusterSource(cfg: AgentConfig, log: Logger): Promise<ClusterSource> {
  if (cfg.datastore !== undefined) return new FileSource(cfg.datastore);
  if (cfg.etcd) {
    if (!cfg.publicIP) throw new Error('with etcd, set "publicIP": this node\'s underlay address');
    const client = new EtcdClient(cfg.etcd.endpoints);
    const lease = await leaseSubnet(client, { node: cfg.node, publicIP: cfg.publicIP, vni: cfg.vni ?? 1, vtepMAC: vtepMacFor(cfg.node), prefix: cfg.etcd.prefix, log });
    log.info({ endpoints: cfg.etcd.endpoints, subnet: lease.podCIDR, key: lease.key }, 'leased this node\'s subnet in etcd');
    return new EtcdSource(client, lease.clusterCIDR, { key: lease.key, node: cfg.node }, cfg.etcd.prefix, log);
  }
  const kc = cfg.kubernetes?.server ? cfg.kubernetes as KubeConfig : { ...inClusterConfig(), ...cfg.kubernetes };
  if (!kc.server) throw new Error('no cluster source: set datastore, etcd, or kubernetes (kubernetes: {} in a pod with a service account)');
  const client = new KubeClient(kc as KubeConfig);
  const rec = await announceNode(client, cfg.node, cfg.vni ?? 1);
  log.info({ server: kc.server, vtepMAC: rec.vtepMAC, underlayIP: rec.underlayIP, podCIDR: rec.podCIDR }, 'announced this node on its Node object');
  return new KubeSource(client, cfg.clusterCIDR ?? '10.244.0.0/16', log);
}

/** The agent's JSON config; a missing `node` is taken from NODE_NAME (a DaemonSet sets it from spec.nodeName). */
export function loadAgentConfig(file: string): AgentConfig {
  const cfg = JSON.parse(readFileSync(file, 'utf8')) as AgentConfig;
  cfg.node ??= process.env.NODE_NAME ?? '';
  if (!cfg.node) throw new Error(`${file}: no "node", and NODE_NAME is not set`);
  return cfg;
}
