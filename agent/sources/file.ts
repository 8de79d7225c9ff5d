// Where a node learns the cluster: which nodes exist, their pod subnets, underlay
// addresses and VTEP MACs (flannel's subnet-manager role), and the objects NetworkPolicy
// needs. The lab keeps it in a directory of JSON files; a Kubernetes or etcd source
// implements the same interface.
//
// The directory, each file written whole and renamed into place:
//   snapshot.json          the whole cluster as of revision `rev`
//   changes/<rev>.json     one change set per revision after it (a `lab apply`, a pod added)
// Readers apply change sets in revision order, so a change costs what it changes, not
// the size of the cluster. The writer (lab/datastore.ts) folds change sets into a new
// snapshot once they add up; a reader that meets a gap reads the snapshot again.
import { readFileSync, readdirSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import type { ClusterModel, Namespace, NetworkPolicy, Pod } from '../../policy/model.js';

export interface NodeRecord {
  name: string;
  underlayIP: string; // IPv4; an IPv6-only node's may be '' (kind's nodes keep one)
  podCIDR: string; // IPv4; '' on an IPv6-only node (it takes part by its IPv6 fields alone)
  vtepMAC: string;
  backend?: 'twill' | 'flannel-vxlan'; // flannel-vxlan: a node whose overlay is the kernel's VXLAN device
  // IPv6 (flannel's dual-stack vxlan): a node with all three takes part in IPv6.
  podCIDR6?: string; // its IPv6 pod range
  underlayIP6?: string; // its IPv6 underlay address: what IPv6 VXLAN is sent to (flannel's PublicIPv6)
  vtepMAC6?: string; // its IPv6 VTEP MAC (flannel's backend-v6-data)
}
/** What NetworkPolicy needs to know about the cluster (the Kubernetes objects, as twill's policy model). */
export type PolicyView = Pick<ClusterModel, 'namespaces' | 'pods' | 'policies'>;
/** The cluster as of revision `rev` (revisions only grow). */
export interface ClusterView { rev: number; clusterCIDR: string; clusterCIDR6?: string; nodes: NodeRecord[]; model?: PolicyView }

/** One change: an object written whole, or deleted by key (name; namespace/name for pods and policies). */
export type Change =
  | { put: 'node'; object: NodeRecord }
  | { put: 'namespace'; object: Namespace }
  | { put: 'pod'; object: Pod }
  | { put: 'policy'; object: NetworkPolicy }
  | { delete: Kind; key: string };
export type Kind = 'node' | 'namespace' | 'pod' | 'policy';
export interface ChangeSet { rev: number; changes: Change[] }

export const snapshotFile = (dir: string): string => path.join(dir, 'snapshot.json');
export const changesDir = (dir: string): string => path.join(dir, 'changes');
export const changeFile = (dir: string, rev: number): string => path.join(changesDir(dir), `${String(rev).padStart(12, '0')}.json`);

/** The revisions of the change sets present, ascending. */
export function changeRevs(dir: string): number[] {
  return readdirSync(changesDir(dir))
    .filter((f) => /^\d+\.json$/.test(f))
    .map((f) => Number(f.slice(0, -5)))
    .sort((a, b) => a - b);
}

export function readSnapshot(dir: string): ClusterView {
  const v = JSON.parse(readFileSync(snapshotFile(dir), 'utf8')) as ClusterView;
  if (typeof v.clusterCIDR !== 'string' || !Array.isArray(v.nodes) || typeof v.rev !== 'number') throw new Error(`${snapshotFile(dir)}: expected {rev, clusterCIDR, nodes[]}`);
  if (v.clusterCIDR6 !== undefined && typeof v.clusterCIDR6 !== 'string') throw new Error(`${snapshotFile(dir)}: clusterCIDR6 must be a string (an IPv6 CIDR)`);
  return v;
}

/** A change set, or undefined once it has been folded into the snapshot (its file is gone). */
function readChange(dir: string, rev: number): ChangeSet | undefined {
  try {
    return JSON.parse(readFileSync(changeFile(dir, rev), 'utf8')) as ChangeSet;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

export const keyOf = (kind: Kind, o: { name: string; namespace?: string }): string => (kind === 'pod' || kind === 'policy' ? `${o.namespace}/${o.name}` : o.name);

/**
 * The cluster as a reader holds it: objects by key, in the order they were last written
 * (a duplicate pod IP resolves to the pod written last). Objects are never modified, only
 * replaced, so the policy compiler recognises the unchanged ones by identity.
 */
export class ClusterState {
  private readonly maps: Record<Kind, Map<string, unknown>> = { node: new Map(), namespace: new Map(), pod: new Map(), policy: new Map() };
  private hasModel: boolean;
  rev: number;
  readonly clusterCIDR: string;
  readonly clusterCIDR6?: string;

  constructor(snap: ClusterView) {
    this.rev = snap.rev;
    this.clusterCIDR = snap.clusterCIDR;
    this.clusterCIDR6 = snap.clusterCIDR6;
    this.hasModel = snap.model !== undefined;
    for (const n of snap.nodes) this.maps.node.set(n.name, n);
    for (const n of snap.model?.namespaces ?? []) this.maps.namespace.set(n.name, n);
    for (const p of snap.model?.pods ?? []) this.maps.pod.set(keyOf('pod', p), p);
    for (const p of snap.model?.policies ?? []) this.maps.policy.set(keyOf('policy', p), p);
  }

  apply(set: ChangeSet): void {
    for (const c of set.changes) {
      if ('put' in c) {
        const key = keyOf(c.put, c.object);
        const m = this.maps[c.put];
        m.delete(key); // written last: goes last
        m.set(key, c.object);
        if (c.put !== 'node') this.hasModel = true;
      } else {
        this.maps[c.delete].delete(c.key);
      }
    }
    this.rev = set.rev;
  }

  /** The keys of the objects of one kind held now. */
  keys(kind: Kind): IterableIterator<string> { return this.maps[kind].keys(); }

  view(): ClusterView {
    const all = <T>(k: Kind) => [...this.maps[k].values()] as T[];
    const v: ClusterView = { rev: this.rev, clusterCIDR: this.clusterCIDR, ...(this.clusterCIDR6 !== undefined ? { clusterCIDR6: this.clusterCIDR6 } : {}), nodes: all<NodeRecord>('node') };
    if (this.hasModel) v.model = { namespaces: all<Namespace>('namespace'), pods: all<Pod>('pod'), policies: all<NetworkPolicy>('policy') };
    return v;
  }
}

export interface ClusterSource {
  read(): ClusterView | Promise<ClusterView>;
  /** Calls back on every change; returns a function that stops watching. */
  watch(onChange: (v: ClusterView) => void): () => void;
}

export class FileSource implements ClusterSource {
  private state?: ClusterState;

  constructor(readonly dir: string) {}

  read(): ClusterView {
    this.state = new ClusterState(readSnapshot(this.dir));
    this.catchUp();
    return this.state.view();
  }

  /** Applies the change sets after the state's revision; true when the state moved. */
  private catchUp(): boolean {
    let moved = false;
    for (;;) {
      const st = this.state!;
      let gap = false;
      for (const rev of changeRevs(this.dir)) {
        if (rev <= st.rev) continue;
        const set = rev === st.rev + 1 ? readChange(this.dir, rev) : undefined;
        if (!set) {
          gap = true; // the writer folded what we lack into the snapshot
          break;
        }
        st.apply(set);
        moved = true;
      }
      if (!gap) return moved;
      const snap = readSnapshot(this.dir);
      if (snap.rev <= st.rev) return moved; // the writer is between two files: its next one wakes us
      this.state = new ClusterState(snap);
      moved = true;
    }
  }

  watch(onChange: (v: ClusterView) => void): () => void {
    if (!this.state) this.read();
    const check = () => {
      try {
        if (this.catchUp()) onChange(this.state!.view());
      } catch {
        // unreadable for now (a snapshot being replaced): the next event or tick retries
      }
    };
    // inotify wakes us at once; the timer only covers events lost (a directory replaced)
    let w: FSWatcher | undefined;
    try {
      w = watch(changesDir(this.dir), () => check());
    } catch { /* the timer alone */ }
    const t = setInterval(check, 1000);
    t.unref();
    check();
    return () => { w?.close(); clearInterval(t); };
  }
}
