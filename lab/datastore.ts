// The lab's side of the datastore (format in agent/sources/file.ts): it creates
// the snapshot, adds one change set per change, and folds change sets into a new
// snapshot once they outweigh it, so readers never replay much and the directory stays
// small. Writers may run at once (two `lab apply`, a test beside a lab command): a
// change set is linked into place under the next free revision, and one writer folds.
import { linkSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { FileSource, changeFile, changeRevs, changesDir, readSnapshot, snapshotFile, type Change, type ClusterView } from '../agent/sources/file.js';

const COMPACT_FILES = 64;
const COMPACT_BYTES = 1 << 20;
const STALE_FOLD_MS = 30_000; // a fold lock this old was left by a writer that died

let tmpSeq = 0;
/** A temporary file of this writer's own: concurrent writers never share one. */
function tmpFile(dir: string, file: string): string {
  return path.join(dir, `.${path.basename(file)}.${process.pid}.${tmpSeq++}.tmp`);
}

function writeWhole(file: string, text: string, tmpDir: string): void {
  const tmp = tmpFile(tmpDir, file);
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

/**
 * Adds one change set (applied by readers as a whole); returns its revision. The
 * set is written whole, then hard-linked as <rev>.json: link fails when another
 * writer took that revision first, and the set goes in as the next one. A writer
 * only ever takes the revision after one it has seen, so revisions have no gaps.
 */
export function commitChanges(dir: string, changes: Change[]): number {
  const tmp = tmpFile(dir, 'change');
  try {
    for (;;) {
      const rev = latestRev(dir) + 1;
      writeFileSync(tmp, JSON.stringify({ rev, changes }, null, 1));
      try {
        linkSync(tmp, changeFile(dir, rev));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') continue;
        throw e;
      }
      if (foldDue(dir)) compact(dir);
      return rev;
    }
  } finally {
    rmSync(tmp, { force: true });
  }
}

function foldDue(dir: string): boolean {
  const sizes = changeRevs(dir).map((r) => { try { return statSync(changeFile(dir, r)).size; } catch { return 0; } });
  return sizes.length > COMPACT_FILES || sizes.reduce((a, b) => a + b, 0) > Math.max(COMPACT_BYTES, statSync(snapshotFile(dir)).size);
}

/**
 * Folds every change set into the snapshot; the newest one stays, as it carries the
 * latest revision. One writer folds at a time (a lock directory): two folds at once
 * could put an older snapshot over a newer one whose change sets are already gone.
 * A writer that finds the lock taken leaves the fold to its holder.
 */
function compact(dir: string): void {
  const lock = path.join(dir, '.fold.lock');
  try {
    mkdirSync(lock);
  } catch {
    try {
      if (Date.now() - statSync(lock).mtimeMs < STALE_FOLD_MS) return;
      rmSync(lock, { recursive: true, force: true });
      mkdirSync(lock);
    } catch {
      return; // another writer broke the stale lock first: the fold is its
    }
  }
  try {
    const view = readDatastore(dir);
    writeWhole(snapshotFile(dir), JSON.stringify(view, null, 1), dir);
    for (const rev of changeRevs(dir)) if (rev < view.rev) rmSync(changeFile(dir, rev), { force: true });
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}
