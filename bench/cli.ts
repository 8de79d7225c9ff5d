// `twill bench`: the benchmark suite. With no subcommand (or --quick) it runs
// the dataplane comparison (twill, kernel VXLAN, wireguard-go) and the micro
// benchmarks, and writes bench/results/; subcommands run one part.
import path from 'node:path';
import { repoRoot } from '../dataplane/engine/paths.js';

const USAGE = `usage:
  twill bench [--quick]          the whole suite: dataplanes side by side + micro; writes bench/results/
  twill bench micro [--json] [--quick]
  twill bench cni [--json] [--quick]      CNI ADD/DEL latency, process start included
  twill bench policy [--quick]            compile 10k policies, apply-to-enforce, throughput with/without policies
`;

export async function benchCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === '-h' || sub === '--help') { process.stderr.write(USAGE); return 2; }
  if (sub === 'micro') {
    const unknown = rest.filter((a) => a !== '--json' && a !== '--quick');
    if (unknown.length) {
      process.stderr.write(`twill bench micro: unknown option ${unknown[0]}\n`);
      return 2;
    }
    const { runMicro } = await import('./micro.js');
    await runMicro({ json: rest.includes('--json'), quick: rest.includes('--quick') });
    return 0;
  }
  if (sub === 'cni') {
    const { runCniBench } = await import('./cni.js');
    await runCniBench({ json: rest.includes('--json'), quick: rest.includes('--quick') });
    return 0;
  }
  if (sub === 'policy') {
    const { runPolicyLabBench } = await import('./policy-bench.js');
    await runPolicyLabBench({ quick: rest.includes('--quick') });
    return 0;
  }
  if (sub === undefined || sub === '--quick') return suite(args.includes('--quick'));
  process.stderr.write(`twill bench: unknown part "${sub}"\n${USAGE}`);
  return 2;
}

async function suite(quick: boolean): Promise<number> {
  const { runSuite, abortCleanup } = await import('./suite/run.js');
  const { writeReport, markdown } = await import('./suite/report.js');
  const { runMicro } = await import('./micro.js');
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
