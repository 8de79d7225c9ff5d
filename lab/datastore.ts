// The lab's side of the datastore (format in agent/sources/file.ts): it creates
// the snapshot, adds one change set per change, and folds change sets into a new
// snapshot once they outweigh it, so readers never replay much and the directory stays
// small. Writers may run at once (two `lab apply`, a test beside a lab command): they
// take turns (a lock directory), so each takes the next revision and folds behind it.
import { mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { FileSource, changeFile, changeRevs, changesDir, readSnapshot, snapshotFile, type Change, type ClusterView } from '../agent/sources/file.js';

const COMPACT_FILES = 64;
const COMPACT_BYTES = 1 << 20;

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
 * Adds one change set (applied by readers as a whole); returns its revision. Writers
 * take turns, holding the datastore's writer lock while they pick the next revision,
 * put the set in place under it and fold when folds are due: a writer that picked
 * its revision from a listing made before a fold could otherwise put a set under a
 * revision the fold had already taken into the snapshot (and deleted), so revisions
 * would repeat. A lock left by a writer that died is broken after STALE_LOCK_MS.
 */
export function commitChanges(dir: string, changes: Change[]): number {
  const unlock = writerLock(dir);
  try {
    const rev = latestRev(dir) + 1;
    writeWhole(changeFile(dir, rev), JSON.stringify({ rev, changes }, null, 1), dir);
    if (foldDue(dir)) compact(dir);
    return rev;
  } finally {
    unlock();
  }
}

const STALE_LOCK_MS = 30_000; // a lock this old was left by a writer that died
const napCell = new Int32Array(new SharedArrayBuffer(4));

/** Takes the writer lock (waiting for it, synchronously); returns its release. */
function writerLock(dir: string): () => void {
  const lock = path.join(dir, '.writer.lock');
  for (let wait = 1; ; wait = Math.min(wait * 2, 20)) {
    try {
      mkdirSync(lock);
      return () => rmSync(lock, { recursive: true, force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    try {
      if (Date.now() - statSync(lock).mtimeMs > STALE_LOCK_MS) rmSync(lock, { recursive: true, force: true });
    } catch { /* released meanwhile */ }
    Atomics.wait(napCell, 0, 0, wait); // a synchronous sleep: commitChanges is synchronous
  }
}

function foldDue(dir: string): boolean {
  const sizes = changeRevs(dir).map((r) => { try { return statSync(changeFile(dir, r)).size; } catch { return 0; } });
  return sizes.length > COMPACT_FILES || sizes.reduce((a, b) => a + b, 0) > Math.max(COMPACT_BYTES, statSync(snapshotFile(dir)).size);
}

/** Folds every change set into the snapshot; the newest one stays, as it carries the latest revision. Under the writer lock. */
function compact(dir: string): void {
  const view = readDatastore(dir);
  writeWhole(snapshotFile(dir), JSON.stringify(view, null, 1), dir);
  for (const rev of changeRevs(dir)) if (rev < view.rev) rmSync(changeFile(dir, rev), { force: true });
}
