// `twill lab ...`: up, status, exec, down, and demo (what `npm run lab` runs).
import { request } from '../dataplane/agent/server.js';
import { spawnSync } from 'node:child_process';
import { labUp, labDown, labPolicies, labPods, nodeCni, ECHO_SERVICES } from '../lab/lab.js';
import { PROXY_MODES, type ProxyMode } from '../lab/services.js';
import { loadState } from '../lab/state.js';
import { agentView } from '../lab/supervisor.js';
import type { EngineTuning } from '../dataplane/engine/config.js';
import { reachability, formatMatrix, allReachable, tcpThroughput, pingRtts, percentile, serviceReachability, allServicesReachable } from '../lab/measure.js';
import { kernelVxlanPair } from '../bench/peers/kernel-vxlan.js';

function flag(args: string[], name: string, def?: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
}
const int = (args: string[], name: string, def: number) => {
  const v = Number(flag(args, name, String(def)));
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer`);
  return v;
};
// --busy-poll-us N (0: workers sleep at once), --pin-workers: engine/config.ts.
function engineFlags(args: string[]): EngineTuning {
  const t: EngineTuning = {};
  const bp = flag(args, '--busy-poll-us');
  if (bp !== undefined) {
    t.busyPollUs = Number(bp);
    if (!Number.isInteger(t.busyPollUs) || t.busyPollUs < 0) throw new Error('--busy-poll-us must be a whole number of microseconds');
  }
  if (args.includes('--pin-workers')) t.pinWorkers = true;
  return t;
}
// --proxy-mode iptables|nftables: how kube-proxy's Service rules are written on each node (lab/services.ts).
function proxyMode(args: string[]): ProxyMode | undefined {
  const m = flag(args, '--proxy-mode');
  if (m === undefined && !args.includes('--proxy-mode')) return undefined;
  if (!PROXY_MODES.includes(m as ProxyMode)) throw new Error(`--proxy-mode must be ${PROXY_MODES.join(' or ')}, not ${m === undefined ? 'nothing' : `"${m}"`}`);
  return m as ProxyMode;
}
const log = (m: string) => process.stdout.write(`${m}\n`);
const UP_USAGE = 'twill lab up [--name N] [--nodes N] [--pods-per-node M] [--workers W] [--busy-poll-us U] [--pin-workers] [--etcd] [--proxy-mode iptables|nftables] [-f pods.yaml...]';
const files = (args: string[]) => args.flatMap((a, i) => (a === '-f' || a === '--filename' ? [args[i + 1]] : [])).filter(Boolean);

export async function labCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const name = flag(rest, '--name', 'lab')!;
  switch (sub) {
    case 'up': {
      const mode = proxyMode(rest);
      const s = await withInterruptCleanup(name, () => labUp({ name, nodes: int(rest, '--nodes', 2), podsPerNode: int(rest, '--pods-per-node', 2), workers: rest.includes('--workers') ? int(rest, '--workers', 1) : undefined, engine: engineFlags(rest), manifests: files(rest), etcd: rest.includes('--etcd') || undefined, proxyMode: mode, progress: log }));
      log(`lab "${s.name}" is up: ${s.nodes.length} nodes, ${s.pods.length} pods. \`twill lab status\` lists them.`);
      return 0;
    }
    case 'status': {
      const s = loadState(name);
      if (!s) { log(`no lab "${name}" is up`); return 1; }
      // pid: the live agent (null while none runs); restarts and lastExit as the node's supervisor recorded them
      const nodes = s.nodes.map((n) => { const a = agentView(n); return { name: n.name, netns: n.netns, underlayIP: n.underlayIP, podCIDR: n.podCIDR, pid: a.pid, restarts: a.restarts, lastExit: a.lastExit, agentState: a.state, supervisorPid: a.supervisorPid, cniConfList: nodeCni(n).confFile, cniBinDir: nodeCni(n).binDir }; });
      const pods = labPods(s).map((p) => ({ name: p.name, namespace: p.namespace, node: p.node, netns: p.netns, ip: p.ip }));
      const services = (s.services ?? []).map((x) => ({ ...x, endpoints: labPods(s).filter((p) => p.namespace === x.namespace && p.ip && (!x.endpoints || x.endpoints.includes(p.name))).map((p) => p.ip) }));
      if (rest.includes('--json')) { log(JSON.stringify({ nodes, pods, proxyMode: s.proxyMode, serviceCIDR: s.serviceCIDR, services })); return 0; }
      for (const n of nodes) log(`node ${n.name}  netns ${n.netns}  underlay ${n.underlayIP}  pods ${n.podCIDR}  agent pid ${n.pid ?? 'none'} (${n.agentState}, restarts ${n.restarts}${n.lastExit ? `, last exit: ${n.lastExit.reason} at ${n.lastExit.at}` : ''})`);
      for (const p of pods) log(`pod  ${p.namespace}/${p.name}  on ${p.node}  ${p.ip}  netns ${p.netns}`);
      if (s.services) log(`services (kube-proxy ${s.proxyMode} mode, service CIDR ${s.serviceCIDR}):`);
      for (const x of services) {
        const ports = x.ports.map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ''}/${p.protocol}`).join(',');
        log(`svc  ${x.namespace}/${x.name}  ${x.clusterIP}  ${ports}${x.ports.some((p) => p.nodePort) ? `  externalTrafficPolicy ${x.externalTrafficPolicy ?? 'Cluster'}` : ''}  endpoints ${x.endpoints.join(',') || '<none>'}`);
      }
      return 0;
    }
    case 'exec': {
      const s = loadState(name);
      const dash = rest.indexOf('--');
      const podName = rest[0];
      const pod = s && labPods(s).find((p) => p.name === podName || `${p.namespace}/${p.name}` === podName);
      if (!pod || dash < 0 || dash === rest.length - 1) { log('usage: twill lab exec <pod> -- <command...>'); return 2; }
      const r = spawnSync('ip', ['netns', 'exec', pod.netns, ...rest.slice(dash + 1)], { stdio: 'inherit' });
      return r.status ?? 1;
    }
    case 'metrics': {
      const s = loadState(name);
      const n = s?.nodes.find((x) => x.name === rest[0]);
      if (!n) { log(`usage: twill lab metrics <node>   (nodes: ${s?.nodes.map((x) => x.name).join(', ') ?? 'no lab is up'})`); return 2; }
      process.stdout.write(String(await request(n.socket, { op: 'metrics' })));
      return 0;
    }
    case 'down': {
      const r = await labDown(name);
      log(`lab "${name}" is down: stopped ${r.processes} processes, deleted ${r.namespaces} namespaces${r.skipped ? `; left ${r.skipped} recorded pids alone (now other processes)` : ''}`);
      return 0;
    }
    case 'apply':
    case 'delete': {
      if (!files(rest).length) { log(`usage: twill lab ${sub} -f FILE [-f FILE...]`); return 2; }
      const r = await labPolicies(name, files(rest), sub === 'delete');
      log(`${sub === 'apply' ? 'applied' : 'deleted'}: ${r.policies} NetworkPolicies in force, enforced by every node in ${r.ms.toFixed(0)} ms`);
      return 0;
    }
    case 'demo':
      return demo(name, proxyMode(rest));
    default:
      log(`usage: twill lab up|status|exec|metrics|apply|delete|down|demo\n  ${UP_USAGE}`);
      return 2;
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

async function demo(name: string, mode?: ProxyMode): Promise<number> {
  if (loadState(name)) { log('a lab is up already: tearing it down first'); await labDown(name); }
  const t0 = Date.now();
  const s = await withInterruptCleanup(name, () => labUp({ name, nodes: 2, podsPerNode: 2, proxyMode: mode, progress: (m) => log(`  ${m}`) }));
  const echo = ECHO_SERVICES[0];
  log(`\nlab up in ${((Date.now() - t0) / 1000).toFixed(1)} s. Reachability between every pair of pods, then from each pod to the Service ${echo.namespace}/${echo.name} (ClusterIP ${echo.clusterIP}) and to ${echo.name}.${echo.namespace}.svc.cluster.local through the DNS Service:`);
  const m = await reachability(s.pods);
  const svc = await serviceReachability(s.pods, echo.clusterIP, `${echo.name}.${echo.namespace}.svc.cluster.local`);
  log(formatMatrix(s.pods, m, svc));
  const ok = allReachable(m) && allServicesReachable(svc);
  const a = s.pods.find((p) => p.node === 'node1')!, b = s.pods.find((p) => p.node === 'node2')!;
  log(`\ncross-node iperf3, TCP 1 stream, 5 s, ${a.name} → ${b.name}, and the kernel's VXLAN (set up as flannel does) in the same run:`);
  const twill = (await tcpThroughput(b, a.netns, 5)).gbps;
  const rtt = percentile(await pingRtts(a.netns, b.ip, 200), 50);
  const k = await kernelVxlanPair('twkv-');
  let kg = NaN, krtt = NaN;
  try {
    kg = (await tcpThroughput(k.pods[1], k.pods[0].netns, 5)).gbps;
    krtt = percentile(await pingRtts(k.pods[0].netns, k.pods[1].ip, 200), 50);
  } finally {
    await k.teardown();
  }
  log(`  twill         ${twill.toFixed(2)} Gbps   ping p50 ${rtt.toFixed(0)} µs`);
  log(`  kernel VXLAN  ${kg.toFixed(2)} Gbps   ping p50 ${krtt.toFixed(0)} µs`);
  log(`  ratio         ${(twill / kg).toFixed(3)}`);
  log(`\n${ok ? 'every pod reaches every other pod, the Service and the DNS' : 'SOME PAIRS FAILED (see the matrix)'}. The lab stays up:`);
  log(`  node dist/cli/twill.js lab status             list nodes, pods and Services`);
  log(`  node dist/cli/twill.js lab exec ${a.name} -- ping ${b.ip}`);
  log(`  node dist/cli/twill.js lab exec ${a.name} -- getent hosts ${echo.name}`);
  log(`  node dist/cli/twill.js lab metrics ${s.nodes[0].name}          its engine's counters (Prometheus text)`);
  log(`  node dist/cli/twill.js lab down               tear it all down`);
  return ok ? 0 : 1;
}
