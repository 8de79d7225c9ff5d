// The pods this node's engine serves, keyed by container id. Kept on disk so
// an agent restart (or crash) serves the same pods at once, without the pods
// being touched.
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';

export interface PodRecord {
  containerId: string;
  name: string;
  namespace: string;
  ip: string; // IPv4; '' for an IPv6-only pod
  ip6?: string; // IPv6 (RFC 5952 text), for a dual-stack or IPv6-only pod
  mac: string; // the pod side of the veth
  hostIf: string; // the node side of the veth, read by the engine
  netns: string;
  labels?: Record<string, string>;
}

export class PodRegistry {
  private pods = new Map<string, PodRecord>();

  constructor(private readonly file: string) {
    if (existsSync(file)) for (const p of JSON.parse(readFileSync(file, 'utf8')) as PodRecord[]) this.pods.set(p.containerId, p);
  }

  list(): PodRecord[] { return [...this.pods.values()]; }
  get(id: string): PodRecord | undefined { return this.pods.get(id); }

  put(p: PodRecord): void { this.pods.set(p.containerId, p); this.save(); }

  remove(id: string): boolean {
    const had = this.pods.delete(id);
    if (had) this.save();
    return had;
  }

  private save(): void {
    const tmp = `${this.file}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.list(), null, 1));
    renameSync(tmp, this.file);
  }
}
