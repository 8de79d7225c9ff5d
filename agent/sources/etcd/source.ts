// The cluster as etcd tells it, outside Kubernetes, in flannel's etcd layout so
// twill and flanneld nodes can share one etcd:
//   <prefix>/config                  {"Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan"}}
//   <prefix>/subnets/10.244.1.0-24   {"PublicIP": …, "BackendType": "vxlan", "BackendData": {"VNI": 1, "VtepMAC": …}}
// (prefix /coreos.com/network by default). Dual stack, as flannel's: the config adds
// "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56" (and "IPv6SubnetLen", 64 by
// default), and a node with an IPv6 underlay address leases both subnets under one
// key, 10.244.1.0-24&fd00:10:244:1::-64, whose value adds "PublicIPv6" and
// "BackendV6Data": {"VNI": 1, "VtepMAC": …} (flannel's MakeSubnetKey, LeaseAttrs).
// Each node leases its own subnet, as flanneld's etcd subnet manager does
// (leaseSubnet). NetworkPolicy, which flannel lacks, reads Kubernetes-shaped
// objects under /twill/: namespaces/<name>, pods/<ns>/<name>,
// networkpolicies/<ns>/<name>. Both prefixes are read once, then watched from that
// revision; a watch that ends resumes, and one whose revision was compacted away
// reads everything again.
import { isIPv4 } from 'node:net';
import type { Logger } from 'pino';
import { ClusterState, type Change, type ClusterSource, type ClusterView, type NodeRecord } from '../file.js';
import { EtcdClient, type EtcdEvent, type KV } from './client.js';
import { modelChange, type ModelKind } from '../model-objects.js';
import { formatIPv4Address, parseIPv4Cidr } from '../../../lib/ipv4.js';
import { formatIPv6Address, parseIPv6Address, parseIPv6Cidr } from '../../../lib/ipv6.js';

export const FLANNEL_PREFIX = '/coreos.com/network';
export const MODEL_PREFIX = '/twill/';
// twill's own claim on a leased IPv6 subnet, <prefix>/twill-ipv6-subnets/fd00:10:244:1::-64,
// created in the lease's transaction and under its etcd lease: flannel's key names the
// IPv6 subnet after the IPv4 one, so no transaction can ask whether a key holds it
// (flanneld ignores these keys: they are not under <prefix>/subnets).
export const V6_CLAIMS = 'twill-ipv6-subnets';
const MODEL_DIRS: Record<string, ModelKind> = { namespaces: 'namespace', pods: 'pod', networkpolicies: 'policy' };
const LEASE_TTL_S = 24 * 3600; // flannel's
const RENEW_MS = 3600_000;
const RETRY_MS = 1000;
const RACE_RETRIES = 10; // transactions for one IPv4 subnet whose IPv6 partner keeps being taken (flannel's raceRetries)

/** flannel's network config (pkg/subnet/config.go). */
export interface NetworkConfig {
  Network: string; SubnetLen?: number; SubnetMin?: string; SubnetMax?: string;
  EnableIPv4?: boolean; // default true; twill needs it
  EnableIPv6?: boolean; IPv6Network?: string; IPv6SubnetLen?: number; IPv6SubnetMin?: string; IPv6SubnetMax?: string;
  Backend?: { Type?: string };
}
export interface VxlanData { VNI: number; VtepMAC: string }
/** A lease's value: flannel's LeaseAttrs (PublicIPv6 and BackendV6Data with an IPv6 subnet), and twill's NodeName. */
export interface SubnetLease { PublicIP: string; PublicIPv6?: string | null; BackendType: string; BackendData: VxlanData; BackendV6Data?: VxlanData | null; NodeName?: string }

/** flannel's subnet key: "10.244.1.0-24", or "10.244.1.0-24&fd00:10:244:1::-64" with an IPv6 subnet (MakeSubnetKey). */
export function subnetKeyOf(cidr: string, cidr6?: string): string {
  return cidr6 === undefined ? cidr.replace('/', '-') : `${cidr.replace('/', '-')}&${subnetKey6(cidr6)}`;
}
/** The IPv6 half of a key: the prefix in canonical text (as Go prints it), "-", the length. */
const subnetKey6 = (cidr6: string): string => { const c = parseIPv6Cidr(cidr6); return `${formatIPv6Address(c.addr)}-${c.len}`; };
const SUBNET_KEY = /(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$/; // flannel's ParseSubnetKey

/** A key's subnets, as flannel's ParseSubnetKey reads them; undefined for a key that names none. */
export function parseSubnetKey(key: string): { cidr: string; cidr6?: string } | undefined {
  const m = SUBNET_KEY.exec(key);
  if (!m || !isIPv4(m[1]) || Number(m[2]) > 32) return undefined;
  if (m[3] === undefined) return { cidr: `${m[1]}/${m[2]}` };
  try {
    return Number(m[4]) > 128 ? undefined : { cidr: `${m[1]}/${m[2]}`, cidr6: `${formatIPv6Address(parseIPv6Address(m[3]))}/${m[4]}` };
  } catch {
    return undefined;
  }
}

export async function readNetworkConfig(client: EtcdClient, prefix = FLANNEL_PREFIX): Promise<NetworkConfig> {
  const kv = await client.get(`${prefix}/config`);
  if (!kv) throw new Error(`etcd ${client.endpoints.join(', ')} has no ${prefix}/config: write {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}} there first`);
  const c = JSON.parse(kv.value) as NetworkConfig;
  if (c.EnableIPv4 === false) throw new Error(`${prefix}/config: "EnableIPv4": false: twill needs IPv4 (dual stack or IPv4 only)`);
  if (typeof c.Network !== 'string' || !isIPv4(c.Network.split('/')[0])) throw new Error(`${prefix}/config: "Network" must be an IPv4 CIDR`);
  if (c.Backend?.Type && c.Backend.Type !== 'vxlan') throw new Error(`${prefix}/config: backend ${c.Backend.Type}: twill speaks vxlan only`);
  if (c.EnableIPv6) ranges6(c, prefix); // refuses what flanneld refuses
  return c;
}

// IPv6 prefixes as 128-bit integers
const big6 = (w: ArrayLike<number>): bigint => Array.from(w).reduce((a, x) => (a << 32n) | BigInt(x >>> 0), 0n);
const text6 = (n: bigint): string => formatIPv6Address(Uint32Array.from([96n, 64n, 32n, 0n].map((sh) => Number((n >> sh) & 0xffffffffn))));
const addr6 = (s: string): bigint => big6(parseIPv6Address(s));

interface Ranges6 { network: string; net: bigint; netLen: number; len: number; size: bigint; first: bigint; last: bigint }

/** The IPv6 subnets a node may lease, as flanneld's CheckNetworkConfig works them out. */
function ranges6(c: NetworkConfig, prefix: string): Ranges6 {
  const where = `${prefix}/config`;
  let n: { addr: Uint32Array; len: number };
  try { n = parseIPv6Cidr(String(c.IPv6Network)); } catch { throw new Error(`${where}: "EnableIPv6" needs "IPv6Network", an IPv6 CIDR (not ${JSON.stringify(c.IPv6Network)})`); }
  let len = c.IPv6SubnetLen ?? 0;
  if (len) {
    if (!Number.isInteger(len) || len < 1 || len > 126) throw new Error(`${where}: "IPv6SubnetLen" ${JSON.stringify(len)} must be a whole number up to 126`);
    if (len < n.len + 2) throw new Error(`${where}: "IPv6Network" ${c.IPv6Network} must hold at least four /${len} subnets`);
  } else {
    if (n.len > 124) throw new Error(`${where}: "IPv6Network" ${c.IPv6Network} is too small: the smallest useful one is a /124`);
    len = n.len <= 62 ? 64 : n.len + 2; // flannel's default: a /64 per node when there is room
  }
  const net = big6(n.addr), size = 1n << BigInt(128 - len);
  const bound = (key: 'IPv6SubnetMin' | 'IPv6SubnetMax', dflt: bigint): bigint => {
    const v = c[key];
    if (v === undefined || v === '') return dflt;
    let a: bigint;
    try { a = addr6(v); } catch { throw new Error(`${where}: "${key}" ${v} is not an IPv6 address`); }
    if (a >> BigInt(128 - n.len) !== net >> BigInt(128 - n.len)) throw new Error(`${where}: "${key}" ${v} is not in "IPv6Network" ${c.IPv6Network}`);
    if (a % size !== 0n) throw new Error(`${where}: "${key}" ${v} is not on a /${len} boundary`);
    return a;
  };
  // flannel skips the network's first subnet
  return { network: `${text6(net)}/${n.len}`, net, netLen: n.len, len, size, first: bound('IPv6SubnetMin', net + size), last: bound('IPv6SubnetMax', net + (1n << BigInt(128 - n.len)) - size) };
}

function parseLease(value: string): SubnetLease | undefined {
  try { return JSON.parse(value) as SubnetLease; } catch { return undefined; }
}

function nodeOf(kv: KV, self?: { key: string; node: string }): NodeRecord | undefined {
  const sub = parseSubnetKey(kv.key);
  const l = parseLease(kv.value);
  if (!sub || !l || l.BackendType !== 'vxlan' || typeof l.PublicIP !== 'string' || typeof l.BackendData?.VtepMAC !== 'string') return undefined;
  const name = kv.key === self?.key ? self.node : l.NodeName ?? sub.cidr;
  const rec: NodeRecord = { name, underlayIP: l.PublicIP, podCIDR: sub.cidr, vtepMAC: l.BackendData.VtepMAC, backend: l.NodeName ? 'twill' : 'flannel-vxlan' };
  if (sub.cidr6 && typeof l.PublicIPv6 === 'string' && typeof l.BackendV6Data?.VtepMAC === 'string') {
    Object.assign(rec, { podCIDR6: sub.cidr6, underlayIP6: l.PublicIPv6, vtepMAC6: l.BackendV6Data.VtepMAC });
  }
  return rec;
}

export interface SubnetLeaseHeld {
  key: string; // the lease's key, <prefix>/subnets/10.244.1.0-24[&fd00:10:244:1::-64]
  podCIDR: string;
  podCIDR6?: string; // with an IPv6 network and an IPv6 underlay address
  clusterCIDR: string; // the config's Network
  clusterCIDR6?: string; // its IPv6Network, when EnableIPv6
  stop: () => void;
}

/**
 * This node's subnet, leased as flanneld leases it: the subnet already held by this
 * public IP (a restart), else the first free one, created in a transaction only if
 * no lease holds it, so two nodes never take one subnet. With an IPv6 network
 * ("EnableIPv6") and `publicIP6`, an IPv6 subnet beside it in the same key and the
 * same transaction, which also claims the IPv6 subnet (V6_CLAIMS) so that two twill
 * nodes never share one either; the IPv6 subnet of the same index as the IPv4 one
 * when it is free (10.244.3.0/24 with fd00:10:244:3::/64), else the first free. A
 * lease held by this public IP that no longer fits (IPv6 came or went, or the
 * network changed) is given up and replaced, keeping its IPv4 subnet if it can, as
 * flanneld replaces it. The lease is kept alive until stop().
 */
export async function leaseSubnet(client: EtcdClient, o: { node: string; publicIP: string; vni: number; vtepMAC: string; publicIP6?: string; vtepMAC6?: string; prefix?: string; log?: Logger }): Promise<SubnetLeaseHeld> {
  const prefix = o.prefix ?? FLANNEL_PREFIX, dir = `${prefix}/subnets/`;
  const cfg = await readNetworkConfig(client, prefix);
  const len = cfg.SubnetLen ?? 24;
  const net = parseIPv4Cidr(cfg.Network);
  if (len < net.len || len > 30) throw new Error(`${prefix}/config: SubnetLen ${len} does not fit ${cfg.Network}`);
  const size = 2 ** (32 - len), first = cfg.SubnetMin ? parseIPv4Cidr(`${cfg.SubnetMin}/${len}`).prefix : net.prefix + size; // flannel skips the network's first subnet
  const last = cfg.SubnetMax ? parseIPv4Cidr(`${cfg.SubnetMax}/${len}`).prefix : net.prefix + 2 ** (32 - net.len) - size;
  const r6 = cfg.EnableIPv6 ? ranges6(cfg, prefix) : undefined;
  const v6 = r6 && o.publicIP6 !== undefined ? r6 : undefined; // no IPv6 underlay address: IPv4 only
  if (v6 && !o.vtepMAC6) throw new Error('leaseSubnet: publicIP6 without vtepMAC6');
  const attrs: SubnetLease = v6
    ? { PublicIP: o.publicIP, PublicIPv6: o.publicIP6, BackendType: 'vxlan', BackendData: { VNI: o.vni, VtepMAC: o.vtepMAC }, BackendV6Data: { VNI: o.vni, VtepMAC: o.vtepMAC6! }, NodeName: o.node }
    : { PublicIP: o.publicIP, BackendType: 'vxlan', BackendData: { VNI: o.vni, VtepMAC: o.vtepMAC }, NodeName: o.node };
  const value = JSON.stringify(attrs);
  const claimOf = (cidr6: string) => `${prefix}/${V6_CLAIMS}/${subnetKey6(cidr6)}`;
  const lease = await client.grant(LEASE_TTL_S);

  const held = (await client.range(dir)).kvs.flatMap((kv) => { const sub = parseSubnetKey(kv.key); return sub ? [{ key: kv.key, sub, attrs: parseLease(kv.value) }] : []; });
  const v4of = (cidr: string) => parseIPv4Cidr(cidr);
  const fits4 = (cidr: string) => { const c = v4of(cidr); return c.len === len && c.prefix >>> 0 >= first >>> 0 && c.prefix >>> 0 <= last >>> 0; };
  const fits6 = (cidr6: string | undefined) => {
    if (!v6) return cidr6 === undefined;
    if (cidr6 === undefined) return false;
    const c = parseIPv6Cidr(cidr6), a = big6(c.addr);
    return c.len === v6.len && a >= v6.first && a <= v6.last;
  };
  let key: string | undefined, keep4: number | undefined;
  const mine = held.find((h) => h.attrs?.PublicIP === o.publicIP);
  if (mine && fits4(mine.sub.cidr) && fits6(mine.sub.cidr6)) {
    key = mine.key; // ours from before a restart: renewed under the new lease
    await client.put(key, value, lease);
    if (mine.sub.cidr6) await client.put(claimOf(mine.sub.cidr6), key, lease);
  } else if (mine) {
    o.log?.info({ key: mine.key, ipv6: Boolean(v6) }, 'the lease this public IP holds does not fit the network config any more: replacing it');
    await client.delete(mine.key);
    if (mine.sub.cidr6) await client.delete(claimOf(mine.sub.cidr6));
    held.splice(held.indexOf(mine), 1);
    if (fits4(mine.sub.cidr)) keep4 = v4of(mine.sub.cidr).prefix >>> 0; // its pods keep their IPv4 addresses
  }
  if (!key) {
    // What is taken, as flannel's allocateSubnet sees it: any lease overlapping a candidate.
    const taken4 = held.map((h) => { const c = v4of(h.sub.cidr); return [c.prefix >>> 0, (c.prefix >>> 0) + 2 ** (32 - c.len)] as const; });
    const taken6 = held.flatMap((h) => { if (!h.sub.cidr6) return []; const c = parseIPv6Cidr(h.sub.cidr6), a = big6(c.addr); return [[a, a + (1n << BigInt(128 - c.len))] as const]; });
    const free4 = (p: number) => !taken4.some(([a, b]) => p < b && p + size > a);
    const free6 = (p: bigint) => !taken6.some(([a, b]) => p < b && p + v6!.size > a);
    const pick6 = (p4: number): bigint | undefined => {
      const paired = v6!.net + BigInt((p4 - (net.prefix >>> 0)) / size) * v6!.size; // the same index in the IPv6 network
      if (paired >= v6!.first && paired <= v6!.last && free6(paired)) return paired;
      for (let p = v6!.first; p <= v6!.last; p += v6!.size) if (free6(p)) return p;
      return undefined;
    };
    const candidates = function* (): Generator<number> {
      if (keep4 !== undefined) yield keep4;
      for (let p = first >>> 0; p <= last >>> 0; p += size) if (p !== keep4) yield p;
    };
    candidates: for (const p4 of candidates()) {
      if (!free4(p4)) continue;
      const cidr = `${formatIPv4Address(p4)}/${len}`;
      for (let tries = 0; tries < RACE_RETRIES; tries++) {
        let cidr6: string | undefined;
        if (v6) {
          const p6 = pick6(p4);
          if (p6 === undefined) throw new Error(`no free /${v6.len} left in ${v6.network}`);
          cidr6 = `${text6(p6)}/${v6.len}`;
        }
        const k = `${dir}${subnetKeyOf(cidr, cidr6)}`;
        // no lease may hold the IPv4 subnet (alone or with any IPv6 one), nor any claim the IPv6 one
        const absent = [{ key: `${dir}${subnetKeyOf(cidr)}`, prefix: true }, ...(cidr6 ? [{ key: claimOf(cidr6) }] : [])];
        const r = await client.createAll([{ key: k, value }, ...(cidr6 ? [{ key: claimOf(cidr6), value: k }] : [])], absent, lease);
        if (r.ok) {
          key = k;
          break candidates;
        }
        // another node took one of the two meanwhile (or a claim outlived its lease's key): that one is taken
        if (cidr6 && r.present[1]) { const a = addr6(cidr6.split('/')[0]); taken6.push([a, a + v6!.size]); }
        if (r.present[0]) continue candidates;
      }
    }
    if (!key) throw new Error(`no free /${len} left in ${cfg.Network}`);
  }
  const t = setInterval(() => {
    client.keepAlive(lease).catch((e: Error) => o.log?.error({ err: e, key }, 'could not renew the subnet lease'));
  }, RENEW_MS);
  t.unref();
  const sub = parseSubnetKey(key)!;
  return { key, podCIDR: sub.cidr, ...(sub.cidr6 ? { podCIDR6: sub.cidr6 } : {}), clusterCIDR: cfg.Network, ...(r6 ? { clusterCIDR6: r6.network } : {}), stop: () => clearInterval(t) };
}

export class EtcdSource implements ClusterSource {
  private state?: ClusterState;
  private readonly from = new Map<string, number>(); // per watched prefix: the revision it has seen up to
  private stopped = false;
  private stops: (() => void)[] = [];

  private readonly clusterCIDR: string;
  private readonly clusterCIDR6?: string;

  /** `cidrs`: the network config's Network, or both it and its IPv6Network (as leaseSubnet returns them). */
  constructor(private readonly client: EtcdClient, cidrs: string | { clusterCIDR: string; clusterCIDR6?: string }, private readonly self?: { key: string; node: string }, private readonly prefix = FLANNEL_PREFIX, private readonly log?: Logger) {
    ({ clusterCIDR: this.clusterCIDR, clusterCIDR6: this.clusterCIDR6 } = typeof cidrs === 'string' ? { clusterCIDR: cidrs } : cidrs);
  }

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
    const cidr = parseSubnetKey(key)?.cidr ?? key.slice(key.lastIndexOf('/') + 1);
    return this.state?.view().nodes.find((n) => n.podCIDR === cidr)?.name ?? cidr;
  }

  async read(): Promise<ClusterView> {
    const [subnets, model] = await Promise.all([this.client.range(`${this.prefix}/subnets/`), this.client.range(MODEL_PREFIX)]);
    this.from.set(`${this.prefix}/subnets/`, subnets.revision).set(MODEL_PREFIX, model.revision);
    const rev = this.state ? this.state.rev + 1 : 1;
    this.state = new ClusterState({ rev, clusterCIDR: this.clusterCIDR, clusterCIDR6: this.clusterCIDR6, nodes: [], model: { namespaces: [], pods: [], policies: [] } });
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
