// The micro benchmarks run (quick mode) and report every figure as a finite
// positive number (heap growth may be 0). No timing thresholds: the machine is shared.
// (Under vitest's module transform the figures are far lower than from the compiled CLI:
// imported bindings become getters. Only the shape of the result is checked here.)
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { runMicro } from '../../bench/micro.js';

const KEYS = [
  'lpm4_lookups_per_s', 'lpm6_lookups_per_s', 'vxlan_encap_decap_pps', 'conntrack_ops_per_s',
  'checksum_gbytes_per_s', 'lpm4_bytes_per_100k_prefixes', 'heap_bytes_per_packet',
];

describe('bench micro', () => {
  it('runMicro({json, quick}) reports every figure', async () => {
    const r = await runMicro({ json: true, quick: true });
    expect(Object.keys(r).sort()).toEqual([...KEYS].sort());
    for (const k of KEYS) {
      expect(Number.isFinite(r[k]), k).toBe(true);
      if (k === 'heap_bytes_per_packet') expect(r[k], k).toBeGreaterThanOrEqual(0);
      else expect(r[k], k).toBeGreaterThan(0);
    }
  }, 120_000);
});

// `twill bench micro --json` prints exactly one JSON object on stdout (progress, if
// any, goes to stderr). Runs the compiled CLI: `npx tsc -p tsconfig.json` first.
describe('twill bench micro --json', () => {
  const cli = fileURLToPath(new URL('../../dist/cli/twill.js', import.meta.url));
  it.skipIf(!existsSync(cli))('prints one JSON object and nothing else on stdout', () => {
    const r = spawnSync(process.execPath, [cli, 'bench', 'micro', '--json', '--quick'], { encoding: 'utf8', timeout: 90_000 });
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1);
    const obj = JSON.parse(lines[0]) as Record<string, number>;
    expect(Object.keys(obj).sort()).toEqual([...KEYS].sort());
    console.log(`bench micro --json --quick (compiled): ${lines[0]}`);
  }, 120_000);

  it.skipIf(!existsSync(cli))('an unknown part exits 2 and names it', () => {
    const r = spawnSync(process.execPath, [cli, 'bench', 'macro'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('macro');
  });
});
