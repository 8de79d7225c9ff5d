// The benchmark's outputs: the JSON with every run, a markdown report, and two
// SVG bar charts (throughput, latency) a person can look at.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { SuiteResult, Metric } from './run.js';

const COLORS: Record<string, string> = { twill: '#2b7bb9', 'kernel-vxlan': '#7a7a7a', 'wireguard-go': '#d17a22' };
const ROWS: [Metric, string, (v: number) => string][] = [
  ['tcp1_gbps', 'TCP 1 stream, cross-node (Gbps)', (v) => v.toFixed(2)],
  ['tcp1_v6_gbps', 'TCP 1 stream, cross-node, IPv6 (Gbps)', (v) => v.toFixed(2)],
  ['tcp4_gbps', 'TCP 4 streams, cross-node (Gbps)', (v) => v.toFixed(2)],
  ['same_node_tcp1_gbps', 'TCP 1 stream, same node (Gbps)', (v) => v.toFixed(2)],
  ['svc_tcp1_gbps', 'TCP 1 stream, cross-node, to a ClusterIP (Gbps)', (v) => v.toFixed(2)],
  ['rtt_p50_us', 'ping RTT p50 (µs)', (v) => v.toFixed(0)],
  ['rtt_p99_us', 'ping RTT p99 (µs)', (v) => v.toFixed(0)],
  ['tcp_rr_p50_us', 'TCP request/response p50 (µs)', (v) => v.toFixed(0)],
  ['tcp_rr_p99_us', 'TCP request/response p99 (µs)', (v) => v.toFixed(0)],
  ['svc_tcp_rr_p50_us', 'TCP request/response to a ClusterIP p50 (µs)', (v) => v.toFixed(0)],
  ['svc_tcp_rr_p99_us', 'TCP request/response to a ClusterIP p99 (µs)', (v) => v.toFixed(0)],
  ['udp64_pps', '64 B UDP delivered (kpps)', (v) => (v / 1000).toFixed(0)],
  ['udp64_loss', '64 B UDP loss', (v) => `${(v * 100).toFixed(1)}%`],
  ['cpu_s_per_gb', 'machine CPU s per GB (TCP 1 stream)', (v) => v.toFixed(2)],
  ['spin_s_per_gb', '… of which busy polling (s per GB)', (v) => v.toFixed(2)],
  ['rtt_cpu_cores', 'machine CPU during the ping run (cores)', (v) => v.toFixed(2)],
  ['spin_rtt_cores', '… of which busy polling (cores)', (v) => v.toFixed(2)],
  ['tcp_rr_cpu_cores', 'machine CPU during request/response (cores)', (v) => v.toFixed(2)],
  ['spin_tcp_rr_cores', '… of which busy polling (cores)', (v) => v.toFixed(2)],
  ['rss_mb', 'dataplane memory (MB RSS)', (v) => (v > 0 ? v.toFixed(0) : 'in kernel')],
  ['busy_tcp1_gbps', 'busy node: TCP 1 stream, cross-node (Gbps)', (v) => v.toFixed(2)],
  ['busy_rtt_p50_us', 'busy node: ping RTT p50 (µs)', (v) => v.toFixed(0)],
  ['busy_rtt_p99_us', 'busy node: ping RTT p99 (µs)', (v) => v.toFixed(0)],
  ['busy_tcp_rr_p50_us', 'busy node: TCP request/response p50 (µs)', (v) => v.toFixed(0)],
  ['busy_tcp_rr_p99_us', 'busy node: TCP request/response p99 (µs)', (v) => v.toFixed(0)],
  ['load_avg', 'load average when the run began', (v) => v.toFixed(1)],
];
// Rows whose ratio to the kernel says nothing.
const NO_RATIO = new Set<Metric>(['rss_mb', 'udp64_loss', 'load_avg', 'spin_s_per_gb', 'spin_rtt_cores', 'spin_tcp_rr_cores']);

export function markdown(r: SuiteResult): string {
  const names = Object.keys(r.summary);
  const lines = [
    `# twill benchmark — ${r.env.date as string}`,
    '',
    `Machine: ${r.env.cpus as number} CPUs (${r.env.cpu_model as string}), ${r.env.memory_gb as number} GB, kernel ${r.env.kernel as string}, Node ${r.env.node as string}.`,
    `Each figure is the median of ${r.settings.runs} run(s) of ${r.settings.seconds} s (min–max in brackets when there are several); the ratio is to kernel VXLAN measured in the same run.`,
    '',
    `| metric | ${names.join(' | ')} |`,
    `|---|${names.map(() => '---').join('|')}|`,
  ];
  for (const [m, label, fmt] of ROWS) {
    const cells = names.map((d) => {
      const s = r.spread[d][m];
      if (!Number.isFinite(s.median)) return '—';
      let cell = fmt(s.median);
      if (r.settings.runs > 1 && s.min !== s.max) cell += ` [${fmt(s.min)}–${fmt(s.max)}]`;
      if (d !== 'kernel-vxlan' && Number.isFinite(s.ratio_to_kernel) && !NO_RATIO.has(m)) cell += ` (×${s.ratio_to_kernel.toFixed(2)})`;
      return cell;
    });
    lines.push(`| ${label} | ${cells.join(' | ')} |`);
  }
  lines.push('', 'CPU is the whole machine\'s busy time during the TCP 1-stream run (iperf3 and the kernel included) divided by the data moved: comparable across dataplanes, not a per-process figure. The CPU during the ping and request/response runs is the machine\'s too, in cores; "busy polling" is the part twill\'s workers spent spinning for the next packet (twill_worker_spin_seconds_total): what its latency setting costs. The busy node rows repeat TCP 1 stream, ping and request/response with one CPU-bound process per core running at normal priority (started and stopped by the suite), for twill and kernel VXLAN. The load average is the machine\'s when each run began (the busy node\'s processes come on top of it). The ClusterIP rows go from the node 1 pod to a Service whose one endpoint is the node 2 pod, through kube-proxy\'s rules (iptables mode) in the nodes\' stacks; wireguard-go has no Services (—). The topologies are namespaces joined by veth, which carry 64 KB GSO packets unsplit: compare dataplanes within one run; these are not NIC figures.', '');
  lines.push('![throughput](throughput.svg)', '', '![latency](latency.svg)', '');
  return lines.join('\n');
}

function num(v: number): string { return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toPrecision(3); }

function barChart(title: string, unit: string, groups: { label: string; values: Record<string, number> }[]): string {
  const names = Object.keys(COLORS).filter((n) => groups.some((g) => n in g.values));
  const W = Math.max(640, 70 + 110 * groups.length), H = 320, left = 60, right = 10, bottom = 60, top = 40, barW = 26;
  const max = Math.max(1e-9, ...groups.flatMap((g) => Object.values(g.values).filter(Number.isFinite)));
  const scale = (v: number) => ((H - top - bottom) * v) / max;
  const groupW = (W - left - right) / groups.length; // each group centred in an equal share of the width
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`, `<text x="${W / 2}" y="20" text-anchor="middle" font-size="15">${title}</text>`];
  for (let t = 0; t <= 4; t++) {
    const v = (max * t) / 4, y = H - bottom - scale(v);
    out.push(`<line x1="${left}" y1="${y}" x2="${W - right}" y2="${y}" stroke="#ddd"/>`, `<text x="${left - 6}" y="${y + 4}" text-anchor="end">${num(v)}</text>`);
  }
  out.push(`<line x1="${left}" y1="${H - bottom}" x2="${W - right}" y2="${H - bottom}" stroke="black"/>`);
  out.push(`<text x="14" y="${H / 2}" transform="rotate(-90 14 ${H / 2})" text-anchor="middle">${unit}</text>`);
  groups.forEach((g, gi) => {
    const centre = left + groupW * (gi + 0.5);
    let x = centre - (names.length * barW) / 2;
    for (const n of names) {
      const v = g.values[n];
      if (Number.isFinite(v)) {
        const h = scale(v);
        out.push(`<rect x="${x}" y="${H - bottom - h}" width="${barW}" height="${h}" fill="${COLORS[n]}"><title>${n}: ${num(v)} ${unit}</title></rect>`);
        out.push(`<text x="${x + barW / 2}" y="${H - bottom - h - 4}" text-anchor="middle" font-size="10">${num(v)}</text>`);
      }
      x += barW;
    }
    out.push(`<text x="${centre}" y="${H - bottom + 16}" text-anchor="middle">${g.label}</text>`);
  });
  names.forEach((n, i) => out.push(`<rect x="${left + i * 150}" y="${H - 22}" width="12" height="12" fill="${COLORS[n]}"/>`, `<text x="${left + i * 150 + 16}" y="${H - 12}">${n}</text>`));
  out.push('</svg>');
  return out.join('\n');
}

export function writeReport(r: SuiteResult, dir: string): { json: string; md: string; charts: string[] } {
  mkdirSync(dir, { recursive: true });
  const pick = (m: Metric) => Object.fromEntries(Object.entries(r.summary).map(([d, f]) => [d, f[m]]));
  const json = path.join(dir, 'latest.json'), md = path.join(dir, 'latest.md');
  const tp = path.join(dir, 'throughput.svg'), lat = path.join(dir, 'latency.svg');
  writeFileSync(json, JSON.stringify(r, null, 1));
  writeFileSync(md, markdown(r));
  writeFileSync(tp, barChart('TCP throughput, pod to pod and pod to ClusterIP', 'Gbps', [
    { label: '1 stream cross-node', values: pick('tcp1_gbps') }, { label: '1 stream cross-node IPv6', values: pick('tcp1_v6_gbps') }, { label: '4 streams cross-node', values: pick('tcp4_gbps') }, { label: '1 stream same node', values: pick('same_node_tcp1_gbps') },
    { label: '1 stream ClusterIP', values: pick('svc_tcp1_gbps') }, { label: '1 stream, busy node', values: pick('busy_tcp1_gbps') }]));
  writeFileSync(lat, barChart('Latency across nodes, pod to pod and pod to ClusterIP', 'µs', [
    { label: 'ping p50', values: pick('rtt_p50_us') }, { label: 'ping p99', values: pick('rtt_p99_us') },
    { label: 'TCP RR p50', values: pick('tcp_rr_p50_us') }, { label: 'TCP RR p99', values: pick('tcp_rr_p99_us') },
    { label: 'ClusterIP RR p50', values: pick('svc_tcp_rr_p50_us') }, { label: 'ClusterIP RR p99', values: pick('svc_tcp_rr_p99_us') },
    { label: 'busy: ping p50', values: pick('busy_rtt_p50_us') }, { label: 'busy: ping p99', values: pick('busy_rtt_p99_us') }]));
  return { json, md, charts: [tp, lat] };
}
