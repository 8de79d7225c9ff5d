// `twill policy ...`: NetworkPolicy tools over manifests, answered by the compiled tables.
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';
import { compilePolicies } from '../policy/compile.js';
import { ManifestError, loadModelFiles } from '../policy/manifests.js';
import { podKey, type ClusterModel, type Pod, type Protocol } from '../policy/model.js';
import { reachabilityMatrix, tracePair } from '../policy/matrix.js';
import type { Explanation } from '../dataplane/tables/policy.js';
import { isObj } from '../policy/validate.js';
import { formatIPv4Address, parseIPv4Address, parseIPv4Cidr } from '../lib/ipv4.js';
import { bool, int, list, oneOf, runCommand, str, UsageError, type Command, type Opt, type Parsed } from './args.js';

const PROTOCOLS = ['TCP', 'UDP', 'SCTP'] as const;
const DEFAULT_CLUSTER_CIDR = '10.244.0.0/16';
const MODEL: Record<string, Opt> = {
  filename: { type: 'string', short: 'f', multiple: true, required: true, value: 'FILE', help: 'Kubernetes YAML: Namespaces, Pods, NetworkPolicies (Nodes for their addresses); more than one -f adds up' },
  file: { type: 'string', multiple: true, alias: 'filename', help: '' },
  port: { type: 'string', value: 'PORT', help: 'destination port (default: 80)' },
  protocol: { type: 'string', value: 'PROTO', help: 'TCP (default), UDP or SCTP' },
  'cluster-cidr': { type: 'string', value: 'CIDR', help: `where pods without status.podIP get addresses (default: ${DEFAULT_CLUSTER_CIDR})` },
  json: { type: 'boolean', help: 'one JSON object' },
};

export const POLICY: Command = {
  name: 'twill policy',
  summary: 'NetworkPolicy over manifests: who can reach whom, and why',
  about: 'NetworkPolicy over Kubernetes manifests, answered by the same compiled tables the dataplane enforces.\nPods without status.podIP (as manifests are written) get addresses as `twill lab up -f` gives them, said on stderr.',
  commands: [
    {
      name: 'twill policy matrix', summary: 'reachability between every pair of pods',
      about: 'Prints reachability between every pair of pods (rows: from, columns: to) at one port and protocol.',
      options: { ...MODEL },
    },
    {
      name: 'twill policy trace', summary: 'whether one pod reaches another, and the policy and rule that decide it',
      about: 'Says whether one pod reaches another, and which policy and rule decide it, for egress and ingress.\nA pod is NAMESPACE/NAME, or NAME in the default namespace.',
      options: {
        filename: MODEL.filename, file: MODEL.file,
        from: { type: 'string', value: 'NS/POD', required: true, help: 'the client pod' },
        to: { type: 'string', value: 'NS/POD', required: true, help: 'the server pod' },
        port: MODEL.port, protocol: MODEL.protocol, 'cluster-cidr': MODEL['cluster-cidr'], json: MODEL.json,
      },
    },
    { name: 'twill policy bench', summary: 'compile 10k policies, recompile one, relabel a pod: timings', options: {} },
  ],
};

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

/** "ns/name" of every Pod with spec.hostNetwork in the files: they have the node's address, not a pod address. */
function hostNetworkPods(files: string[]): Set<string> {
  const out = new Set<string>();
  const visit = (o: unknown, kind?: string): void => {
    if (!isObj(o)) return;
    const k = typeof o.kind === 'string' ? o.kind : kind;
    if (k?.endsWith('List') && Array.isArray(o.items)) {
      for (const it of o.items) visit(it, k === 'List' ? undefined : k.slice(0, -4));
      return;
    }
    const meta = isObj(o.metadata) ? o.metadata : {};
    if (k === 'Pod' && isObj(o.spec) && o.spec.hostNetwork === true) out.add(`${typeof meta.namespace === 'string' ? meta.namespace : 'default'}/${String(meta.name)}`);
  };
  for (const f of files) for (const d of parseAllDocuments(readFileSync(f, 'utf8'))) visit(d.toJS());
  return out;
}

/**
 * Gives every pod without an address (and not on the host network) one from the
 * cluster CIDR, as `twill lab up -f` places them: the k-th such pod on node
 * (k mod nodes) + 1, whose pod CIDR is the cluster CIDR's (node)th /24, from .2 up
 * (.1 is the node's gateway), skipping addresses the manifests already use.
 * Two nodes, as the lab's default, or more when the pods outgrow them.
 */
export function addressPods(model: ClusterModel, clusterCIDR = DEFAULT_CLUSTER_CIDR, hostNetwork = new Set<string>()): { pod: Pod; ip: string }[] {
  const todo = model.pods.filter((p) => p.ip === undefined && !hostNetwork.has(podKey(p)));
  if (!todo.length) return [];
  const cluster = parseIPv4Cidr(clusterCIDR);
  const nodes = Math.max(2, Math.ceil(todo.length / 250));
  if (cluster.len > 24 || (nodes + 1) << 8 > 2 ** (32 - cluster.len)) {
    throw new Error(`cluster CIDR ${clusterCIDR} has no room for ${nodes} nodes' /24 pod CIDRs (as the lab gives them): use a /22 or wider`);
  }
  const taken = new Set(model.pods.flatMap((p) => (p.ip ? [parseIPv4Address(p.ip)] : [])));
  const next = new Array<number>(nodes + 1).fill(2);
  return todo.map((pod, k) => {
    const node = (k % nodes) + 1;
    const base = (cluster.prefix + (node << 8)) >>> 0;
    while (taken.has(base + next[node]) && next[node] < 254) next[node]++;
    if (next[node] > 254) throw new Error(`no free address left in node${node}'s pod CIDR ${formatIPv4Address(base)}/24`);
    const ip = formatIPv4Address(base + next[node]++);
    pod.ip = ip;
    return { pod, ip };
  });
}

/** The model in the files, every pod addressed; what was given is said on stderr, in one line. */
function loadModel(p: Parsed): ClusterModel {
  const files = list(p, 'filename');
  let model: ClusterModel;
  try {
    model = loadModelFiles(files);
  } catch (e) {
    const x = e as NodeJS.ErrnoException;
    if (!x.path || !x.code) throw e;
    throw new Error(`cannot read ${x.path}: ${x.code === 'ENOENT' ? 'no such file' : x.code === 'EISDIR' ? 'a directory, not a file' : x.message}`);
  }
  const cidr = str(p, 'cluster-cidr') ?? DEFAULT_CLUSTER_CIDR;
  try {
    parseIPv4Cidr(cidr);
  } catch (e) {
    throw new UsageError(`--cluster-cidr: ${(e as Error).message}`, p.cmd);
  }
  const given = addressPods(model, cidr, model.pods.some((x) => x.ip === undefined) ? hostNetworkPods(files) : undefined);
  if (given.length) {
    process.stderr.write(`${p.cmd.name}: ${given.length} pod${given.length > 1 ? 's' : ''} without status.podIP given addresses from ${cidr}, as \`twill lab up -f\` gives them: ${given.map((g) => `${podKey(g.pod)} ${g.ip}`).join(', ')}\n`);
  }
  return model;
}

export async function policyCommand(args: string[]): Promise<number> {
  return runCommand(POLICY, args, async (p) => {
    try {
      return await policyRun(p);
    } catch (e) {
      if (!(e instanceof ManifestError)) throw e;
      process.stderr.write(`${p.cmd.name}: invalid manifest:\n${e.problems.map((l) => `  ${l}`).join('\n')}\n`);
      return 1;
    }
  });
}

async function policyRun(p: Parsed): Promise<number> {
  const sub = p.path[0];
  if (sub === 'bench') {
    const { runPolicyBench } = await import('../bench/policy-model.js');
    await runPolicyBench();
    return 0;
  }
  const port = int(p, 'port', { min: 1, max: 65535, def: 80 });
  const protocol: Protocol = oneOf(p, 'protocol', PROTOCOLS, 'TCP')!;
  const json = bool(p, 'json');
  const model = loadModel(p);
  const tables = compilePolicies(model);
  if (sub === 'matrix') {
    const m = reachabilityMatrix(model, tables, port, protocol);
    process.stdout.write(json ? `${JSON.stringify(m)}\n` : table(m.pods, m.allowed));
    return 0;
  }
  const find = (k: string) => {
    const x = model.pods.find((q) => podKey(q) === k || (!k.includes('/') && q.namespace === 'default' && q.name === k));
    if (!x) throw new Error(`no pod ${k} in ${list(p, 'filename').join(', ')}; the pods: ${model.pods.map(podKey).join(', ') || 'none'}`);
    if (!x.ip) throw new Error(`pod ${k} is on the host network: NetworkPolicy does not apply to it`);
    return x;
  };
  const src = find(str(p, 'from')!);
  const dst = find(str(p, 'to')!);
  const t = tracePair(tables, src, dst, port, protocol);
  if (json) process.stdout.write(`${JSON.stringify({ from: podKey(src), to: podKey(dst), port, protocol, ...t })}\n`);
  else {
    process.stdout.write(`${podKey(src)} -> ${podKey(dst)} ${port}/${protocol}: ${t.allowed ? 'ALLOWED' : 'DENIED'}\n`);
    if (src === dst) process.stdout.write('  a pod reaching itself is always allowed\n');
    else process.stdout.write(describe(t.egress) + describe(t.ingress));
  }
  return 0;
}
