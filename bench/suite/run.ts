// The dataplane benchmark: twill, the kernel's VXLAN (as flannel sets it up)
// and wireguard-go, each in its own namespaces, measured one after the other
// in one run with the same tools. Every topology is torn down, also on failure
// or Ctrl-C.
import os from 'node:os';
import { execFileSync } from 'node:child_process';
import { twillPair } from '../peers/twill.js';
import { kernelVxlanPair } from '../peers/kernel-vxlan.js';
import { wireguardPair } from '../peers/wireguard-go.js';
import { SERVICE_IPERF_PORT, SERVICE_ECHO_PORT, type PeerTopology } from '../peers/topology.js';
import { tcpRrRtts, ensureEchoServer, udp64, machineBusySeconds, rssMb } from './measure.js';
import { tcpThroughput, pingRtts, percentile } from '../../lab/measure.js';
import { stopPid } from '../../lab/sh.js';

export const DATAPLANES = ['twill', 'kernel-vxlan', 'wireguard-go'] as const;
export type DataplaneName = (typeof DATAPLANES)[number];
// svc_*: node 1 pod to a ClusterIP whose one endpoint is the node 2 pod, through kube-proxy's rules; NaN for a dataplane without Services.
export const METRICS = ['tcp1_gbps', 'tcp4_gbps', 'same_node_tcp1_gbps', 'svc_tcp1_gbps', 'rtt_p50_us', 'rtt_p99_us', 'tcp_rr_p50_us', 'tcp_rr_p99_us', 'svc_tcp_rr_p50_us', 'svc_tcp_rr_p99_us', 'udp64_pps', 'udp64_loss', 'cpu_s_per_gb', 'rss_mb'] as const;
export type Metric = (typeof METRICS)[number];
export type Figures = Record<Metric, number>;

export interface SuiteOptions { quick: boolean; tiny?: boolean; dataplanes?: DataplaneName[]; progress: (msg: string) => void }
export interface RunRecord { dataplane: DataplaneName; run: number; figures: Figures }
export interface SuiteResult {
  env: Record<string, unknown>;
  settings: { runs: number; seconds: number; pings: number; rr: number };
  runs: RunRecord[];
  summary: Record<string, Figures>;
  spread: Record<string, Record<Metric, { median: number; min: number; max: number; ratio_to_kernel: number }>>;
}

const SETUP: Record<DataplaneName, () => Promise<PeerTopology>> = {
  twill: () => twillPair('bench'),
  'kernel-vxlan': () => kernelVxlanPair('twbk-'),
  'wireguard-go': () => wireguardPair('twbw-'),
};

let current: PeerTopology | undefined;
export async function abortCleanup(): Promise<void> { await current?.teardown(); current = undefined; }

async function measureOnce(topo: PeerTopology, seconds: number, pings: number, rr: number, say: (m: string) => void): Promise<Figures> {
  const [a, b, c] = topo.pods;
  say('TCP 1 stream');
  const busy0 = machineBusySeconds();
  const t1 = await tcpThroughput(b, a.netns, seconds, 1);
  const cpu = (machineBusySeconds() - busy0) / (t1.bytes / 1e9);
  const rss = rssMb(topo.pids);
  say('TCP 4 streams');
  const t4 = await tcpThroughput(b, a.netns, seconds, 4);
  say('TCP same node');
  const same = await tcpThroughput(c, a.netns, seconds, 1);
  let svc = NaN;
  if (topo.service) {
    say('TCP 1 stream through a ClusterIP');
    svc = (await tcpThroughput({ netns: b.netns, ip: topo.service }, a.netns, seconds, 1, SERVICE_IPERF_PORT)).gbps;
  }
  say('ping');
  const rtt = await pingRtts(a.netns, b.ip, pings);
  say('TCP request/response');
  const rrs = await tcpRrRtts(a.netns, b.ip, rr);
  let svcRrs: number[] = [];
  if (topo.service) {
    say('TCP request/response through a ClusterIP');
    svcRrs = await tcpRrRtts(a.netns, topo.service, rr, SERVICE_ECHO_PORT);
  }
  say('64-byte UDP');
  const u = await udp64(a, b, seconds);
  return {
    tcp1_gbps: t1.gbps, tcp4_gbps: t4.gbps, same_node_tcp1_gbps: same.gbps, svc_tcp1_gbps: svc,
    rtt_p50_us: percentile(rtt, 50), rtt_p99_us: percentile(rtt, 99),
    tcp_rr_p50_us: percentile(rrs, 50), tcp_rr_p99_us: percentile(rrs, 99),
    svc_tcp_rr_p50_us: percentile(svcRrs, 50), svc_tcp_rr_p99_us: percentile(svcRrs, 99),
    udp64_pps: u.pps, udp64_loss: u.loss, cpu_s_per_gb: cpu, rss_mb: rss,
  };
}

export async function runSuite(o: SuiteOptions): Promise<SuiteResult> {
  // tiny: the smallest end-to-end case, for the test that keeps the suite from rotting.
  const settings = o.tiny ? { runs: 1, seconds: 1, pings: 20, rr: 50 } : o.quick ? { runs: 1, seconds: 2, pings: 200, rr: 300 } : { runs: 3, seconds: 5, pings: 500, rr: 2000 };
  const runs: RunRecord[] = [];
  for (const d of o.dataplanes ?? DATAPLANES) {
    o.progress(`${d}: setting up`);
    const topo = await SETUP[d]();
    current = topo;
    let echo = 0;
    try {
      echo = await ensureEchoServer(topo.pods[1].netns, topo.pods[1].ip);
      await pingRtts(topo.pods[0].netns, topo.pods[1].ip, 3); // warm neighbor caches
      for (let r = 1; r <= settings.runs; r++) {
        const figures = await measureOnce(topo, settings.seconds, settings.pings, settings.rr, (m) => o.progress(`${d}: run ${r}/${settings.runs}: ${m}`));
        runs.push({ dataplane: d, run: r, figures });
      }
    } finally {
      if (echo) await stopPid(echo);
      await topo.teardown();
      current = undefined;
    }
  }
  return { env: environment(), settings, runs, ...summarize(runs) };
}

function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function summarize(runs: RunRecord[]): Pick<SuiteResult, 'summary' | 'spread'> {
  const summary: Record<string, Figures> = {}, spread: SuiteResult['spread'] = {};
  const names = [...new Set(runs.map((r) => r.dataplane))];
  for (const d of names) {
    const mine = runs.filter((r) => r.dataplane === d);
    summary[d] = {} as Figures;
    spread[d] = {} as SuiteResult['spread'][string];
    for (const m of METRICS) {
      const xs = mine.map((r) => r.figures[m]);
      summary[d][m] = median(xs);
      spread[d][m] = { median: median(xs), min: Math.min(...xs), max: Math.max(...xs), ratio_to_kernel: NaN };
    }
  }
  for (const d of names) for (const m of METRICS) {
    const k = summary['kernel-vxlan']?.[m];
    spread[d][m].ratio_to_kernel = k ? summary[d][m] / k : NaN;
  }
  return { summary, spread };
}

function version(cmd: string, args: string[]): string {
  try { return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).split('\n')[0].trim(); } catch { return 'unknown'; }
}

function environment(): Record<string, unknown> {
  return {
    date: new Date().toISOString(), kernel: os.release(), cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model,
    memory_gb: Math.round(os.totalmem() / 2 ** 30), node: process.version,
    iperf3: version('iperf3', ['--version']), wireguard_go: version('wireguard-go', ['--version']), trafgen: version('trafgen', ['--version']),
  };
}
