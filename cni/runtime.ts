// A minimal CNI runtime for the lab: installs a node's conflist and the plugin
// binary (<node dir>/cni/net.d/10-twill.conflist, <node dir>/cni/bin/twill-cni)
// and runs ADD/DEL inside the node's netns the way containerd does.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { distFile } from '../lib/paths.js';

export interface NodeCni { confFile: string; binDir: string }

/** Writes the node's conflist and links dist/cni/twill-cni into its bin dir. */
export function installNodeCni(nodeDir: string, agentSocket: string, o: { cniVersion?: string; binary?: string } = {}): NodeCni {
  const confDir = path.join(nodeDir, 'cni', 'net.d');
  const binDir = path.join(nodeDir, 'cni', 'bin');
  mkdirSync(confDir, { recursive: true });
  mkdirSync(binDir, { recursive: true });
  const conflist = {
    cniVersion: o.cniVersion ?? '1.0.0', name: 'twill', // containerd up to 1.7 (libcni 1.1) parses results up to 1.0.0
    plugins: [{ type: 'twill-cni', agentSocket, ipam: { dataDir: path.join(nodeDir, 'cni', 'ipam') } }],
  };
  const confFile = path.join(confDir, '10-twill.conflist');
  writeFileSync(confFile, JSON.stringify(conflist, null, 1));
  // A link, not a copy: the single executable is ~100 MB and lab dirs live on tmpfs.
  const bin = path.join(binDir, 'twill-cni');
  rmSync(`${bin}.tmp`, { force: true });
  symlinkSync(path.resolve(o.binary ?? distFile('cni/twill-cni')), `${bin}.tmp`);
  renameSync(`${bin}.tmp`, bin); // atomic, even while one runs
  return { confFile, binDir };
}

export interface Attachment { containerId: string; netns: string; ifname?: string; podName?: string; podNamespace?: string }
/**
 * ADD's result, flattened. `ip` is the pod's first address, as Kubernetes' status.podIP: the IPv4 one
 * (IPv6 on an IPv6-only node); `ip6`, `prefixLen6`, `gateway6` are the IPv6 one's, on an IPv6 or
 * dual-stack node.
 */
export interface AddResult {
  ip: string; prefixLen: number; gateway: string;
  ip6?: string; prefixLen6?: number; gateway6?: string;
  podMac: string; hostIf: string; raw: Record<string, unknown>;
}

/** Runs one plugin of the conflist (the first: twill-cni) as the runtime does; throws with the plugin's error. */
export function invokeCni(nodeNs: string, cni: NodeCni, command: string, a: Attachment, extra: Record<string, unknown> = {}): Record<string, unknown> | undefined {
  const list = JSON.parse(readFileSync(cni.confFile, 'utf8')) as { cniVersion: string; name: string; plugins: Record<string, unknown>[] };
  const conf: Record<string, unknown> = { ...list.plugins[0], cniVersion: list.cniVersion, name: list.name, ...extra };
  const env: Record<string, string> = {
    PATH: process.env.PATH || '/usr/sbin:/usr/bin:/sbin:/bin', CNI_COMMAND: command, CNI_CONTAINERID: a.containerId,
    CNI_NETNS: a.netns.includes('/') ? a.netns : `/var/run/netns/${a.netns}`, CNI_IFNAME: a.ifname ?? 'eth0', CNI_PATH: cni.binDir,
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${a.podNamespace ?? ''};K8S_POD_NAME=${a.podName ?? ''}`,
  };
  const bin = path.join(cni.binDir, String(conf.type));
  const r = spawnSync('ip', nodeNs ? ['netns', 'exec', nodeNs, bin] : [bin], { input: JSON.stringify(conf), env, encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) {
    let msg = `${r.stdout}${r.stderr}`.trim();
    try { const e = JSON.parse(r.stdout) as { code: number; msg: string; details?: string }; msg = `code ${e.code}: ${e.msg}${e.details ? ` (${e.details})` : ''}`; } catch { /* not JSON */ }
    throw new Error(`twill-cni ${command} ${a.containerId}: ${msg}`);
  }
  return r.stdout.trim() ? (JSON.parse(r.stdout) as Record<string, unknown>) : undefined;
}

export function cniAdd(nodeNs: string, cni: NodeCni, a: Attachment): AddResult {
  const raw = invokeCni(nodeNs, cni, 'ADD', a)!;
  const ifs = raw.interfaces as { name: string; mac: string; sandbox?: string }[];
  const ips = raw.ips as { address: string; gateway: string; interface: number }[];
  const ip = ips[0], v6 = ips.find((x) => x.address.includes(':'));
  const [addr, len] = ip.address.split('/');
  const six = v6 ? { ip6: v6.address.split('/')[0], prefixLen6: Number(v6.address.split('/')[1]), gateway6: v6.gateway } : {};
  return { ip: addr, prefixLen: Number(len), gateway: ip.gateway, ...six, podMac: ifs[ip.interface].mac, hostIf: ifs.find((i) => !i.sandbox)!.name, raw };
}

export function cniDel(nodeNs: string, cni: NodeCni, a: Attachment): void {
  invokeCni(nodeNs, cni, 'DEL', a);
}
