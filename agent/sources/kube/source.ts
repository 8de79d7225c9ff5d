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
// own Node as flanneld does (announceNode). Dual stack, as flannel's: a node's
// IPv6 pod CIDR is the IPv6 one of spec.podCIDRs, its IPv6 VTEP MAC is in
// backend-v6-data and its IPv6 underlay address in public-ipv6.
import { isIPv4, isIPv6 } from 'node:net';
import type { Logger } from 'pino';
import { ClusterState, keyOf, type Change, type ClusterSource, type ClusterView, type Kind, type NodeRecord } from '../file.js';
import { KubeClient, KubeError, type WatchEvent } from './client.js';
import { modelChange, objectKey } from '../model-objects.js';
import { vtepMac6For, vtepMacFor } from '../../addressing.js';
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
  // IPv6, as flannel's dual stack writes and reads them (pkg/subnet/kube/annotations.go):
  backendV6Data: 'flannel.alpha.coreos.com/backend-v6-data', // {"VNI":1,"VtepMAC":…} of the node's IPv6 VTEP
  publicIPv6: 'flannel.alpha.coreos.com/public-ipv6',
  publicIPv6Overwrite: 'flannel.alpha.coreos.com/public-ipv6-overwrite', // as public-ip-overwrite, for IPv6
  nodePublicIPv6: 'flannel.alpha.coreos.com/node-public-ipv6', // as node-public-ip: flanneld's --public-ipv6
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
  const underlayIP = typeof ann[FLANNEL.publicIP] === 'string' && isIPv4(ann[FLANNEL.publicIP] as string) ? ann[FLANNEL.publicIP] as string : nodeAddress(o);
  const vtepMAC = vtepMacOf(ann[FLANNEL.backendData]);
  // IPv6 once the node has all three, as flannel's nodeToLease reads them
  const podCIDR6 = cidrs.find((c): c is string => typeof c === 'string' && isIPv6(c.split('/')[0]));
  const pub6 = ann[FLANNEL.publicIPv6];
  const underlayIP6 = typeof pub6 === 'string' && isIPv6(pub6) ? pub6 : nodeAddress(o, 6);
  const vtepMAC6 = vtepMacOf(ann[FLANNEL.backendV6Data]);
  const six = podCIDR6 && underlayIP6 && vtepMAC6 !== undefined ? { podCIDR6, underlayIP6, vtepMAC6 } : undefined;
  const four = podCIDR && underlayIP && vtepMAC !== undefined;
  // An IPv6-only node (no IPv4 pod CIDR) takes part by its IPv6 VTEP alone: podCIDR '' (agent/sources/file.ts).
  if (typeof name !== 'string' || (!four && !(six && !podCIDR)) || ann[FLANNEL.backendType] !== 'vxlan') return undefined;
  const rec: NodeRecord = four
    ? { name, underlayIP, podCIDR, vtepMAC, backend: ann[TWILL_ENGINE] ? 'twill' : 'flannel-vxlan' }
    : { name, underlayIP: underlayIP ?? '', podCIDR: '', vtepMAC: vtepMAC ?? '', backend: ann[TWILL_ENGINE] ? 'twill' : 'flannel-vxlan' };
  if (six) Object.assign(rec, six);
  return rec;
}

/** The VtepMAC of a backend-data annotation ({"VNI":1,"VtepMAC":"…"}), or undefined. */
function vtepMacOf(data: unknown): string | undefined {
  if (typeof data !== 'string') return undefined;
  try {
    const mac = (JSON.parse(data) as Obj | null)?.VtepMAC;
    return typeof mac === 'string' ? mac : undefined;
  } catch { return undefined; } // not announced (yet)
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

  private readonly clusterCIDR: string;
  private readonly clusterCIDR6?: string;

  /** `cidrs`: the cluster CIDR (net-conf.json "Network"), or both it and the IPv6 one ("IPv6Network"). */
  constructor(private readonly client: KubeClient, cidrs: string | { clusterCIDR: string; clusterCIDR6?: string }, private readonly log?: Logger) {
    ({ clusterCIDR: this.clusterCIDR, clusterCIDR6: this.clusterCIDR6 } = typeof cidrs === 'string' ? { clusterCIDR: cidrs } : cidrs);
  }

  /** Lists every kind; the view as of those lists. */
  async read(): Promise<ClusterView> {
    const lists = await Promise.all(KINDS.map((k) => this.list(k)));
    const rev = this.state ? this.state.rev + 1 : 1;
    this.state = new ClusterState({ rev, clusterCIDR: this.clusterCIDR, clusterCIDR6: this.clusterCIDR6, nodes: [], model: { namespaces: [], pods: [], policies: [] } });
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

/** What an administrator (or the kubelet) says of this node's addresses, flannel's annotations each checked to be of their family. */
export interface NodeAddressing {
  nodePublicIP?: string; // node-public-ip: flanneld's --public-ip
  overwrite?: string; // public-ip-overwrite: announced whatever the agent chose
  internalIP?: string; // the Node's IPv4 InternalIP
  nodePublicIPv6?: string; // node-public-ipv6: flanneld's --public-ipv6
  overwrite6?: string; // public-ipv6-overwrite
  internalIP6?: string; // the Node's IPv6 InternalIP
}

/** The public-IP annotations an administrator may have put on this node (flannel's), and its InternalIPs. */
export async function nodeAddressing(client: KubeClient, node: string): Promise<NodeAddressing> {
  return addressingOf(await client.get<Obj>(`${PATHS.node}/${encodeURIComponent(node)}`), node);
}

function addressingOf(o: Obj, node: string): NodeAddressing {
  const ann = annotationsOf(o);
  const ipOf = (key: string, family: 4 | 6 = 4): string | undefined => {
    const v = ann[key];
    if (v === undefined || v === '') return undefined;
    if (typeof v !== 'string' || !(family === 4 ? isIPv4(v) : isIPv6(v))) throw new Error(`node ${node}: annotation ${key} is ${JSON.stringify(v)}, not an IPv${family} address`);
    return v;
  };
  const a: NodeAddressing = { nodePublicIP: ipOf(FLANNEL.nodePublicIP), overwrite: ipOf(FLANNEL.publicIPOverwrite), internalIP: nodeAddress(o) };
  const six = { nodePublicIPv6: ipOf(FLANNEL.nodePublicIPv6, 6), overwrite6: ipOf(FLANNEL.publicIPv6Overwrite, 6), internalIP6: nodeAddress(o, 6) };
  for (const [k, v] of Object.entries(six)) if (v !== undefined) Object.assign(a, { [k]: v });
  return a;
}

/**
 * Writes this node's VTEP on its Node object the way flanneld does (backend type,
 * backend data with VNI and VTEP MAC, public IP), so every node, twill's or
 * flannel's, can reach it. The public IP written is, as flanneld writes it, the
 * node's public-ip-overwrite annotation when there is one, else `publicIP` (the
 * underlay address the agent chose), else the Node's InternalIP. With `publicIP6`
 * (the IPv6 underlay address the agent chose) and an IPv6 pod CIDR on the Node,
 * its IPv6 VTEP too, as flanneld's dual stack: backend-v6-data with the IPv6 VTEP
 * MAC, and public-ipv6 (public-ipv6-overwrite when there is one); without them,
 * IPv6 annotations an earlier run of the agent wrote are taken away, so no node
 * sends IPv6 here any more. Returns the node's record as the others will read it.
 *
 * A dual-stack flanneld acts on a Node update only when both families' annotations
 * change (handleUpdateLeaseEvent: the update is dropped if the IPv4 triple
 * backend-data, backend-type, public-ip or the IPv6 one backend-v6-data,
 * backend-type, public-ipv6 is unchanged). So when only one family changes (a node
 * that announced IPv4 only and now has IPv6 too), the other family's backend data
 * is first rewritten in another spelling of the same JSON (no node reads anything
 * new from it), and the announcement then changes both.
 */
export async function announceNode(client: KubeClient, node: string, vni: number, publicIP?: string, publicIP6?: string): Promise<NodeRecord> {
  const path = `${PATHS.node}/${encodeURIComponent(node)}`;
  const o = await client.get<Obj>(path);
  const a = addressingOf(o, node);
  const pub = a.overwrite ?? publicIP ?? a.internalIP;
  if (publicIP6 !== undefined && !isIPv6(publicIP6)) throw new Error(`node ${node}: publicIP6 "${publicIP6}" is not an IPv6 address`);
  const annotations: Record<string, string | null> = {
    [FLANNEL.backendType]: 'vxlan',
    [FLANNEL.backendData]: JSON.stringify({ VNI: vni, VtepMAC: vtepMacFor(node) }),
    [FLANNEL.subnetManager]: 'true',
    [TWILL_ENGINE]: 'twill',
  };
  if (pub) annotations[FLANNEL.publicIP] = pub;
  const spec = isObj(o.spec) ? o.spec : {};
  const has6 = [spec.podCIDR, ...(Array.isArray(spec.podCIDRs) ? spec.podCIDRs : [])].some((c) => typeof c === 'string' && isIPv6(c.split('/')[0]));
  if (publicIP6 !== undefined && has6) {
    annotations[FLANNEL.backendV6Data] = JSON.stringify({ VNI: vni, VtepMAC: vtepMac6For(node) });
    annotations[FLANNEL.publicIPv6] = a.overwrite6 ?? publicIP6;
  } else {
    const ann = annotationsOf(o);
    for (const k of [FLANNEL.backendV6Data, FLANNEL.publicIPv6]) if (ann[k] !== undefined) annotations[k] = null; // a merge patch's delete
  }
  const before = annotationsOf(o);
  const after: Record<string, unknown> = { ...before, ...annotations };
  const triple = (a: Record<string, unknown>, data: string, ip: string) => JSON.stringify([a[data], a[FLANNEL.backendType], a[ip]]);
  const changed4 = triple(before, FLANNEL.backendData, FLANNEL.publicIP) !== triple(after, FLANNEL.backendData, FLANNEL.publicIP);
  const changed6 = triple(before, FLANNEL.backendV6Data, FLANNEL.publicIPv6) !== triple(after, FLANNEL.backendV6Data, FLANNEL.publicIPv6);
  if (changed4 !== changed6 && before[FLANNEL.subnetManager] === 'true') {
    const other = changed4 ? FLANNEL.backendV6Data : FLANNEL.backendData; // the family that stays as it is
    const respelt = respell(before[other], after[other]);
    if (respelt !== undefined) await client.mergePatch<Obj>(path, { metadata: { annotations: { [other]: respelt } } });
  }
  const patched = await client.mergePatch<Obj>(path, { metadata: { annotations } });
  const rec = nodeRecord(patched);
  if (!rec) throw new Error(`node ${node} has no pod CIDR or InternalIP address yet (spec.podCIDRs, status.addresses)`);
  return rec;
}

/**
 * The same backend data ({"VNI":…,"VtepMAC":…}) spelt otherwise (its keys the other
 * way round, else indented), different from both `was` and `will`; undefined when
 * there is none to respell.
 */
function respell(was: unknown, will: unknown): string | undefined {
  if (typeof was !== 'string') return undefined;
  let o: Obj;
  try { o = JSON.parse(was) as Obj; } catch { return undefined; }
  if (!isObj(o)) return undefined;
  for (const text of [JSON.stringify(Object.fromEntries(Object.entries(o).reverse())), JSON.stringify(o, null, 1), JSON.stringify(o, null, 2)]) {
    if (text !== was && text !== will) return text;
  }
  return undefined;
}

/** The Node's first InternalIP of this family (status.addresses). */
function nodeAddress(o: Obj, family: 4 | 6 = 4): string | undefined {
  const status = isObj(o.status) ? o.status : {};
  const ok = family === 4 ? isIPv4 : isIPv6;
  const a = (Array.isArray(status.addresses) ? status.addresses : []).find((x): x is Obj => isObj(x) && x.type === 'InternalIP' && typeof x.address === 'string' && ok(x.address));
  return a?.address as string | undefined;
}
