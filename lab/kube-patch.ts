// The three patch types of the Kubernetes API, as the stand-in API server
// (lab/kube-apiserver.ts) applies them:
//   - JSON merge patch (RFC 7386, application/merge-patch+json);
//   - JSON patch (RFC 6902, application/json-patch+json): add, remove, replace,
//     move, copy, test, with JSON pointers (RFC 6901);
//   - strategic merge patch (application/strategic-merge-patch+json), what
//     `kubectl apply` and `kubectl patch` send by default: maps merge; lists are
//     replaced unless the field's patch strategy in the Kubernetes types says
//     merge, which STRATEGIES below lists for the kinds the lab serves (merged by
//     their patchMergeKey, or as sets of primitives). The directives kubectl's
//     three-way merge emits are honoured: `$patch: replace|delete` on maps and
//     keyed list items, `$retainKeys`, `$deleteFromPrimitiveList/<field>` and
//     `$setElementOrder/<field>`. One simplification: with $setElementOrder, the
//     items it names come first in its order and items only the server has follow
//     in their old order (the API server interleaves those by their old position).
import { isObj, type Obj } from '../policy/validate.js';

/** A patch that cannot be applied: the server answers 422 (or 400 for a malformed one). */
export class PatchError extends Error {
  constructor(message: string, readonly malformed = false) {
    super(message);
    this.name = 'PatchError';
  }
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  if (isObj(a)) {
    if (!isObj(b)) return false;
    const ka = Object.keys(a), kb = Object.keys(b);
    return ka.length === kb.length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEqual(a[k], b[k]));
  }
  return false;
}

const clone = <T>(v: T): T => (v === undefined ? v : structuredClone(v));

/** RFC 7386: null deletes, objects merge, everything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObj(patch)) return clone(patch);
  const out: Obj = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

// ---- JSON patch (RFC 6902) ----

function pointer(p: unknown): string[] {
  if (typeof p !== 'string' || (p !== '' && !p.startsWith('/'))) throw new PatchError(`invalid JSON pointer ${JSON.stringify(p)}`, true);
  return p === '' ? [] : p.slice(1).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function index(arr: unknown[], tok: string, forAdd: boolean): number {
  if (forAdd && tok === '-') return arr.length;
  if (!/^(0|[1-9][0-9]*)$/.test(tok)) throw new PatchError(`"${tok}" is not an array index`);
  const i = Number(tok);
  if (i > arr.length || (!forAdd && i === arr.length)) throw new PatchError(`array index ${i} is out of bounds`);
  return i;
}

/** The container of the last token and that token; throws when the path does not exist. */
function parentOf(doc: unknown, toks: string[]): [Obj | unknown[], string] {
  let cur = doc;
  for (const t of toks.slice(0, -1)) {
    if (Array.isArray(cur)) cur = cur[index(cur, t, false)];
    else if (isObj(cur) && Object.prototype.hasOwnProperty.call(cur, t)) cur = cur[t];
    else throw new PatchError(`path /${toks.join('/')} does not exist`);
  }
  if (!Array.isArray(cur) && !isObj(cur)) throw new PatchError(`path /${toks.join('/')} does not exist`);
  return [cur, toks[toks.length - 1]];
}

function getAt(doc: unknown, toks: string[]): unknown {
  if (!toks.length) return doc;
  const [c, t] = parentOf(doc, toks);
  if (Array.isArray(c)) return c[index(c, t, false)];
  if (!Object.prototype.hasOwnProperty.call(c, t)) throw new PatchError(`path /${toks.join('/')} does not exist`);
  return c[t];
}

function removeAt(doc: unknown, toks: string[]): unknown {
  if (!toks.length) throw new PatchError('cannot remove the whole document');
  const [c, t] = parentOf(doc, toks);
  if (Array.isArray(c)) return c.splice(index(c, t, false), 1)[0];
  if (!Object.prototype.hasOwnProperty.call(c, t)) throw new PatchError(`path /${toks.join('/')} does not exist`);
  const v = c[t];
  delete c[t];
  return v;
}

function addAt(doc: unknown, toks: string[], v: unknown): unknown {
  if (!toks.length) return v;
  const [c, t] = parentOf(doc, toks);
  if (Array.isArray(c)) c.splice(index(c, t, true), 0, v);
  else c[t] = v;
  return doc;
}

export function jsonPatch(target: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw new PatchError('a JSON patch is a list of operations', true);
  let doc = clone(target);
  for (const op of ops) {
    if (!isObj(op) || typeof op.op !== 'string') throw new PatchError('each JSON patch operation needs an "op"', true);
    const path = pointer(op.path);
    switch (op.op) {
      case 'add': if (!('value' in op)) throw new PatchError('add needs a value', true); doc = addAt(doc, path, clone(op.value)); break;
      case 'remove': removeAt(doc, path); break;
      case 'replace': if (!('value' in op)) throw new PatchError('replace needs a value', true); getAt(doc, path); if (path.length) removeAt(doc, path); doc = addAt(doc, path, clone(op.value)); break;
      case 'move': { const from = pointer(op.from); const v = path.length && !from.length ? undefined : removeAt(doc, from); doc = addAt(doc, path, v); break; }
      case 'copy': doc = addAt(doc, path, clone(getAt(doc, pointer(op.from)))); break;
      case 'test': if (!deepEqual(getAt(doc, path), op.value)) throw new PatchError(`test failed: ${String(op.path)} is not ${JSON.stringify(op.value)}`); break;
      default: throw new PatchError(`unknown JSON patch operation "${op.op}"`, true);
    }
  }
  return doc;
}

// ---- strategic merge patch ----

/** A list field that merges: by `key` (a list of objects) or, without one, as a set of primitives. */
export interface ListStrategy { key?: string }
/** Field paths (dots; `[]` for a list's items) to their list strategy; a list not named here is replaced whole. */
export type Strategies = Record<string, ListStrategy>;

const META: Strategies = { 'metadata.finalizers': {}, 'metadata.ownerReferences': { key: 'uid' } };
const containerLists = (base: string): Strategies => ({
  [base]: { key: 'name' },
  [`${base}[].ports`]: { key: 'containerPort' },
  [`${base}[].env`]: { key: 'name' },
  [`${base}[].volumeMounts`]: { key: 'mountPath' },
  [`${base}[].volumeDevices`]: { key: 'devicePath' },
});

/** patchStrategy "merge" fields of the kinds the lab serves, from k8s.io/api core/v1 and networking/v1 types.go. */
export const STRATEGIES: Record<string, Strategies> = {
  pods: {
    ...META,
    ...containerLists('spec.containers'), ...containerLists('spec.initContainers'), ...containerLists('spec.ephemeralContainers'),
    'spec.volumes': { key: 'name' }, 'spec.imagePullSecrets': { key: 'name' }, 'spec.hostAliases': { key: 'ip' },
    'spec.resourceClaims': { key: 'name' }, 'spec.schedulingGates': { key: 'name' },
    'status.conditions': { key: 'type' }, 'status.podIPs': { key: 'ip' }, 'status.hostIPs': { key: 'ip' },
    'status.resourceClaimStatuses': { key: 'name' },
  },
  nodes: { ...META, 'spec.podCIDRs': {}, 'status.addresses': { key: 'type' }, 'status.conditions': { key: 'type' } },
  namespaces: { ...META, 'status.conditions': { key: 'type' } },
  networkpolicies: { ...META }, // ingress, egress, policyTypes, ports and peers are all atomic lists
};

const DIRECTIVE = '$patch', RETAIN = '$retainKeys', ORDER = '$setElementOrder/', DEL_PRIM = '$deleteFromPrimitiveList/';

/** The patch with its directives taken out, for values that land as they are. */
function plain(v: unknown): unknown {
  if (Array.isArray(v)) return v.filter((x) => !(isObj(x) && x[DIRECTIVE] !== undefined && Object.keys(x).length === 1)).map(plain);
  if (!isObj(v)) return v;
  const out: Obj = {};
  for (const [k, x] of Object.entries(v)) if (!k.startsWith('$') && x !== null) out[k] = plain(x);
  return out;
}

export function strategicMergePatch(original: unknown, patch: unknown, strategies: Strategies): unknown {
  if (!isObj(patch)) throw new PatchError('a strategic merge patch is a JSON object', true);
  const out = mergeMap(original, patch, strategies, '');
  return out === undefined ? {} : out;
}

function mergeMap(original: unknown, patch: Obj, st: Strategies, path: string): Obj | undefined {
  const directive = patch[DIRECTIVE];
  if (directive === 'delete') return undefined;
  if (directive === 'replace') return plain(patch) as Obj;
  if (directive !== undefined && directive !== 'merge') throw new PatchError(`unknown patch directive ${JSON.stringify(directive)} at ${path || '<root>'}`);
  const out: Obj = isObj(original) ? { ...original } : {};
  const at = (k: string) => (path ? `${path}.${k}` : k);
  for (const [k, v] of Object.entries(patch)) { // first the deletions from primitive lists
    if (!k.startsWith(DEL_PRIM)) continue;
    const field = k.slice(DEL_PRIM.length);
    if (!Array.isArray(v)) throw new PatchError(`${k} must be a list`, true);
    if (Array.isArray(out[field])) out[field] = (out[field] as unknown[]).filter((x) => !v.some((d) => deepEqual(d, x)));
  }
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith('$')) continue;
    if (v === null) { delete out[k]; continue; }
    if (Array.isArray(v)) { out[k] = mergeList(out[k], v, st, at(k)); continue; }
    if (isObj(v)) {
      const m = mergeMap(out[k], v, st, at(k));
      if (m === undefined) delete out[k]; else out[k] = m;
      continue;
    }
    out[k] = v;
  }
  for (const [k, v] of Object.entries(patch)) {
    if (!k.startsWith(ORDER)) continue;
    const field = k.slice(ORDER.length);
    if (!Array.isArray(v)) throw new PatchError(`${k} must be a list`, true);
    if (Array.isArray(out[field])) out[field] = reorder(out[field] as unknown[], v, st[at(field)]?.key);
  }
  const retain = patch[RETAIN];
  if (retain !== undefined) {
    if (!Array.isArray(retain)) throw new PatchError(`${RETAIN} must be a list`, true);
    for (const k of Object.keys(out)) if (!retain.includes(k)) delete out[k];
  }
  return out;
}

function mergeList(original: unknown, patch: unknown[], st: Strategies, path: string): unknown[] {
  const s = st[path];
  if (!s) return plain(patch) as unknown[]; // atomic: replaced whole
  const base = Array.isArray(original) ? [...original] : [];
  if (patch.some((x) => isObj(x) && x[DIRECTIVE] === 'replace')) return plain(patch) as unknown[];
  if (!s.key) { // a set of primitives
    for (const x of patch) if (!base.some((y) => deepEqual(x, y))) base.push(x);
    return base;
  }
  const key = s.key;
  for (const item of patch) {
    if (!isObj(item)) throw new PatchError(`${path}: an item of a list merged by "${key}" must be an object`);
    if (!(key in item)) throw new PatchError(`${path}: an item does not contain the merge key "${key}"`);
    const i = base.findIndex((x) => isObj(x) && deepEqual(x[key], item[key]));
    if (item[DIRECTIVE] === 'delete') {
      for (let j = base.length - 1; j >= 0; j--) if (isObj(base[j]) && deepEqual((base[j] as Obj)[key], item[key])) base.splice(j, 1);
      continue;
    }
    const merged = mergeMap(i >= 0 ? base[i] : undefined, item, st, `${path}[]`);
    if (merged === undefined) { if (i >= 0) base.splice(i, 1); continue; }
    if (i >= 0) base[i] = merged; else base.push(merged);
  }
  return base;
}

function reorder(list: unknown[], order: unknown[], key?: string): unknown[] {
  const id = (x: unknown) => (key && isObj(x) ? x[key] : x);
  const pos = (x: unknown) => order.findIndex((o) => deepEqual(key && isObj(o) ? o[key] : o, id(x)));
  const named = list.filter((x) => pos(x) >= 0).sort((a, b) => pos(a) - pos(b));
  return [...named, ...list.filter((x) => pos(x) < 0)];
}
