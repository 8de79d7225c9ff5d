// twill-agent: one per node, inside the node's network namespace. Learns the
// cluster from its source, keeps the node's TUN device, runs the engine, and
// serves the CNI plugin on a unix socket.
import { readFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { availableParallelism } from 'node:os';
import { MAX_WORKERS } from '../engine/control.js';
import type { Logger } from 'pino';
import { createLogger, logLevel, LOG_LEVELS } from './log.js';
import { native } from '../native/index.js';
import { Engine } from '../engine/engine.js';
import { compileFib, type FibInput } from '../tables/fib.js';
import { defaultEngineConfig, tuning, type EngineConfig, type EngineTuning } from '../engine/config.js';
import { FileSource, type ClusterSource, type ClusterView } from './datastore.js';
import { KubeClient, inClusterConfig, type KubeConfig } from './kube-client.js';
import { KubeSource, announceNode, nodeAddressing } from './kube-source.js';
import { chooseUnderlay, type Underlay } from './underlay.js';
import { EtcdClient, type EtcdConfig } from './etcd-client.js';
import { EtcdSource, leaseSubnet } from './etcd-source.js';
import { PodRegistry, type PodRecord } from './pods.js';
import { ensureHost, ensureMasquerade, ensureOverlayGuard } from './host.js';
import { serve } from './server.js';
import { handOver, predecessorOn, takeOver } from './handover.js';
import { renderMetrics, serveMetrics } from './metrics.js';
import { processMetrics } from './process-metrics.js';
import { gatewayOf, vtepMacFor } from './addressing.js';
import { PolicyCompiler } from '../../policy/compile.js';
import type { PolicyTables } from '../tables/policy.js';

export interface AgentConfig extends EngineTuning {
  node: string;
  // Where the cluster is learned: a datastore directory (the lab's, dataplane/agent/datastore.ts),
  // or the Kubernetes API ({} inside a cluster: the pod's service account).
  datastore?: string;
  kubernetes?: Partial<KubeConfig>;
  etcd?: EtcdConfig; // outside Kubernetes: flannel's etcd layout (dataplane/agent/etcd-source.ts); https endpoints with caFile/certFile/keyFile, username/password
  // The underlay, chosen as flanneld chooses it (dataplane/agent/underlay.ts): `iface` (names or
  // IPv4 addresses, the first that exists wins), then `ifaceRegex` (against addresses, then names),
  // else the interface holding publicIP, else the default route's; its first IPv4 address.
  iface?: string | string[]; // flanneld's --iface
  ifaceRegex?: string | string[]; // flanneld's --iface-regex
  publicIP?: string; // flanneld's --public-ip: the address announced to the other nodes (default: the interface's)
  clusterCIDR?: string; // with kubernetes: the pod network (flannel's net-conf.json "Network"); default 10.244.0.0/16
  serviceCIDR?: string; // ClusterIPs (kube-proxy's --service-cluster-ip-range); default kubeadm's 10.96.0.0/12, which holds kind's 10.96.0.0/16
  stateDir: string;
  socket: string;
  underlayMTU?: number; // overrides the chosen interface's MTU (pod MTU = underlay MTU - 50)
  workers?: number; // engine workers; default one per core (a lab node gets its share of the machine's)
  vxlanPort?: number;
  vni?: number;
  ipMasq?: boolean; // masquerade pod traffic leaving the pod range, as flannel's --ip-masq (default true)
  metrics?: string; // "host:port" to serve Prometheus metrics at /metrics (absent: only on the agent's socket)
  logLevel?: string; // trace, debug, info (default), warn, error, fatal or silent; TWILL_LOG_LEVEL overrides it
}

const DEFAULT_SERVICE_CIDR = '10.96.0.0/12';

export async function runAgent(cfg: AgentConfig): Promise<void> {
  const level = logLevel(cfg.logLevel);
  process.env.TWILL_LOG_LEVEL = level; // the engine's workers (threads started later) take their level from it
  const log = createLogger({ node: cfg.node }, level);
  mkdirSync(cfg.stateDir, { recursive: true });
  const { source, underlay: chosen } = await clusterSource(cfg, log);
  let view: ClusterView = await source.read();
  const me = view.nodes.find((n) => n.name === cfg.node);
  if (!me) throw new Error(`node ${cfg.node} is not in the cluster view (${cfg.datastore ?? cfg.kubernetes?.server ?? 'kubernetes'})`);
  const underlay = chosen ?? chooseUnderlay(cfg, { known: me.underlayIP }); // the datastore fixes the address: its interface gives the MTU
  log.info({ iface: underlay.iface, address: underlay.address, publicIP: me.underlayIP, mtu: underlay.mtu, podMTU: underlay.podMTU, chosenBy: underlay.chosenBy }, 'underlay');
  const gatewayIP = gatewayOf(me.podCIDR);
  const ecfg: EngineConfig = defaultEngineConfig({
    node: cfg.node, underlayIp: underlay.address, vtepMac: me.vtepMAC,
    podMtu: underlay.podMTU,
    workers: cfg.workers ?? Math.min(MAX_WORKERS, availableParallelism()), vxlanPort: cfg.vxlanPort ?? 8472, vni: cfg.vni ?? 1,
    ...tuning(cfg),
  });
  ensureHost({ tunName: ecfg.tunName, mtu: ecfg.podMtu, gatewayIP, clusterCIDR: view.clusterCIDR, warn: (m) => log.warn(m) });
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
      clusterCIDR: view.clusterCIDR, podCIDR: me.podCIDR, hostIPs: [...new Set([gatewayIP, me.underlayIP, underlay.address])], serviceCIDR: cfg.serviceCIDR ?? DEFAULT_SERVICE_CIDR,
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
    const nodeIps = [...new Set([gatewayIP, me.underlayIP, underlay.address])]; // the announced address may be a NAT's
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
      log.error({ err: e }, 'could not update the overlay guard rules');
    }
    try {
      compilePolicy();
    } catch (e) {
      log.error({ err: e }, 'network policies did not compile; the ones in force stay');
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
      case 'status': return { node: cfg.node, podCIDR: me.podCIDR, gatewayIP, mtu: ecfg.podMtu, pods: pods.list().length, pid: process.pid, rev: appliedRev, policies: view.model?.policies.length ?? 0, podTxOffload: engine.offloads.podTso, handedOver };
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
    perWorker: engine.perWorker(), process: processFigures(),
  });
  const processFigures = processMetrics();
  // The kubelet's probes (deploy/twill.yaml): live while the workers run; ready
  // while this agent forwards for the node (its source has synced: the view was
  // read before the engine started), not once it has handed the node over.
  const health = () => {
    const running = engine.running();
    return { live: running || handedOver, ready: running && !handedOver, why: handedOver ? 'handed over to a new agent' : running ? undefined : 'engine workers are not running' };
  };
  const metricsServer = cfg.metrics ? serveMetrics(cfg.metrics, metricsText, log, undefined, health) : undefined;
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

/**
 * The configured cluster source; with etcd or Kubernetes, also the underlay (chosen first: its
 * address is what the lease or the Node announces). With Kubernetes, the node's VTEP is announced
 * on its Node first, honouring flannel's node-public-ip and public-ip-overwrite annotations.
 */
async function clusterSource(cfg: AgentConfig, log: Logger): Promise<{ source: ClusterSource; underlay?: Underlay }> {
  if (cfg.datastore !== undefined) return { source: new FileSource(cfg.datastore) };
  if (cfg.etcd) {
    const underlay = chooseUnderlay(cfg);
    const client = new EtcdClient(cfg.etcd.endpoints, cfg.etcd);
    const lease = await leaseSubnet(client, { node: cfg.node, publicIP: underlay.publicIP, vni: cfg.vni ?? 1, vtepMAC: vtepMacFor(cfg.node), prefix: cfg.etcd.prefix, log });
    log.info({ endpoints: cfg.etcd.endpoints, subnet: lease.podCIDR, key: lease.key }, 'leased this node\'s subnet in etcd');
    return { source: new EtcdSource(client, lease.clusterCIDR, { key: lease.key, node: cfg.node }, cfg.etcd.prefix, log), underlay };
  }
  const kc = cfg.kubernetes?.server ? cfg.kubernetes as KubeConfig : { ...inClusterConfig(), ...cfg.kubernetes };
  if (!kc.server) throw new Error('no cluster source: set datastore, etcd, or kubernetes (kubernetes: {} in a pod with a service account)');
  const client = new KubeClient(kc as KubeConfig);
  const stored = await nodeAddressing(client, cfg.node); // flanneld: node-public-ip stands for --public-ip
  const underlay = chooseUnderlay({ ...cfg, publicIP: stored.nodePublicIP ?? cfg.publicIP });
  const rec = await announceNode(client, cfg.node, cfg.vni ?? 1, underlay.publicIP); // public-ip-overwrite wins over it
  underlay.publicIP = rec.underlayIP;
  log.info({ server: kc.server, vtepMAC: rec.vtepMAC, underlayIP: rec.underlayIP, podCIDR: rec.podCIDR, ...(stored.overwrite ? { overwrite: stored.overwrite } : {}) }, 'announced this node on its Node object');
  return { source: new KubeSource(client, cfg.clusterCIDR ?? '10.244.0.0/16', log), underlay };
}

/**
 * The agent's JSON config; a missing `node` is taken from NODE_NAME (a DaemonSet sets it from spec.nodeName).
 * Every error names the file, and for a syntax error the line and column.
 */
export function loadAgentConfig(file: string): AgentConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(`agent config ${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'a directory, not a file' : (e as Error).message}`);
  }
  let cfg: AgentConfig;
  try {
    cfg = JSON.parse(text) as AgentConfig;
  } catch (e) {
    throw new Error(`agent config ${file}: not valid JSON: ${jsonErrorAt(text, (e as Error).message)}`);
  }
  if (!cfg || typeof cfg !== 'object' || Array.isArray(cfg)) throw new Error(`agent config ${file}: want a JSON object ({"node": ..., "datastore" | "kubernetes" | "etcd": ...}), not ${Array.isArray(cfg) ? 'an array' : JSON.stringify(cfg)}`);
  cfg.node ??= process.env.NODE_NAME ?? '';
  if (!cfg.node) throw new Error(`agent config ${file}: no "node", and NODE_NAME is not set`);
  const want = { stateDir: 'a directory for the agent\'s state, e.g. /var/lib/twill', socket: 'the unix socket twill-cni talks to, e.g. /run/twill/agent.sock' } as const;
  for (const [k, what] of Object.entries(want)) {
    const v = (cfg as unknown as Record<string, unknown>)[k];
    if (typeof v !== 'string' || !v) throw new Error(`agent config ${file}: ${v === undefined ? `no "${k}"` : `"${k}" must be a non-empty string`} (${what})`);
  }
  if (cfg.logLevel !== undefined && !(LOG_LEVELS as readonly unknown[]).includes(cfg.logLevel)) {
    throw new Error(`agent config ${file}: "logLevel": ${JSON.stringify(cfg.logLevel)} is not a log level (${LOG_LEVELS.join(', ')})`);
  }
  return cfg;
}

/** JSON.parse's message with the line and column of the position it names (or of the end, for an early end). */
function jsonErrorAt(text: string, msg: string): string {
  const m = /at position (\d+)/.exec(msg);
  const pos = m ? Number(m[1]) : /end of JSON input/.test(msg) ? text.length : -1;
  if (pos < 0) return msg;
  const before = text.slice(0, pos).split('\n');
  return `${msg} (line ${before.length}, column ${before[before.length - 1].length + 1})`;
}
