// The lab's side of the datastore (format in dataplane/agent/datastore.ts): it creates
// the snapshot, adds one change set per change, and folds change sets into a new
// snapshot once they outweigh it, so readers never replay much and the directory stays
// small. One writer at a time: the lab command running.
import { mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { FileSource, changeFile, changeRevs, changesDir, readSnapshot, snapshotFile, type Change, type ClusterView } from '../dataplane/agent/datastore.js';

const COMPACT_FILES = 64;
const COMPACT_BYTES = 1 << 20;

function writeWhole(file: string, text: string, tmpDir: string): void {
  const tmp = path.join(tmpDir, `.${path.basename(file)}.tmp`);
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

/** A fresh datastore holding `view` as revision 0. */
export function createDatastore(dir: string, view: Omit<ClusterView, 'rev'>): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(changesDir(dir), { recursive: true });
  writeWhole(snapshotFile(dir), JSON.stringify({ rev: 0, ...view }, null, 1), dir);
}

/** The latest revision: the newest change set's, or the snapshot's when there is none. */
export function latestRev(dir: string): number {
  const revs = changeRevs(dir);
  return revs.length ? revs[revs.length - 1] : readSnapshot(dir).rev;
}

/** The whole cluster as of the latest revision, read as an agent reads it. */
export function readDatastore(dir: string): ClusterView {
  return new FileSource(dir).read();
}

/** Adds one change set (applied by readers as a whole); returns its revision. */
export function commitChanges(dir: string, changes: Change[]): number {
  const rev = latestRev(dir) + 1;
  writeWhole(changeFile(dir, rev), JSON.stringify({ rev, changes }, null, 1), dir);
  const revs = changeRevs(dir);
  if (revs.length > COMPACT_FILES || revs.reduce((n, r) => n + statSync(changeFile(dir, r)).size, 0) > Math.max(COMPACT_BYTES, statSync(snapshotFile(dir)).size)) compact(dir);
  return rev;
}

/** Folds every change set into the snapshot. The newest one stays: it carries the latest revision. */
function compact(dir: string): void {
  const view = readDatastore(dir);
  writeWhole(snapshotFile(dir), JSON.stringify(view, null, 1), dir);
  for (const rev of changeRevs(dir)) if (rev < view.rev) rmSync(changeFile(dir, rev), { force: true });
}
