// Where a node learns the cluster: one interface (ClusterSource, file.ts) and one
// map from the configured kind to its implementation, as flannel's subnet
// managers (pkg/subnet/etcd, pkg/subnet/kube). Each opens itself: etcd leases the
// node's subnet, Kubernetes announces the node's VTEP on its Node, and both
// report the underlay they chose, whose address is what they announce.
import type { Logger } from 'pino';
import { FileSource, type ClusterSource } from './file.js';
import { KubeClient, inClusterConfig, type KubeConfig } from './kube/client.js';
import { KubeSource, announceNode, nodeAddressing } from './kube/source.js';
import { EtcdClient, type EtcdConfig } from './etcd/client.js';
import { EtcdSource, leaseSubnet } from './etcd/source.js';
import { chooseUnderlay, type Underlay, type UnderlayConfig } from '../underlay.js';
import { vtepMacFor } from '../addressing.js';

export type { ClusterSource, ClusterView } from './file.js';

/** The agent config's part that names the source. */
export interface SourceConfig extends UnderlayConfig {
  node: string;
  datastore?: string; // a datastore directory (the lab's, file.ts)
  etcd?: EtcdConfig; // flannel's etcd layout (etcd/source.ts)
  kubernetes?: Partial<KubeConfig>; // the Kubernetes API ({} in a pod: its service account)
  clusterCIDR?: string; // with kubernetes: flannel's net-conf.json "Network"
  vni?: number;
}

export interface OpenedSource { source: ClusterSource; underlay?: Underlay }
type Opener = (cfg: SourceConfig, log: Logger) => Promise<OpenedSource>;

const SOURCES = {
  datastore: async (cfg) => ({ source: new FileSource(cfg.datastore!) }),
  etcd: async (cfg, log) => {
    const e = cfg.etcd!, underlay = chooseUnderlay(cfg);
    const client = new EtcdClient(e.endpoints, e);
    const lease = await leaseSubnet(client, { node: cfg.node, publicIP: underlay.publicIP, vni: cfg.vni ?? 1, vtepMAC: vtepMacFor(cfg.node), prefix: e.prefix, log });
    log.info({ endpoints: e.endpoints, subnet: lease.podCIDR, key: lease.key }, 'leased this node\'s subnet in etcd');
    return { source: new EtcdSource(client, lease.clusterCIDR, { key: lease.key, node: cfg.node }, e.prefix, log), underlay };
  },
  kubernetes: async (cfg, log) => {
    const kc = cfg.kubernetes?.server ? cfg.kubernetes as KubeConfig : { ...inClusterConfig(), ...cfg.kubernetes };
    if (!kc.server) throw new Error('kubernetes: no server, and not in a pod with a service account (KUBERNETES_SERVICE_HOST unset)');
    const client = new KubeClient(kc as KubeConfig);
    const stored = await nodeAddressing(client, cfg.node); // flanneld: node-public-ip stands for --public-ip
    const underlay = chooseUnderlay({ ...cfg, publicIP: stored.nodePublicIP ?? cfg.publicIP });
    const rec = await announceNode(client, cfg.node, cfg.vni ?? 1, underlay.publicIP); // public-ip-overwrite wins over it
    underlay.publicIP = rec.underlayIP;
    log.info({ server: kc.server, vtepMAC: rec.vtepMAC, underlayIP: rec.underlayIP, podCIDR: rec.podCIDR, ...(stored.overwrite ? { overwrite: stored.overwrite } : {}) }, 'announced this node on its Node object');
    return { source: new KubeSource(client, cfg.clusterCIDR ?? '10.244.0.0/16', log), underlay };
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
