// The NetworkPolicy bench (bench/policy-bench.ts) in quick mode, so it cannot rot: every
// figure comes out finite and positive. No timing is asserted (the machine is shared).
import { expect, it } from 'vitest';
import { runPolicyLabBench } from '../../bench/policy-bench.js';
import { ensureBuilt } from './helpers.js';

it('runPolicyLabBench({quick: true}) gives finite, positive figures', async () => {
  ensureBuilt();
  const r = await runPolicyLabBench({ quick: true });
  expect(Object.keys(r).sort()).toEqual(['apply_to_enforce_ms', 'compile_ms_10k_policies', 'recompile_one_ms', 'tcp_with_policies_gbps', 'tcp_without_policies_gbps', 'throughput_ratio']);
  for (const [k, v] of Object.entries(r)) {
    expect(Number.isFinite(v), k).toBe(true);
    expect(v, k).toBeGreaterThan(0);
  }
}, 180_000);
