// When a lab's agents learn the cluster from a Kubernetes API (UpOptions.kubernetes),
// the lab writes what a cluster's own parts would: the Node objects with their pod
// CIDRs, addresses and Ready condition (the kubelet registering its node, and the
// node IPAM controller), the Namespaces, and each Pod: created, then its status
// written through pods/status once the CNI plugin has wired it, as the kubelet
// does (the API server resets a new Pod's status to Pending). The agents then
// announce their VTEPs on their Nodes themselves, as flanneld does. A dual-stack
// node (podCIDR6 and underlayIP6) gets both pod CIDRs in spec.podCIDRs (IPv4
// first, as kind's node IPAM gives them) and an InternalIP of each family; a
// dual-stack pod both addresses in status.podIPs.
//
// `twill lab up --kubernetes` runs the API server too (startLabKubeApi): the stand-in
// of lab/kube-apiserver.ts as a lab process, HTTPS on 127.0.0.1 for kubectl (the
// kubeconfig it writes in the lab dir trusts its certificate and carries its token)
// and plain HTTP on a unix socket in the lab dir for the agents, which reach it from
// their node namespaces without any route.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, release, totalmem } from 'node:os';
import path from 'node:path';
import { KubeClient, KubeError, type KubeConfig } from '../agent/sources/kube/client.js';
import { distFile } from '../lib/paths.js';
import type { ContainerPort } from '../policy/model.js';
import { alive } from './proc.js';
import { saveState, type LabNode, type LabState } from './state.js';

/** The kubeconfig a lab in Kubernetes mode writes for kubectl. */
export const labKubeconfigFile = (s: Pick<LabState, 'dir'>): string => path.join(s.dir, 'kubeconfig');
export const labKubeApiLog = (s: Pick<LabState, 'dir'>): string => path.join(s.dir, 'kube-apiserver.log');

/**
 * Starts the lab's API server (its pid goes into the lab's, so down stops it) and
 * resolves, once it serves, with the agents' configuration: its unix socket and token.
 */
export async function startLabKubeApi(s: LabState, timeoutMs = 10_000): Promise<KubeConfig> {
  const token = randomBytes(24).toString('hex');
  const tokenFile = path.join(s.dir, 'kube-apiserver.token');
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  const socket = path.join(s.dir, 'kube-apiserver.sock'), kubeconfig = labKubeconfigFile(s);
  const log = openSync(labKubeApiLog(s), 'a');
  const child = spawn(process.execPath, [distFile('lab/kube-apiserver.js'), '--listen', '127.0.0.1:0', '--socket', socket, '--token-file', tokenFile, '--kubeconfig', kubeconfig],
    { detached: true, stdio: ['ignore', log, log] });
  child.unref();
  s.pids.push(child.pid!);
  saveState(s);
  const deadline = Date.now() + timeoutMs;
  while (!(existsSync(kubeconfig) && existsSync(socket))) { // both are written before it says it listens
    if (!alive(child.pid!)) throw new Error(`the lab's kube-apiserver exited (see ${labKubeApiLog(s)})`);
    if (Date.now() > deadline) throw new Error(`the lab's kube-apiserver did not come up within ${timeoutMs / 1000} s (see ${labKubeApiLog(s)})`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { server: `unix://${socket}`, token };
}

const stamp = () => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
const osImage = (): string => { try { return /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? ''; } catch { return ''; } };
const CAPACITY = { cpu: String(availableParallelism()), memory: `${Math.floor(totalmem() / 1024)}Ki`, pods: '110' };
const NODE_INFO = { osImage: osImage(), kernelVersion: release(), operatingSystem: 'linux', architecture: process.arch === 'x64' ? 'amd64' : process.arch };

export class LabKube {
  private readonly client: KubeClient;
  constructor(cfg: KubeConfig) { this.client = new KubeClient(cfg); }

  private async create(path: string, obj: unknown): Promise<void> {
    try {
      await this.client.request('POST', path, obj);
    } catch (e) {
      if (!(e instanceof KubeError && e.status === 409)) throw e; // already there: a restarted lab, or made by someone else
    }
  }

  /** The Node as the kubelet registers it and node IPAM fills its pod CIDRs in; with podCIDR6 and underlayIP6, dual stack. */
  node(n: Pick<LabNode, 'name' | 'underlayIP' | 'podCIDR'> & { podCIDR6?: string; underlayIP6?: string }): Promise<void> {
    const now = stamp();
    return this.create('/api/v1/nodes', {
      apiVersion: 'v1', kind: 'Node', metadata: { name: n.name, labels: { 'kubernetes.io/hostname': n.name, 'kubernetes.io/os': 'linux' } },
      // An IPv6-only node (podCIDR '') has its IPv6 range and address first, as kind's IPv6 cluster.
      spec: { podCIDR: n.podCIDR || n.podCIDR6, podCIDRs: [n.podCIDR, n.podCIDR6].filter(Boolean) },
      status: {
        addresses: [...(n.podCIDR ? [n.underlayIP, n.underlayIP6] : [n.underlayIP6, n.underlayIP]).filter(Boolean).map((address) => ({ type: 'InternalIP', address })), { type: 'Hostname', address: n.name }],
        conditions: [{ type: 'Ready', status: 'True', reason: 'TwillLabNodeReady', message: 'the lab node is up', lastHeartbeatTime: now, lastTransitionTime: now }],
        nodeInfo: NODE_INFO, // the machine's: every lab node shares its kernel; no kubelet, no container runtime
        capacity: CAPACITY, allocatable: CAPACITY, // the machine's too, as every node would report it
      },
    });
  }

  namespace(name: string, labels: Record<string, string> = {}): Promise<void> {
    return this.create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
  }

  /** A Pod, then its status as the kubelet writes it; `six.ip6` (and `six.hostIP6`) make it dual-stack: podIPs [IPv4, IPv6]. */
  async pod(namespace: string, name: string, node: string, ip: string, labels: Record<string, string>, ports: ContainerPort[], hostIP?: string, six: { ip6?: string; hostIP6?: string } = {}): Promise<void> {
    const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods`;
    await this.create(path, {
      apiVersion: 'v1', kind: 'Pod', metadata: { namespace, name, labels },
      spec: { nodeName: node, containers: [{ name: 'workload', image: 'twill-lab-workload', ports }] },
    });
    const now = stamp();
    const cond = (type: string) => ({ type, status: 'True', lastProbeTime: null, lastTransitionTime: now });
    await this.client.mergePatch(`${path}/${encodeURIComponent(name)}/status`, {
      status: {
        phase: 'Running', podIP: ip, podIPs: [{ ip }, ...(six.ip6 ? [{ ip: six.ip6 }] : [])],
        ...(hostIP ? { hostIP, hostIPs: [{ ip: hostIP }, ...(six.hostIP6 ? [{ ip: six.hostIP6 }] : [])] } : {}), startTime: now,
        conditions: ['PodScheduled', 'Initialized', 'ContainersReady', 'Ready'].map(cond),
        containerStatuses: [{ name: 'workload', image: 'twill-lab-workload', imageID: '', ready: true, started: true, restartCount: 0, state: { running: { startedAt: now } } }],
      },
    });
  }

  close(): void { this.client.close(); }
}
