// The lab's cluster DNS, as kind has it: a pod kube-system/coredns behind the
// Service kube-system/kube-dns (10.96.0.10, UDP and TCP 53), and every pod's
// resolv.conf pointing there. The server is Debian's dnsmasq instead of CoreDNS:
// it answers <svc>.<ns>.svc.cluster.local and <pod>.<ns>.pod.cluster.local (also
// Kubernetes' <a-b-c-d>.<ns>.pod.cluster.local) from a hosts file the lab rewrites,
// and has no upstream: a name outside cluster.local is refused, never forwarded.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { alive } from './proc.js';
import type { ServiceSpec } from './services.js';

export const CLUSTER_DOMAIN = 'cluster.local';
export const DNS_SERVICE_IP = '10.96.0.10';
export const DNS_POD = { namespace: 'kube-system', name: 'coredns' };
export const DNS_SERVICE: ServiceSpec = {
  namespace: 'kube-system', name: 'kube-dns', clusterIP: DNS_SERVICE_IP, endpoints: [DNS_POD.name],
  ports: [{ name: 'dns', protocol: 'UDP', port: 53 }, { name: 'dns-tcp', protocol: 'TCP', port: 53 }],
};
const DNSMASQ = '/usr/sbin/dnsmasq';
const NETNS_ETC = '/etc/netns'; // `ip netns exec` bind-mounts /etc/netns/<ns>/* over /etc/*

const dnsDir = (labDir: string) => path.join(labDir, 'dns');
const hostsFile = (labDir: string) => path.join(dnsDir(labDir), 'hosts');
const logFile = (labDir: string) => path.join(dnsDir(labDir), 'dnsmasq.log');

/** The hosts-file lines: each Service's ClusterIP, each pod by name and by dashed address. */
export function dnsRecords(services: ServiceSpec[], pods: { name: string; namespace: string; ip: string }[]): string {
  const lines = services.map((s) => `${s.clusterIP} ${s.name}.${s.namespace}.svc.${CLUSTER_DOMAIN}`);
  for (const p of pods.filter((x) => x.ip)) {
    lines.push(`${p.ip} ${p.name}.${p.namespace}.pod.${CLUSTER_DOMAIN} ${p.ip.replace(/\./g, '-')}.${p.namespace}.pod.${CLUSTER_DOMAIN}`);
  }
  return `${lines.join('\n')}\n`;
}

/** How many times dnsmasq has (re)read the hosts file, by its log. */
function reads(labDir: string): number {
  try { return readFileSync(logFile(labDir), 'utf8').split(`read ${hostsFile(labDir)} `).length - 1; } catch { return 0; }
}

/**
 * Rewrites the records (atomically: dnsmasq never reads half a file) and, when
 * dnsmasq runs, has it reload them (SIGHUP) and waits until its log says it has.
 */
export async function writeDnsRecords(labDir: string, records: string, pid?: number): Promise<void> {
  mkdirSync(dnsDir(labDir), { recursive: true, mode: 0o755 });
  const tmp = `${hostsFile(labDir)}.tmp`;
  writeFileSync(tmp, records, { mode: 0o644 }); // dnsmasq reads it after dropping to nobody
  renameSync(tmp, hostsFile(labDir));
  if (!pid || !alive(pid)) return;
  const before = reads(labDir);
  process.kill(pid, 'SIGHUP');
  const deadline = Date.now() + 3000;
  while (reads(labDir) <= before) {
    if (Date.now() > deadline) throw new Error(`dnsmasq (pid ${pid}) did not reload ${hostsFile(labDir)} within 3 s (see ${logFile(labDir)})`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Starts dnsmasq in the DNS pod's namespace, in the foreground, on the records already written; resolves with its pid once it has read them. */
export function launchDns(labDir: string, netns: string, timeoutMs = 10_000): Promise<number> {
  const dir = dnsDir(labDir);
  const args = [
    '--keep-in-foreground', '--conf-file=/dev/null', // no system configuration
    '--no-resolv', '--no-hosts', `--local=/${CLUSTER_DOMAIN}/`, // no upstream; unknown cluster names are NXDOMAIN, others REFUSED
    `--addn-hosts=${hostsFile(labDir)}`, `--pid-file=${path.join(dir, 'dnsmasq.pid')}`,
    `--log-facility=${logFile(labDir)}`, '--log-queries',
  ];
  const child = spawn('ip', ['netns', 'exec', netns, DNSMASQ, ...args], { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr?.on('data', (d) => (err += d));
    const poll = setInterval(() => { if (reads(labDir) > 0) done(); }, 20);
    const t = setTimeout(() => done(new Error(`dnsmasq in ${netns} did not start within ${timeoutMs / 1000} s (see ${logFile(labDir)})`)), timeoutMs);
    const done = (e?: Error) => {
      clearInterval(poll);
      clearTimeout(t);
      child.removeAllListeners('exit');
      child.stderr?.destroy();
      child.unref();
      if (e) { child.kill('SIGKILL'); reject(e); } else resolve(child.pid!);
    };
    child.once('exit', (code) => done(new Error(`dnsmasq in ${netns} exited with code ${code}: ${err.trim()}`)));
  });
}

/** A pod's resolv.conf, as the kubelet writes it for dnsPolicy ClusterFirst. */
export function writePodResolvConf(netns: string, namespace: string): void {
  const dir = path.join(NETNS_ETC, netns);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'resolv.conf'),
    `search ${namespace}.svc.${CLUSTER_DOMAIN} svc.${CLUSTER_DOMAIN} ${CLUSTER_DOMAIN}\nnameserver ${DNS_SERVICE_IP}\noptions ndots:5\n`);
}

/** Removes the /etc/netns entries of every namespace with this prefix (a lab's pods). */
export function removePodResolvConfs(prefix: string): number {
  if (!existsSync(NETNS_ETC)) return 0;
  const mine = readdirSync(NETNS_ETC).filter((d) => d.startsWith(prefix));
  for (const d of mine) rmSync(path.join(NETNS_ETC, d), { recursive: true, force: true });
  return mine.length;
}
