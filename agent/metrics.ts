// The agent's metrics in the Prometheus text format (0.0.4): the engine's packet
// counters, summed over workers and grouped into families by what they count,
// and gauges of what the agent holds. Served over HTTP when the config names an
// address, and on the agent's socket (`twill lab metrics`).
import http from 'node:http';
import type { Logger } from 'pino';
import { COUNTER_NAMES, type CounterName } from '../dataplane/stages/counters.js';
import type { ProcessSample } from './process-metrics.js';

export interface MetricsSnapshot {
  node: string;
  podCIDR: string;
  vtepMAC: string;
  counters: Record<CounterName, number>;
  workers: number;
  pods: number;
  nodes: number;
  policies: number;
  conntrackEntries: number;
  translatedFlows: number;
  revision: number;
  perWorker?: Record<CounterName, number>[]; // each worker's counters, worker 0 first
  process?: ProcessSample[]; // the agent process's own figures (process-metrics.ts)
}

// Per-worker time, shown per worker (is one saturated?), not summed.
const PER_WORKER = new Set<CounterName>(['busy_us', 'spin_us']);

interface Family { name: string; help: string; type: 'counter' | 'gauge'; samples: [labels: string, value: number][] }

const esc = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

/** Which family a counter belongs to, and its label there. */
function familyOf(c: CounterName): { family: string; label?: string } {
  if (c === 'rx_errors' || c === 'tx_errors') return { family: c === 'rx_errors' ? 'twill_receive_errors_total' : 'twill_send_errors_total' };
  if (c.startsWith('rx_') && !c.endsWith('_gso')) return { family: 'twill_received_packets_total', label: `from="${c.slice(3)}"` };
  if (c.startsWith('tx_') && c !== 'tx_segments' && !c.endsWith('_gso')) return { family: 'twill_sent_packets_total', label: `to="${c.slice(3)}"` };
  if (c.startsWith('drop_')) return { family: 'twill_dropped_packets_total', label: `reason="${c.slice(5)}"` };
  return { family: `twill_${c}_total` };
}

const HELP: Record<string, string> = {
  twill_received_packets_total: 'Packets (or super-packets) the engine received, by where from.',
  twill_sent_packets_total: 'Packets (or super-packets) the engine sent, by where to.',
  twill_dropped_packets_total: 'Packets the engine dropped, by reason.',
  twill_receive_errors_total: 'Receive calls that failed.',
  twill_send_errors_total: 'Packets a send call could not take.',
};

export function renderMetrics(m: MetricsSnapshot): string {
  const families = new Map<string, Family>();
  for (const c of COUNTER_NAMES) {
    if (PER_WORKER.has(c)) continue;
    const { family, label } = familyOf(c);
    let f = families.get(family);
    if (!f) families.set(family, (f = { name: family, help: HELP[family] ?? `Engine counter ${c}.`, type: 'counter', samples: [] }));
    f.samples.push([label ?? '', m.counters[c]]);
  }
  const gauge = (name: string, help: string, value: number, labels = '') => families.set(name, { name, help, type: 'gauge', samples: [[labels, value]] });
  gauge('twill_info', 'This node as the agent runs it (value 1).', 1, `node="${esc(m.node)}",pod_cidr="${esc(m.podCIDR)}",vtep_mac="${esc(m.vtepMAC)}"`);
  gauge('twill_engine_workers', 'Engine worker threads.', m.workers);
  gauge('twill_pods', 'Pods registered on this node by the CNI plugin.', m.pods);
  gauge('twill_cluster_nodes', 'Nodes in the overlay, this one included.', m.nodes);
  gauge('twill_network_policies', 'NetworkPolicies in the cluster view.', m.policies);
  gauge('twill_conntrack_entries', 'Tracked connections (expired ones until the next sweep).', m.conntrackEntries);
  gauge('twill_translated_flows', 'Flows the node\'s stack translated (Services), tracked so their replies pass it again.', m.translatedFlows);
  gauge('twill_cluster_revision', 'Revision of the cluster view the engine enforces.', m.revision);
  if (m.perWorker) {
    const per = (name: string, help: string, value: (w: Record<CounterName, number>) => number) =>
      families.set(name, { name, help, type: 'counter', samples: m.perWorker!.map((w, k) => [`worker="${k}"`, value(w)]) });
    per('twill_worker_busy_seconds_total', 'Time each worker spent moving batches, in seconds: near 1 s per second is a saturated worker.', (w) => w.busy_us / 1e6);
    per('twill_worker_spin_seconds_total', 'Time each worker spent busy-polling for more traffic, in seconds (CPU the latency setting costs).', (w) => w.spin_us / 1e6);
    per('twill_worker_batches_total', 'Batches each worker moved.', (w) => w.batches);
    per('twill_worker_received_packets_total', 'Packets each worker received, from pods, the host and the overlay.', (w) => w.rx_pod + w.rx_tun + w.rx_vxlan);
  }
  for (const f of m.process ?? []) families.set(f.name, f);
  const out: string[] = [];
  for (const f of families.values()) {
    out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
    for (const [labels, v] of f.samples) out.push(`${f.name}${labels ? `{${labels}}` : ''} ${v}`);
  }
  return out.join('\n') + '\n';
}

/**
 * Bounds on the HTTP server, which anything that reaches the node's address
 * can connect to (pods included): a few connections, each for a few seconds.
 * A scrape is one short request; Prometheus reconnects after keepAliveMs.
 */
export const METRICS_LIMITS = {
  maxConnections: 64, // more are closed as soon as they are accepted
  perSource: 16, // from one remote address, so one pod (or node) cannot take them all
  headersMs: 5000, // a request's headers must arrive within this of its start (slow senders)
  requestMs: 10_000, // the whole request
  idleMs: 5000, // no bytes either way: closed (a reader that stalls the response too)
  keepAliveMs: 5000, // between requests on one connection
  checkMs: 1000, // how often the headers and request deadlines are looked at
};
export type MetricsLimits = typeof METRICS_LIMITS;

/** What the probes ask: live (the agent works: answering, its workers running) and ready (it forwards for this node). */
export interface Health { live: boolean; ready: boolean; why?: string }

/**
 * Serves GET /metrics on `address` ("host:port", port 0: any free one), and the
 * kubelet's probes at /healthz (liveness) and /readyz (readiness): 200 "ok", or
 * 503 with the reason. Anything else is 404.
 */
export function serveMetrics(address: string, render: () => string, log: Logger, limits: MetricsLimits = METRICS_LIMITS, health?: () => Health): http.Server {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i).replace(/^\[|\]$/g, '') || '0.0.0.0', port = Number(address.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`metrics address "${address}": want host:port`);
  const server = http.createServer({
    headersTimeout: limits.headersMs, requestTimeout: limits.requestMs, keepAliveTimeout: limits.keepAliveMs,
    connectionsCheckingInterval: limits.checkMs,
  }, (req, res) => {
    const url = (req.url ?? '').split('?')[0];
    if (req.method === 'GET' && health && (url === '/healthz' || url === '/readyz')) {
      const h = health(), ok = url === '/healthz' ? h.live : h.ready;
      res.writeHead(ok ? 200 : 503, { 'Content-Type': 'text/plain; charset=utf-8' }).end(ok ? 'ok\n' : `${h.why ?? 'not ready'}\n`);
      return;
    }
    if (req.method !== 'GET' || url !== '/metrics') {
      res.writeHead(404).end(`not found: GET /metrics${health ? ', /healthz or /readyz' : ''}\n`);
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' }).end(render());
  });
  server.maxConnections = limits.maxConnections;
  server.timeout = limits.idleMs; // with no 'timeout' listener, an idle socket is destroyed
  const bySource = new Map<string, number>();
  server.on('connection', (sock) => {
    const from = sock.remoteAddress ?? '';
    const n = (bySource.get(from) ?? 0) + 1;
    if (n > limits.perSource) { sock.destroy(); return; }
    bySource.set(from, n);
    sock.once('close', () => { const k = (bySource.get(from) ?? 1) - 1; if (k > 0) bySource.set(from, k); else bySource.delete(from); });
  });
  server.on('error', (e) => log.error({ err: e, address }, 'metrics server failed'));
  server.listen(port, host, () => log.info({ address }, 'metrics served at /metrics'));
  return server;
}
