// Plain Kubernetes YAML (multi-document, `kind: List` / `*List` with items) → ClusterModel.
// Reads Namespace, Pod, NetworkPolicy and Node objects and ignores other kinds, so a
// dump of `kubectl get ns,pods,netpol,nodes -A -o yaml` works as is.
import { readFileSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { parseAllDocuments } from 'yaml';
import { NS_NAME_LABEL, type ClusterModel, type ContainerPort, type Namespace, type NetworkPolicy, type Pod, type Protocol } from './model.js';
import { Problems, isObj, labelKeyProblem, labelValueProblem, validateNetworkPolicy, type Obj } from './validate.js';


/** An invalid manifest: `problems` holds one line per problem, each naming the object and field. */
export class ManifestError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
    this.name = 'ManifestError';
  }
}

function labelsOf(meta: Obj, what: string, problems: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  if (!isObj(meta.labels)) return out;
  for (const [k, v] of Object.entries(meta.labels)) {
    const kp = labelKeyProblem(k);
    const vp = typeof v === 'string' ? labelValueProblem(v) : 'must be a string';
    if (kp) problems.push(`${what}: metadata.labels: invalid key "${k}": ${kp}`);
    else if (vp) problems.push(`${what}: metadata.labels.${k}: ${vp}`);
    else out[k] = v as string;
  }
  return out;
}

/** IPv6 text as a pod or node address has it (no zone). */
const isPodIPv6 = (s: string): boolean => isIPv6(s) && !s.includes('%');

/** A Pod object as the policy model holds it; what is wrong goes to `problems`. */
export function readPod(obj: Obj, problems: string[]): Pod {
  const meta = isObj(obj.metadata) ? obj.metadata : {};
  const namespace = typeof meta.namespace === 'string' ? meta.namespace : 'default';
  const name = typeof meta.name === 'string' ? meta.name : '';
  const what = `Pod ${namespace}/${name}`;
  if (!name) problems.push(`${what}: metadata.name: Required value`);
  const spec = isObj(obj.spec) ? obj.spec : {};
  const status = isObj(obj.status) ? obj.status : {};
  const pod: Pod = { namespace, name, labels: labelsOf(meta, what, problems), containerPorts: [] };
  // host-network pods share the node's IP and are not subject to NetworkPolicy
  if (spec.hostNetwork !== true) {
    // status.podIPs holds one address per family (dual stack: both); status.podIP is its first
    const ips = [status.podIP, ...(Array.isArray(status.podIPs) ? status.podIPs.map((x) => (isObj(x) ? x.ip : undefined)) : [])];
    const v4 = ips.find((ip): ip is string => typeof ip === 'string' && isIPv4(ip));
    const v6 = ips.find((ip): ip is string => typeof ip === 'string' && isPodIPv6(ip));
    if (v4) pod.ip = v4;
    if (v6) pod.ip6 = v6;
  }
  const containers = Array.isArray(spec.containers) ? spec.containers : [];
  containers.forEach((c, ci) => {
    if (!isObj(c) || !Array.isArray(c.ports)) return;
    c.ports.forEach((p, pi) => {
      const path = `${what}: spec.containers[${ci}].ports[${pi}]`;
      if (!isObj(p)) return;
      const proto = p.protocol ?? 'TCP';
      if (proto !== 'TCP' && proto !== 'UDP' && proto !== 'SCTP') return void problems.push(`${path}.protocol: must be TCP, UDP or SCTP`);
      if (typeof p.containerPort !== 'number' || !Number.isInteger(p.containerPort) || p.containerPort < 1 || p.containerPort > 65535) {
        return void problems.push(`${path}.containerPort: must be 1-65535`);
      }
      const cp: ContainerPort = { containerPort: p.containerPort, protocol: proto as Protocol };
      if (typeof p.name === 'string') cp.name = p.name;
      pod.containerPorts.push(cp);
    });
  });
  return pod;
}

/** A Namespace object as the policy model holds it (with the name label the API server adds). */
export function readNamespace(obj: Obj, problems: string[]): Namespace {
  const meta = isObj(obj.metadata) ? obj.metadata : {};
  const name = typeof meta.name === 'string' ? meta.name : '';
  if (!name) problems.push('Namespace: metadata.name: Required value');
  return { name, labels: { ...labelsOf(meta, `Namespace ${name}`, problems), [NS_NAME_LABEL]: name } };
}

/** Adds the objects in one YAML text to `model` (later objects with the same ns/name replace earlier ones). */
export function addManifests(model: ClusterModel, text: string, source?: string): void {
  const pre = source ? `${source}: ` : '';
  const problems: string[] = [];
  const nsLabels = new Map(model.namespaces.map((n) => [n.name, n.labels]));
  const pods = new Map(model.pods.map((p) => [`${p.namespace}/${p.name}`, p]));
  const policies = new Map(model.policies.map((p) => [`${p.namespace}/${p.name}`, p]));
  const nodeIps = new Set(model.nodeIps);

  const visit = (obj: unknown): void => {
    if (!isObj(obj)) return;
    const kind = obj.kind;
    if (typeof kind === 'string' && kind.endsWith('List') && Array.isArray(obj.items)) {
      // items of a typed list (PodList...) may omit their kind
      const itemKind = kind === 'List' ? undefined : kind.slice(0, -4);
      for (const it of obj.items) visit(isObj(it) && it.kind === undefined && itemKind ? { ...it, kind: itemKind } : it);
      return;
    }
    const meta = isObj(obj.metadata) ? obj.metadata : {};
    switch (kind) {
      case 'Namespace': {
        const ns = readNamespace(obj, problems);
        nsLabels.set(ns.name, ns.labels);
        return;
      }
      case 'Pod': {
        const pod = readPod(obj, problems);
        pods.set(`${pod.namespace}/${pod.name}`, pod);
        return;
      }
      case 'NetworkPolicy': {
        const p = new Problems();
        const np: NetworkPolicy = validateNetworkPolicy(obj, p);
        for (const line of p.list) problems.push(`NetworkPolicy ${np.namespace}/${np.name || '?'}: ${line}`);
        policies.set(`${np.namespace}/${np.name}`, np);
        return;
      }
      case 'Node': {
        const st = isObj(obj.status) ? obj.status : {};
        for (const a of Array.isArray(st.addresses) ? st.addresses : []) {
          // both families: a dual-stack node lists an InternalIP of each
          if (isObj(a) && typeof a.address === 'string' && (isIPv4(a.address) || isPodIPv6(a.address)) && (a.type === 'InternalIP' || a.type === 'ExternalIP')) nodeIps.add(a.address);
        }
        return;
      }
      default:
        return; // other kinds do not affect NetworkPolicy
    }
  };

  let docs;
  try {
    docs = parseAllDocuments(text);
  } catch (e) {
    throw new ManifestError([`${pre}${(e as Error).message}`]);
  }
  for (const doc of Array.isArray(docs) ? docs : [docs]) {
    if (doc.errors.length) throw new ManifestError(doc.errors.map((e) => `${pre}YAML: ${e.message}`));
    visit(doc.toJS());
  }
  if (problems.length) throw new ManifestError(problems.map((l) => `${pre}${l}`));

  // namespaces referenced but not declared exist implicitly, with the name label
  for (const n of [...pods.values(), ...policies.values()]) {
    if (!nsLabels.has(n.namespace)) nsLabels.set(n.namespace, { [NS_NAME_LABEL]: n.namespace });
  }
  model.namespaces = [...nsLabels].map(([name, labels]) => ({ name, labels }));
  model.pods = [...pods.values()];
  model.policies = [...policies.values()];
  model.nodeIps = [...nodeIps];
}

export function modelFromYaml(text: string, source?: string): ClusterModel {
  const m: ClusterModel = { namespaces: [], pods: [], policies: [], nodeIps: [] };
  addManifests(m, text, source);
  return m;
}

export function loadModelFiles(files: string[]): ClusterModel {
  const m: ClusterModel = { namespaces: [], pods: [], policies: [], nodeIps: [] };
  for (const f of files) addManifests(m, readFileSync(f, 'utf8'), f);
  return m;
}
