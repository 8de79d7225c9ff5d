// The cluster as etcd tells it, outside Kubernetes, in flannel's etcd layout so
// twill and flanneld nodes can share one etcd:
//   <prefix>/config                  {"Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan"}}
//   <prefix>/subnets/10.244.1.0-24   {"PublicIP": …, "BackendType": "vxlan", "BackendData": {"VNI": 1, "VtepMAC": …}}
// (prefix /coreos.com/network by default). Each node leases its own subnet, as
// flanneld's etcd subnet manager does (leaseSubnet). NetworkPolicy, which flannel
// lacks, reads Kubernetes-shaped objects under /twill/: namespaces/<name>,
// pods/<ns>/<name>, networkpolicies/<ns>/<name>. Both prefixes are read once, then
// watched from that revision; a watch that ends resumes, and one whose revision
// was compacted away reads everything again.
import { isIPv4 } from 'node:net';
import type { Logger } from 'pino';
import { ClusterState, type Change, type ClusterSource, type ClusterView, type NodeRecord } from '../file.js';
import { EtcdClient, type EtcdEvent, type KV } from './client.js';
import { modelChange, type ModelKind } from '../model-objects.js';
import { formatIPv4Address, parseIPv4Cidr } from '../../../lib/ipv4.js';

export const FLANNEL_PREFIX = '/coreos.com/network';
export const MODEL_PREFIX = '/twill/';
const MODEL_DIRS: Record<string, ModelKind> = { namespaces: 'namespace', pods: 'pod', networkpolicies: 'policy' };
const LEASE_TTL_S = 24 * 3600; // flannel's
const RENEW_MS = 3600_000;
const RETRY_MS = 1000;

export interface NetworkConfig { Network: string; SubnetLen?: number; SubnetMin?: string; SubnetMax?: string; Backend?: { Type?: string } }
export interface SubnetLease { PublicIP: string; BackendType: string; BackendData: { VNI: number; VtepMAC: string }; NodeName?: string }

/** "10.244.1.0-24" ↔ "10.244.1.0/24", flannel's key form. */
export const subnetKeyOf = (cidr: string): string => cidr.replace('/', '-');
const cidrOfKey = (key: string): string => key.slice(key.lastIndexOf('/') + 1).replace('-', '/');

export async function readNetworkConfig(client: EtcdClient, prefix = FLANNEL_PREFIX): Promise<NetworkConfig> {
  const kv = await client.get(`${prefix}/config`);
  if (!kv) throw new Error(`etcd ${client.endpoints.join(', ')} has no ${prefix}/config: write {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}} there first`);
  const c = JSON.parse(kv.value) as NetworkConfig;
  if (typeof c.Network !== 'string' || !isIPv4(c.Network.split('/')[0])) throw new Error(`${prefix}/config: "Network" must be an IPv4 CIDR`);
  if (c.Backend?.Type && c.Backend.Type !== 'vxlan') throw new Error(`${prefix}/config: backend ${c.Backend.Type}: twill speaks vxlan only`);
  return c;
}

function nodeOf(kv: KV, self?: { key: string; node: string }): NodeRecord | undefined {
  let l: SubnetLease;
  try { l = JSON.parse(kv.value) as SubnetLease; } catch { return undefined; }
  if (l.BackendType !== 'vxlan' || typeof l.PublicIP !== 'string' || typeof l.BackendData?.VtepMAC !== 'string') return undefined;
  const name = kv.key === self?.key ? self.node : l.NodeName ?? cidrOfKey(kv.key);
  return { name, underlayIP: l.PublicIP, podCIDR: cidrOfKey(kv.key), vtepMAC: l.BackendData.VtepMAC, backend: l.NodeName ? 'twill' : 'flannel-vxlan' };
}

/**
 * This node's subnet, leased as flanneld leases it: the subnet already held by this
 * public IP (a restart), else the first free one, created only if absent (a
 * transaction) so two nodes never take one subnet. The lease is kept alive until stop().
 */
export async function leaseSubnet(client: EtcdClient, o: { node: string; publicIP: string; vni: number; vtepMAC: string; prefix?: string; log?: Logger }): Promise<{ key: string; podCIDR: string; clusterCIDR: string; stop: () => void }> {
  const prefix = o.prefix ?? FLANNEL_PREFIX;
  const cfg = await readNetworkConfig(client, prefix);
  const len = cfg.SubnetLen ?? 24;
  const net = parseIPv4Cidr(cfg.Network);
  if (len < net.len || len > 30) throw new Error(`${prefix}/config: SubnetLen ${len} does not fit ${cfg.Network}`);
  const value = JSON.stringify({ PublicIP: o.publicIP, BackendType: 'vxlan', BackendData: { VNI: o.vni, VtepMAC: o.vtepMAC }, NodeName: o.node } satisfies SubnetLease);
  const lease = await client.grant(LEASE_TTL_S);
  const held = (await client.range(`${prefix}/subnets/`)).kvs;
  let key = held.find((kv) => { try { return (JSON.parse(kv.value) as SubnetLease).PublicIP === o.publicIP; } catch { return false; } })?.key;
  if (key) {
    await client.put(key, value, lease); // ours from before a restart: renewed under the new lease
  } else {
    const size = 2 ** (32 - len), first = cfg.SubnetMin ? parseIPv4Cidr(`${cfg.SubnetMin}/${len}`).prefix : net.prefix + size; // flannel skips the network's first subnet
    const last = cfg.SubnetMax ? parseIPv4Cidr(`${cfg.SubnetMax}/${len}`).prefix : net.prefix + 2 ** (32 - net.len) - size;
    const taken = new Set(held.map((kv) => kv.key));
    for (let p = first; p <= last && !key; p += size) {
      const k = `${prefix}/subnets/${subnetKeyOf(`${formatIPv4Address(p >>> 0)}/${len}`)}`;
      if (!taken.has(k) && (await client.create(k, value, lease))) key = k;
    }
    if (!key) throw new Error(`no free /${len} left in ${cfg.Network}`);
  }
  const t = setInterval(() => {
    client.keepAlive(lease).catch((e: Error) => o.log?.error({ err: e, key }, 'could not renew the subnet lease'));
  }, RENEW_MS);
  t.unref();
  return { key, podCIDR: cidrOfKey(key), clusterCIDR: cfg.Network, stop: () => clearInterval(t) };
}

export class EtcdSource implements ClusterSource {
  private state?: ClusterState;
  private readonly from = new Map<string, number>(); // per watched prefix: the revision it has seen up to
  private stopped = false;
  private stops: (() => void)[] = [];

  constructor(private readonly client: EtcdClient, private readonly clusterCIDR: string, private readonly self?: { key: string; node: string }, private readonly prefix = FLANNEL_PREFIX, private readonly log?: Logger) {}

  private changeOf(e: EtcdEvent): Change | undefined {
    const k = e.kv.key;
    if (k.startsWith(`${this.prefix}/subnets/`)) {
      const n = e.type === 'PUT' ? nodeOf(e.kv, this.self) : undefined;
      if (n) return { put: 'node', object: n };
      const name = k === this.self?.key ? this.self.node : undefined;
      return { delete: 'node', key: name ?? this.nameOfSubnet(k) };
    }
    if (!k.startsWith(MODEL_PREFIX)) return undefined;
    const [dir, ...rest] = k.slice(MODEL_PREFIX.length).split('/');
    const kind = MODEL_DIRS[dir];
    if (!kind) return undefined;
    if (e.type === 'DELETE') return { delete: kind, key: rest.join('/') };
    try {
      return modelChange(kind, JSON.parse(e.kv.value) as Record<string, unknown>, this.log);
    } catch {
      this.log?.warn({ key: k }, 'not JSON; ignored');
      return undefined;
    }
  }

  /** A deleted lease no longer says its node's name: find the node by its subnet. */
  private nameOfSubnet(key: string): string {
    const cidr = cidrOfKey(key);
    return this.state?.view().nodes.find((n) => n.podCIDR === cidr)?.name ?? cidr;
  }

  async read(): Promise<ClusterView> {
    const [subnets, model] = await Promise.all([this.client.range(`${this.prefix}/subnets/`), this.client.range(MODEL_PREFIX)]);
    this.from.set(`${this.prefix}/subnets/`, subnets.revision).set(MODEL_PREFIX, model.revision);
    const rev = this.state ? this.state.rev + 1 : 1;
    this.state = new ClusterState({ rev, clusterCIDR: this.clusterCIDR, nodes: [], model: { namespaces: [], pods: [], policies: [] } });
    const changes = [...subnets.kvs, ...model.kvs].map((kv) => this.changeOf({ type: 'PUT', kv })).filter((c): c is Change => c !== undefined);
    this.state.apply({ rev, changes });
    return this.state.view();
  }

  watch(onChange: (v: ClusterView) => void): () => void {
    const prefixes = [`${this.prefix}/subnets/`, MODEL_PREFIX];
    const start = (prefix: string) => {
      if (this.stopped) return;
      const stop = this.client.watch(prefix, (this.from.get(prefix) ?? 0) + 1, (events, revision) => {
        this.from.set(prefix, Math.max(this.from.get(prefix) ?? 0, revision, ...events.map((e) => e.kv.modRevision)));
        const changes = events.map((e) => this.changeOf(e)).filter((c): c is Change => c !== undefined);
        if (!changes.length) return;
        this.state!.apply({ rev: this.state!.rev + 1, changes });
        onChange(this.state!.view());
      }, (err) => {
        this.stops = this.stops.filter((s) => s !== stop);
        if (this.stopped) return;
        if ((err as { compacted?: boolean } | undefined)?.compacted) return recover();
        if (err) this.log?.warn({ err }, 'etcd watch failed; resuming');
        setTimeout(() => start(prefix), err ? RETRY_MS : 0).unref();
      });
      this.stops.push(stop);
    };
    // What happened meanwhile is gone from etcd's history: stop both watches, read
    // everything again, and watch both prefixes from there (until a read succeeds).
    const recover = (): void => {
      if (this.stopped) return;
      for (const s of this.stops.splice(0)) s();
      this.read().then((v) => { onChange(v); prefixes.forEach(start); }, (e: Error) => {
        this.log?.warn({ err: e }, 'etcd read failed; retrying');
        setTimeout(recover, RETRY_MS).unref();
      });
    };
    void (async () => {
      if (!this.state) await this.read();
      prefixes.forEach(start);
    })().catch((e: Error) => this.log?.error({ err: e }, 'etcd source failed to start its watches'));
    return () => { this.stopped = true; for (const s of this.stops.splice(0)) s(); this.client.close(); };
  }
}
