#!/usr/bin/env node
// twill: the command line. `twill agent` runs a node's agent; `twill lab ...`
// runs the lab; `twill bench` the benchmarks.
import { runAgent, loadAgentConfig } from '../dataplane/agent/main.js';
import { labCommand } from './lab-command.js';

function usage(): never {
  process.stderr.write(`usage:
  twill lab up [--nodes N] [--pods-per-node M] [--workers W] [--busy-poll-us U] [--pin-workers] [--etcd] [-f pods.yaml...]
  twill lab status [--json]
  twill lab apply -f policy.yaml | twill lab delete -f policy.yaml
  twill lab exec <pod> -- <command...>
  twill lab metrics <node>    (Prometheus text; also served at http://<node's underlay IP>:9871/metrics)
  twill lab down
  twill lab demo              (what \`npm run lab\` runs: up, probe, iperf3, leave it up)
  twill agent --config FILE
`);
  process.exit(2);
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'agent': {
      const i = rest.indexOf('--config');
      if (i < 0 || !rest[i + 1]) usage();
      await runAgent(loadAgentConfig(rest[i + 1]));
      return;
    }
    case 'lab':
      process.exitCode = await labCommand(rest);
      return;
    case '_workload': { // inside a lab pod's netns
      const { startWorkload, parseWorkloadArgs, READY_LINE } = await import('../lab/workload.js');
      await startWorkload(parseWorkloadArgs(rest));
      process.stdout.write(`${READY_LINE}\n`); // the lab waits for this before it calls the pod up
      process.stdout.on('error', () => undefined); // whoever waited may have closed the pipe
      return;
    }
    case '_probe': { // inside a lab pod's netns: _probe ip...
      const { probeAll } = await import('../lab/probe.js');
      process.stdout.write(JSON.stringify(await probeAll(rest)) + '\n');
      return;
    }
    case 'bench': { const { benchCommand } = await import('../bench/cli.js'); process.exitCode = await benchCommand(rest); return; }
    case 'policy': { const { policyCommand } = await import('../policy/cli.js'); process.exitCode = await policyCommand(rest); return; }
    default:
      usage();
  }
}

main(process.argv.slice(2)).catch((e: unknown) => {
  process.stderr.write(`twill: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
