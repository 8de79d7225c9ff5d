// `twill bench`: the benchmark suite. With no subcommand (or --quick) it runs
// the dataplane comparison (twill, kernel VXLAN, wireguard-go) and the micro
// benchmarks, and writes bench/results/; subcommands run one part.
import path from 'node:path';
import { repoRoot } from '../lib/paths.js';
import { bool, runCommand, type Command, type Opt } from './args.js';

const QUICK: Record<string, Opt> = { quick: { type: 'boolean', help: 'shorter runs (a smoke test, not figures to quote)' } };
const JSON_OUT: Record<string, Opt> = { json: { type: 'boolean', help: 'one JSON object on stdout (progress goes to stderr)' } };

export const BENCH: Command = {
  name: 'twill bench',
  summary: 'the benchmark suite: twill beside the kernel\'s VXLAN and wireguard-go, micro, CNI and policy benchmarks',
  about: 'With no command: the whole suite, the dataplanes side by side (twill, kernel VXLAN as flannel sets it up,\nwireguard-go) and the micro benchmarks; writes bench/results/.',
  options: { ...QUICK },
  commands: [
    { name: 'twill bench micro', summary: 'micro benchmarks on one core: LPM lookups, VXLAN encap/decap, conntrack, checksums', options: { ...JSON_OUT, ...QUICK } },
    { name: 'twill bench cni', summary: 'CNI ADD/DEL latency, process start included', options: { ...JSON_OUT, ...QUICK } },
    { name: 'twill bench policy', summary: 'compile 10k policies, apply-to-enforce, throughput with and without policies', options: { ...QUICK } },
  ],
};

export async function benchCommand(args: string[]): Promise<number> {
  return runCommand(BENCH, args, async (p) => {
    const quick = bool(p, 'quick'), json = bool(p, 'json');
    switch (p.path[0]) {
      case 'micro': {
        const { runMicro } = await import('../bench/micro.js');
        await runMicro({ json, quick });
        return 0;
      }
      case 'cni': {
        const { runCniBench } = await import('../bench/cni.js');
        await runCniBench({ json, quick });
        return 0;
      }
      case 'policy': {
        const { runPolicyLabBench } = await import('../bench/policy-bench.js');
        await runPolicyLabBench({ quick });
        return 0;
      }
      default:
        return suite(quick);
    }
  });
}

async function suite(quick: boolean): Promise<number> {
  const { runSuite, abortCleanup } = await import('../bench/suite/run.js');
  const { writeReport, markdown } = await import('../bench/suite/report.js');
  const { runMicro } = await import('../bench/micro.js');
  const t0 = Date.now();
  const say = (m: string) => process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${m}\n`);
  const onSig = () => { say('interrupted: tearing down'); void abortCleanup().finally(() => process.exit(130)); };
  process.once('SIGINT', onSig);
  process.once('SIGTERM', onSig);
  try {
    const r = await runSuite({ quick, progress: say });
    say('micro benchmarks');
    const micro = await runMicro({ json: false, quick: true });
    const out = writeReport({ ...r, micro } as typeof r, path.join(repoRoot(), 'bench', 'results'));
    process.stdout.write(`\n${markdown(r)}\n`);
    say(`done: ${out.json}, ${out.md}, ${out.charts.join(', ')}`);
    return 0;
  } finally {
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
  }
}
