// Where a node learns the cluster: which nodes exist, their pod subnets,
// underlay addresses and VTEP MACs (flannel's subnet-manager role). The lab
// uses a JSON file; a Kubernetes or etcd source implements the same interface.
import { readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import type { ClusterModel } from '../../policy/model.js';

export interface NodeRecord {
  name: string;
  underlayIP: string;
  podCIDR: string;
  vtepMAC: string;
  backend?: 'twill' | 'flannel-vxlan'; // flannel-vxlan: a node whose overlay is the kernel's VXLAN device
}
/** What NetworkPolicy needs to know about the cluster (the Kubernetes objects, as twill's policy model). */
export type PolicyView = Pick<ClusterModel, 'namespaces' | 'pods' | 'policies'>;
export interface ClusterView { clusterCIDR: string; nodes: NodeRecord[]; model?: PolicyView }

/** A short fingerprint of the policies in a view: agents report the one they enforce. */
export function policyRev(m: PolicyView | undefined): string {
  return createHash('sha256').update(JSON.stringify(m?.policies ?? [])).digest('hex').slice(0, 16);
}

export interface ClusterSource {
  read(): ClusterView;
  /** Calls back on every change; returns a function that stops watching. */
  watch(onChange: (v: ClusterView) => void): () => void;
}

export class FileSource implements ClusterSource {
  constructor(readonly file: string) {}

  read(): ClusterView {
    return this.parse(readFileSync(this.file, 'utf8'));
  }

  private parse(text: string): ClusterView {
    const v = JSON.parse(text) as ClusterView;
    if (typeof v.clusterCIDR !== 'string' || !Array.isArray(v.nodes)) throw new Error(`${this.file}: expected {clusterCIDR, nodes[]}`);
    return v;
  }

  watch(onChange: (v: ClusterView) => void): () => void {
    let last = '', stamp = '';
    const check = () => {
      try {
        // The timer tick looks at the file's stamp first: a large datastore is read only when it changed.
        const st = statSync(this.file);
        const now = `${st.mtimeMs}/${st.size}/${st.ino}`;
        if (now === stamp) return;
        const text = readFileSync(this.file, 'utf8');
        stamp = now;
        if (text === last) return;
        last = text;
        onChange(this.parse(text));
      } catch {
        // a writer is between truncate and write: the next event or tick reads it whole
      }
    };
    let w: FSWatcher | undefined;
    try {
      w = watch(path.dirname(this.file), (_e, name) => { if (!name || name === path.basename(this.file)) check(); });
    } catch { /* fall back to the timer alone */ }
    const t = setInterval(check, 1000);
    t.unref();
    check();
    return () => { w?.close(); clearInterval(t); };
  }
}
