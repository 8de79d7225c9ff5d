// The benchmark suite's smallest case, end to end: all three dataplanes set
// up, measured and torn down, and the report written. Figures are checked for
// being measured (finite, positive), never against speed targets; the
// ClusterIP figures for the two dataplanes with Services, NaN for wireguard-go.
import { afterAll, expect, test } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runSuite, DATAPLANES, abortCleanup } from '../../bench/suite/run.js';
import { writeReport } from '../../bench/suite/report.js';
import { netnsList } from '../../lab/sh.js';

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
  // Pod to ClusterIP, through kube-proxy's rules, where the dataplane has Services.
  for (const d of ['twill', 'kernel-vxlan'] as const) {
    for (const k of ['svc_tcp1_gbps', 'svc_tcp_rr_p50_us', 'svc_tcp_rr_p99_us'] as const) {
      expect(Number.isFinite(r.summary[d][k]) && r.summary[d][k] > 0, `${d} ${k} = ${r.summary[d][k]}`).toBe(true);
    }
  }
  expect(r.summary['wireguard-go'].svc_tcp1_gbps).toBeNaN();
  expect(r.summary.twill.rss_mb).toBeGreaterThan(0);
  const json = JSON.parse(readFileSync(out.json, 'utf8')) as { env: { kernel: string }; runs: unknown[] };
  expect(json.env.kernel).toBe(os.release());
  expect(json.runs.length).toBe(3);
  expect(readFileSync(out.md, 'utf8')).toMatch(/\| TCP 1 stream, cross-node \(Gbps\) \|/);
  expect(readFileSync(out.md, 'utf8')).toMatch(/\| TCP 1 stream, cross-node, to a ClusterIP \(Gbps\) \| [\d.]+ \(×[\d.]+\) \| [\d.]+ \| — \|/);
  for (const c of out.charts) expect(readFileSync(c, 'utf8')).toMatch(/^<svg/);
  // Everything was torn down.
  expect(netnsList().filter((n) => n.startsWith('twbench-') || n.startsWith('twbk-') || n.startsWith('twbw-'))).toEqual([]);
  expect(existsSync('/run/twill/labs/bench')).toBe(false);
}, 240_000);
