#!/usr/bin/env node
// twill: the command line. `twill agent` runs a node's agent; `twill lab ...` the
// lab; `twill policy ...` NetworkPolicy over manifests; `twill bench` the benchmarks.
// Each command's options and usage text are described once (cli/args.ts).
import { runCommand, closest, usage, usageErrorText, UsageError, str, type Command } from './args.js';
import { VERSION } from '../cni/spec.js';
import type { AgentConfig } from '../agent/main.js';

const AGENT: Command = {
  name: 'twill agent',
  summary: 'a node\'s agent: learns the cluster, runs the engine, serves the CNI plugin (the DaemonSet runs it)',
  about: 'Runs a node\'s agent: it learns the cluster from its source (a datastore directory, the Kubernetes API or etcd),\nkeeps the node\'s TUN device, runs the engine and serves twill-cni on a unix socket.\nLog level: TWILL_LOG_LEVEL, else the config\'s "logLevel", else info. Logs are JSON lines, readable lines on a terminal\n(TWILL_LOG_FORMAT=json|pretty to choose).',
  options: { config: { type: 'string', value: 'FILE', required: true, help: 'the agent config (JSON; see deploy/twill.yaml)' } },
};

// The top level: only the commands' names and summaries. Each command module holds
// its own description and is loaded when it runs.
const ROOT: Command = {
  name: 'twill',
  summary: 'twill: a Kubernetes pod network whose dataplane runs in userspace',
  about: 'twill: a Kubernetes pod network whose dataplane runs in userspace (flannel-compatible VXLAN, NetworkPolicy).',
  synopsis: ['twill <command> [options]', 'twill --version'],
  options: { version: { type: 'boolean', help: 'print twill\'s version' } },
  commands: [
    { name: 'twill lab', summary: 'a lab on this machine: nodes and pods as network namespaces (up, status, exec, metrics, apply, delete, down, demo)' },
    { name: 'twill policy', summary: 'NetworkPolicy over manifests: who can reach whom, and why (matrix, trace, bench)' },
    { name: 'twill bench', summary: 'the benchmark suite: twill beside the kernel\'s VXLAN and wireguard-go (micro, cni, policy)' },
    AGENT,
  ],
};

/** A failure reaching the cluster source, said with the source and its URL when the error does not say them. */
async function namedSourceFailure(cfg: AgentConfig, e: unknown): Promise<unknown> {
  if (!(e instanceof Error) || cfg.datastore !== undefined) return e;
  const x = e as NodeJS.ErrnoException;
  const network = ['connect', 'getaddrinfo', 'read', 'write'].includes(x.syscall ?? '') || /CERT|TLS|SELF_SIGNED|UNABLE_TO|ECONNRESET|ETIMEDOUT/.test(String(x.code ?? ''));
  const { KubeError, inClusterConfig } = await import('../agent/sources/kube/client.js');
  if (cfg.etcd) {
    const eps = cfg.etcd.endpoints ?? [];
    return network && !eps.some((u) => e.message.includes(u.replace(/\/$/, ''))) ? new Error(`etcd ${eps.join(', ')}: ${e.message}`, { cause: e }) : e;
  }
  const server = cfg.kubernetes?.server ?? inClusterConfig()?.server;
  if (!server || e.message.includes(server)) return e;
  const api = e instanceof KubeError || /^(GET|PUT|POST|PATCH|DELETE|watch) \//.test(e.message);
  return network || api ? new Error(`kubernetes server ${server}${cfg.kubernetes?.server ? '' : ' (in-cluster service account)'}: ${e.message}`, { cause: e }) : e;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'lab': { const { labCommand } = await import('./lab-command.js'); return labCommand(rest); }
    case 'policy': { const { policyCommand } = await import('./policy-command.js'); return policyCommand(rest); }
    case 'bench': { const { benchCommand } = await import('./bench-command.js'); return benchCommand(rest); }
    case 'agent':
      return runCommand(AGENT, rest, async (p) => {
        const { runAgent, loadAgentConfig } = await import('../agent/main.js');
        const cfg = loadAgentConfig(str(p, 'config')!);
        try {
          await runAgent(cfg);
        } catch (e) {
          throw await namedSourceFailure(cfg, e);
        }
        return 0;
      });
    case '_workload': { // inside a lab pod's netns (internal)
      const { startWorkload, parseWorkloadArgs, READY_LINE } = await import('../lab/workload.js');
      await startWorkload(parseWorkloadArgs(rest));
      process.stdout.write(`${READY_LINE}\n`); // the lab waits for this before it calls the pod up
      process.stdout.on('error', () => undefined); // whoever waited may have closed the pipe
      return 0;
    }
    case '_probe': { // inside a lab pod's netns (internal): _probe ip...
      const { probeAll } = await import('../lab/probe.js');
      process.stdout.write(JSON.stringify(await probeAll(rest)) + '\n');
      return 0;
    }
    case 'help': // `twill help lab up` is `twill lab up --help`
      return rest.length ? main([...rest, '--help']) : (process.stdout.write(usage(ROOT)), 0);
    default:
      if (cmd !== undefined && !cmd.startsWith('-')) {
        const hint = closest(cmd, ROOT.commands!.map((c) => c.name.slice('twill '.length)));
        process.stderr.write(usageErrorText(new UsageError(`unknown command "${cmd}"${hint ? ` (did you mean ${hint}?)` : ''}`, ROOT)));
        return 2;
      }
      return runCommand(ROOT, argv, async (p) => {
        if (p.values.version) { process.stdout.write(`twill ${VERSION}\n`); return 0; }
        throw new UsageError('missing command', ROOT);
      });
  }
}

// Whoever reads our stdout may stop early (`twill lab status | head`): like coreutils,
// say nothing about it. Writes after that are dropped; the command itself finishes
// (a half-done `lab up` would leave namespaces behind).
for (const s of [process.stdout, process.stderr]) {
  s.on('error', (e: NodeJS.ErrnoException) => {
    s.write = (() => true) as typeof s.write;
    if (e.code === 'EPIPE') return;
    if (s === process.stdout) process.stderr.write(`twill: writing to stdout: ${e.message}\n`);
    process.exitCode = 1;
  });
}

main(process.argv.slice(2)).then((code) => {
  // Success: an agent or a workload keeps running (servers, watches), so only the code is set.
  // Failure: exit now, whatever timers or sockets a half-started agent left open.
  if (code !== 0) process.exit(code);
  process.exitCode ??= 0;
}, (e: unknown) => {
  process.stderr.write(`twill: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});

