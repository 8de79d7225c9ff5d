// The lab's cluster DNS, as kind has it: a pod kube-system/coredns behind the
// Service kube-system/kube-dns (10.96.0.10, UDP and TCP 53), and every pod's
// resolv.conf pointing there. The server is Debian's dnsmasq instead of CoreDNS:
// it answers <svc>.<ns>.svc.cluster.local and <pod>.<ns>.pod.cluster.local (also
// Kubernetes' <a-b-c-d>.<ns>.pod.cluster.local) from a hosts file the lab rewrites,
// and has no upstream: a name outside cluster.local is refused, never forwarded.
// Dual-stack as CoreDNS is: names answer A and AAAA (a Service's two ClusterIPs, a
// pod's two addresses), kube-dns has an IPv6 ClusterIP too, and dnsmasq, bound to
// the wildcard addresses of both families, answers on the pod's IPv6 address as well.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { alive } from './proc.js';
import type { ServiceSpec } from './services.js';
import { isIPv6 } from '../lib/ipv6.js';

export const CLUSTER_DOMAIN = 'cluster.local';
export const DNS_SERVICE_IP = '10.96.0.10';
export const DNS_SERVICE_IP6 = 'fd00:10:96::a'; // kind's IPv6 kube-dns: the 10th address of fd00:10:96::/112
export const DNS_POD = { namespace: 'kube-system', name: 'coredns' };
/** kube-system/kube-dns as kind makes it: dual-stack (with its IPv6 ClusterIP) in a dual-stack cluster, IPv6 only in an IPv6 one. */
export function dnsService(family: 'ipv4' | 'dual' | 'ipv6' = 'ipv4'): ServiceSpec {
  const ips = family === 'ipv6' ? { clusterIP: DNS_SERVICE_IP6 } : { clusterIP: DNS_SERVICE_IP, ...(family === 'dual' ? { clusterIP6: DNS_SERVICE_IP6 } : {}) };
  return {
    namespace: 'kube-system', name: 'kube-dns', ...ips, endpoints: [DNS_POD.name],
    ports: [{ name: 'dns', protocol: 'UDP', port: 53 }, { name: 'dns-tcp', protocol: 'TCP', port: 53 }],
  };
}
export const DNS_SERVICE: ServiceSpec = dnsService();
const DNSMASQ = '/usr/sbin/dnsmasq';
const NETNS_ETC = '/etc/netns'; // `ip netns exec` bind-mounts /etc/netns/<ns>/* over /etc/*

const dnsDir = (labDir: string) => path.join(labDir, 'dns');
const hostsFile = (labDir: string) => path.join(dnsDir(labDir), 'hosts');
const logFile = (labDir: string) => path.join(dnsDir(labDir), 'dnsmasq.log');

/**
 * A pod address as CoreDNS's pod records spell it: dots (IPv4) or colons (IPv6)
 * become dashes, so 10.244.1.2 is 10-244-1-2 and fd00:10:244:1::2 is fd00-10-244-1--2.
 */
export function dashedAddress(ip: string): string {
  return ip.replace(isIPv6(ip) ? /:/g : /\./g, '-');
}

/**
 * The hosts-file lines: each Service's ClusterIPs, each pod by name and by dashed
 * address, for each of its addresses (dnsmasq answers A from the IPv4 lines and
 * AAAA from the IPv6 ones).
 */
export function dnsRecords(services: ServiceSpec[], pods: { name: string; namespace: string; ip: string; ip6?: string }[]): string {
  const lines = services.flatMap((s) => [s.clusterIP, ...(s.clusterIP6 ? [s.clusterIP6] : [])].map((ip) => `${ip} ${s.name}.${s.namespace}.svc.${CLUSTER_DOMAIN}`));
  for (const p of pods) {
    for (const ip of [p.ip, p.ip6]) {
      if (ip) lines.push(`${ip} ${p.name}.${p.namespace}.pod.${CLUSTER_DOMAIN} ${dashedAddress(ip)}.${p.namespace}.pod.${CLUSTER_DOMAIN}`);
    }
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

/**
 * Starts dnsmasq in the DNS pod's namespace, in the foreground, on the records already
 * written; resolves with its pid once it has read them. With no --interface or
 * --listen-address it binds 0.0.0.0 and :: port 53, so it answers on every address the
 * pod has or gets, its IPv6 one included (the kube-dns ClusterIPs DNAT to them).
 */
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

export interface ResolvConfOptions {
  /**
   * `nameserver fd00:10:96::a` instead of 10.96.0.10: an IPv6-only lab's kube-dns. A
   * dual-stack kind pod's resolv.conf has the IPv4 kube-dns only (the kubelet's
   * clusterDNS is the Service's first ClusterIP), so a dual-stack lab leaves it off.
   */
  ipv6Only?: boolean;
}

/** A pod's resolv.conf, as the kubelet writes it for dnsPolicy ClusterFirst. */
export function podResolvConf(namespace: string, o: ResolvConfOptions = {}): string {
  const nameservers = [o.ipv6Only ? DNS_SERVICE_IP6 : DNS_SERVICE_IP];
  return `search ${namespace}.svc.${CLUSTER_DOMAIN} svc.${CLUSTER_DOMAIN} ${CLUSTER_DOMAIN}\n${nameservers.map((n) => `nameserver ${n}\n`).join('')}options ndots:5\n`;
}

/** Writes the pod's resolv.conf where `ip netns exec` mounts it over /etc/resolv.conf. */
export function writePodResolvConf(netns: string, namespace: string, o: ResolvConfOptions = {}): void {
  const dir = path.join(NETNS_ETC, netns);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'resolv.conf'), podResolvConf(namespace, o));
}

/** Removes the /etc/netns entries of every namespace with this prefix (a lab's pods). */
export function removePodResolvConfs(prefix: string): number {
  if (!existsSync(NETNS_ETC)) return 0;
  const mine = readdirSync(NETNS_ETC).filter((d) => d.startsWith(prefix));
  for (const d of mine) rmSync(path.join(NETNS_ETC, d), { recursive: true, force: true });
  return mine.length;
}
