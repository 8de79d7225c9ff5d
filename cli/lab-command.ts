// `twill lab ...`: up, status, exec, metrics, apply, delete, down, and demo (what `npm run lab` runs).
import { request } from '../agent/socket.js';
import { spawnSync } from 'node:child_process';
import { constants } from 'node:os';
import { labUp, labDown, labPolicies, labPods, labUpgrade, nodeCni, ECHO_SERVICES } from '../lab/lab.js';
import { PROXY_MODES, type ProxyMode } from '../lab/services.js';
import { IP_FAMILIES, loadState, type IpFamily, type LabPod } from '../lab/state.js';
import { agentView } from '../lab/supervisor.js';
import { labKubeconfigFile } from '../lab/kube-role.js';
import type { EngineTuning } from '../dataplane/engine/config.js';
import { reachability, formatMatrix, allReachable, tcpThroughput, pingRtts, percentile, serviceReachability, allServicesReachable } from '../lab/measure.js';
import { kernelVxlanPair } from '../bench/peers/kernel-vxlan.js';
import { bool, int, list, oneOf, runCommand, str, type Command, type Opt, type Parsed } from './args.js';

const NAME: Record<string, Opt> = { name: { type: 'string', value: 'LAB', help: 'the lab\'s name (default: lab); each lab has namespaces of its own' } };
const FILES = (what: string): Record<string, Opt> => ({
  filename: { type: 'string', short: 'f', multiple: true, value: 'FILE', help: what },
});
const PROXY: Record<string, Opt> = { 'proxy-mode': { type: 'string', value: 'MODE', help: 'how kube-proxy\'s Service rules are written: iptables (default, as kind) or nftables' } };

export const LAB: Command = {
  name: 'twill lab',
  summary: 'a lab on this machine: nodes and pods as network namespaces, each node with its agent',
  about: 'A lab on this machine: nodes and pods are network namespaces, each node runs its own agent and engine.\nNothing is added to the root namespace.',
  commands: [
    {
      name: 'twill lab up', summary: 'bring a lab up (nodes, pods, DNS, Services)',
      about: 'Brings a lab up: an underlay bridge, the nodes with their agents, the pods (each with TCP and UDP echo servers),\nDNS and the Services, and leaves it up.',
      options: {
        ...NAME,
        nodes: { type: 'string', value: 'N', help: 'nodes (default: 2)' },
        'pods-per-node': { type: 'string', value: 'M', help: 'pods on each node (default: 2)' },
        workers: { type: 'string', value: 'W', help: 'engine workers per node (default: the machine\'s cores shared among the nodes)' },
        'busy-poll-us': { type: 'string', value: 'U', help: 'how long a worker polls after traffic before it sleeps, µs (default: 3000; 0: never)' },
        'pin-workers': { type: 'boolean', help: 'pin worker k to CPU k and steer flows by CPU' },
        etcd: { type: 'boolean', help: 'the agents learn the cluster from a real etcd on the underlay' },
        kubernetes: { type: 'boolean', help: 'the agents learn the cluster from a Kubernetes API the lab runs (its stand-in); prints the KUBECONFIG for kubectl' },
        ...PROXY,
        'ip-family': { type: 'string', value: 'FAMILY', help: 'the pods\' address families, as kind\'s networking.ipFamily: ipv4 (default), dual (IPv6 beside IPv4, over an IPv6 underlay) or ipv6 (IPv6 pods only)' },
        ...FILES('Kubernetes YAML: the Namespaces and Pods to create (instead of the default pods), NetworkPolicies to apply'),
      },
    },
    {
      name: 'twill lab status', summary: 'the nodes (agent pid, restarts, last exit), pods and Services',
      options: { ...NAME, json: { type: 'boolean', help: 'one JSON object' } },
    },
    {
      name: 'twill lab exec', summary: 'run a command in a pod\'s network namespace',
      about: 'Runs a command in a pod\'s network namespace (and its resolv.conf). POD is a name or NAMESPACE/NAME.',
      options: { ...NAME }, args: [{ name: 'POD' }], rest: 'COMMAND...',
    },
    {
      name: 'twill lab metrics', summary: 'a node\'s metrics (Prometheus text)',
      about: 'Prints a node\'s metrics in Prometheus text, from its agent\'s socket.\nEach agent also serves them at http://<node\'s underlay IP>:9871/metrics inside the lab.',
      options: { ...NAME }, args: [{ name: 'NODE' }],
    },
    {
      name: 'twill lab upgrade', summary: 'replace a node\'s agent by a new process without an outage',
      about: 'Replaces a node\'s agent by a new process, as a DaemonSet rolling update with maxSurge does: the node\'s\nsupervisor starts a new agent, which takes the node over from the running one (its queues, its flows),\nthen stops the old one. Returns once the new agent serves the node.',
      options: { ...NAME }, args: [{ name: 'NODE' }],
    },
    {
      name: 'twill lab apply', summary: 'apply NetworkPolicies; returns once every node enforces them',
      options: { ...NAME, ...FILES('Kubernetes YAML with NetworkPolicies') },
    },
    {
      name: 'twill lab delete', summary: 'delete NetworkPolicies; returns once every node has lifted them',
      options: { ...NAME, ...FILES('Kubernetes YAML with NetworkPolicies') },
    },
    { name: 'twill lab down', summary: 'stop what the lab started and delete its namespaces and files', options: { ...NAME } },
    {
      name: 'twill lab demo', summary: 'what `npm run lab` runs: up, reachability matrix, iperf3 beside the kernel\'s VXLAN; leaves the lab up',
      options: { ...NAME, ...PROXY, 'ip-family': { type: 'string', value: 'FAMILY', help: 'ipv4, dual (default: both families shown) or ipv6' } },
    },
  ],
};
for (const c of LAB.commands!) if (c.options?.filename && c.name !== 'twill lab up') c.options.filename.required = true;

// --busy-poll-us N (0: workers sleep at once), --pin-workers: engine/config.ts.
function engineFlags(p: Parsed): EngineTuning {
  const t: EngineTuning = {};
  const bp = int(p, 'busy-poll-us', { min: 0, what: 'a whole number of microseconds' });
  if (bp !== undefined) t.busyPollUs = bp;
  if (bool(p, 'pin-workers')) t.pinWorkers = true;
  return t;
}
const log = (m: string) => process.stdout.write(`${m}\n`);
/** `npx twill lab SUB ...` for this lab, as the user would type it next. */
const again = (name: string, sub: string) => `npx twill lab ${sub.replace(/^(\S+)/, name === 'lab' ? '$1' : `$1 --name ${name}`)}`;

export async function labCommand(args: string[]): Promise<number> {
  return runCommand(LAB, args, labRun);
}

async function labRun(p: Parsed): Promise<number> {
  const name = str(p, 'name') ?? 'lab';
  const sub = p.path[0];
  switch (sub) {
    case 'up': {
      const mode = oneOf<ProxyMode>(p, 'proxy-mode', PROXY_MODES);
      const opts = {
        name, nodes: int(p, 'nodes', { min: 1, def: 2 }), podsPerNode: int(p, 'pods-per-node', { min: 0, def: 2 }), workers: int(p, 'workers', { min: 1 }),
        engine: engineFlags(p), manifests: list(p, 'filename'), etcd: bool(p, 'etcd') || undefined, kubernetes: bool(p, 'kubernetes') ? 'lab' as const : undefined, proxyMode: mode,
        ipFamily: oneOf<IpFamily>(p, 'ip-family', IP_FAMILIES), progress: log,
      };
      const s = await withInterruptCleanup(name, () => labUp(opts));
      log(`lab "${s.name}" is up: ${s.nodes.length} nodes, ${s.pods.length} pods. \`${again(name, 'status')}\` lists them.`);
      if (opts.kubernetes) log(`kubectl reaches its Kubernetes API with:\nexport KUBECONFIG=${labKubeconfigFile(s)}`);
      return 0;
    }
    case 'status': {
      const s = loadState(name);
      if (!s) { process.stderr.write(`twill lab status: no lab "${name}" is up\n`); return 1; }
      // pid: the live agent (null while none runs); restarts and lastExit as the node's supervisor recorded them
      const nodes = s.nodes.map((n) => { const a = agentView(n); return { name: n.name, netns: n.netns, underlayIP: n.underlayIP, podCIDR: n.podCIDR, ...(n.podCIDR6 ? { underlayIP6: n.underlayIP6, podCIDR6: n.podCIDR6 } : {}), pid: a.pid, restarts: a.restarts, lastExit: a.lastExit, agentState: a.state, supervisorPid: a.supervisorPid, cniConfList: nodeCni(n).confFile, cniBinDir: nodeCni(n).binDir }; });
      const pods = labPods(s).map((x) => ({ name: x.name, namespace: x.namespace, node: x.node, netns: x.netns, ip: x.ip, ...(x.ip6 ? { ip6: x.ip6 } : {}) }));
      const services = (s.services ?? []).map((x) => ({ ...x, endpoints: labPods(s).filter((q) => q.namespace === x.namespace && q.ip && (!x.endpoints || x.endpoints.includes(q.name))).map((q) => q.ip) }));
      if (bool(p, 'json')) { log(JSON.stringify({ nodes, pods, ipFamily: s.ipFamily ?? 'ipv4', proxyMode: s.proxyMode, serviceCIDR: s.serviceCIDR, services })); return 0; }
      for (const n of nodes) log(`node ${n.name}  netns ${n.netns}  underlay ${n.underlayIP}${n.underlayIP6 ? ` ${n.underlayIP6}` : ''}  pods ${n.podCIDR}${n.podCIDR6 ? ` ${n.podCIDR6}` : ''}  agent pid ${n.pid ?? 'none'} (${n.agentState}, restarts ${n.restarts}${n.lastExit ? `, last exit: ${n.lastExit.reason} at ${n.lastExit.at}` : ''})`);
      for (const x of pods) log(`pod  ${x.namespace}/${x.name}  on ${x.node}  ${x.ip}${x.ip6 ? ` ${x.ip6}` : ''}  netns ${x.netns}`);
      if (s.services) log(`services (kube-proxy ${s.proxyMode} mode, service CIDR ${s.serviceCIDR}):`);
      for (const x of services) {
        const ports = x.ports.map((q) => `${q.port}${q.nodePort ? `:${q.nodePort}` : ''}/${q.protocol}`).join(',');
        log(`svc  ${x.namespace}/${x.name}  ${x.clusterIP}  ${ports}${x.ports.some((q) => q.nodePort) ? `  externalTrafficPolicy ${x.externalTrafficPolicy ?? 'Cluster'}` : ''}  endpoints ${x.endpoints.join(',') || '<none>'}`);
      }
      return 0;
    }
    case 'exec': {
      const s = loadState(name);
      if (!s) { process.stderr.write(`twill lab exec: no lab "${name}" is up\n`); return 1; }
      const want = p.args[0];
      const all = labPods(s);
      const pod = all.find((x) => `${x.namespace}/${x.name}` === want) ?? all.find((x) => x.name === want && (x.namespace === 'default' || all.filter((y) => y.name === want).length === 1));
      if (!pod) {
        process.stderr.write(`twill lab exec: no pod "${want}" in lab "${name}"; its pods: ${all.map((x) => `${x.namespace}/${x.name}`).join(', ') || 'none'}\n`);
        return 1;
      }
      const r = spawnSync('ip', ['netns', 'exec', pod.netns, ...p.rest], { stdio: 'inherit' });
      if (r.error) { process.stderr.write(`twill lab exec: ip netns exec ${pod.netns} ${p.rest[0]}: ${r.error.message}\n`); return 1; }
      return r.status ?? 128 + (r.signal ? constants.signals[r.signal] : 0);
    }
    case 'upgrade': {
      const s = loadState(name);
      if (!s) { process.stderr.write(`twill lab upgrade: no lab "${name}" is up\n`); return 1; }
      const r = await labUpgrade(s, p.args[0]);
      log(`agent of ${p.args[0]} upgraded: pid ${r.pid} took over in ${r.ms.toFixed(0)} ms`);
      return 0;
    }
    case 'metrics': {
      const s = loadState(name);
      if (!s) { process.stderr.write(`twill lab metrics: no lab "${name}" is up\n`); return 1; }
      const n = s.nodes.find((x) => x.name === p.args[0]);
      if (!n) { process.stderr.write(`twill lab metrics: no node "${p.args[0]}" in lab "${name}"; its nodes: ${s.nodes.map((x) => x.name).join(', ')}\n`); return 1; }
      try {
        process.stdout.write(String(await request(n.socket, { op: 'metrics' })));
      } catch (e) {
        throw new Error(`${n.name}'s agent at ${n.socket}: ${e instanceof Error ? e.message : String(e)}`);
      }
      return 0;
    }
    case 'down': {
      const r = await labDown(name);
      log(`lab "${name}" is down: stopped ${r.processes} processes, deleted ${r.namespaces} namespaces${r.skipped ? `; left ${r.skipped} recorded pids alone (now other processes)` : ''}`);
      return 0;
    }
    case 'apply':
    case 'delete': {
      const r = await labPolicies(name, list(p, 'filename'), sub === 'delete');
      log(`${sub === 'apply' ? 'applied' : 'deleted'}: ${r.policies} NetworkPolicies in force, enforced by every node in ${r.ms.toFixed(0)} ms`);
      return 0;
    }
    default: // demo
      return demo(name, oneOf<ProxyMode>(p, 'proxy-mode', PROXY_MODES), oneOf<IpFamily>(p, 'ip-family', IP_FAMILIES, 'dual'));
  }
}

async function withInterruptCleanup<T>(name: string, f: () => Promise<T>): Promise<T> {
  const onSig = () => { void labDown(name).finally(() => process.exit(130)); };
  process.once('SIGINT', onSig);
  process.once('SIGTERM', onSig);
  try {
    return await f();
  } finally {
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
  }
}

async function demo(name: string, mode?: ProxyMode, family: IpFamily = 'dual'): Promise<number> {
  if (loadState(name)) { log('a lab is up already: tearing it down first'); await labDown(name); }
  const t0 = Date.now();
  const s = await withInterruptCleanup(name, () => labUp({ name, nodes: 2, podsPerNode: 2, proxyMode: mode, ipFamily: family, progress: (m) => log(`  ${m}`) }));
  log(`\nlab up in ${((Date.now() - t0) / 1000).toFixed(1)} s.`);
  const svc = s.services!.find((x) => x.name === ECHO_SERVICES[0].name)!;
  const families = [...(family !== 'ipv6' ? [{ label: 'IPv4', ip: (p: LabPod) => p.ip, clusterIP: svc.clusterIP }] : []),
    ...(family !== 'ipv4' ? [{ label: 'IPv6', ip: (p: LabPod) => p.ip6!, clusterIP: svc.clusterIP6 ?? svc.clusterIP }] : [])];
  let ok = true;
  for (const f of families) {
    const pods = s.pods.map((p) => ({ ...p, ip: f.ip(p) }));
    log(`\n${f.label}: reachability between every pair of pods, then from each pod to the Service ${svc.namespace}/${svc.name} (ClusterIP ${f.clusterIP}) and to ${svc.name}.${svc.namespace}.svc.cluster.local through the DNS Service:`);
    const m = await reachability(pods);
    const sm = await serviceReachability(pods, f.clusterIP, `${svc.name}.${svc.namespace}.svc.cluster.local`);
    log(formatMatrix(pods, m, sm));
    ok &&= allReachable(m) && allServicesReachable(sm);
  }
  const a = s.pods.find((p) => p.node === 'node1')!, b = s.pods.find((p) => p.node === 'node2')!;
  log(`\ncross-node iperf3, TCP 1 stream, 5 s, ${a.name} → ${b.name}, and the kernel's VXLAN (set up as flannel does) in the same run:`);
  const rows: [string, number, number][] = [];
  for (const f of families) rows.push([`twill ${f.label}`, (await tcpThroughput({ netns: b.netns, ip: f.ip(b) }, a.netns, 5)).gbps, percentile(await pingRtts(a.netns, f.ip(b), 200), 50)]);
  const k = await kernelVxlanPair('twkv-');
  try {
    for (const f of families) {
      const kb = k.pods[1], ip = f.label === 'IPv6' ? kb.ip6! : kb.ip;
      rows.push([`kernel VXLAN ${f.label}`, (await tcpThroughput({ netns: kb.netns, ip }, k.pods[0].netns, 5)).gbps, percentile(await pingRtts(k.pods[0].netns, ip, 200), 50)]);
    }
  } finally {
    await k.teardown();
  }
  for (const [what, g, r] of rows) log(`  ${what.padEnd(18)} ${g.toFixed(2)} Gbps   ping p50 ${r.toFixed(0)} µs`);
  for (const f of families) {
    const t = rows.find((r) => r[0] === `twill ${f.label}`)![1], kv = rows.find((r) => r[0] === `kernel VXLAN ${f.label}`)![1];
    log(`  ratio ${f.label}         ${(t / kv).toFixed(3)}`);
  }
  log(`\n${ok ? 'every pod reaches every other pod, the Service and the DNS' : 'SOME PAIRS FAILED (see the matrix)'}. The lab stays up:`);
  const next: [string, string][] = [
    ['status', 'list nodes, pods and Services'],
    [`exec ${a.name} -- ping ${b.ip}`, ''],
    ...(b.ip6 && b.ip6 !== b.ip ? [[`exec ${a.name} -- ping ${b.ip6}`, ''] as [string, string]] : []),
    [`exec ${a.name} -- getent hosts ${svc.name}`, ''],
    [`metrics ${s.nodes[0].name}`, 'its engine\'s counters (Prometheus text)'],
    ['down', 'tear it all down'],
  ];
  const w = Math.max(...next.map(([c]) => again(name, c).length)) + 3;
  for (const [c, what] of next) log(`  ${what ? again(name, c).padEnd(w) + what : again(name, c)}`);
  return ok ? 0 : 1;
}
