// The benchmark suite's smallest case, end to end: all three dataplanes set
// up, measured and torn down, and the report written. Figures are checked for
// being measured (finite, positive), never against speed targets; the
// ClusterIP and busy-node figures for twill and kernel VXLAN, NaN for
// wireguard-go; the busy-polling cost for twill only.
import { afterAll, expect, test } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { runSuite, DATAPLANES, abortCleanup } from '../../bench/suite/run.js';
import { writeReport } from '../../bench/suite/report.js';
import { netnsList } from '../../lib/sh.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'twill-bench-'));
afterAll(async () => { await abortCleanup(); rmSync(dir, { recursive: true, force: true }); });

test('the tiny suite measures twill, kernel VXLAN and wireguard-go and writes JSON, markdown and SVG', async () => {
  const r = await runSuite({ quick: true, tiny: true, progress: () => undefined });
  const out = writeReport(r, dir);
  for (const d of DATAPLANES) {
    const f = r.summary[d];
    expect(f, d).toBeDefined();
    for (const k of ['tcp1_gbps', 'tcp4_gbps', 'rtt_p50_us', 'rtt_p99_us', 'udp64_pps', 'cpu_s_per_gb'] as const) {
      expect(Number.isFinite(f[k]) && f[k] > 0, `${d} ${k} = ${f[k]}`).toBe(true);
    }
  }
  // Pod to ClusterIP, through kube-proxy's rules, where the dataplane has Services; IPv6 where it is dual-stack.
  for (const d of ['twill', 'kernel-vxlan'] as const) {
    for (const k of ['tcp1_v6_gbps', 'svc_tcp1_gbps', 'svc_tcp_rr_p50_us', 'svc_tcp_rr_p99_us'] as const) {
      expect(Number.isFinite(r.summary[d][k]) && r.summary[d][k] > 0, `${d} ${k} = ${r.summary[d][k]}`).toBe(true);
    }
  }
  expect(r.summary['wireguard-go'].svc_tcp1_gbps).toBeNaN();
  expect(r.summary['wireguard-go'].tcp1_v6_gbps).toBeNaN();
  // The busy node (one CPU-bound process per core, started and stopped by the suite), for twill and kernel VXLAN.
  for (const d of ['twill', 'kernel-vxlan'] as const) {
    for (const k of ['busy_tcp1_gbps', 'busy_rtt_p50_us', 'busy_rtt_p99_us', 'busy_tcp_rr_p50_us', 'busy_tcp_rr_p99_us', 'rtt_cpu_cores', 'tcp_rr_cpu_cores'] as const) {
      expect(Number.isFinite(r.summary[d][k]) && r.summary[d][k] > 0, `${d} ${k} = ${r.summary[d][k]}`).toBe(true);
    }
  }
  expect(r.summary['wireguard-go'].busy_tcp1_gbps).toBeNaN();
  // What twill's busy polling cost, from its workers' metrics; nothing to say for the others.
  for (const k of ['spin_s_per_gb', 'spin_rtt_cores', 'spin_tcp_rr_cores'] as const) {
    expect(r.summary.twill[k], k).toBeGreaterThanOrEqual(0);
    expect(r.summary['kernel-vxlan'][k], k).toBeNaN();
  }
  expect(r.summary.twill.load_avg).toBeGreaterThanOrEqual(0);
  expect(r.summary.twill.rss_mb).toBeGreaterThan(0);
  const json = JSON.parse(readFileSync(out.json, 'utf8')) as { env: { kernel: string }; runs: unknown[] };
  expect(json.env.kernel).toBe(os.release());
  expect(json.runs.length).toBe(3);
  expect(readFileSync(out.md, 'utf8')).toMatch(/\| TCP 1 stream, cross-node \(Gbps\) \|/);
  expect(readFileSync(out.md, 'utf8')).toMatch(/\| TCP 1 stream, cross-node, to a ClusterIP \(Gbps\) \| [\d.]+ \(×[\d.]+\) \| [\d.]+ \| — \|/);
  expect(readFileSync(out.md, 'utf8')).toMatch(/\| busy node: ping RTT p50 \(µs\) \| \d+ \(×[\d.]+\) \| \d+ \| — \|/);
  // The busy node's processes (this process's children) are gone.
  expect(spawnSync('pgrep', ['-P', String(process.pid), '-f', 'process.ppid'], { encoding: 'utf8' }).stdout.trim()).toBe('');
  for (const c of out.charts) expect(readFileSync(c, 'utf8')).toMatch(/^<svg/);
  // Everything was torn down.
  expect(netnsList().filter((n) => n.startsWith('twbench-') || n.startsWith('twbk-') || n.startsWith('twbw-'))).toEqual([]);
  expect(existsSync('/run/twill/labs/bench')).toBe(false);
}, 240_000);
