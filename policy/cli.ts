// `twill policy ...`: NetworkPolicy tools over manifests, answered by the compiled tables.
import { compilePolicies } from './compile.js';
import { ManifestError, loadModelFiles } from './manifests.js';
import { podKey, type Protocol } from './model.js';
import { reachabilityMatrix, tracePair } from './matrix.js';
import type { Explanation } from './tables.js';

const USAGE = `usage:
  twill policy matrix -f FILE [-f FILE...] [--port P] [--protocol TCP|UDP|SCTP] [--json]
  twill policy trace -f FILE [-f FILE...] --from NS/POD --to NS/POD [--port P] [--protocol TCP|UDP|SCTP] [--json]
  twill policy bench
`;

class UsageError extends Error {}

interface Opts {
  files: string[];
  port: number;
  protocol: Protocol;
  json: boolean;
  from?: string;
  to?: string;
}

function parseArgs(args: string[]): Opts {
  const o: Opts = { files: [], port: 80, protocol: 'TCP', json: false };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const val = (): string => {
      const v = args[++i];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      return v;
    };
    switch (a) {
      case '-f':
      case '--file':
        o.files.push(val());
        break;
      case '--port': {
        const v = val();
        if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 65535) throw new UsageError(`--port: must be 1-65535, got "${v}"`);
        o.port = Number(v);
        break;
      }
      case '--protocol': {
        const v = val().toUpperCase();
        if (v !== 'TCP' && v !== 'UDP' && v !== 'SCTP') throw new UsageError(`--protocol: must be TCP, UDP or SCTP, got "${v}"`);
        o.protocol = v;
        break;
      }
      case '--json':
        o.json = true;
        break;
      case '--from':
        o.from = val();
        break;
      case '--to':
        o.to = val();
        break;
      default:
        throw new UsageError(`unknown option ${a}`);
    }
  }
  if (o.files.length === 0) throw new UsageError('at least one -f FILE is needed');
  return o;
}

function table(pods: string[], allowed: boolean[][]): string {
  const w = Math.max(4, ...pods.map((p) => p.length)) + 1;
  const lines = [`${'from\\to'.padEnd(w)}${pods.map((p) => p.padEnd(w)).join('')}`];
  pods.forEach((p, i) => lines.push(`${p.padEnd(w)}${allowed[i].map((a) => (a ? '.' : 'X').padEnd(w)).join('')}`));
  return `${lines.map((l) => l.trimEnd()).join('\n')}\n(. allowed, X denied)\n`;
}

function describe(e: Explanation): string {
  const who = e.policy ? ` [${e.policy} ${e.rule}]` : '';
  return `  ${e.direction.padEnd(7)} ${e.allowed ? 'allow' : 'DENY '}${who}: ${e.reason}\n`;
}

export async function policyCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  try {
    if (sub === 'bench') {
      const { runPolicyBench } = await import('./bench.js');
      await runPolicyBench();
      return 0;
    }
    if (sub !== 'matrix' && sub !== 'trace') throw new UsageError(sub ? `unknown subcommand ${sub}` : 'missing subcommand');
    const o = parseArgs(rest);
    const model = loadModelFiles(o.files);
    const tables = compilePolicies(model);
    if (sub === 'matrix') {
      const m = reachabilityMatrix(model, tables, o.port, o.protocol);
      process.stdout.write(o.json ? `${JSON.stringify(m)}\n` : table(m.pods, m.allowed));
      return 0;
    }
    if (!o.from || !o.to) throw new UsageError('trace needs --from NS/POD and --to NS/POD');
    const find = (k: string) => {
      const p = model.pods.find((x) => podKey(x) === k || (!k.includes('/') && x.namespace === 'default' && x.name === k));
      if (!p) throw new UsageError(`no pod ${k} in the manifests`);
      if (!p.ip) throw new UsageError(`pod ${k} has no IPv4 address (status.podIP)`);
      return p;
    };
    const src = find(o.from);
    const dst = find(o.to);
    const t = tracePair(tables, src, dst, o.port, o.protocol);
    if (o.json) process.stdout.write(`${JSON.stringify({ from: podKey(src), to: podKey(dst), port: o.port, protocol: o.protocol, ...t })}\n`);
    else {
      process.stdout.write(`${podKey(src)} -> ${podKey(dst)} ${o.port}/${o.protocol}: ${t.allowed ? 'ALLOWED' : 'DENIED'}\n`);
      if (src === dst) process.stdout.write('  a pod reaching itself is always allowed\n');
      else process.stdout.write(describe(t.egress) + describe(t.ingress));
    }
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`twill policy: ${e.message}\n${USAGE}`);
      return 2;
    }
    if (e instanceof ManifestError) {
      process.stderr.write(`twill policy: invalid manifest:\n${e.problems.map((l) => `  ${l}`).join('\n')}\n`);
      return 1;
    }
    process.stderr.write(`twill policy: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}
