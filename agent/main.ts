// twill-agent: one per node, inside the node's network namespace. The wiring:
// it learns the cluster from its source (sources/), keeps the node's TUN device
// and rules (host.ts), builds the engine's tables (node-tables.ts), runs the
// engine, serves the node's socket (node-socket.ts) and metrics, and takes over
// from or hands over to another agent (handover.ts).
import { readFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { availableParallelism } from 'node:os';
import { MAX_WORKERS } from '../dataplane/engine/control.js';
import type { Logger } from 'pino';
import { createLogger, logLevel, LOG_LEVELS } from '../lib/log.js';
import { Engine } from '../dataplane/engine/engine.js';
import { defaultEngineConfig, tuning, type EngineConfig, type EngineTuning } from '../dataplane/engine/config.js';
import { openSource, type ClusterView, type SourceConfig } from './sources/index.js';
import { chooseUnderlay } from './underlay.js';
import { PodRegistry } from './pods.js';
import { NodeTables } from './node-tables.js';
import { nodeSocket } from './node-socket.js';
import { ensureHost, ensureMasquerade, ensureOverlayGuard } from './host.js';
import { serve } from './socket.js';
import { handOver, predecessorOn, takeOver } from './handover.js';
import { renderMetrics, serveMetrics } from './metrics.js';
import { processMetrics } from './process-metrics.js';
import { gatewayOf, gatewayOf6 } from './addressing.js';
import { V6_UNDERLAY_EXTRA } from '../dataplane/stages/context.js';

/**
 * The agent's JSON config. Where the cluster is learned (datastore, etcd or
 * kubernetes) and the underlay (iface, ifaceRegex, publicIP) are SourceConfig's
 * (agent/sources/index.ts, agent/underlay.ts).
 */
export interface AgentConfig extends EngineTuning, SourceConfig {
  serviceCIDR?: string; // ClusterIPs (kube-proxy's --service-cluster-ip-range); default kubeadm's 10.96.0.0/12, which holds kind's 10.96.0.0/16
  serviceCIDR6?: string; // IPv6 ClusterIPs, default kind's fd00:10:96::/112
  stateDir: string;
  socket: string;
  workers?: number; // engine workers; default one per core (a lab node gets its share of the machine's)
  vxlanPort?: number;
  ipMasq?: boolean; // masquerade pod traffic leaving the pod range, as flannel's --ip-masq (default true)
  metrics?: string; // "host:port" to serve Prometheus metrics at /metrics (absent: only on the agent's socket)
  logLevel?: string; // trace, debug, info (default), warn, error, fatal or silent; TWILL_LOG_LEVEL overrides it
}

const DEFAULT_SERVICE_CIDR = '10.96.0.0/12';
const DEFAULT_SERVICE_CIDR6 = 'fd00:10:96::/112';


export async function runAgent(cfg: AgentConfig): Promise<void> {
  const level = logLevel(cfg.logLevel);
  process.env.TWILL_LOG_LEVEL = level; // the engine's workers (threads started later) take their level from it
  const log = createLogger({ node: cfg.node }, level);
  mkdirSync(cfg.stateDir, { recursive: true });
  const { source, underlay: chosen } = await openSource(cfg, log);
  let view: ClusterView = await source.read();
  const me = view.nodes.find((n) => n.name === cfg.node);
  if (!me) throw new Error(`node ${cfg.node} is not in the cluster view (${cfg.datastore ?? cfg.kubernetes?.server ?? 'kubernetes'})`);
  const underlay = chosen ?? chooseUnderlay(cfg, { known: me.underlayIP, known6: me.underlayIP6 }); // the datastore fixes the address: its interface gives the MTU
  log.info({ iface: underlay.iface, address: underlay.address, publicIP: me.underlayIP, mtu: underlay.mtu, podMTU: underlay.podMTU, chosenBy: underlay.chosenBy }, 'underlay');
  const gatewayIP = me.podCIDR ? gatewayOf(me.podCIDR) : ''; // '': an IPv6-only node, no IPv4 pods
  // IPv6 pods, as flannel's dual-stack vxlan backend carries them: this node has
  // an IPv6 pod range and an IPv6 VTEP (its own underlay address and MAC).
  const six = me.podCIDR6 && me.underlayIP6 && me.vtepMAC6 && view.clusterCIDR6 ? { podCIDR6: me.podCIDR6, gatewayIP6: gatewayOf6(me.podCIDR6), clusterCIDR6: view.clusterCIDR6, underlayIP6: underlay.address6 ?? me.underlayIP6 } : undefined;
  const ecfg: EngineConfig = defaultEngineConfig({
    node: cfg.node, underlayIp: underlay.address, vtepMac: me.vtepMAC, vtepMac6: me.vtepMAC6, underlayIp6: six?.underlayIP6,
    podMtu: underlay.podMTU, // both families, as flannel's FLANNEL_MTU; the IPv6 overlay's is 20 less (stages/context.ts overlayMtu6)
    workers: cfg.workers ?? Math.min(MAX_WORKERS, availableParallelism()), vxlanPort: cfg.vxlanPort ?? 8472, vni: cfg.vni ?? 1,
    ...tuning(cfg),
  });
  if (!gatewayIP && !six) throw new Error(`node ${cfg.node} has no pod range: neither an IPv4 podCIDR nor IPv6 (podCIDR6, underlayIP6, vtepMAC6 and the cluster's clusterCIDR6)`);
  ensureHost({ tunName: ecfg.tunName, mtu: ecfg.podMtu, gatewayIP, clusterCIDR: view.clusterCIDR, gatewayIP6: six?.gatewayIP6, clusterCIDR6: six?.clusterCIDR6, podCIDR6: six?.podCIDR6, mtu6: ecfg.podMtu - V6_UNDERLAY_EXTRA, warn: (m) => log.warn(m) });
  if (cfg.ipMasq ?? true) ensureMasquerade(view.clusterCIDR, six?.clusterCIDR6);
  let guarded = '';
  const guardOverlay = () => { // only when the nodes' addresses change
    const ips = view.nodes.flatMap((n) => [n.underlayIP, n.underlayIP6 ?? '']).filter(Boolean).sort();
    if (ips.join() === guarded) return;
    ensureOverlayGuard(ecfg.tunName, ecfg.vxlanPort, ips, six ? [4, 6] : [4]);
    guarded = ips.join();
  };
  guardOverlay();
  const pods = new PodRegistry(path.join(cfg.stateDir, 'pods.json'));
  const tables = new NodeTables({
    name: cfg.node, podCIDR: me.podCIDR, gatewayIP, serviceCIDR: cfg.serviceCIDR ?? DEFAULT_SERVICE_CIDR,
    ...(six ? { podCIDR6: six.podCIDR6, gatewayIP6: six.gatewayIP6, serviceCIDR6: cfg.serviceCIDR6 ?? DEFAULT_SERVICE_CIDR6 } : {}),
    hostIPs: [...new Set([gatewayIP, me.underlayIP, underlay.address, ...(six ? [six.gatewayIP6, me.underlayIP6!, six.underlayIP6] : [])])].filter(Boolean), // the announced address may be a NAT's
  }, view, pods, log);
  let appliedRev = -1; // the view's revision in force in the engine

  const predecessor = await predecessorOn(cfg.socket); // an agent serving this node now: take over from it (handover.ts)
  const engine = new Engine(ecfg, log);
  await engine.start(tables.published(), predecessor !== undefined); // held until it has the predecessor's flows
  if (predecessor !== undefined) await takeOver(cfg.socket, engine, predecessor, log);
  appliedRev = tables.policyRev;
  let handedOver = false;
  const publish = async () => {
    const rev = tables.policyRev;
    const ok = await engine.applied(engine.publish(tables.published()));
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
    tables.setView(v);
    void publish().then(() => log.info({ nodes: v.nodes.length, rev: v.rev }, 'cluster view applied'));
  });

  const server = serve(cfg.socket, nodeSocket({
    add: async (p) => {
      pods.put(p);
      if (!(await publish())) throw new Error('engine did not apply the new pod within 2 s');
      log.info({ pod: `${p.namespace}/${p.name}`, ip: p.ip, ip6: p.ip6, hostIf: p.hostIf }, 'pod added');
      return { gatewayIP, gatewayIP6: six?.gatewayIP6, mtu: ecfg.podMtu };
    },
    del: async (containerId) => {
      const had = pods.remove(containerId);
      if (had) await publish();
      return { removed: had };
    },
    pods: () => pods.list(),
    status: () => ({ node: cfg.node, podCIDR: me.podCIDR, gatewayIP, ...(six ? { podCIDR6: six.podCIDR6, gatewayIP6: six.gatewayIP6 } : {}), mtu: ecfg.podMtu, pods: pods.list().length, pid: process.pid, rev: appliedRev, policies: view.model?.policies.length ?? 0, podTxOffload: engine.offloads.podTso, handedOver }),
    counters: () => engine.counters(),
    metrics: () => metricsText(),
    handedOver: () => handedOver,
    handover: async () => {
      if (handedOver) throw new Error('this agent has handed over already');
      handedOver = true;
      stopWatch();
      return handOver(cfg.stateDir, engine, () => { setImmediate(() => server.close()); metricsServer?.close(); }, log);
    },
  }));
  const processFigures = processMetrics();
  const metricsText = () => renderMetrics({
    node: cfg.node, podCIDR: me.podCIDR, vtepMAC: me.vtepMAC, counters: engine.counters(), workers: ecfg.workers,
    pods: pods.list().length, nodes: view.nodes.length, policies: view.model?.policies.length ?? 0,
    conntrackEntries: engine.conntrackEntries(), translatedFlows: engine.translatedFlows(), revision: appliedRev,
    perWorker: engine.perWorker(), process: processFigures(),
  });
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
