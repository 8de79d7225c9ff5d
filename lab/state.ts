// What a running lab is made of, kept on disk so `twill lab down` (or a later
// command) can find every namespace and process it created. The cluster's objects
// (namespaces, pods' labels, NetworkPolicies) live in its datastore (lab/datastore.ts).
import type { KubeConfig } from '../agent/sources/kube/client.js';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { EngineTuning } from '../dataplane/engine/config.js';
import type { ProxyMode, ServiceSpec } from './services.js';
import { procStart } from './proc.js';

/** A process the lab started, named so that a reused pid is never taken for it: its start time, /proc/<pid>/stat field 22. */
export interface LabProcess { pid: number; start: number }
export interface LabNode {
  name: string; netns: string; underlayIP: string; vtepMAC: string;
  podCIDR: string; // '' in an IPv6-only lab (its nodes keep an IPv4 underlay address, as kind's do)
  underlayIP6?: string; podCIDR6?: string; vtepMAC6?: string; // a dual-stack or IPv6 lab's (flannel's IPv6 VTEP)
  pid: number; // the agent as last seen by the lab (startAgent); the live one is in the supervisor's status file (lab/supervisor.ts)
  pidStart?: number; // pid's start time
  supervisor?: LabProcess; // the node's supervisor (lab/supervisor.ts), which runs and restarts its agent
  stateDir: string; socket: string; log: string;
}
export interface LabPod { name: string; namespace: string; node: string; netns: string; ip: string /* its first address (status.podIP): IPv6 in an IPv6-only lab */; ip6?: string; mac: string; hostIf: string; containerId: string; workloadPid: number }
/** The pods' address families, as kind's networking.ipFamily. */
export type IpFamily = 'ipv4' | 'ipv6' | 'dual';
export const IP_FAMILIES: readonly IpFamily[] = ['ipv4', 'ipv6', 'dual'];
export interface LabState {
  name: string;
  prefix: string; // every netns of this lab starts with it
  dir: string;
  underlayNs: string;
  clusterCIDR: string; // '' in an IPv6-only lab
  ipFamily?: IpFamily; // absent: ipv4
  clusterCIDR6?: string; // dual and ipv6: the IPv6 pod range (kind's fd00:10:244::/56) and Service range
  serviceCIDR6?: string;
  underlayMTU: number;
  nodes: LabNode[];
  pods: LabPod[];
  pids: number[]; // every other process the lab started (workloads, DNS, etcd), so down stops exactly those
  pidStarts?: Record<string, number>; // pid -> start time, filled in by saveState: down signals a pid only while its start time matches
  engine?: EngineTuning; // engine settings the agents start with (absent: the engine's defaults)
  workers?: number; // engine workers per node (absent in labs made before it was kept: 2)
  kubernetes?: KubeConfig; // the agents learn the cluster from this API server instead of the datastore directory
  etcd?: boolean; // ...or from the lab's own etcd (lab/etcd-role.ts)
  proxyMode?: ProxyMode; // how each node's kube-proxy rules are written (lab/services.ts); absent in labs made before Services
  serviceCIDR?: string;
  services?: ServiceSpec[]; // rendered on every node whenever they or their endpoints change
  dnsPod?: LabPod; // kube-system/coredns (dnsmasq, lab/dns.ts); kept apart from pods, which all run the echo workload
}

export const LAB_ROOT = '/run/twill/labs';

export function labDir(name: string): string { return path.join(LAB_ROOT, name); }
/** The default lab's namespaces are twill-<node>; a named lab's are tw<name>-<node>. */
export function labPrefix(name: string): string { return name === 'lab' ? 'twill-' : `tw${name}-`; }

export function loadState(name: string): LabState | undefined {
  const f = path.join(labDir(name), 'state.json');
  return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as LabState) : undefined;
}

/** Writes the state atomically; first records the start time of every pid in s.pids not seen before (just started, so still ours). */
export function saveState(s: LabState): void {
  const starts = (s.pidStarts ??= {});
  for (const pid of s.pids) {
    if (starts[pid] !== undefined) continue;
    const t = procStart(pid);
    if (t !== undefined) starts[pid] = t;
  }
  mkdirSync(s.dir, { recursive: true });
  const f = path.join(s.dir, 'state.json');
  writeFileSync(`${f}.tmp`, JSON.stringify(s, null, 1));
  renameSync(`${f}.tmp`, f);
}
