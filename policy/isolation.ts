// Which policies isolate each pod, per direction, ordered by policy id, kept up to date
// as policies come and go and target selectors gain or lose pods: a recompile does not
// walk every policy's targets. Each pod also keeps the rule sets it was given last time,
// and a pod is "touched" when anything its rule sets depend on moved (its isolating
// policies, their revisions, the pod itself); only touched pods look rule sets up again.

export interface Isolator {
  readonly id: number;
  readonly isolates: readonly [boolean, boolean]; // by direction
}

interface Entry<P, R> {
  by: [P[], P[]]; // by direction, ascending id
  sets: [R | undefined, R | undefined]; // the rule sets given last time, by direction
}

function insert<P extends Isolator>(list: P[], p: P): void {
  if (list.length === 0 || list[list.length - 1].id < p.id) {
    list.push(p); // new policies have the highest ids: the usual case
    return;
  }
  let i = list.length;
  while (i > 0 && list[i - 1].id > p.id) i--;
  list.splice(i, 0, p);
}

export class IsolationIndex<P extends Isolator, R> {
  private readonly pods = new Map<number, Entry<P, R>>();
  private readonly touched = new Set<number>();
  private all = true;

  /** The pod's isolating policies by direction, and its rule sets of last time when it was not touched since. */
  get(uid: number): { by: [P[], P[]]; sets: [R | undefined, R | undefined] | undefined } | undefined {
    const e = this.pods.get(uid);
    if (!e) return undefined;
    return { by: e.by, sets: this.all || this.touched.has(uid) ? undefined : e.sets };
  }

  /** Records the rule sets the pod was given. */
  given(uid: number, sets: [R | undefined, R | undefined]): void {
    const e = this.pods.get(uid);
    if (e) e.sets = sets;
  }

  add(uid: number, p: P): void {
    if (!p.isolates[0] && !p.isolates[1]) return;
    let e = this.pods.get(uid);
    if (!e) this.pods.set(uid, (e = { by: [[], []], sets: [undefined, undefined] }));
    if (p.isolates[0]) insert(e.by[0], p);
    if (p.isolates[1]) insert(e.by[1], p);
    if (!this.all) this.touched.add(uid);
  }

  remove(uid: number, p: P): void {
    const e = this.pods.get(uid);
    if (!e) return;
    for (const list of e.by) {
      const i = list.indexOf(p);
      if (i >= 0) list.splice(i, 1);
    }
    if (e.by[0].length === 0 && e.by[1].length === 0) this.pods.delete(uid);
    this.touched.add(uid);
  }

  /** The pod is gone. */
  drop(uid: number): void {
    this.pods.delete(uid);
    this.touched.delete(uid);
  }

  touch(uid: number): void {
    if (!this.all) this.touched.add(uid);
  }

  touchAll(): void {
    this.all = true;
  }

  /** After a compile: every pod's rule sets are current. */
  settle(): void {
    this.touched.clear();
    this.all = false;
  }
}
