// The lab's datastore: change sets applied in revision order, folded into the snapshot
// once they add up, and a reader that fell behind a fold catches up from the snapshot.
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { distFile } from '../../lib/paths.js';
import { capture } from '../../lib/sh.js';
import { FileSource, changesDir, readSnapshot, type ClusterView } from '../../agent/sources/file.js';
import { commitChanges, createDatastore, latestRev, readDatastore } from '../../lab/datastore.js';
import type { NetworkPolicy, Pod } from '../../policy/model.js';

const dirs: string[] = [];
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }); });

function fresh(): string {
  const dir = path.join(mkdtempSync(path.join(tmpdir(), 'twill-ds-')), 'datastore');
  dirs.push(path.dirname(dir));
  createDatastore(dir, { clusterCIDR: '10.244.0.0/16', nodes: [{ name: 'node1', underlayIP: '172.30.0.11', podCIDR: '10.244.1.0/24', vtepMAC: '02:00:00:00:00:01' }], model: { namespaces: [], pods: [], policies: [] } });
  return dir;
}
const pod = (name: string, ip: string): Pod => ({ namespace: 'x', name, labels: {}, ip, containerPorts: [] });
const np = (name: string, port: number): NetworkPolicy => ({ namespace: 'x', name, spec: { podSelector: {}, ingress: [{ ports: [{ port }] }] } });

describe('lab datastore', () => {
  it('carries dual stack: clusterCIDR6 and the nodes\' IPv6 fields, through change sets and folds', () => {
    const dir = path.join(mkdtempSync(path.join(tmpdir(), 'twill-ds-')), 'datastore');
    dirs.push(path.dirname(dir));
    const n1 = { name: 'node1', underlayIP: '172.30.0.11', podCIDR: '10.244.1.0/24', vtepMAC: '02:00:00:00:00:01', podCIDR6: 'fd00:10:244:1::/64', underlayIP6: 'fc00:f853:ccd:e793::11', vtepMAC6: '02:00:00:00:06:01' };
    createDatastore(dir, { clusterCIDR: '10.244.0.0/16', clusterCIDR6: 'fd00:10:244::/56', nodes: [n1], model: { namespaces: [], pods: [], policies: [] } });
    const n2 = { ...n1, name: 'node2', podCIDR: '10.244.2.0/24', podCIDR6: 'fd00:10:244:2::/64', underlayIP6: 'fc00:f853:ccd:e793::12' };
    for (let i = 0; i < 70; i++) commitChanges(dir, [{ put: 'node', object: n2 }]); // past a fold
    const v = readDatastore(dir);
    expect(v.clusterCIDR6).toBe('fd00:10:244::/56');
    expect(v.nodes).toEqual([n1, n2]);
    expect(readSnapshot(dir).clusterCIDR6).toBe('fd00:10:244::/56');
    // an IPv4-only datastore has no clusterCIDR6 at all
    expect('clusterCIDR6' in readDatastore(fresh())).toBe(false);
  });

  it('change sets put and delete objects; a put moves the object last; revisions count up', () => {
    const dir = fresh();
    expect(commitChanges(dir, [{ put: 'pod', object: pod('a', '10.244.1.2') }, { put: 'pod', object: pod('b', '10.244.1.3') }])).toBe(1);
    expect(commitChanges(dir, [{ put: 'policy', object: np('p', 80) }, { put: 'pod', object: pod('a', '10.244.1.4') }])).toBe(2);
    expect(commitChanges(dir, [{ delete: 'pod', key: 'x/b' }, { put: 'node', object: { name: 'node2', underlayIP: '172.30.0.12', podCIDR: '10.244.2.0/24', vtepMAC: '02:00:00:00:00:02' } }])).toBe(3);
    const v = readDatastore(dir);
    expect(v.rev).toBe(3);
    expect(v.model!.pods).toEqual([pod('a', '10.244.1.4')]);
    expect(v.model!.policies).toEqual([np('p', 80)]);
    expect(v.nodes.map((n) => n.name)).toEqual(['node1', 'node2']);
  });

  it('folds change sets into the snapshot once they add up, keeping the newest', () => {
    const dir = fresh();
    for (let i = 0; i < 70; i++) commitChanges(dir, [{ put: 'policy', object: np(`p${i}`, 1000 + i) }]);
    expect(readdirSync(changesDir(dir)).length).toBeLessThan(64);
    expect(readSnapshot(dir).rev).toBeGreaterThan(0);
    expect(latestRev(dir)).toBe(70);
    expect(readDatastore(dir).model!.policies.map((p) => p.name)).toEqual(Array.from({ length: 70 }, (_, i) => `p${i}`));
  });

  it('a watching reader gets each change, and one that fell behind a fold catches up from the snapshot', async () => {
    const dir = fresh();
    const src = new FileSource(dir);
    const seen: ClusterView[] = [];
    const got = (rev: number) => new Promise<void>((resolve) => { const t = setInterval(() => { if (seen.some((v) => v.rev >= rev)) { clearInterval(t); resolve(); } }, 2); });
    const stop = src.watch((v) => seen.push(v));
    try {
      commitChanges(dir, [{ put: 'policy', object: np('first', 80) }]);
      await got(1);
      expect(seen.at(-1)!.model!.policies.map((p) => p.name)).toEqual(['first']);
      // a reader that missed everything up to a fold: only the snapshot has those revisions
      const behind = new FileSource(dir);
      behind.read();
      for (let i = 0; i < 70; i++) commitChanges(dir, [{ put: 'policy', object: np(`p${i}`, 1000 + i) }]);
      await got(71);
      expect(seen.at(-1)!.model!.policies).toHaveLength(71);
      const caught: ClusterView[] = [];
      const stop2 = behind.watch((v) => caught.push(v));
      stop2();
      expect(caught.at(-1)!.rev).toBe(71);
      expect(caught.at(-1)!.model!.policies).toHaveLength(71);
    } finally {
      stop();
    }
  });

  it('writers at once: every change set gets its own revision, none is lost, folds included', async () => {
    const dir = fresh();
    const WRITERS = 6, EACH = 30; // 180 sets: several folds while the others write
    const mod = pathToFileURL(distFile('lab/datastore.js')).href;
    const script = (w: number) => `import('${mod}').then(({ commitChanges }) => {
      const revs = [];
      for (let i = 0; i < ${EACH}; i++) revs.push(commitChanges(${JSON.stringify(dir)}, [{ put: 'policy', object: { namespace: 'x', name: 'w${w}-' + i, spec: { podSelector: {} } } }]));
      console.log(JSON.stringify(revs));
    })`;
    const outs = await Promise.all(Array.from({ length: WRITERS }, (_, w) => capture(process.execPath, ['-e', script(w)], 60_000)));
    const revs = outs.flatMap((o) => { expect(o.code, o.err).toBe(0); return JSON.parse(o.out) as number[]; }).sort((a, b) => a - b);
    expect(revs).toEqual(Array.from({ length: WRITERS * EACH }, (_, i) => i + 1));
    expect(latestRev(dir)).toBe(WRITERS * EACH);
    const names = readDatastore(dir).model!.policies.map((p) => p.name).sort();
    expect(names).toEqual(Array.from({ length: WRITERS }, (_, w) => Array.from({ length: EACH }, (_, i) => `w${w}-${i}`)).flat().sort());
    expect(readdirSync(path.dirname(changesDir(dir))).filter((f) => f.startsWith('.'))).toEqual([]); // no temporary file or fold lock left
  });
});

