// A lab whose agents learn the cluster from etcd (UpOptions.etcd): a real etcd
// (Debian's etcd-server) runs in a namespace of its own on the lab's underlay, as
// a control-plane host would, at 172.30.0.2:2379. The lab writes the network
// config in flannel's layout (dual stack, with an IPv6 cluster CIDR: "EnableIPv6",
// "IPv6Network" and a /64 per node), and the pods and namespaces under /twill/ (as
// kubelets would in a cluster); each agent leases its own subnet(s) there.
import { spawn, spawnSync } from 'node:child_process';
import { openSync } from 'node:fs';
import path from 'node:path';
import { ipn } from '../lib/sh.js';
import { saveState, type LabState } from './state.js';
import { FLANNEL_PREFIX, MODEL_PREFIX } from '../agent/sources/etcd/source.js';
import type { ContainerPort } from '../policy/model.js';

export const LAB_ETCD_IP = '172.30.0.2';
export const labEtcdEndpoint = `http://${LAB_ETCD_IP}:2379`;
export const labEtcdNs = (s: Pick<LabState, 'prefix'>): string => `${s.prefix}etcd`;

/** etcdctl inside the etcd host's namespace; throws with its output on failure. */
export function etcdctl(s: Pick<LabState, 'prefix'>, ...args: string[]): string {
  const r = spawnSync('ip', ['netns', 'exec', labEtcdNs(s), 'etcdctl', `--endpoints=${labEtcdEndpoint}`, ...args], { encoding: 'utf8', env: { ...process.env, ETCDCTL_API: '3' } });
  if (r.status !== 0) throw new Error(`etcdctl ${args[0]}: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

/** The network config flanneld's etcd subnet manager reads; with clusterCIDR6, flannel's dual stack. */
export function labNetworkConfig(clusterCIDR: string, clusterCIDR6?: string): Record<string, unknown> {
  return { Network: clusterCIDR, SubnetLen: 24, ...(clusterCIDR6 ? { EnableIPv6: true, IPv6Network: clusterCIDR6, IPv6SubnetLen: 64 } : {}), Backend: { Type: 'vxlan' } };
}

/** Starts etcd on the underlay and writes the network config (dual stack with clusterCIDR6); its pid goes into the lab's, so down stops it. */
export async function startLabEtcd(s: LabState, mtu: number, clusterCIDR6?: string): Promise<void> {
  const ns = labEtcdNs(s);
  ipn('', 'netns', 'add', ns);
  ipn(ns, 'link', 'set', 'lo', 'up');
  ipn(s.underlayNs, 'link', 'add', 'u-etcd', 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', String(mtu), 'netns', ns);
  ipn(s.underlayNs, 'link', 'set', 'u-etcd', 'master', 'br0', 'up');
  ipn(ns, 'addr', 'add', `${LAB_ETCD_IP}/24`, 'dev', 'eth0');
  ipn(ns, 'link', 'set', 'eth0', 'up');
  const log = openSync(path.join(s.dir, 'etcd.log'), 'a');
  const child = spawn('ip', ['netns', 'exec', ns, 'etcd', '--name', 'lab', '--data-dir', path.join(s.dir, 'etcd'),
    '--listen-client-urls', labEtcdEndpoint, '--advertise-client-urls', labEtcdEndpoint,
    '--listen-peer-urls', 'http://127.0.0.1:2380', '--initial-advertise-peer-urls', 'http://127.0.0.1:2380', '--initial-cluster', 'lab=http://127.0.0.1:2380'],
  { detached: true, stdio: ['ignore', log, log] });
  child.unref();
  s.pids.push(child.pid!);
  saveState(s);
  const deadline = Date.now() + 15_000;
  for (;;) {
    try { etcdctl(s, 'endpoint', 'health'); break; } catch (e) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`etcd did not come up (see ${path.join(s.dir, 'etcd.log')}): ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  etcdctl(s, 'put', `${FLANNEL_PREFIX}/config`, JSON.stringify(labNetworkConfig(s.clusterCIDR, clusterCIDR6)));
}

export function etcdNamespace(s: LabState, name: string, labels: Record<string, string>): void {
  etcdctl(s, 'put', `${MODEL_PREFIX}namespaces/${name}`, JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } }));
}

/** The Pod under /twill/; with ip6, dual-stack: podIPs [IPv4, IPv6]. */
export function etcdPod(s: LabState, namespace: string, name: string, ip: string, labels: Record<string, string>, ports: ContainerPort[], ip6?: string): void {
  etcdctl(s, 'put', `${MODEL_PREFIX}pods/${namespace}/${name}`, JSON.stringify({
    apiVersion: 'v1', kind: 'Pod', metadata: { namespace, name, labels },
    spec: { containers: [{ name: 'workload', ports }] }, status: { podIP: ip, podIPs: [{ ip }, ...(ip6 ? [{ ip: ip6 }] : [])] },
  }));
}
