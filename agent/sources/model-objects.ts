// Kubernetes-shaped Namespace, Pod and NetworkPolicy objects as changes to the
// cluster state, for every source that carries them (the Kubernetes API; etcd
// under /twill/). Nodes are each source's own: a Node object, a subnet lease.
import type { Logger } from 'pino';
import { keyOf, type Change } from './file.js';
import { readNamespace, readPod } from '../../policy/manifests.js';
import { Problems, isObj, validateNetworkPolicy, type Obj } from '../../policy/validate.js';

export type ModelKind = 'namespace' | 'pod' | 'policy';

/** The key of an object of `kind`: name, or namespace/name. */
export function objectKey(kind: ModelKind | 'node', o: Obj): string {
  const meta = isObj(o.metadata) ? o.metadata : {};
  return keyOf(kind, { name: String(meta.name ?? ''), namespace: String(meta.namespace ?? 'default') });
}

/** The change an object written (put) means; an object twill cannot use is a delete, with a warning. */
export function modelChange(kind: ModelKind, o: Obj, log?: Logger): Change {
  const key = objectKey(kind, o);
  switch (kind) {
    case 'namespace': return { put: 'namespace', object: readNamespace(o, []) };
    case 'pod': return { put: 'pod', object: readPod(o, []) };
    case 'policy': {
      const p = new Problems();
      const np = validateNetworkPolicy(o, p);
      if (!p.list.length) return { put: 'policy', object: np };
      log?.warn({ policy: key, problems: p.list }, 'network policy not understood; ignored');
      return { delete: 'policy', key };
    }
  }
}
