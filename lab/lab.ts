// The lab: nodes and pods as network namespaces on one machine, with a real
// agent and engine per node. Nodes hang off a bridge in an underlay namespace
// of their own; nothing is added to the root namespace.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { availableParallelism } from 'node:os';
import { ipn, netnsDel, netnsList, sysctl } from '../lib/sh.js';
import { alive, procStart, sameProcess, stopProcess } from './proc.js';
import { AGENT_GRACE_MS, agentConfigFile, readSupervisorStatus, supervisorLogFile } from './supervisor.js';
import { IP_FAMILIES, labDir, labPrefix, loadState, saveState, type IpFamily, type LabNode, type LabPod, type LabState } from './state.js';
import { distFile } from '../lib/paths.js';
import { request } from '../agent/socket.js';
import { installNodeCni, cniAdd, type NodeCni } from '../cni/runtime.js';
import { formatIPv4Address, parseIPv4Cidr } from '../lib/ipv4.js';
import { isIPv6 } from '../lib/ipv6.js';
import type { AgentConfig } from '../agent/main.js';
import type { EngineTuning } from '../dataplane/engine/config.js';
import type { Change, NodeRecord, PolicyView } from '../agent/sources/file.js';
import { commitChanges, createDatastore, latestRev, readDatastore } from './datastore.js';
import { loadModelFiles } from '../policy/manifests.js';
import { NS_NAME_LABEL, podKey, type ContainerPort, type Namespace } from '../policy/model.js';
import { launchWorkload } from './workload-process.js';
import { LabKube, labKubeconfigFile, startLabKubeApi } from './kube-role.js';
import { etcdNamespace, etcdPod, labEtcdEndpoint, startLabEtcd } from './etcd-role.js';
import { vtepMac6For, vtepMacFor } from '../agent/addressing.js';
import type { KubeConfig } from '../agent/sources/kube/client.js';
import { applyProxyRules, ipv6ProxyView, validateService, SERVICE_CIDR, SERVICE_CIDR6, type Endpoint, type ProxyMode, type ProxyView, type ServiceSpec } from './services.js';
import { DNS_POD, dnsRecords, dnsService, launchDns, removePodResolvConfs, writeDnsRecords, writePodResolvConf } from './dns.js';

export interface UpOptions {
  name?: string;
  nodes?: number;
  podsPerNode?: number;
  clusterCIDR?: string;
  workers?: number; // per node; default: the machine's cores shared out among the nodes, at least one
  underlayMTU?: number;
  engine?: EngineTuning; // engine settings (absent: the engine's defaults)
  manifests?: string[]; // Kubernetes YAML: Namespaces and Pods to create (instead of the default pods), NetworkPolicies to apply
  kubernetes?: KubeConfig | 'lab'; // agents learn the cluster from this API server; the lab writes Nodes, Namespaces and Pods there (lab/kube-role.ts). 'lab': the lab runs its own (lab/kube-apiserver.ts) and writes a kubeconfig for kubectl
  etcd?: boolean; // agents learn the cluster from a real etcd the lab runs on its underlay (lab/etcd-role.ts)
  proxyMode?: ProxyMode; // how kube-proxy's Service rules are written on each node: iptables (default, as kind) or nftables
  ipFamily?: IpFamily; // as kind's networking.ipFamily: ipv4 (default), dual (IPv6 pods beside IPv4 ones) or ipv6 (IPv6 pods only)
  progress?: (msg: string) => void;
}

const UNDERLAY_NET = '172.30.0';
const UNDERLAY_GATEWAY = `${UNDERLAY_NET}.1`; // br0's address: the nodes' default route, as a kind node's is Docker's bridge
// Dual-stack, as kind makes it: the nodes' IPv6 underlay is kind's Docker network, the
// pods' IPv6 range kind's default, one /64 per node; the IPv6 Service range kind's default.
const UNDERLAY_NET6 = 'fc00:f853:ccd:e793::';
const UNDERLAY_GATEWAY6 = `${UNDERLAY_NET6}1`;
export const CLUSTER_CIDR6 = 'fd00:10:244::/56';
export { SERVICE_CIDR6 };
export const LAB_METRICS_PORT = 9871; // each agent serves /metrics on it, inside its node's namespace
const NODE = process.execPath;

export async function labUp(o: UpOptions = {}): Promise<LabState> {
  const name = o.name ?? 'lab';
  if (loadState(name)) throw new Error(`lab "${name}" is already up: run \`twill lab down${name === 'lab' ? '' : ` --name ${name}`}\` first`);
  const prefix = labPrefix(name);
  if ((o.kubernetes || o.etcd) && o.manifests?.length) throw new Error('manifests are applied through the datastore: with a Kubernetes API or etcd, write the objects there');
  if (o.kubernetes && o.etcd) throw new Error('one cluster source: kubernetes or etcd');
  if (o.proxyMode && o.proxyMode !== 'iptables' && o.proxyMode !== 'nftables') throw new Error(`proxyMode must be iptables or nftables, not ${String(o.proxyMode)}`);
  if (o.ipFamily && !IP_FAMILIES.includes(o.ipFamily)) throw new Error(`ipFamily must be ${IP_FAMILIES.join(' or ')}, not ${String(o.ipFamily)}`);
  const family = o.ipFamily ?? 'ipv4', dual = family !== 'ipv4', only6 = family === 'ipv6'; // dual: the pods have IPv6
  if (only6 && o.etcd) throw new Error('an IPv6-only lab cannot use etcd: flannel\'s etcd leases always carry an IPv4 subnet');
  const s: LabState = { name, prefix, dir: labDir(name), underlayNs: `${prefix}underlay`, clusterCIDR: only6 ? '' : o.clusterCIDR ?? '10.244.0.0/16', underlayMTU: o.underlayMTU ?? 1500, nodes: [], pods: [], pids: [], engine: o.engine, kubernetes: o.kubernetes === 'lab' ? undefined : o.kubernetes, etcd: o.etcd,
    proxyMode: o.proxyMode ?? 'iptables', serviceCIDR: SERVICE_CIDR,
    ...(dual ? { ipFamily: family, clusterCIDR6: CLUSTER_CIDR6, serviceCIDR6: SERVICE_CIDR6 } : {}),
    workers: o.workers ?? Math.max(1, Math.floor(availableParallelism() / (o.nodes ?? 2))) };
  const wanted = o.manifests?.length ? loadModelFiles(o.manifests) : undefined; // invalid manifests fail before anything is made
  const say = o.progress ?? (() => undefined);
  mkdirSync(s.dir, { recursive: true });
  saveState(s); // from here on, down finds whatever exists
  try {
    if (o.kubernetes === 'lab') {
      s.kubernetes = await startLabKubeApi(s);
      saveState(s);
      say(`kube-apiserver (the lab's stand-in): kubeconfig ${labKubeconfigFile(s)}`);
    }
    say('underlay: bridge in its own namespace');
    ipn('', 'netns', 'add', s.underlayNs);
    ipn(s.underlayNs, 'link', 'set', 'lo', 'up');
    ipn(s.underlayNs, 'link', 'add', 'br0', 'type', 'bridge');
    ipn(s.underlayNs, 'addr', 'add', `${UNDERLAY_GATEWAY}/24`, 'dev', 'br0');
    if (dual) ipn(s.underlayNs, '-6', 'addr', 'add', `${UNDERLAY_GATEWAY6}/64`, 'dev', 'br0', 'nodad');
    ipn(s.underlayNs, 'link', 'set', 'br0', 'up');
    const mtu = s.underlayMTU;
    const count = o.nodes ?? 2;
    const cluster = parseIPv4Cidr(o.clusterCIDR ?? '10.244.0.0/16');
    for (let i = 1; i <= count; i++) {
      const node = `node${i}`;
      const n: LabNode = {
        name: node, netns: `${prefix}${node}`, underlayIP: `${UNDERLAY_NET}.${10 + i}`,
        podCIDR: only6 ? '' : `${formatIPv4Address((cluster.prefix + (i << 8)) >>> 0)}/24`, vtepMAC: vtepMacFor(o.kubernetes ? node : `${name}/${node}`), // with an API, the agent's own choice
        pid: 0, stateDir: path.join(s.dir, node), socket: path.join(s.dir, node, 'agent.sock'), log: path.join(s.dir, node, 'agent.log'),
        ...(dual ? { underlayIP6: `${UNDERLAY_NET6}${10 + i}`, podCIDR6: `fd00:10:244:${i.toString(16)}::/64`, vtepMAC6: vtepMac6For(o.kubernetes ? node : `${name}/${node}`) } : {}),
      };
      say(`${node}: namespace ${n.netns}, underlay ${n.underlayIP}${dual ? ` and ${n.underlayIP6}` : ''}, pods ${[n.podCIDR, n.podCIDR6].filter(Boolean).join(' and ')}`);
      addNodeNs(s, n, mtu);
      s.nodes.push(n);
      saveState(s);
    }
    // the pods' namespaces (with the labels the manifests give) and the policies exist before the pods
    const namespaces: Namespace[] = [...(wanted?.namespaces ?? [])];
    for (const ns of [...(wanted ? wanted.pods.map((p) => p.namespace) : ['default']), DNS_POD.namespace]) {
      if (!namespaces.some((x) => x.name === ns)) namespaces.push({ name: ns, labels: { [NS_NAME_LABEL]: ns } });
    }
    createDatastore(datastoreDir(s), { clusterCIDR: s.clusterCIDR, ...(s.clusterCIDR6 ? { clusterCIDR6: s.clusterCIDR6 } : {}), nodes: s.nodes.map(nodeRecord), model: { namespaces, pods: [], policies: wanted?.policies ?? [] } });
    if (s.etcd) {
      say('etcd: a control-plane host on the underlay, 172.30.0.2');
      await startLabEtcd(s, mtu, s.clusterCIDR6);
      for (const ns of namespaces) etcdNamespace(s, ns.name, ns.labels);
    }
    if (s.kubernetes) await withKube(s, async (k) => {
      for (const n of s.nodes) await k.node(n);
      for (const ns of namespaces) await k.namespace(ns.name, ns.labels);
    });
    for (const n of s.nodes) {
      await startAgent(s, n);
      installNodeCni(n.stateDir, n.socket);
      saveState(s);
    }
    if (wanted) {
      for (const [k, p] of wanted.pods.entries()) {
        const n = s.nodes[k % s.nodes.length];
        const pod = await addPod(s, n, p.name, p.namespace, { labels: p.labels, containerPorts: p.containerPorts });
        say(`pod ${pod.namespace}/${pod.name} on ${n.name}: ${podIPs(pod)}`);
      }
      await waitForRev(s, latestRev(datastoreDir(s)));
    } else {
      for (const n of s.nodes) {
        for (let k = 1; k <= (o.podsPerNode ?? 2); k++) {
          const pod = await addPod(s, n, `${n.name}-p${k}`, 'default');
          say(`pod ${pod.namespace}/${pod.name} on ${n.name}: ${podIPs(pod)}`);
        }
      }
    }
    // Services as kind has them: CoreDNS behind kube-dns, and the lab's echo workloads behind ClusterIP and NodePort Services.
    const kubeDns = dnsService(family);
    s.services = [kubeDns, ...ECHO_SERVICES.map((x, k) => (only6 ? { ...x, clusterIP: ECHO_CLUSTER_IPS6[k] } : dual ? { ...x, clusterIP6: ECHO_CLUSTER_IPS6[k] } : x))];
    saveState(s);
    const dns = await addPod(s, s.nodes[0], DNS_POD.name, DNS_POD.namespace, { workload: 'dns' });
    say(`pod ${dns.namespace}/${dns.name} on ${dns.node}: ${podIPs(dns)} (dnsmasq, behind ${kubeDns.namespace}/${kubeDns.name} ${kubeDns.clusterIP}${kubeDns.clusterIP6 ? ` ${kubeDns.clusterIP6}` : ''}); kube-proxy rules in ${s.proxyMode} mode`);
    return s;
  } catch (e) {
    say(`lab up failed: ${e instanceof Error ? e.message : String(e)}; tearing down`);
    await labDown(name);
    throw e;
  }
}

function addNodeNs(s: LabState, n: LabNode, mtu: number): void {
  ipn('', 'netns', 'add', n.netns);
  ipn(n.netns, 'link', 'set', 'lo', 'up');
  const peer = `u-${n.name}`.slice(0, 15);
  ipn(s.underlayNs, 'link', 'add', peer, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', String(mtu), 'netns', n.netns);
  ipn(s.underlayNs, 'link', 'set', peer, 'master', 'br0', 'up');
  ipn(n.netns, 'addr', 'add', `${n.underlayIP}/24`, 'dev', 'eth0');
  ipn(n.netns, 'link', 'set', 'eth0', 'up');
  // As on a kind node: forwarding on, strict reverse-path filtering.
  sysctl(n.netns, 'net.ipv4.ip_forward', '1');
  sysctl(n.netns, 'net.ipv4.conf.all.rp_filter', '1');
  sysctl(n.netns, 'net.ipv4.conf.default.rp_filter', '1');
  sysctl(n.netns, 'net.ipv4.conf.all.route_localnet', '1'); // kube-proxy's localhost NodePorts
  ipn(n.netns, 'route', 'add', 'default', 'via', UNDERLAY_GATEWAY); // a ClusterIP is routable from the node itself only with a route to it
  if (n.underlayIP6) {
    ipn(n.netns, '-6', 'addr', 'add', `${n.underlayIP6}/64`, 'dev', 'eth0', 'nodad');
    sysctl(n.netns, 'net.ipv6.conf.all.forwarding', '1');
    ipn(n.netns, '-6', 'route', 'add', 'default', 'via', UNDERLAY_GATEWAY6);
  }
  mkdirSync(n.stateDir, { recursive: true });
}

/** The lab's datastore (agent/sources/file.ts): the directory every agent watches. */
export function datastoreDir(s: Pick<LabState, 'dir'>): string { return path.join(s.dir, 'datastore'); }

const nodeRecord = (n: LabNode): NodeRecord => ({
  name: n.name, underlayIP: n.underlayIP, podCIDR: n.podCIDR, vtepMAC: n.vtepMAC, backend: 'twill',
  ...(n.podCIDR6 ? { podCIDR6: n.podCIDR6, underlayIP6: n.underlayIP6, vtepMAC6: n.vtepMAC6 } : {}),
});

/** Namespaces, pods and NetworkPolicies as the agents see them. */
export function labModel(name: string): PolicyView {
  return readDatastore(datastoreDir({ dir: labDir(name) })).model ?? { namespaces: [], pods: [], policies: [] };
}

/** Writes one change set to the datastore and resolves once every agent enforces it; returns the agents' status. */
export async function labCommit(s: LabState, changes: Change[], timeoutMs = 10_000): Promise<AgentStatus> {
  return waitForRev(s, commitChanges(datastoreDir(s), changes), timeoutMs);
}

/**
 * Runs a node's agent inside its namespace, under the node's supervisor (lab/supervisor.ts),
 * and waits until it answers. The supervisor restarts the agent whenever it exits; when
 * one already runs for the node (after a kill -9, say), this starts nothing and waits for
 * the agent it runs now. A first start fails as soon as the agent exits.
 */
export async function startAgent(s: LabState, n: LabNode): Promise<void> {
  const source = s.kubernetes ? { kubernetes: s.kubernetes, clusterCIDR: s.clusterCIDR, ...(s.clusterCIDR6 ? { clusterCIDR6: s.clusterCIDR6 } : {}) }
    : s.etcd ? { etcd: { endpoints: [labEtcdEndpoint] }, publicIP: n.underlayIP, ...(n.underlayIP6 ? { publicIPv6: n.underlayIP6 } : {}) }
    : { datastore: datastoreDir(s) };
  const cfg: AgentConfig = { node: n.name, ...source, stateDir: n.stateDir, socket: n.socket, workers: s.workers ?? 2, underlayMTU: s.underlayMTU, metrics: `0.0.0.0:${LAB_METRICS_PORT}`, ...(s.serviceCIDR ? { serviceCIDR: s.serviceCIDR } : {}), ...(s.serviceCIDR6 ? { serviceCIDR6: s.serviceCIDR6 } : {}), ...s.engine };
  const cfgFile = agentConfigFile(n);
  writeFileSync(`${cfgFile}.tmp`, JSON.stringify(cfg, null, 1)); // the supervisor reads it at every start
  renameSync(`${cfgFile}.tmp`, cfgFile);
  const fresh = !(n.supervisor && sameProcess(n.supervisor.pid, n.supervisor.start));
  if (fresh) {
    // An agent whose supervisor was killed may still run: one agent per node.
    for (const a of [readSupervisorStatus(n)?.agent, { pid: n.pid, start: n.pidStart }]) if (a?.pid) await stopProcess(a.pid, a.start);
    const out = openSync(supervisorLogFile(n), 'a');
    const child = spawn(NODE, [distFile('lab/supervisor.js'), s.name, n.name], { detached: true, stdio: ['ignore', out, out] });
    closeSync(out);
    child.unref();
    n.supervisor = { pid: child.pid!, start: procStart(child.pid!) ?? 0 };
    saveState(s); // from here on, down finds it
  }
  const sup = n.supervisor!;
  const deadline = Date.now() + 15_000;
  for (;;) {
    const st = readSupervisorStatus(n);
    const mine = st?.supervisor.pid === sup.pid && st.supervisor.start === sup.start ? st : undefined; // not a file left by an earlier supervisor
    if (fresh && mine?.lastExit) throw new Error(`agent of ${n.name} ${mine.lastExit.reason} (see ${n.log})`);
    if (!sameProcess(sup.pid, sup.start)) throw new Error(`the supervisor of ${n.name} exited (see ${supervisorLogFile(n)})`);
    if (mine?.agent && sameProcess(mine.agent.pid, mine.agent.start)) {
      try {
        const r = (await request(n.socket, { op: 'status' }, 1000)) as { podCIDR: string; podCIDR6?: string; pid: number };
        if (r.pid === mine.agent.pid) {
          n.pid = r.pid;
          n.pidStart = mine.agent.start;
          n.podCIDR = r.podCIDR; // from etcd, the agent leases its own
          if (r.podCIDR6) n.podCIDR6 = r.podCIDR6;
          return;
        }
      } catch { /* not listening yet */ }
    }
    if (Date.now() > deadline) throw new Error(`agent of ${n.name} did not come up within 15 s${mine?.lastExit ? `; last exit: ${mine.lastExit.reason}` : ''} (see ${n.log})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Upgrades a node's agent without an outage: its supervisor starts a new agent
 * that takes the node over from the running one (agent/handover.ts),
 * then stops the old one. Resolves with the new agent's pid once it serves the node.
 */
export async function labUpgrade(s: LabState, nodeName: string, timeoutMs = 40_000): Promise<{ pid: number; ms: number }> {
  const n = s.nodes.find((x) => x.name === nodeName);
  if (!n) throw new Error(`no node "${nodeName}" in lab "${s.name}" (nodes: ${s.nodes.map((x) => x.name).join(', ')})`);
  const sup = n.supervisor;
  if (!sup || !sameProcess(sup.pid, sup.start)) throw new Error(`the agent of ${n.name} is not supervised (see \`twill lab status\`)`);
  const before = readSupervisorStatus(n)?.upgrades ?? 0, t0 = performance.now();
  process.kill(sup.pid, 'SIGUSR2');
  for (;;) {
    const st = readSupervisorStatus(n);
    if ((st?.upgrades ?? 0) > before && st?.agent) {
      n.pid = st.agent.pid;
      n.pidStart = st.agent.start;
      saveState(s);
      return { pid: st.agent.pid, ms: performance.now() - t0 };
    }
    if (performance.now() - t0 > timeoutMs) throw new Error(`the agent of ${n.name} was not upgraded within ${timeoutMs} ms (see ${supervisorLogFile(n)})`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The conflist and plugin dir a node's runtime uses. */
export function nodeCni(n: LabNode): NodeCni {
  return { confFile: path.join(n.stateDir, 'cni', 'net.d', '10-twill.conflist'), binDir: path.join(n.stateDir, 'cni', 'bin') };
}

/**
 * Creates a pod the way a runtime does: a network namespace, then the CNI plugin's ADD
 * inside the node's namespace. Its workload is the echo server, or with `workload: 'dns'`
 * the cluster DNS (lab/dns.ts), which is kept as s.dnsPod. Services are then rendered
 * again on every node, as kube-proxy would once the pod's endpoint is ready.
 */
export async function addPod(s: LabState, n: LabNode, name: string, namespace: string, spec: { labels?: Record<string, string>; containerPorts?: ContainerPort[]; workload?: 'echo' | 'dns' } = {}): Promise<LabPod> {
  const netns = `${s.prefix}pod-${namespace === 'default' ? '' : `${namespace}-`}${name}`;
  const containerId = createHash('sha256').update(`${s.name}/${namespace}/${name}`).digest('hex').slice(0, 16);
  const dns = spec.workload === 'dns';
  ipn('', 'netns', 'add', netns);
  const pod: LabPod = { name, namespace, node: n.name, netns, ip: '', mac: '', hostIf: '', containerId, workloadPid: 0 };
  if (dns) s.dnsPod = pod; else s.pods.push(pod);
  saveState(s);
  const r = cniAdd(n.netns, nodeCni(n), { containerId, netns, podName: name, podNamespace: namespace });
  const ip4 = isIPv6(r.ip) ? undefined : r.ip; // r.ip is the first address: the IPv6 one on an IPv6-only node
  Object.assign(pod, { ip: r.ip, mac: r.podMac, hostIf: r.hostIf, ...(r.ip6 ? { ip6: r.ip6 } : {}) });
  const ports = spec.containerPorts ?? (dns ? [{ containerPort: 53, protocol: 'UDP' as const }, { containerPort: 53, protocol: 'TCP' as const }] : []);
  if (dns) {
    await writeDnsRecords(s.dir, dnsRecords(s.services ?? [], labPods(s)));
    pod.workloadPid = await launchDns(s.dir, netns);
  } else {
    writePodResolvConf(netns, namespace, { ipv6Only: s.ipFamily === 'ipv6' }); // dnsPolicy ClusterFirst: resolve through the kube-dns Service
    pod.workloadPid = await launchWorkload(netns, ports.length ? { tcp: ports.filter((p) => p.protocol === 'TCP').map((p) => p.containerPort), udp: ports.filter((p) => p.protocol === 'UDP').map((p) => p.containerPort) } : undefined);
  }
  s.pids.push(pod.workloadPid);
  saveState(s);
  // Policy sees every pod with its labels and ports, as it would see the Pod object.
  commitChanges(datastoreDir(s), [{ put: 'pod', object: { namespace, name, labels: spec.labels ?? {}, ...(ip4 ? { ip: ip4 } : {}), ...(r.ip6 ? { ip6: r.ip6 } : {}), containerPorts: ports } }]);
  if (s.kubernetes) await withKube(s, (k) => k.pod(namespace, name, n.name, r.ip, spec.labels ?? {}, ports, undefined, { ip6: ip4 ? r.ip6 : undefined }));
  if (s.etcd) etcdPod(s, namespace, name, r.ip, spec.labels ?? {}, ports, r.ip6);
  await syncServices(s);
  return pod;
}

/** A pod's addresses, IPv4 first, as `kubectl get pod -o wide` would list its podIPs. */
export function podIPs(p: LabPod): string { return [...new Set([p.ip, p.ip6].filter(Boolean))].join(' '); }

/** Every pod of the lab, the DNS pod included. */
export function labPods(s: LabState): LabPod[] {
  return s.dnsPod ? [...s.pods, s.dnsPod] : s.pods;
}

/** The lab's echo workloads behind a ClusterIP Service and two NodePort Services (externalTrafficPolicy Cluster and Local). */
const echoPorts = (np?: number) => [
  { name: 'tcp-echo', protocol: 'TCP' as const, port: 8080, nodePort: np },
  { name: 'udp-echo', protocol: 'UDP' as const, port: 8081, nodePort: np && np + 1 },
];
const ECHO_CLUSTER_IPS6 = ['fd00:10:96::64', 'fd00:10:96::65', 'fd00:10:96::66']; // a dual-stack lab's, in ECHO_SERVICES' order
export const ECHO_SERVICES: ServiceSpec[] = [
  { namespace: 'default', name: 'echo', clusterIP: '10.96.0.100', ports: echoPorts() },
  { namespace: 'default', name: 'echo-nodeport', clusterIP: '10.96.0.101', ports: echoPorts(30080), externalTrafficPolicy: 'Cluster' },
  { namespace: 'default', name: 'echo-local', clusterIP: '10.96.0.102', ports: echoPorts(30180), externalTrafficPolicy: 'Local' },
];

/** A Service's ready endpoints: its pods (named, or every pod of its namespace) that have an address. */
function serviceEndpoints(s: LabState, spec: ServiceSpec): Endpoint[] {
  return labPods(s)
    .filter((p) => p.namespace === spec.namespace && (p.ip || p.ip6) && (!spec.endpoints || spec.endpoints.includes(p.name)))
    .map((p) => ({ ip: p.ip, node: p.node, ...(p.ip6 ? { ip6: p.ip6 } : {}) }));
}

/** What node `node`'s kube-proxy sees. */
export function proxyView(s: LabState, node: string): ProxyView {
  return { node, clusterCIDR: s.clusterCIDR, serviceCIDR: s.serviceCIDR ?? SERVICE_CIDR, services: (s.services ?? []).map((spec) => ({ spec, endpoints: serviceEndpoints(s, spec) })) };
}

/** Renders every node's kube-proxy rules and the DNS records again (each node in one transaction); nothing for a lab without Services. */
export async function syncServices(s: LabState): Promise<void> {
  if (!s.services) return;
  for (const n of s.nodes) {
    const v = proxyView(s, n.name); // kube-proxy runs one proxier per family
    const views = [...(s.clusterCIDR ? [v] : []), ...(s.clusterCIDR6 ? [ipv6ProxyView(v, s.clusterCIDR6, s.serviceCIDR6)] : [])];
    applyProxyRules(n.netns, s.proxyMode ?? 'iptables', ...views);
  }
  if (s.dnsPod) await writeDnsRecords(s.dir, dnsRecords(s.services, labPods(s)), s.dnsPod.workloadPid);
}

/** Creates or replaces a Service (validated first: a bad one changes nothing), then renders every node and the DNS records. */
export async function defineService(s: LabState, spec: ServiceSpec): Promise<void> {
  if (!s.services) throw new Error(`lab "${s.name}" has no Services (made before they existed)`);
  if (spec.clusterIP6 && !s.clusterCIDR6) throw new Error(`service ${spec.namespace}/${spec.name}: clusterIP6 ${spec.clusterIP6} in lab "${s.name}", which has no IPv6 (\`lab up --ip-family dual\`)`);
  validateService(spec, s.services);
  s.services = [...s.services.filter((x) => !(x.namespace === spec.namespace && x.name === spec.name)), spec];
  saveState(s);
  await syncServices(s);
}

/** Deletes a Service; its rules and DNS record go with the next render, which this does. */
export async function deleteService(s: LabState, namespace: string, name: string): Promise<void> {
  const before = s.services?.length ?? 0;
  s.services = (s.services ?? []).filter((x) => !(x.namespace === namespace && x.name === name));
  if (s.services.length === before) throw new Error(`no service ${namespace}/${name} in lab "${s.name}"`);
  saveState(s);
  await syncServices(s);
}

async function withKube(s: LabState, fn: (k: LabKube) => Promise<void>): Promise<void> {
  const k = new LabKube(s.kubernetes!);
  try { await fn(k); } finally { k.close(); }
}

/** Applies (or, with remove, deletes) the NetworkPolicies in manifests; resolves once every agent enforces them. */
export async function labPolicies(name: string, files: string[], remove = false): Promise<{ policies: number; ms: number }> {
  const s = loadState(name);
  if (!s) throw new Error(`no lab "${name}" is up`);
  const given = loadModelFiles(files).policies; // throws, naming the field, on an invalid manifest: nothing changes
  const t0 = performance.now();
  const st = await labCommit(s, given.map((p): Change => (remove ? { delete: 'policy', key: podKey(p) } : { put: 'policy', object: p })));
  return { policies: st.policies, ms: performance.now() - t0 };
}

export interface AgentStatus { rev: number; policies: number }

/** Resolves once every agent enforces datastore revision `rev` (or a later one); the last agent's status. */
async function waitForRev(s: LabState, rev: number, timeoutMs = 10_000): Promise<AgentStatus> {
  const deadline = Date.now() + timeoutMs;
  let st: AgentStatus | undefined;
  for (const n of s.nodes) {
    for (;;) {
      st = (await request(n.socket, { op: 'status' })) as AgentStatus;
      if (st.rev >= rev) break;
      if (Date.now() > deadline) throw new Error(`agent of ${n.name} did not apply datastore revision ${rev} within ${timeoutMs} ms (see ${n.log})`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  return st!;
}

/**
 * Tears a lab down: stops exactly the processes it started, then deletes its namespaces
 * and files. Safe to run twice. The supervisors go first, each stopping its agent; then
 * any agent still recorded (a supervisor killed -9 leaves its agent running); then the
 * workloads, DNS and etcd. Every process is named by pid and start time, so a pid the
 * kernel gave to another process since is never signalled (counted in `skipped`).
 */
export async function labDown(name = 'lab'): Promise<{ namespaces: number; processes: number; skipped: number }> {
  const s = loadState(name);
  const prefix = labPrefix(name);
  let processes = 0, skipped = 0;
  const stop = async (p: { pid: number; start?: number }, graceMs?: number) => {
    if (!p.pid) return;
    if (await stopProcess(p.pid, p.start, graceMs)) processes++;
    else if (alive(p.pid)) skipped++; // the pid lives on, but as another process (or one we cannot tell is ours)
  };
  if (s) {
    await Promise.all(s.nodes.map((n) => (n.supervisor ? stop(n.supervisor, AGENT_GRACE_MS + 2000) : undefined)));
    for (const n of s.nodes) {
      const agents = [readSupervisorStatus(n)?.agent, { pid: n.pid, start: n.pidStart }].filter((a): a is { pid: number; start: number | undefined } => !!a?.pid);
      for (const a of agents.filter((a, i) => agents.findIndex((b) => b.pid === a.pid) === i)) await stop(a);
    }
    for (const pid of s.pids) await stop({ pid, start: s.pidStarts?.[pid] ?? legacyStart(s, pid) });
  }
  const mine = netnsList().filter((ns) => ns.startsWith(prefix));
  for (const ns of mine) netnsDel(ns); // the Services' rules live in the node namespaces and go with them
  removePodResolvConfs(prefix);
  rmSync(labDir(name), { recursive: true, force: true });
  return { namespaces: mine.length, processes, skipped };
}

/**
 * A lab saved before start times were kept names bare pids. One of them is taken as the
 * lab's only if the process lives in one of the lab's network namespaces (which down
 * deletes anyway); otherwise it is left alone.
 */
function legacyStart(s: LabState, pid: number): number | undefined {
  const ino = (f: string) => { try { return statSync(f).ino; } catch { return undefined; } };
  const own = ino(`/proc/${pid}/ns/net`);
  if (own === undefined) return undefined;
  const labNs = netnsList().filter((ns) => ns.startsWith(s.prefix)).map((ns) => ino(path.join('/run/netns', ns)));
  return labNs.includes(own) ? procStart(pid) : undefined;
}
