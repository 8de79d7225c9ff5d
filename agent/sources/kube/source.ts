// The cluster as the Kubernetes API tells it (flannel's kube subnet manager, plus
// what NetworkPolicy needs): Nodes give pod subnets, underlay addresses and VTEP
// MACs; Namespaces, Pods and NetworkPolicies give the policy model. Each kind is
// listed once, then watched from the list's resourceVersion; a watch the server
// ends is resumed where it stopped, and one whose version is too old (410 Gone)
// lists its kind again. Every event is one change set of the same ClusterState
// the file source uses, so the agent cannot tell the sources apart.
//
// Nodes carry flannel's own annotations, so twill nodes and flannel nodes in one
// cluster learn each other: a node takes part once it has a pod CIDR and a VTEP
// MAC (flannel.alpha.coreos.com/backend-data); twill's agent writes them on its
// own Node as flanneld does (announceNode).
import { isIPv4 } from 'node:net';
import type { Logger } from 'pino';
import { ClusterState, keyOf, type Change, type ClusterSource, type ClusterView, type Kind, type NodeRecord } from '../file.js';
import { KubeClient, KubeError, type WatchEvent } from './client.js';
import { modelChange, objectKey } from '../model-objects.js';
import { vtepMacFor } from '../../addressing.js';
import { isObj, type Obj } from '../../../policy/validate.js';

export const FLANNEL = {
  backendType: 'flannel.alpha.coreos.com/backend-type',
  backendData: 'flannel.alpha.coreos.com/backend-data',
  publicIP: 'flannel.alpha.coreos.com/public-ip',
  subnetManager: 'flannel.alpha.coreos.com/kube-subnet-manager',
  // Set by an administrator on a Node: announce this address instead of the one the
  // agent chose (flanneld writes it as public-ip when it acquires its lease).
  publicIPOverwrite: 'flannel.alpha.coreos.com/public-ip-overwrite',
  // Set by an administrator on a Node: read at start-up as flanneld's --public-ip.
  nodePublicIP: 'flannel.alpha.coreos.com/node-public-ip',
};
export const TWILL_ENGINE = 'twill.dev/engine'; // on nodes whose agent is twill's (informational)

const PATHS: Record<Kind, string> = {
  node: '/api/v1/nodes',
  namespace: '/api/v1/namespaces',
  pod: '/api/v1/pods',
  policy: '/apis/networking.k8s.io/v1/networkpolicies',
};
const KINDS = Object.keys(PATHS) as Kind[];
const RETRY_MS = 1000;

const metaOf = (o: Obj): Obj => (isObj(o.metadata) ? o.metadata : {});
const annotationsOf = (o: Obj): Record<string, unknown> => { const a = metaOf(o).annotations; return isObj(a) ? a : {}; };

/** A Node as twill's overlay needs it, or undefined while it lacks a pod CIDR, an address or a VTEP MAC. */
export function nodeRecord(o: Obj): NodeRecord | undefined {
  const name = metaOf(o).name;
  const spec = isObj(o.spec) ? o.spec : {};
  const cidrs = [spec.podCIDR, ...(Array.isArray(spec.podCIDRs) ? spec.podCIDRs : [])];
  const podCIDR = cidrs.find((c): c is string => typeof c === 'string' && isIPv4(c.split('/')[0]));
  const ann = annotationsOf(o);
  const underlayIP = typeof ann[FLANNEL.publicIP] === 'string' ? ann[FLANNEL.publicIP] as string : nodeAddress(o);
  let vtepMAC: unknown;
  try { vtepMAC = (JSON.parse(String(ann[FLANNEL.backendData] ?? 'null')) as Obj | null)?.VtepMAC; } catch { /* not announced yet */ }
  if (typeof name !== 'string' || !podCIDR || !underlayIP || typeof vtepMAC !== 'string' || ann[FLANNEL.backendType] !== 'vxlan') return undefined;
  return { name, underlayIP, podCIDR, vtepMAC, backend: ann[TWILL_ENGINE] ? 'twill' : 'flannel-vxlan' };
}

/** What one API object is to the cluster view: a put or a delete (a node not ready is absent). */
function changeOf(kind: Kind, type: 'put' | 'delete', o: Obj, log?: Logger): Change {
  if (type === 'delete') return { delete: kind, key: objectKey(kind, o) };
  if (kind !== 'node') return modelChange(kind, o, log);
  const n = nodeRecord(o);
  return n ? { put: 'node', object: n } : { delete: 'node', key: objectKey('node', o) }; // not (or no longer) reachable as a VTEP
}

export class KubeSource implements ClusterSource {
  private state?: ClusterState;
  private readonly rv: Partial<Record<Kind, string>> = {};
  private stops: (() => void)[] = [];
  private stopped = false;

  constructor(private readonly client: KubeClient, private readonly clusterCIDR: string, private readonly log?: Logger) {}

  /** Lists every kind; the view as of those lists. */
  async read(): Promise<ClusterView> {
    const lists = await Promise.all(KINDS.map((k) => this.list(k)));
    const rev = this.state ? this.state.rev + 1 : 1;
    this.state = new ClusterState({ rev, clusterCIDR: this.clusterCIDR, nodes: [], model: { namespaces: [], pods: [], policies: [] } });
    this.state.apply({ rev, changes: lists.flat() });
    return this.state.view();
  }

  private async list(kind: Kind): Promise<Change[]> {
    const l = await this.client.get<{ metadata?: { resourceVersion?: string }; items?: Obj[] }>(PATHS[kind]);
    this.rv[kind] = l.metadata?.resourceVersion ?? '0';
    return (l.items ?? []).map((o) => changeOf(kind, 'put', o, this.log));
  }

  watch(onChange: (v: ClusterView) => void): () => void {
    let pending = false;
    const changed = () => { // a burst of events (a relist) is one view
      if (pending) return;
      pending = true;
      setImmediate(() => { pending = false; if (!this.stopped) onChange(this.state!.view()); });
    };
    const start = (kind: Kind) => {
      if (this.stopped) return;
      const stop = this.client.watch(PATHS[kind], this.rv[kind] ?? '0', (e) => this.onEvent(kind, e, changed), (err) => {
        this.stops = this.stops.filter((s) => s !== stop);
        if (this.stopped) return;
        if (err instanceof KubeError && err.status === 410) return void this.relist(kind, changed).then(() => start(kind));
        if (err) this.log?.warn({ kind, server: this.client.cfg.server, err }, 'watch failed; resuming');
        setTimeout(() => start(kind), err ? RETRY_MS : 0).unref();
      });
      this.stops.push(stop);
    };
    void (async () => {
      if (!this.state) await this.read();
      for (const k of KINDS) start(k);
    })().catch((e: Error) => this.log?.error({ server: this.client.cfg.server, err: e }, 'kubernetes source failed to start its watches'));
    return () => { this.stopped = true; for (const s of this.stops.splice(0)) s(); this.client.close(); };
  }

  private onEvent(kind: Kind, e: WatchEvent, changed: () => void): void {
    const rv = metaOf(e.object).resourceVersion;
    if (typeof rv === 'string') this.rv[kind] = rv;
    if (e.type === 'BOOKMARK') return;
    const c = changeOf(kind, e.type === 'DELETED' ? 'delete' : 'put', e.object, this.log);
    this.state!.apply({ rev: this.state!.rev + 1, changes: [c] });
    changed();
  }

  /** Lists one kind again (its watch's version expired): puts what is there, deletes what is gone. */
  private async relist(kind: Kind, changed: () => void): Promise<void> {
    for (;;) {
      try {
        const puts = await this.list(kind);
        const have = new Set(puts.map((c) => ('put' in c ? keyOf(kind, c.object as { name: string; namespace?: string }) : c.key)));
        const gone = [...this.state!.keys(kind)].filter((k) => !have.has(k)).map((key): Change => ({ delete: kind, key }));
        this.state!.apply({ rev: this.state!.rev + 1, changes: [...puts, ...gone] });
        changed();
        return;
      } catch (e) {
        if (this.stopped) return;
        this.log?.warn({ kind, server: this.client.cfg.server, err: e }, 'relist failed; retrying');
        await new Promise((r) => setTimeout(r, RETRY_MS));
      }
    }
  }
}

/** The public-IP annotations an administrator may have put on this node (flannel's), each checked to be IPv4. */
export async function nodeAddressing(client: KubeClient, node: string): Promise<{ nodePublicIP?: string; overwrite?: string; internalIP?: string }> {
  return addressingOf(await client.get<Obj>(`${PATHS.node}/${encodeURIComponent(node)}`), node);
}

function addressingOf(o: Obj, node: string): { nodePublicIP?: string; overwrite?: string; internalIP?: string } {
  const ann = annotationsOf(o);
  const ipOf = (key: string): string | undefined => {
    const v = ann[key];
    if (v === undefined || v === '') return undefined;
    if (typeof v !== 'string' || !isIPv4(v)) throw new Error(`node ${node}: annotation ${key} is ${JSON.stringify(v)}, not an IPv4 address`);
    return v;
  };
  return { nodePublicIP: ipOf(FLANNEL.nodePublicIP), overwrite: ipOf(FLANNEL.publicIPOverwrite), internalIP: nodeAddress(o) };
}

/**
 * Writes this node's VTEP on its Node object the way flanneld does (backend type,
 * backend data with VNI and VTEP MAC, public IP), so every node, twill's or
 * flannel's, can reach it. The public IP written is, as flanneld writes it, the
 * node's public-ip-overwrite annotation when there is one, else `publicIP` (the
 * underlay address the agent chose), else the Node's InternalIP. Returns the node's
 * record as the others will read it.
 */
export async function announceNode(client: KubeClient, node: string, vni: number, publicIP?: string): Promise<NodeRecord> {
  const path = `${PATHS.node}/${encodeURIComponent(node)}`;
  const a = addressingOf(await client.get<Obj>(path), node);
  const pub = a.overwrite ?? publicIP ?? a.internalIP;
  const annotations: Record<string, string> = {
    [FLANNEL.backendType]: 'vxlan',
    [FLANNEL.backendData]: JSON.stringify({ VNI: vni, VtepMAC: vtepMacFor(node) }),
    [FLANNEL.subnetManager]: 'true',
    [TWILL_ENGINE]: 'twill',
  };
  if (pub) annotations[FLANNEL.publicIP] = pub;
  const patched = await client.mergePatch<Obj>(path, { metadata: { annotations } });
  const rec = nodeRecord(patched);
  if (!rec) throw new Error(`node ${node} has no IPv4 pod CIDR or InternalIP address yet (spec.podCIDR, status.addresses)`);
  return rec;
}

function nodeAddress(o: Obj): string | undefined {
  const status = isObj(o.status) ? o.status : {};
  const a = (Array.isArray(status.addresses) ? status.addresses : []).find((x): x is Obj => isObj(x) && x.type === 'InternalIP' && typeof x.address === 'string' && isIPv4(x.address));
  return a?.address as string | undefined;
}
