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
import { tcpRrRtts, ensureEchoServer, udp64, machineBusySeconds, rssMb, twillWorkerSeconds, startBusyLoad, stopBusyLoad } from './measure.js';
import { tcpThroughput, pingRtts, percentile } from '../../lab/measure.js';
import { stopPid } from '../../lab/proc.js';

export const DATAPLANES = ['twill', 'kernel-vxlan', 'wireguard-go'] as const;
export type DataplaneName = (typeof DATAPLANES)[number];
// svc_*: node 1 pod to a ClusterIP whose one endpoint is the node 2 pod, through kube-proxy's rules; NaN for a dataplane without Services.
// *_cpu_cores: the whole machine's busy CPU during the ping or request/response run, in cores.
// spin_*: twill's workers' busy polling (twill_worker_spin_seconds_total), per GB of the 1-stream run or in cores during the ping and
// request/response runs: what the latency setting costs in CPU; NaN for the others.
// busy_*: the same measurements on a busy node, with one CPU-bound process per core running (twill and kernel VXLAN; NaN for the others).
// load_avg: the machine's 1-minute load average when the run began.
// tcp1_v6_gbps: the TCP 1-stream run over IPv6 (dual-stack, IPv6 over the IPv6 underlay); NaN for a dataplane without IPv6.
export const METRICS = ['tcp1_gbps', 'tcp1_v6_gbps', 'tcp4_gbps', 'same_node_tcp1_gbps', 'svc_tcp1_gbps', 'rtt_p50_us', 'rtt_p99_us', 'tcp_rr_p50_us', 'tcp_rr_p99_us', 'svc_tcp_rr_p50_us', 'svc_tcp_rr_p99_us', 'udp64_pps', 'udp64_loss', 'cpu_s_per_gb', 'rss_mb',
  'rtt_cpu_cores', 'tcp_rr_cpu_cores', 'spin_s_per_gb', 'spin_rtt_cores', 'spin_tcp_rr_cores',
  'busy_tcp1_gbps', 'busy_rtt_p50_us', 'busy_rtt_p99_us', 'busy_tcp_rr_p50_us', 'busy_tcp_rr_p99_us', 'load_avg'] as const;
export type Metric = (typeof METRICS)[number];
export type Figures = Record<Metric, number>;

// busy: also measure on a busy node (default true).
export interface SuiteOptions { quick: boolean; tiny?: boolean; busy?: boolean; dataplanes?: DataplaneName[]; progress: (msg: string) => void }
export interface RunRecord { dataplane: DataplaneName; run: number; figures: Figures }
export interface SuiteResult {
  env: Record<string, unknown>;
  settings: { runs: number; seconds: number; pings: number; rr: number };
  runs: RunRecord[];
  summary: Record<string, Figures>;
  spread: Record<string, Record<Metric, { median: number; min: number; max: number; ratio_to_kernel: number }>>;
}

const TWILL_LAB = 'bench';
const SETUP: Record<DataplaneName, () => Promise<PeerTopology>> = {
  twill: () => twillPair(TWILL_LAB),
  'kernel-vxlan': () => kernelVxlanPair('twbk-'),
  'wireguard-go': () => wireguardPair('twbw-'),
};

// The dataplanes measured on a busy node too, and twill's workers' own time.
const BUSY_NODE: DataplaneName[] = ['twill', 'kernel-vxlan'];
const WORKERS: Partial<Record<DataplaneName, () => Promise<{ busy: number; spin: number }>>> = { twill: () => twillWorkerSeconds(TWILL_LAB) };

let current: PeerTopology | undefined;
const load: number[] = []; // the busy node's processes while they run
export async function abortCleanup(): Promise<void> { stopBusyLoad(load); await current?.teardown(); current = undefined; }

/** Runs fn and says what it cost: the machine's busy CPU in cores, and the workers' spin seconds (NaN without workers). */
async function costOf<T>(fn: () => Promise<T>, workers?: () => Promise<{ spin: number }>): Promise<{ value: T; cores: number; spin: number; seconds: number }> {
  const w0 = workers ? (await workers()).spin : NaN, c0 = machineBusySeconds(), t0 = performance.now();
  const value = await fn();
  const seconds = (performance.now() - t0) / 1000, cores = (machineBusySeconds() - c0) / seconds;
  const spin = workers ? (await workers()).spin - w0 : NaN;
  return { value, cores, spin, seconds };
}

const BUSY_FIGURES = { busy_tcp1_gbps: NaN, busy_rtt_p50_us: NaN, busy_rtt_p99_us: NaN, busy_tcp_rr_p50_us: NaN, busy_tcp_rr_p99_us: NaN };

/** The busy node: one CPU-bound process per core at normal priority, started and stopped here (by pid), while TCP 1 stream, ping and request/response run. */
async function measureBusy(topo: PeerTopology, seconds: number, pings: number, rr: number, say: (m: string) => void): Promise<typeof BUSY_FIGURES> {
  const [a, b] = topo.pods;
  load.push(...startBusyLoad(seconds + (pings + rr) * 0.05 + 120));
  try {
    await new Promise((res) => setTimeout(res, 500)); // let the scheduler spread them
    say(`busy node (${load.length} CPU-bound processes): TCP 1 stream`);
    const t1 = await tcpThroughput(b, a.netns, seconds, 1);
    say('busy node: ping');
    const rtt = await pingRtts(a.netns, b.ip, pings);
    say('busy node: TCP request/response');
    const rrs = await tcpRrRtts(a.netns, b.ip, rr);
    return {
      busy_tcp1_gbps: t1.gbps, busy_rtt_p50_us: percentile(rtt, 50), busy_rtt_p99_us: percentile(rtt, 99),
      busy_tcp_rr_p50_us: percentile(rrs, 50), busy_tcp_rr_p99_us: percentile(rrs, 99),
    };
  } finally {
    stopBusyLoad(load);
  }
}

async function measureOnce(topo: PeerTopology, seconds: number, pings: number, rr: number, say: (m: string) => void, workers?: () => Promise<{ spin: number }>, busy = false): Promise<Figures> {
  const [a, b, c] = topo.pods;
  const loadAvg = os.loadavg()[0];
  say('TCP 1 stream');
  const t1c = await costOf(() => tcpThroughput(b, a.netns, seconds, 1), workers);
  const t1 = t1c.value, cpu = (t1c.cores * t1c.seconds) / (t1.bytes / 1e9);
  const rss = rssMb(topo.pids);
  let v6 = NaN;
  if (a.ip6 && b.ip6) {
    say('TCP 1 stream over IPv6');
    v6 = (await tcpThroughput({ netns: b.netns, ip: b.ip6 }, a.netns, seconds, 1)).gbps;
  }
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
  const rttc = await costOf(() => pingRtts(a.netns, b.ip, pings), workers), rtt = rttc.value;
  say('TCP request/response');
  const rrc = await costOf(() => tcpRrRtts(a.netns, b.ip, rr), workers), rrs = rrc.value;
  let svcRrs: number[] = [];
  if (topo.service) {
    say('TCP request/response through a ClusterIP');
    svcRrs = await tcpRrRtts(a.netns, topo.service, rr, SERVICE_ECHO_PORT);
  }
  say('64-byte UDP');
  const u = await udp64(a, b, seconds);
  return {
    tcp1_gbps: t1.gbps, tcp1_v6_gbps: v6, tcp4_gbps: t4.gbps, same_node_tcp1_gbps: same.gbps, svc_tcp1_gbps: svc,
    rtt_p50_us: percentile(rtt, 50), rtt_p99_us: percentile(rtt, 99),
    tcp_rr_p50_us: percentile(rrs, 50), tcp_rr_p99_us: percentile(rrs, 99),
    svc_tcp_rr_p50_us: percentile(svcRrs, 50), svc_tcp_rr_p99_us: percentile(svcRrs, 99),
    udp64_pps: u.pps, udp64_loss: u.loss, cpu_s_per_gb: cpu, rss_mb: rss,
    rtt_cpu_cores: rttc.cores, tcp_rr_cpu_cores: rrc.cores,
    spin_s_per_gb: t1c.spin / (t1.bytes / 1e9), spin_rtt_cores: rttc.spin / rttc.seconds, spin_tcp_rr_cores: rrc.spin / rrc.seconds,
    ...(busy ? await measureBusy(topo, seconds, pings, rr, say) : BUSY_FIGURES),
    load_avg: loadAvg,
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
        const figures = await measureOnce(topo, settings.seconds, settings.pings, settings.rr, (m) => o.progress(`${d}: run ${r}/${settings.runs}: ${m}`),
          WORKERS[d], (o.busy ?? true) && BUSY_NODE.includes(d));
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
