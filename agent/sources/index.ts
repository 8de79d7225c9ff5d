// Where a node learns the cluster: one interface (ClusterSource, file.ts) and one
// map from the configured kind to its implementation, as flannel's subnet
// managers (pkg/subnet/etcd, pkg/subnet/kube). Each opens itself: etcd leases the
// node's subnet, Kubernetes announces the node's VTEP on its Node, and both
// report the underlay they chose, whose address is what they announce. Dual
// stack as flannel's: with an IPv6 network (etcd's config "EnableIPv6", or
// clusterCIDR6 here for Kubernetes) and an IPv6 address on the underlay, a node
// also announces its IPv6 VTEP.
import type { Logger } from 'pino';
import { FileSource, type ClusterSource } from './file.js';
import { KubeClient, inClusterConfig, type KubeConfig } from './kube/client.js';
import { KubeSource, announceNode, nodeAddressing } from './kube/source.js';
import { EtcdClient, type EtcdConfig } from './etcd/client.js';
import { EtcdSource, leaseSubnet } from './etcd/source.js';
import { chooseUnderlay, type Underlay, type UnderlayConfig } from '../underlay.js';
import { vtepMac6For, vtepMacFor } from '../addressing.js';

export type { ClusterSource, ClusterView } from './file.js';

/** The agent config's part that names the source. */
export interface SourceConfig extends UnderlayConfig {
  node: string;
  datastore?: string; // a datastore directory (the lab's, file.ts)
  etcd?: EtcdConfig; // flannel's etcd layout (etcd/source.ts)
  kubernetes?: Partial<KubeConfig>; // the Kubernetes API ({} in a pod: its service account)
  clusterCIDR?: string; // with kubernetes: flannel's net-conf.json "Network"
  clusterCIDR6?: string; // with kubernetes: flannel's net-conf.json "IPv6Network" (its "EnableIPv6"); absent: IPv4 only
  // publicIPv6 (flanneld's --public-ipv6) is UnderlayConfig's
  vni?: number;
}

export interface OpenedSource { source: ClusterSource; underlay?: Underlay }
type Opener = (cfg: SourceConfig, log: Logger) => Promise<OpenedSource>;

const SOURCES = {
  datastore: async (cfg) => ({ source: new FileSource(cfg.datastore!) }),
  etcd: async (cfg, log) => {
    const e = cfg.etcd!, underlay = chooseUnderlay(cfg);
    const client = new EtcdClient(e.endpoints, e);
    const lease = await leaseSubnet(client, { node: cfg.node, publicIP: underlay.publicIP, vni: cfg.vni ?? 1, vtepMAC: vtepMacFor(cfg.node), publicIP6: underlay.publicIP6, vtepMAC6: vtepMac6For(cfg.node), prefix: e.prefix, log });
    log.info({ endpoints: e.endpoints, subnet: lease.podCIDR, ...(lease.podCIDR6 ? { subnet6: lease.podCIDR6, publicIP6: underlay.publicIP6 } : {}), key: lease.key }, 'leased this node\'s subnet in etcd');
    if (lease.clusterCIDR6 && !lease.podCIDR6) log.warn({ iface: underlay.iface, network6: lease.clusterCIDR6 }, 'the network has IPv6, but this node\'s underlay interface has no global IPv6 address: IPv4 only');
    return { source: new EtcdSource(client, { clusterCIDR: lease.clusterCIDR, clusterCIDR6: lease.clusterCIDR6 }, { key: lease.key, node: cfg.node }, e.prefix, log), underlay };
  },
  kubernetes: async (cfg, log) => {
    const kc = cfg.kubernetes?.server ? cfg.kubernetes as KubeConfig : { ...inClusterConfig(), ...cfg.kubernetes };
    if (!kc.server) throw new Error('kubernetes: no server, and not in a pod with a service account (KUBERNETES_SERVICE_HOST unset)');
    const client = new KubeClient(kc as KubeConfig);
    const stored = await nodeAddressing(client, cfg.node); // flanneld: node-public-ip(v6) stands for --public-ip(v6)
    const underlay = chooseUnderlay({ ...cfg, publicIP: stored.nodePublicIP ?? cfg.publicIP, publicIPv6: stored.nodePublicIPv6 ?? cfg.publicIPv6 });
    // public-ip-overwrite (public-ipv6-overwrite) wins over what was chosen; IPv6 only with an IPv6 network, as flanneld's EnableIPv6
    const rec = await announceNode(client, cfg.node, cfg.vni ?? 1, underlay.publicIP, cfg.clusterCIDR6 ? underlay.publicIP6 : undefined);
    underlay.publicIP = rec.underlayIP;
    if (rec.underlayIP6) underlay.publicIP6 = rec.underlayIP6;
    log.info({ server: kc.server, vtepMAC: rec.vtepMAC, underlayIP: rec.underlayIP, podCIDR: rec.podCIDR, ...(stored.overwrite ? { overwrite: stored.overwrite } : {}),
      ...(rec.podCIDR6 ? { vtepMAC6: rec.vtepMAC6, underlayIP6: rec.underlayIP6, podCIDR6: rec.podCIDR6, ...(stored.overwrite6 ? { overwrite6: stored.overwrite6 } : {}) } : {}) }, 'announced this node on its Node object');
    if (cfg.clusterCIDR6 && !rec.podCIDR6) log.warn({ iface: underlay.iface, address6: underlay.address6 }, underlay.address6 ? 'clusterCIDR6 is set, but this Node has no IPv6 pod CIDR (spec.podCIDRs): IPv4 only' : 'clusterCIDR6 is set, but this node\'s underlay interface has no global IPv6 address: IPv4 only');
    return { source: new KubeSource(client, { clusterCIDR: cfg.clusterCIDR ?? '10.244.0.0/16', clusterCIDR6: cfg.clusterCIDR6 }, log), underlay };
  },
} satisfies Record<string, Opener>;

/** The one source the config names; an error when it names none or several. */
export function sourceKind(cfg: SourceConfig): keyof typeof SOURCES {
  const named = (Object.keys(SOURCES) as (keyof typeof SOURCES)[]).filter((k) => cfg[k] !== undefined);
  if (named.length === 1) return named[0];
  throw new Error(named.length ? `one cluster source, not ${named.join(' and ')}` : 'no cluster source: set datastore, etcd, or kubernetes (kubernetes: {} in a pod with a service account)');
}

export function openSource(cfg: SourceConfig, log: Logger): Promise<OpenedSource> {
  return SOURCES[sourceKind(cfg)](cfg, log);
}
