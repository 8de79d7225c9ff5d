// `twill policy ...`: NetworkPolicy tools over manifests, answered by the compiled tables.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { parseAllDocuments } from 'yaml';
import { compilePolicies } from '../policy/compile.js';
import { ManifestError, loadModelFiles } from '../policy/manifests.js';
import { podKey, type ClusterModel, type Pod, type Protocol } from '../policy/model.js';
import { IP_FAMILIES, addressOf, reachabilityMatrix, traceAddresses, type IPFamily } from '../policy/matrix.js';
import type { Explanation } from '../dataplane/tables/policy.js';
import { isObj } from '../policy/validate.js';
import { formatIPv4Address, parseIPv4Address, parseIPv4Cidr } from '../lib/ipv4.js';
import { addToIPv6, formatIPv6Address, parseIPv6Address, parseIPv6Cidr } from '../lib/ipv6.js';
import { bool, int, list, oneOf, runCommand, str, UsageError, type Command, type Opt, type Parsed } from './args.js';

const PROTOCOLS = ['TCP', 'UDP', 'SCTP'] as const;
const DEFAULT_CLUSTER_CIDR = '10.244.0.0/16';
const DEFAULT_CLUSTER_CIDR6 = 'fd00:10:244::/56'; // kind's
const MODEL: Record<string, Opt> = {
  filename: { type: 'string', short: 'f', multiple: true, required: true, value: 'FILE', help: 'Kubernetes YAML: Namespaces, Pods, NetworkPolicies (Nodes for their addresses); more than one -f adds up' },
  file: { type: 'string', multiple: true, alias: 'filename', help: '' },
  port: { type: 'string', value: 'PORT', help: 'destination port (default: 80)' },
  protocol: { type: 'string', value: 'PROTO', help: 'TCP (default), UDP or SCTP' },
  'cluster-cidr': { type: 'string', value: 'CIDR', help: `where pods without status.podIP get addresses (default: ${DEFAULT_CLUSTER_CIDR})` },
  'ip-family': { type: 'string', value: 'FAMILY', help: 'IPv4 (default) or IPv6: which of a dual-stack pod\'s addresses (status.podIPs) the traffic uses' },
  'cluster-cidr6': { type: 'string', value: 'CIDR', help: `with IPv6: where pods without status.podIP get IPv6 addresses, a /64 per node (default: ${DEFAULT_CLUSTER_CIDR6})` },
  json: { type: 'boolean', help: 'one JSON object' },
};

export const POLICY: Command = {
  name: 'twill policy',
  summary: 'NetworkPolicy over manifests: who can reach whom, and why',
  about: 'NetworkPolicy over Kubernetes manifests, answered by the same compiled tables the dataplane enforces.\nPods without status.podIP (as manifests are written) get addresses as `twill lab up -f` gives them, said on stderr.',
  commands: [
    {
      name: 'twill policy matrix', summary: 'reachability between every pair of pods',
      about: 'Prints reachability between every pair of pods (rows: from, columns: to) at one port and protocol.\nWith --ip-family IPv6, between the pods\' IPv6 addresses (pods without one are left out).',
      options: { ...MODEL },
    },
    {
      name: 'twill policy trace', summary: 'whether one pod reaches another, and the policy and rule that decide it',
      about: 'Says whether one pod reaches another, and which policy and rule decide it, for egress and ingress.\nA pod is NAMESPACE/NAME, or NAME in the default namespace; either end may instead be an IPv4 or IPv6\naddress (a pod\'s, or one outside the pods: a node, a client, an ipBlock), which sets the IP family.',
      options: {
        filename: MODEL.filename, file: MODEL.file,
        from: { type: 'string', value: 'NS/POD', required: true, help: 'the client pod, or an IP address' },
        to: { type: 'string', value: 'NS/POD', required: true, help: 'the server pod, or an IP address' },
        port: MODEL.port, protocol: MODEL.protocol, 'cluster-cidr': MODEL['cluster-cidr'], 'ip-family': MODEL['ip-family'], 'cluster-cidr6': MODEL['cluster-cidr6'], json: MODEL.json,
      },
    },
    { name: 'twill policy bench', summary: 'compile 10k policies, recompile one, relabel a pod: timings', options: {} },
  ],
};

function table(pods: string[], allowed: boolean[][], family: IPFamily = 'IPv4'): string {
  const w = Math.max(4, ...pods.map((p) => p.length)) + 1;
  const lines = [`${'from\\to'.padEnd(w)}${pods.map((p) => p.padEnd(w)).join('')}`];
  pods.forEach((p, i) => lines.push(`${p.padEnd(w)}${allowed[i].map((a) => (a ? '.' : 'X').padEnd(w)).join('')}`));
  return `${lines.map((l) => l.trimEnd()).join('\n')}\n(. allowed, X denied${family === 'IPv6' ? '; over IPv6' : ''})\n`;
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
  // no address of either family: no status (a pod with only an IPv6 one is IPv6-only)
  const todo = model.pods.filter((p) => p.ip === undefined && p.ip6 === undefined && !hostNetwork.has(podKey(p)));
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

/**
 * IPv6 addresses for the pods `addressPods` addressed (they had none), placed alike: the
 * k-th on node (k mod nodes) + 1, whose pod CIDR is the cluster CIDR's (node)th /64
 * (fd00:10:244:N::/64 in kind's fd00:10:244::/56), from ::2 up (::1 is the node's
 * gateway), skipping addresses the manifests already use.
 */
export function addressPods6(model: ClusterModel, todo: Pod[], clusterCIDR6 = DEFAULT_CLUSTER_CIDR6): { pod: Pod; ip: string }[] {
  if (!todo.length) return [];
  const cluster = parseIPv6Cidr(clusterCIDR6);
  const nodes = Math.max(2, Math.ceil(todo.length / 250));
  if (cluster.len > 64 || (cluster.len > 32 && nodes + 1 > 2 ** (64 - cluster.len))) {
    throw new Error(`cluster CIDR ${clusterCIDR6} has no room for ${nodes} nodes' /64 pod CIDRs: use a /${64 - Math.ceil(Math.log2(nodes + 1))} or wider`);
  }
  const taken = new Set(model.pods.flatMap((p) => (p.ip6 ? [formatIPv6Address(parseIPv6Address(p.ip6))] : [])));
  const next = new Array<number>(nodes + 1).fill(2);
  return todo.map((pod, k) => {
    const node = (k % nodes) + 1;
    const base = Uint32Array.from(cluster.addr);
    base[1] = (base[1] + node) >>> 0; // the node's /64: its number in bits [len, 64)
    let ip = formatIPv6Address(addToIPv6(base, next[node]++));
    while (taken.has(ip)) ip = formatIPv6Address(addToIPv6(base, next[node]++));
    taken.add(ip);
    pod.ip6 = ip;
    return { pod, ip };
  });
}

/**
 * The model in the files, every pod addressed (in the family too, which `familyOf` picks
 * from the model as the files give it); what was given is said on stderr, in one line.
 */
function loadModel(p: Parsed, familyOf: (m: ClusterModel) => IPFamily): { model: ClusterModel; family: IPFamily } {
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
  const cidr6 = str(p, 'cluster-cidr6') ?? DEFAULT_CLUSTER_CIDR6;
  try {
    parseIPv6Cidr(cidr6);
  } catch (e) {
    throw new UsageError(`--cluster-cidr6: ${(e as Error).message}`, p.cmd);
  }
  const family = familyOf(model);
  const given = addressPods(model, cidr, model.pods.some((x) => x.ip === undefined && x.ip6 === undefined) ? hostNetworkPods(files) : undefined);
  const say = (list: { pod: Pod; ip: string }[], range: string, what: string): void => {
    if (!list.length) return;
    process.stderr.write(`${p.cmd.name}: ${list.length} pod${list.length > 1 ? 's' : ''} without status.podIP given ${what}addresses from ${range}, as \`twill lab up -f\` gives them: ${list.map((g) => `${podKey(g.pod)} ${g.ip}`).join(', ')}\n`);
  };
  if (family === 'IPv6') say(addressPods6(model, given.map((g) => g.pod), cidr6), cidr6, 'IPv6 ');
  else say(given, cidr, '');
  return { model, family };
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
  const asked = oneOf(p, 'ip-family', IP_FAMILIES);
  if (sub === 'matrix') {
    const { model, family } = loadModel(p, () => asked ?? 'IPv4');
    const tables = compilePolicies(model);
    const m = reachabilityMatrix(model, tables, port, protocol, family);
    process.stdout.write(json ? `${JSON.stringify(family === 'IPv6' ? { family, ...m } : m)}\n` : table(m.pods, m.allowed, family));
    return 0;
  }
  // trace: an end given as an address sets the family
  const ends = [str(p, 'from')!, str(p, 'to')!];
  const familyOf = (s: string): IPFamily | undefined => (isIP(s) === 4 ? 'IPv4' : isIP(s) === 6 ? 'IPv6' : undefined);
  const byAddress = [...new Set(ends.map(familyOf).filter((f) => f !== undefined))];
  if (byAddress.length > 1) throw new UsageError(`--from ${ends[0]} and --to ${ends[1]} are of different IP families: a packet has one`, p.cmd);
  if (asked && byAddress.length && asked !== byAddress[0]) throw new UsageError(`--ip-family ${asked}, but an address given is ${byAddress[0]}`, p.cmd);
  const find = (m: ClusterModel, k: string): Pod | undefined => m.pods.find((q) => podKey(q) === k || (!k.includes('/') && q.namespace === 'default' && q.name === k));
  // two pods named and no family asked: IPv4, unless one of them is IPv6-only
  const only6 = (m: ClusterModel): boolean => ends.some((k) => {
    const x = familyOf(k) ? undefined : find(m, k);
    return x !== undefined && x.ip === undefined && x.ip6 !== undefined;
  });
  const { model, family } = loadModel(p, (m) => byAddress[0] ?? asked ?? (only6(m) ? 'IPv6' : 'IPv4'));
  const tables = compilePolicies(model);
  const same = (a: string, b: string): boolean => (family === 'IPv6' ? formatIPv6Address(parseIPv6Address(a)) === formatIPv6Address(parseIPv6Address(b)) : parseIPv4Address(a) === parseIPv4Address(b));
  const end = (k: string): { pod?: Pod; ip: string } => {
    if (familyOf(k)) {
      // the pod of that address, if one has it (the last, as the tables have it)
      const pod = [...model.pods].reverse().find((q) => addressOf(q, family) !== undefined && same(addressOf(q, family)!, k));
      return { pod, ip: k };
    }
    const x = find(model, k);
    if (!x) throw new Error(`no pod ${k} in ${list(p, 'filename').join(', ')}; the pods: ${model.pods.map(podKey).join(', ') || 'none'}`);
    if (!x.ip && !x.ip6) throw new Error(`pod ${k} is on the host network: NetworkPolicy does not apply to it`);
    const ip = addressOf(x, family);
    if (!ip) throw new Error(`pod ${k} has no ${family} address (status.podIPs): it is single-stack ${family === 'IPv6' ? 'IPv4' : 'IPv6'}`);
    return { pod: x, ip };
  };
  const src = end(ends[0]);
  const dst = end(ends[1]);
  const t = traceAddresses(tables, src.ip, dst.ip, port, protocol);
  // IPv4 between two pods named: as before; otherwise the addresses are said too
  const plain = family === 'IPv4' && !byAddress.length;
  const label = (e: { pod?: Pod; ip: string }): string => (plain ? podKey(e.pod!) : e.pod ? `${podKey(e.pod)} (${e.ip})` : e.ip);
  const name = (e: { pod?: Pod; ip: string }): string => (e.pod ? podKey(e.pod) : e.ip);
  if (json) {
    const extra = plain ? {} : { family, fromIP: src.ip, toIP: dst.ip };
    process.stdout.write(`${JSON.stringify({ from: name(src), to: name(dst), ...extra, port, protocol, ...t })}\n`);
  } else {
    process.stdout.write(`${label(src)} -> ${label(dst)} ${port}/${protocol}: ${t.allowed ? 'ALLOWED' : 'DENIED'}\n`);
    if (src.pod && src.pod === dst.pod) process.stdout.write('  a pod reaching itself is always allowed\n');
    else process.stdout.write(describe(t.egress) + describe(t.ingress));
  }
  return 0;
}
