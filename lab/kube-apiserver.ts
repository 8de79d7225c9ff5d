// The lab's stand-in Kubernetes API server: the part of kube-apiserver that the
// lab's Kubernetes mode needs (none can run on this machine), speaking its wire
// format to every client, twill's agents and kubectl alike. It serves:
//   - v1 Nodes, Namespaces and Pods (with their /status subresources) and
//     networking.k8s.io/v1 NetworkPolicies, kept in memory;
//   - discovery: /version, /api, /apis, /api/v1, /apis/networking.k8s.io[/v1],
//     and the aggregated form (apidiscovery.k8s.io v2 and v2beta1) newer clients
//     ask for; /openapi/v2 as an empty document (no schemas: kubectl then neither
//     validates on the client nor needs --validate=false, and builds its patches
//     from its own compiled-in types); /openapi/v3 is 404, as on servers without it;
//   - lists (cluster-wide and per namespace) as typed lists or, when the client
//     asks for it, as meta.k8s.io Tables with the columns kube-apiserver prints;
//     label selectors (=, ==, !=, in, notin, exists, !exists, gt, lt), field
//     selectors (metadata.name, metadata.namespace, and per kind the fields the
//     API server indexes: spec.nodeName, status.phase, status.podIP, ... for Pods),
//     limit and continue;
//   - watches of {"type","object"} events, filtered by namespace and selectors
//     (an object that stops matching is DELETED from the watch, one that starts
//     matching is ADDED, as the API server's watch cache does), resumable from any
//     version still in the history, an ERROR event with a 410 Status once it has
//     expired; without a version (or "0") they start with the current objects;
//     BOOKMARKs only when the client asks (allowWatchBookmarks), periodically, and
//     the initial-events-end bookmark of sendInitialEvents; timeoutSeconds;
//   - GET, POST, PUT, DELETE (and deletecollection) of objects, PATCH as JSON
//     patch, JSON merge patch or strategic merge patch (lab/kube-patch.ts);
//     optimistic concurrency on resourceVersion; dryRun=All; generateName;
//     status kept apart from the main resource as the API server's strategies do
//     (a Pod's status is reset on create and written through pods/status);
//     NetworkPolicy defaulting (policyTypes, port protocol) and validation (422
//     Invalid, by policy/validate.ts); unknown NetworkPolicy fields dropped with a
//     Warning header, or refused with fieldValidation=Strict;
//   - errors as Status objects with the API server's reasons and codes;
//   - bearer-token authentication.
// It listens on unix sockets (as `kubectl proxy --unix-socket` does, so agents in
// node namespaces reach it without an IP route), on plain TCP, and with HTTPS (what
// kubectl needs: it sends a token over TLS only), with a certificate it makes itself.
//
// What it does not do: other kinds and groups (Services, Deployments, ... are 404,
// so `kubectl apply` of them fails with "no matches for kind"); server-side apply
// (application/apply-patch+yaml is a 415: kubectl apply --server-side fails);
// managedFields; OpenAPI schemas (kubectl explain has nothing; strict field
// validation covers NetworkPolicies and every kind's metadata only); protobuf and
// YAML responses (JSON only; YAML request bodies are read); graceful deletion (a
// deleted Pod is gone at once: nothing stops the lab's pod, which has no kubelet)
// and namespace finalization (a deleted Namespace and its objects are gone at once);
// admission beyond the namespace's existence; authorization (one token may do
// everything); reads at an old resourceVersion (lists are always current; a
// continue token is 410 once anything changed); persistence (the objects live in
// this process's memory and go with it).
//
// Run as a lab process: node dist/lab/kube-apiserver.js --socket PATH --listen
// 127.0.0.1:0 --token-file FILE --kubeconfig FILE (writes the kubeconfig, then
// prints "listening on <url>").
import http from 'node:http';
import https from 'node:https';
import { generateKeyPairSync, randomUUID, randomBytes, sign } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { Problems, isObj, labelKeyProblem, labelValueProblem, validateNetworkPolicy, type Obj } from '../policy/validate.js';
import { PatchError, STRATEGIES, deepEqual, jsonPatch, mergePatch, strategicMergePatch } from './kube-patch.js';

export { mergePatch } from './kube-patch.js';

/** The Kubernetes version whose API behaviour this server follows. */
export const SERVER_VERSION = { major: '1', minor: '30', gitVersion: 'v1.30.0+twill-lab' };

interface ResourceType {
  resource: string; singular: string; kind: string; group: string; version: string; namespaced: boolean;
  shortNames: string[]; categories?: string[]; status: boolean;
}
const RESOURCES: Record<string, ResourceType> = {
  nodes: { resource: 'nodes', singular: 'node', kind: 'Node', group: '', version: 'v1', namespaced: false, shortNames: ['no'], status: true },
  namespaces: { resource: 'namespaces', singular: 'namespace', kind: 'Namespace', group: '', version: 'v1', namespaced: false, shortNames: ['ns'], status: true },
  pods: { resource: 'pods', singular: 'pod', kind: 'Pod', group: '', version: 'v1', namespaced: true, shortNames: ['po'], categories: ['all'], status: true },
  networkpolicies: { resource: 'networkpolicies', singular: 'networkpolicy', kind: 'NetworkPolicy', group: 'networking.k8s.io', version: 'v1', namespaced: true, shortNames: ['netpol'], status: false },
};
const GROUPS = ['networking.k8s.io'];
const apiVersionOf = (r: ResourceType) => (r.group ? `${r.group}/${r.version}` : r.version);
const qualified = (r: ResourceType) => (r.group ? `${r.resource}.${r.group}` : r.resource);
const VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];
const SYSTEM_NAMESPACES = ['default', 'kube-system', 'kube-public', 'kube-node-lease'];
const HISTORY_MAX = 10_000; // events kept for resuming watches; older versions get 410 Gone

interface Event { rv: number; resource: string; type: 'ADDED' | 'MODIFIED' | 'DELETED'; object: Obj; old?: Obj }

/** A Node as the kubelet registers it, with the annotations flanneld writes (pkg/subnet/kube) when `vtepMAC` is given. */
export function nodeObject(name: string, podCIDR: string, ip: string, vtepMAC?: string): Obj {
  const annotations: Record<string, string> = vtepMAC ? {
    'flannel.alpha.coreos.com/backend-type': 'vxlan',
    'flannel.alpha.coreos.com/backend-data': JSON.stringify({ VNI: 1, VtepMAC: vtepMAC }),
    'flannel.alpha.coreos.com/public-ip': ip,
    'flannel.alpha.coreos.com/kube-subnet-manager': 'true',
  } : {};
  return {
    metadata: { name, annotations },
    spec: { podCIDR, podCIDRs: [podCIDR] },
    status: { addresses: [{ type: 'Hostname', address: name }, { type: 'InternalIP', address: ip }] },
  };
}

/** An answer the API server gives as a Status object. */
export class ApiError extends Error {
  constructor(readonly code: number, readonly reason: string, message: string, readonly details?: Obj) {
    super(message);
    this.name = 'ApiError';
  }
}
const notFound = (r: ResourceType, name: string) => new ApiError(404, 'NotFound', `${qualified(r)} "${name}" not found`, { name, group: r.group, kind: r.resource });
const badRequest = (msg: string) => new ApiError(400, 'BadRequest', msg);
function invalid(r: ResourceType, name: string, problems: string[]): ApiError {
  const causes = problems.map((p) => { const i = p.indexOf(': '); return { reason: 'FieldValueInvalid', field: i > 0 ? p.slice(0, i) : '', message: i > 0 ? p.slice(i + 2) : p }; });
  const list = problems.length === 1 ? problems[0] : `[${problems.join(', ')}]`;
  return new ApiError(422, 'Invalid', `${r.kind}${r.group ? `.${r.group}` : ''} "${name}" is invalid: ${list}`, { name, group: r.group, kind: r.kind, causes });
}

// ---- selectors ----

type LabelReq = { key: string; op: 'exists' | '!exists' | '=' | '!=' | 'in' | 'notin' | 'gt' | 'lt'; values: string[] };

/** Parses a label selector as labels.Parse does; throws a 400 on a malformed one. */
export function parseLabelSelector(s: string): LabelReq[] {
  const reqs: LabelReq[] = [];
  let i = 0;
  const ws = () => { while (s[i] === ' ') i++; };
  const word = () => { ws(); const m = /^[A-Za-z0-9_./-]*/.exec(s.slice(i))![0]; i += m.length; return m; };
  const fail = (why: string) => badRequest(`unable to parse requirement: ${why} (in label selector "${s}")`);
  while (i < s.length) {
    ws();
    if (i >= s.length) break;
    let neg = false;
    if (s[i] === '!') { neg = true; i++; }
    const key = word();
    if (!key) throw fail('found no key');
    const kp = labelKeyProblem(key);
    if (kp) throw fail(`invalid label key "${key}": ${kp}`);
    ws();
    if (neg) {
      reqs.push({ key, op: '!exists', values: [] });
    } else if (i >= s.length || s[i] === ',') {
      reqs.push({ key, op: 'exists', values: [] });
    } else if (s.startsWith('!=', i) || s.startsWith('==', i) || s[i] === '=' || s[i] === '>' || s[i] === '<') {
      const op = s.startsWith('!=', i) ? '!=' : s[i] === '>' ? 'gt' : s[i] === '<' ? 'lt' : '=';
      i += s.startsWith('!=', i) || s.startsWith('==', i) ? 2 : 1;
      const v = word();
      if ((op === 'gt' || op === 'lt') && !/^-?[0-9]+$/.test(v)) throw fail(`for 'Gt', 'Lt' operators, the value must be an integer`);
      if (op !== 'gt' && op !== 'lt' && labelValueProblem(v)) throw fail(`invalid label value "${v}": ${labelValueProblem(v)}`);
      reqs.push({ key, op, values: [v] });
    } else {
      const w = word();
      if (w !== 'in' && w !== 'notin') throw fail(`found '${w || s[i]}', expected: in, notin, =, ==, !=, gt, lt`);
      ws();
      if (s[i] !== '(') throw fail(`found '${s[i] ?? ''}', expected: '('`);
      const close = s.indexOf(')', i);
      if (close < 0) throw fail(`found '', expected: ')'`);
      const values = s.slice(i + 1, close).split(',').map((v) => v.trim());
      for (const v of values) if (labelValueProblem(v)) throw fail(`invalid label value "${v}": ${labelValueProblem(v)}`);
      i = close + 1;
      reqs.push({ key, op: w, values });
    }
    ws();
    if (i < s.length) {
      if (s[i] !== ',') throw fail(`found '${s[i]}', expected: ','`);
      i++;
    }
  }
  return reqs;
}

export function labelsMatch(reqs: LabelReq[], labels: Record<string, unknown>): boolean {
  return reqs.every((r) => {
    const has = Object.prototype.hasOwnProperty.call(labels, r.key);
    const v = has ? String(labels[r.key]) : undefined;
    switch (r.op) {
      case 'exists': return has;
      case '!exists': return !has;
      case '=': return has && v === r.values[0];
      case '!=': return !has || v !== r.values[0];
      case 'in': return has && r.values.includes(v!);
      case 'notin': return !has || !r.values.includes(v!);
      case 'gt': return has && /^-?[0-9]+$/.test(v!) && Number(v) > Number(r.values[0]);
      case 'lt': return has && /^-?[0-9]+$/.test(v!) && Number(v) < Number(r.values[0]);
    }
  });
}

type FieldReq = { field: string; neg: boolean; value: string };

/** The fields a kind can be selected by (the API server's field label conversions), with their values. */
function fieldsOf(r: ResourceType, o: Obj): Record<string, string> {
  const meta = isObj(o.metadata) ? o.metadata : {};
  const spec = isObj(o.spec) ? o.spec : {};
  const status = isObj(o.status) ? o.status : {};
  const str = (v: unknown) => (v === undefined || v === null ? '' : String(v));
  const f: Record<string, string> = { 'metadata.name': str(meta.name) };
  if (r.namespaced) f['metadata.namespace'] = str(meta.namespace);
  if (r.resource === 'pods') {
    Object.assign(f, {
      'spec.nodeName': str(spec.nodeName), 'spec.restartPolicy': str(spec.restartPolicy), 'spec.schedulerName': str(spec.schedulerName),
      'spec.serviceAccountName': str(spec.serviceAccountName), 'spec.hostNetwork': String(spec.hostNetwork === true),
      'status.phase': str(status.phase), 'status.podIP': str(status.podIP), 'status.nominatedNodeName': str(status.nominatedNodeName),
    });
  }
  if (r.resource === 'nodes') f['spec.unschedulable'] = String(spec.unschedulable === true);
  if (r.resource === 'namespaces') f['status.phase'] = str(status.phase);
  return f;
}

/** Parses a field selector (a=b, a==b, a!=b, comma-separated, with \, \= \\ escapes); unknown fields are a 400. */
export function parseFieldSelector(s: string, r: ResourceType): FieldReq[] {
  const known = Object.keys(fieldsOf(r, {}));
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\' && i + 1 < s.length) { cur += s[i] + s[++i]; continue; }
    if (s[i] === ',') { parts.push(cur); cur = ''; continue; }
    cur += s[i];
  }
  if (cur || parts.length) parts.push(cur);
  return parts.filter((p) => p.trim()).map((p) => {
    const m = /^([^=!]+?)\s*(!=|==|=)\s*(.*)$/.exec(p.trim());
    if (!m) throw badRequest(`invalid selector: '${p}'; can't understand '${p}'`);
    const field = m[1].trim();
    if (!known.includes(field)) throw badRequest(`field label not supported: ${field}`);
    return { field, neg: m[2] === '!=', value: m[3].replace(/\\(.)/g, '$1') };
  });
}

// ---- tables (what `kubectl get` prints, computed by the server) ----

/** k8s.io/apimachinery duration.HumanDuration. */
export function humanDuration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < -1) return '<invalid>';
  if (s < 0) return '0s';
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return s % 60 === 0 ? `${m}m` : `${m}m${s % 60}s`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 8) return m % 60 === 0 ? `${h}h` : `${h}h${m % 60}m`;
  if (h < 48) return `${h}h`;
  if (h < 24 * 8) return h % 24 === 0 ? `${Math.floor(h / 24)}d` : `${Math.floor(h / 24)}d${h % 24}h`;
  if (h < 24 * 365 * 2) return `${Math.floor(h / 24)}d`;
  if (h < 24 * 365 * 8) { const dy = Math.floor(h / 24) % 365; return dy === 0 ? `${Math.floor(h / 24 / 365)}y` : `${Math.floor(h / 24 / 365)}y${dy}d`; }
  return `${Math.floor(h / 24 / 365)}y`;
}

/** metav1.FormatLabelSelector: the selector as labels.Selector.String() prints it, "<none>" when empty. */
export function formatLabelSelector(sel: unknown): string {
  if (!isObj(sel)) return '<none>';
  const reqs: { key: string; text: string }[] = [];
  for (const [k, v] of Object.entries(isObj(sel.matchLabels) ? sel.matchLabels : {})) reqs.push({ key: k, text: `${k}=${String(v)}` });
  for (const e of Array.isArray(sel.matchExpressions) ? sel.matchExpressions : []) {
    if (!isObj(e)) continue;
    const key = String(e.key), values = (Array.isArray(e.values) ? e.values.map(String) : []).sort();
    const text = e.operator === 'In' ? `${key} in (${values.join(',')})` : e.operator === 'NotIn' ? `${key} notin (${values.join(',')})`
      : e.operator === 'Exists' ? key : e.operator === 'DoesNotExist' ? `!${key}` : '<error>';
    reqs.push({ key, text });
  }
  reqs.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return reqs.map((r) => r.text).join(',') || '<none>';
}

interface Column { name: string; type: string; format: string; description: string; priority: number }
const col = (name: string, description: string, priority = 0, format = ''): Column => ({ name, type: 'string', format, description, priority });
const NAME_COL = col('Name', 'Name must be unique within a namespace.', 0, 'name');
const AGE_COL = col('Age', 'CreationTimestamp is a timestamp representing the server time when this object was created.');
const COLUMNS: Record<string, Column[]> = {
  pods: [NAME_COL, col('Ready', 'The aggregate readiness state of this pod for accepting traffic.'), col('Status', 'The aggregate status of the containers in this pod.'),
    col('Restarts', 'The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.'), AGE_COL,
    col('IP', 'podIP address allocated to the pod.', 1), col('Node', 'NodeName indicates in which node this pod is scheduled.', 1),
    col('Nominated Node', 'nominatedNodeName is set only when this pod preempts other pods on the node.', 1), col('Readiness Gates', 'If specified, all readiness gates will be evaluated for pod readiness.', 1)],
  nodes: [NAME_COL, col('Status', 'The status of the node'), col('Roles', 'The roles of the node'), AGE_COL, col('Version', 'Kubelet Version reported by the node.'),
    col('Internal-IP', 'List of addresses reachable to the node.', 1), col('External-IP', 'List of addresses reachable to the node.', 1),
    col('OS-Image', 'OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).', 1),
    col('Kernel-Version', "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).", 1),
    col('Container-Runtime', 'Container runtime version reported by the node through runtime remote API (e.g. containerd://1.4.2).', 1)],
  namespaces: [NAME_COL, col('Status', 'The status of the namespace'), AGE_COL],
  networkpolicies: [NAME_COL, col('Pod-Selector', "Select the pods to which this NetworkPolicy object applies. The array of ingress rules is applied to any pods selected by this field."), AGE_COL],
};

function cells(r: ResourceType, o: Obj, now: number): unknown[] {
  const meta = isObj(o.metadata) ? o.metadata : {}, spec = isObj(o.spec) ? o.spec : {}, status = isObj(o.status) ? o.status : {};
  const created = typeof meta.creationTimestamp === 'string' ? Date.parse(meta.creationTimestamp) : NaN;
  const age = Number.isNaN(created) ? '<unknown>' : humanDuration(now - created);
  const name = String(meta.name ?? '');
  const list = (v: unknown): Obj[] => (Array.isArray(v) ? v.filter(isObj) : []);
  switch (r.resource) {
    case 'pods': {
      const cs = list(status.containerStatuses);
      const ready = cs.filter((c) => c.ready === true).length;
      const restarts = cs.reduce((n, c) => n + (Number(c.restartCount) || 0), 0);
      let reason = String(status.reason ?? status.phase ?? '');
      for (const c of cs) {
        const st = isObj(c.state) ? c.state : {};
        const w = isObj(st.waiting) ? st.waiting : undefined, t = isObj(st.terminated) ? st.terminated : undefined;
        if (w?.reason) reason = String(w.reason);
        else if (t) reason = String(t.reason ?? (t.signal ? `Signal:${String(t.signal)}` : `ExitCode:${String(t.exitCode)}`));
      }
      if (meta.deletionTimestamp) reason = status.reason === 'NodeLost' ? 'Unknown' : 'Terminating';
      const gates = list(spec.readinessGates);
      const conds = list(status.conditions);
      const gatesText = gates.length ? `${gates.filter((g) => conds.some((c) => c.type === g.conditionType && c.status === 'True')).length}/${gates.length}` : '<none>';
      return [name, `${ready}/${list(spec.containers).length}`, reason, String(restarts), age, status.podIP || '<none>', spec.nodeName || '<none>', status.nominatedNodeName || '<none>', gatesText];
    }
    case 'nodes': {
      const ready = list(status.conditions).find((c) => c.type === 'Ready');
      let st = ready ? (ready.status === 'True' ? 'Ready' : 'NotReady') : 'Unknown';
      if (spec.unschedulable === true) st += ',SchedulingDisabled';
      const labels = isObj(meta.labels) ? meta.labels : {};
      const roles = Object.keys(labels).flatMap((k) => (k.startsWith('node-role.kubernetes.io/') ? [k.slice('node-role.kubernetes.io/'.length)] : k === 'kubernetes.io/role' ? [String(labels[k])] : [])).filter(Boolean).sort();
      const info = isObj(status.nodeInfo) ? status.nodeInfo : {};
      const addr = (t: string) => String(list(status.addresses).find((a) => a.type === t)?.address ?? '<none>');
      return [name, st, roles.join(',') || '<none>', age, String(info.kubeletVersion ?? ''), addr('InternalIP'), addr('ExternalIP'),
        String(info.osImage || '<unknown>'), String(info.kernelVersion || '<unknown>'), String(info.containerRuntimeVersion || '<unknown>')];
    }
    case 'namespaces': return [name, String(status.phase ?? ''), age];
    default: return [name, formatLabelSelector(spec.podSelector), age];
  }
}

interface TableWant { version: string; include: 'None' | 'Metadata' | 'Object' }

function tableRow(r: ResourceType, o: Obj, want: TableWant, now: number): Obj {
  const meta = isObj(o.metadata) ? o.metadata : {};
  const object = want.include === 'None' ? undefined : want.include === 'Object' ? o
    : { kind: 'PartialObjectMetadata', apiVersion: `meta.k8s.io/${want.version}`, metadata: meta };
  return { cells: cells(r, o, now), ...(object ? { object } : {}) };
}

// ---- OpenAPI v2, as protobuf (the only form kubectl asks for) ----

function pbString(field: number, s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  return Buffer.concat([Buffer.from([(field << 3) | 2]), varint(b.length), b]);
}
function pbMessage(field: number, body: Buffer): Buffer { return Buffer.concat([Buffer.from([(field << 3) | 2]), varint(body.length), body]); }
function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 127) { out.push((n & 127) | 128); n >>>= 7; }
  out.push(n);
  return Buffer.from(out);
}
/** gnostic's openapi_v2.Document {swagger: "2.0", info: {title, version}, paths: {}}: a valid document without any schema. */
const OPENAPI_V2 = Buffer.concat([pbString(1, '2.0'), pbMessage(2, Buffer.concat([pbString(1, 'Kubernetes (twill lab stand-in)'), pbString(2, SERVER_VERSION.gitVersion)])), pbMessage(8, Buffer.alloc(0))]);

// ---- what a NetworkPolicy may hold (unknown fields are dropped, or refused with fieldValidation=Strict) ----

type Shape = { [field: string]: Shape | 'leaf' | 'map' | [Shape | 'leaf'] };
const SELECTOR: Shape = { matchLabels: 'map', matchExpressions: [{ key: 'leaf', operator: 'leaf', values: ['leaf'] }] };
const OBJECT_META: Shape = {
  name: 'leaf', generateName: 'leaf', namespace: 'leaf', selfLink: 'leaf', uid: 'leaf', resourceVersion: 'leaf', generation: 'leaf',
  creationTimestamp: 'leaf', deletionTimestamp: 'leaf', deletionGracePeriodSeconds: 'leaf', labels: 'map', annotations: 'map',
  ownerReferences: [{ apiVersion: 'leaf', kind: 'leaf', name: 'leaf', uid: 'leaf', controller: 'leaf', blockOwnerDeletion: 'leaf' }],
  finalizers: ['leaf'], managedFields: ['leaf'],
};
const PEER: Shape = { podSelector: SELECTOR, namespaceSelector: SELECTOR, ipBlock: { cidr: 'leaf', except: ['leaf'] } };
const PORT: Shape = { protocol: 'leaf', port: 'leaf', endPort: 'leaf' };
const SHAPES: Record<string, Shape> = {
  networkpolicies: {
    apiVersion: 'leaf', kind: 'leaf', metadata: OBJECT_META,
    spec: { podSelector: SELECTOR, ingress: [{ from: [PEER], ports: [PORT] }], egress: [{ to: [PEER], ports: [PORT] }], policyTypes: ['leaf'] },
  },
  // For the core kinds only the envelope and the metadata are known here; spec and status pass as they are.
  pods: { apiVersion: 'leaf', kind: 'leaf', metadata: OBJECT_META, spec: 'map', status: 'map' },
  nodes: { apiVersion: 'leaf', kind: 'leaf', metadata: OBJECT_META, spec: 'map', status: 'map' },
  namespaces: { apiVersion: 'leaf', kind: 'leaf', metadata: OBJECT_META, spec: 'map', status: 'map' },
};

/** Removes fields the shape does not know; returns their paths. */
function pruneUnknown(v: unknown, shape: Shape | 'leaf' | 'map' | [Shape | 'leaf'], at: string, found: string[]): void {
  if (shape === 'leaf' || shape === 'map') return;
  if (Array.isArray(shape)) {
    if (Array.isArray(v)) v.forEach((x, i) => pruneUnknown(x, shape[0], `${at}[${i}]`, found));
    return;
  }
  if (!isObj(v)) return;
  for (const k of Object.keys(v)) {
    const p = at ? `${at}.${k}` : k;
    if (!(k in shape)) { found.push(p); delete v[k]; } else pruneUnknown(v[k], shape[k], p, found);
  }
}

// ---- the server ----

interface Watcher {
  r: ResourceType; ns?: string; labels: LabelReq[]; fields: FieldReq[]; table?: TableWant; tableHeaderSent: boolean;
  res: http.ServerResponse; timers: NodeJS.Timeout[];
}

export interface KubeApiServerOptions {
  token?: string; // bearer token every request must carry
  systemNamespaces?: boolean; // start with default, kube-system, kube-public and kube-node-lease, as kube-apiserver does
  bookmarkIntervalMs?: number; // between BOOKMARKs on watches that allow them (kube-apiserver: about a minute)
  recordRequests?: boolean; // keep "METHOD path" of each request in `requests` (tests); default true
  log?: (line: string) => void; // one line per request
}

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const now = () => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
const metaOf = (o: Obj): Obj => (isObj(o.metadata) ? o.metadata : {});

export class KubeApiServer {
  private rv = 100;
  private oldest = 0; // watches from a version before this get 410 Gone
  private readonly store = new Map<string, Map<string, Obj>>(Object.keys(RESOURCES).map((r) => [r, new Map()]));
  private history: Event[] = [];
  private readonly watchers = new Set<Watcher>();
  private readonly servers: http.Server[] = [];
  readonly requests: string[] = []; // "METHOD path" of each request, for tests
  private readonly token?: string;

  constructor(private readonly opts: KubeApiServerOptions = {}) {
    this.token = opts.token;
    if (opts.systemNamespaces) for (const ns of SYSTEM_NAMESPACES) this.put('namespaces', { metadata: { name: ns }, spec: { finalizers: ['kubernetes'] }, status: { phase: 'Active' } });
  }

  private serve(server: http.Server): http.Server {
    server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => this.handle(req, res));
    this.servers.push(server);
    return server;
  }

  /** Plain HTTP on a unix socket, as `kubectl proxy --unix-socket` serves. */
  listen(socketPath: string): Promise<void> {
    rmSync(socketPath, { force: true });
    const s = this.serve(http.createServer());
    return new Promise((resolve, reject) => { s.once('error', reject); s.listen(socketPath, resolve); });
  }

  /** Plain HTTP on TCP (for kubectl, which cannot use a unix socket); resolves with the port. */
  listenTcp(port = 0, host = '127.0.0.1'): Promise<number> {
    const s = this.serve(http.createServer());
    return new Promise((resolve, reject) => { s.once('error', reject); s.listen(port, host, () => resolve((s.address() as { port: number }).port)); });
  }

  /** HTTPS on loopback, as an API server serves in a cluster; resolves with the port. */
  listenTls(key: Buffer, cert: Buffer, port = 0, host = '127.0.0.1'): Promise<number> {
    const s = this.serve(https.createServer({ key, cert }));
    return new Promise((resolve, reject) => { s.once('error', reject); s.listen(port, host, () => resolve((s.address() as { port: number }).port)); });
  }

  async close(): Promise<void> {
    this.closeWatches();
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => { s.close(() => r()); s.closeAllConnections(); })));
    this.servers.length = 0;
  }

  /** Ends every open watch, as an API server does when a watch's timeout runs out. */
  closeWatches(): void {
    for (const w of [...this.watchers]) this.endWatch(w);
  }

  private endWatch(w: Watcher): void {
    for (const t of w.timers) clearTimeout(t);
    this.watchers.delete(w);
    w.res.end();
  }

  /** Forgets the event history: a watch from any version seen so far gets 410 Gone (etcd compaction). */
  expireHistory(): void {
    this.oldest = this.rv + 1;
    this.history = [];
  }

  // ---- objects, as a controller or the kubelet would write them (storage: no validation, no defaulting) ----

  put(resource: string, obj: Obj): Obj {
    const r = RESOURCES[resource];
    const meta = metaOf(obj);
    const ns = r.namespaced ? String(meta.namespace ?? 'default') : undefined;
    const key = ns ? `${ns}/${String(meta.name)}` : String(meta.name);
    const had = this.store.get(resource)!.get(key);
    const hadMeta = had ? metaOf(had) : undefined;
    const stored: Obj = {
      ...obj, kind: r.kind, apiVersion: apiVersionOf(r),
      metadata: {
        ...meta, ...(ns ? { namespace: ns } : {}),
        uid: hadMeta?.uid ?? meta.uid ?? randomUUID(), creationTimestamp: hadMeta?.creationTimestamp ?? meta.creationTimestamp ?? now(),
        resourceVersion: String(++this.rv),
      },
    };
    if (resource === 'namespaces') (stored.metadata as Obj).labels = { ...(meta.labels as Obj | undefined), 'kubernetes.io/metadata.name': meta.name };
    this.store.get(resource)!.set(key, stored);
    this.emit({ rv: this.rv, resource, type: had ? 'MODIFIED' : 'ADDED', object: stored, old: had });
    return stored;
  }

  remove(resource: string, key: string): boolean {
    const had = this.store.get(resource)!.get(key);
    if (!had) return false;
    this.store.get(resource)!.delete(key);
    const object = { ...had, metadata: { ...metaOf(had), resourceVersion: String(++this.rv) } };
    this.emit({ rv: this.rv, resource, type: 'DELETED', object, old: had });
    if (resource === 'namespaces') { // the namespace controller deletes what was in it
      const ns = String(metaOf(had).name);
      for (const [res, r] of Object.entries(RESOURCES)) {
        if (!r.namespaced) continue;
        for (const k of [...this.store.get(res)!.keys()]) if (k.startsWith(`${ns}/`)) this.remove(res, k);
      }
    }
    return true;
  }

  get(resource: string, key: string): Obj | undefined { return this.store.get(resource)!.get(key); }

  private emit(e: Event): void {
    this.history.push(e);
    if (this.history.length > HISTORY_MAX) {
      const drop = this.history.splice(0, this.history.length - HISTORY_MAX);
      this.oldest = drop[drop.length - 1].rv + 1;
    }
    for (const w of this.watchers) if (w.r.resource === e.resource) this.deliver(w, e);
  }

  private matches(w: Pick<Watcher, 'r' | 'ns' | 'labels' | 'fields'>, o: Obj): boolean {
    const meta = metaOf(o);
    if (w.ns !== undefined && meta.namespace !== w.ns) return false;
    if (!labelsMatch(w.labels, isObj(meta.labels) ? meta.labels : {})) return false;
    if (w.fields.length) {
      const f = fieldsOf(w.r, o);
      if (!w.fields.every((q) => (f[q.field] === q.value) !== q.neg)) return false;
    }
    return true;
  }

  /** Sends an event to a watch as its filter sees it: a change across the filter's edge is an ADDED or a DELETED. */
  private deliver(w: Watcher, e: Event): void {
    const now = this.matches(w, e.object), before = e.old !== undefined && this.matches(w, e.old);
    let type: string = e.type;
    if (e.type === 'ADDED' && !now) return;
    if (e.type === 'MODIFIED') {
      if (!now && !before) return;
      type = now && before ? 'MODIFIED' : now ? 'ADDED' : 'DELETED';
    }
    if (e.type === 'DELETED' && !before && !now) return;
    this.send(w, type, e.object);
  }

  private send(w: Watcher, type: string, object: Obj): void {
    let out = object;
    if (w.table && type !== 'BOOKMARK' && type !== 'ERROR') {
      out = { kind: 'Table', apiVersion: `meta.k8s.io/${w.table.version}`, metadata: { resourceVersion: String(metaOf(object).resourceVersion ?? '') },
        columnDefinitions: w.tableHeaderSent ? [] : COLUMNS[w.r.resource], rows: [tableRow(w.r, object, w.table, Date.now())] };
      w.tableHeaderSent = true;
    }
    w.res.write(JSON.stringify({ type, object: out }) + '\n');
  }

  private sorted(resource: string): Obj[] {
    return [...this.store.get(resource)!.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, o]) => o);
  }

  // ---- HTTP ----

  private reply(res: http.ServerResponse, code: number, body: unknown, contentType = 'application/json', headers: Record<string, string> = {}): void {
    const text = Buffer.isBuffer(body) ? body : JSON.stringify(body);
    res.writeHead(code, { 'Content-Type': contentType, ...headers });
    res.end(text);
  }

  private fail(res: http.ServerResponse, e: ApiError): void {
    this.reply(res, e.code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: e.message, reason: e.reason, ...(e.details ? { details: e.details } : {}), code: e.code });
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://stand-in');
    if (this.opts.recordRequests !== false) this.requests.push(`${req.method} ${url.pathname}`);
    if (this.opts.log) res.on('close', () => this.opts.log!(`${req.method} ${url.pathname}${url.search} ${res.statusCode}`)); // a watch's line when it ends
    if (this.token && req.headers.authorization !== `Bearer ${this.token}`) return this.fail(res, new ApiError(401, 'Unauthorized', 'Unauthorized'));
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      try {
        this.route(req, res, url, Buffer.concat(chunks).toString('utf8'));
      } catch (e) {
        if (e instanceof ApiError) return this.fail(res, e);
        if (e instanceof PatchError) return this.fail(res, new ApiError(e.malformed ? 400 : 422, e.malformed ? 'BadRequest' : 'Invalid', e.message));
        this.fail(res, new ApiError(500, 'InternalError', `Internal error occurred: ${(e as Error).message}`));
      }
    });
  }

  private route(req: http.IncomingMessage, res: http.ServerResponse, url: URL, body: string): void {
    const seg = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    const method = req.method ?? 'GET';
    const accept = String(req.headers.accept ?? '');
    const p = seg.join('/');
    if (method === 'GET') {
      if (p === 'version') return this.reply(res, 200, { ...SERVER_VERSION, gitCommit: '', gitTreeState: '', buildDate: '', goVersion: '', compiler: '', platform: `linux/${process.arch === 'x64' ? 'amd64' : process.arch}` });
      if (p === 'healthz' || p === 'livez' || p === 'readyz') return this.reply(res, 200, Buffer.from('ok'), 'text/plain');
      if (p === 'api' || p === 'apis') {
        const agg = aggregatedWanted(accept);
        if (agg) return this.reply(res, 200, this.aggregated(p === 'api', agg), `application/json;g=apidiscovery.k8s.io;v=${agg};as=APIGroupDiscoveryList`);
        return this.reply(res, 200, p === 'api' ? { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: String(req.headers.host ?? '') }] }
          : { kind: 'APIGroupList', apiVersion: 'v1', groups: GROUPS.map(groupInfo) });
      }
      if (p === 'api/v1') return this.reply(res, 200, resourceList(''));
      if (seg[0] === 'apis' && seg.length === 2 && GROUPS.includes(seg[1])) return this.reply(res, 200, { kind: 'APIGroup', apiVersion: 'v1', ...groupInfo(seg[1]) });
      if (seg[0] === 'apis' && seg.length === 3 && GROUPS.includes(seg[1]) && seg[2] === 'v1') return this.reply(res, 200, resourceList(seg[1]));
      if (p === 'openapi/v2') {
        if (/protobuf/.test(accept)) return this.reply(res, 200, OPENAPI_V2, 'application/com.github.proto-openapi.spec.v2.v1.0+protobuf');
        return this.reply(res, 200, { swagger: '2.0', info: { title: 'Kubernetes (twill lab stand-in)', version: SERVER_VERSION.gitVersion }, paths: {} });
      }
    }
    // /api/v1/... or /apis/<group>/v1/...: [namespaces/<ns>/]<resource>[/<name>[/status]]
    let group: string, rest: string[];
    if (seg[0] === 'api' && seg[1] === 'v1') { group = ''; rest = seg.slice(2); }
    else if (seg[0] === 'apis' && GROUPS.includes(seg[1]) && seg[2] === 'v1') { group = seg[1]; rest = seg.slice(3); }
    else throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    let ns: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3) { ns = rest[1]; rest = rest.slice(2); }
    const [resource, name, sub, ...more] = rest;
    const r = RESOURCES[resource];
    if (!r || r.group !== group || more.length || (ns !== undefined && !r.namespaced) || (sub !== undefined && (sub !== 'status' || !r.status))) {
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    }
    const q = url.searchParams;
    const dryRun = q.getAll('dryRun').includes('All');
    if (name === undefined) {
      if (method === 'GET' && isTrue(q.get('watch'))) return this.watch(r, ns, q, accept, res);
      if (method === 'GET') return this.list(r, ns, q, accept, res);
      if (method === 'POST') return this.create(r, ns, body, req, q, dryRun, res);
      if (method === 'DELETE') return this.deleteCollection(r, ns, q, dryRun, res);
      throw new ApiError(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`);
    }
    const key = r.namespaced ? `${ns ?? 'default'}/${name}` : name;
    if (r.namespaced && ns === undefined) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    const current = this.store.get(r.resource)!.get(key);
    switch (method) {
      case 'GET': {
        if (!current) throw notFound(r, name);
        const t = tableWanted(accept, q);
        if (t) return this.reply(res, 200, this.table(r, [current], t, String(metaOf(current).resourceVersion)), `application/json;as=Table;v=${t.version};g=meta.k8s.io`);
        return this.reply(res, 200, current);
      }
      case 'PUT': return this.update(r, ns, name, current, parseBody(body, req), q, dryRun, sub === 'status', res);
      case 'PATCH': {
        if (!current) throw notFound(r, name);
        const ct = String(req.headers['content-type'] ?? '').split(';')[0].trim();
        let patched: unknown;
        const input = () => { try { return JSON.parse(body) as unknown; } catch (e) { throw badRequest(`error decoding patch: ${(e as Error).message}`); } };
        if (ct === 'application/merge-patch+json') patched = mergePatch(current, input());
        else if (ct === 'application/strategic-merge-patch+json') patched = strategicMergePatch(current, input(), STRATEGIES[r.resource]);
        else if (ct === 'application/json-patch+json') patched = jsonPatch(current, input());
        else throw new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json`);
        if (!isObj(patched)) throw new ApiError(422, 'Invalid', 'the patch did not give an object');
        return this.update(r, ns, name, current, patched, q, dryRun, sub === 'status', res);
      }
      case 'DELETE': {
        if (sub) throw new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
        if (!current) throw notFound(r, name);
        const opts = body.trim() ? parseBody(body, req) : {};
        const pre = isObj(opts.preconditions) ? opts.preconditions : {};
        if ((pre.uid && pre.uid !== metaOf(current).uid) || (pre.resourceVersion && pre.resourceVersion !== metaOf(current).resourceVersion)) {
          throw new ApiError(409, 'Conflict', `Operation cannot be fulfilled on ${qualified(r)} "${name}": Precondition failed: UID in precondition: ${String(pre.uid ?? '')}, UID in object meta: ${String(metaOf(current).uid)}`, { name, group: r.group, kind: r.resource });
        }
        if (!dryRun && !(Array.isArray(opts.dryRun) && opts.dryRun.includes('All'))) this.remove(r.resource, key);
        return this.reply(res, 200, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name, group: r.group, kind: r.resource, uid: metaOf(current).uid } });
      }
      default: throw new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
    }
  }

  private aggregated(core: boolean, version: string): Obj {
    const groups = core ? [''] : GROUPS;
    return {
      kind: 'APIGroupDiscoveryList', apiVersion: `apidiscovery.k8s.io/${version}`, metadata: {},
      items: groups.map((g) => ({
        metadata: g ? { name: g } : {},
        versions: [{
          version: 'v1', freshness: 'Current',
          resources: Object.values(RESOURCES).filter((r) => r.group === g).map((r) => ({
            resource: r.resource, responseKind: { group: r.group, version: r.version, kind: r.kind }, scope: r.namespaced ? 'Namespaced' : 'Cluster',
            singularResource: r.singular, verbs: VERBS, shortNames: r.shortNames, ...(r.categories ? { categories: r.categories } : {}),
            ...(r.status ? { subresources: [{ subresource: 'status', responseKind: { group: r.group, version: r.version, kind: r.kind }, verbs: ['get', 'patch', 'update'] }] } : {}),
          })),
        }],
      })),
    };
  }

  private table(r: ResourceType, items: Obj[], t: TableWant, rv: string, cont?: string): Obj {
    const at = Date.now();
    return { kind: 'Table', apiVersion: `meta.k8s.io/${t.version}`, metadata: { resourceVersion: rv, ...(cont ? { continue: cont } : {}) }, columnDefinitions: COLUMNS[r.resource], rows: items.map((o) => tableRow(r, o, t, at)) };
  }

  private selection(r: ResourceType, ns: string | undefined, q: URLSearchParams): Pick<Watcher, 'r' | 'ns' | 'labels' | 'fields'> {
    return { r, ns, labels: parseLabelSelector(q.get('labelSelector') ?? ''), fields: parseFieldSelector(q.get('fieldSelector') ?? '', r) };
  }

  private list(r: ResourceType, ns: string | undefined, q: URLSearchParams, accept: string, res: http.ServerResponse): void {
    const sel = this.selection(r, ns, q);
    let items = this.sorted(r.resource).filter((o) => this.matches(sel, o));
    let rv = String(this.rv), cont: string | undefined;
    const token = q.get('continue');
    if (token) { // a continue token names the list's version and the last key served; a list that changed since is gone, as after compaction
      let c: { rv: string; start: string };
      try { c = JSON.parse(Buffer.from(token, 'base64').toString('utf8')) as { rv: string; start: string }; } catch { throw badRequest('continue key is not valid'); }
      if (c.rv !== rv) throw new ApiError(410, 'Expired', 'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.');
      items = items.filter((o) => objKey(r, o) > c.start);
    } else if (q.get('resourceVersionMatch') === 'Exact' && q.get('resourceVersion') !== rv) {
      throw new ApiError(410, 'Expired', `too old resource version: ${q.get('resourceVersion')} (${rv})`);
    }
    const limit = Number(q.get('limit') ?? 0);
    if (limit > 0 && items.length > limit) {
      items = items.slice(0, limit);
      cont = Buffer.from(JSON.stringify({ rv, start: objKey(r, items[items.length - 1]) })).toString('base64');
    }
    const t = tableWanted(accept, q);
    if (t) return this.reply(res, 200, this.table(r, items, t, rv, cont), `application/json;as=Table;v=${t.version};g=meta.k8s.io`);
    this.reply(res, 200, { kind: `${r.kind}List`, apiVersion: apiVersionOf(r), metadata: { resourceVersion: rv, ...(cont ? { continue: cont } : {}) }, items });
  }

  private watch(r: ResourceType, ns: string | undefined, q: URLSearchParams, accept: string, res: http.ServerResponse): void {
    const sel = this.selection(r, ns, q);
    const t = tableWanted(accept, q);
    const w: Watcher = { ...sel, table: t, tableHeaderSent: false, res, timers: [] };
    const bookmarks = isTrue(q.get('allowWatchBookmarks'));
    const initial = isTrue(q.get('sendInitialEvents'));
    const fromText = q.get('resourceVersion') ?? '';
    if (initial && (!bookmarks || q.get('resourceVersionMatch') !== 'NotOlderThan')) {
      throw new ApiError(422, 'Invalid', 'sendInitialEvents requires allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan');
    }
    if (fromText && !/^[0-9]+$/.test(fromText)) throw badRequest(`invalid resource version: ${fromText}`);
    res.writeHead(200, { 'Content-Type': t ? `application/json;as=Table;v=${t.version};g=meta.k8s.io` : 'application/json', 'Transfer-Encoding': 'chunked', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders();
    const from = Number(fromText || 0);
    const bookmark = (extra: Obj = {}) => this.send(w, 'BOOKMARK', { kind: r.kind, apiVersion: apiVersionOf(r), metadata: { resourceVersion: String(this.rv), ...extra } });
    if (initial || from === 0) { // the current state first, as ADDED events
      for (const o of this.sorted(r.resource)) if (this.matches(sel, o)) this.send(w, 'ADDED', o);
      if (initial) bookmark({ annotations: { 'k8s.io/initial-events-end': 'true' } });
    } else {
      if (from < this.oldest - 1) {
        res.end(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${from} (${this.oldest})`, reason: 'Expired', code: 410 } }) + '\n');
        return;
      }
      for (const e of this.history) if (e.resource === r.resource && e.rv > from) this.deliver(w, e);
    }
    this.watchers.add(w);
    res.on('close', () => this.endWatch(w));
    if (bookmarks) {
      const every = this.opts.bookmarkIntervalMs ?? 60_000;
      const tick = () => { bookmark(); w.timers.push(setTimeout(tick, every).unref()); };
      w.timers.push(setTimeout(tick, every).unref());
    }
    const timeout = Number(q.get('timeoutSeconds') ?? 0);
    if (timeout > 0) w.timers.push(setTimeout(() => this.endWatch(w), timeout * 1000).unref());
  }

  /** Checks and completes an object about to be stored (create or update); throws the API's errors. */
  private admit(r: ResourceType, o: Obj, q: URLSearchParams, warnings: string[]): void {
    const unknown: string[] = [];
    pruneUnknown(o, SHAPES[r.resource], '', unknown);
    if (unknown.length) {
      const mode = q.get('fieldValidation') ?? 'Warn';
      if (mode === 'Strict') throw badRequest(`${r.kind} in version "${r.version}" cannot be handled as a ${r.kind}: strict decoding error: ${unknown.map((u) => `unknown field "${u}"`).join(', ')}`);
      if (mode !== 'Ignore') warnings.push(...unknown.map((u) => `unknown field "${u}"`));
    }
    const meta = metaOf(o);
    const name = String(meta.name ?? '');
    const problems: string[] = [];
    if (!name) problems.push('metadata.name: Required value: name or generateName is required');
    else if (r.resource === 'namespaces' ? !DNS1123_LABEL.test(name) || name.length > 63 : !DNS1123_SUBDOMAIN.test(name) || name.length > 253) {
      problems.push(`metadata.name: Invalid value: "${name}": a lowercase RFC 1123 ${r.resource === 'namespaces' ? 'label' : 'subdomain'} must consist of lower case alphanumeric characters, '-' or '.'`);
    }
    for (const [k, v] of Object.entries(isObj(meta.labels) ? meta.labels : {})) {
      const kp = labelKeyProblem(k), vp = typeof v === 'string' ? labelValueProblem(v) : 'must be a string';
      if (kp) problems.push(`metadata.labels: Invalid value: "${k}": ${kp}`);
      if (vp) problems.push(`metadata.labels: Invalid value: "${String(v)}": ${vp}`);
    }
    if (meta.annotations !== undefined && (!isObj(meta.annotations) || Object.values(meta.annotations).some((v) => typeof v !== 'string'))) problems.push('metadata.annotations: Invalid value: must be a map of strings');
    if (r.resource === 'networkpolicies') {
      // defaulting, as SetDefaults_NetworkPolicy does
      const spec = isObj(o.spec) ? o.spec : undefined;
      if (spec) {
        if (!Array.isArray(spec.policyTypes) || !spec.policyTypes.length) spec.policyTypes = ['Ingress', ...(Array.isArray(spec.egress) && spec.egress.length ? ['Egress'] : [])];
        for (const rule of [...(Array.isArray(spec.ingress) ? spec.ingress : []), ...(Array.isArray(spec.egress) ? spec.egress : [])]) {
          for (const port of isObj(rule) && Array.isArray(rule.ports) ? rule.ports : []) if (isObj(port) && port.protocol === undefined) port.protocol = 'TCP';
        }
        if (spec.podSelector === undefined || spec.podSelector === null) spec.podSelector = {};
      }
      const p = new Problems();
      validateNetworkPolicy(o, p);
      problems.push(...p.list.filter((x) => !x.startsWith('metadata.name')));
    }
    if (r.resource === 'pods') {
      const spec = isObj(o.spec) ? o.spec : {};
      const cs = Array.isArray(spec.containers) ? spec.containers : [];
      if (!cs.length) problems.push('spec.containers: Required value');
      cs.forEach((c, i) => {
        if (!isObj(c) || typeof c.name !== 'string' || !c.name) problems.push(`spec.containers[${i}].name: Required value`);
        if (!isObj(c) || typeof c.image !== 'string' || !c.image) problems.push(`spec.containers[${i}].image: Required value`);
      });
    }
    if (problems.length) throw invalid(r, name, problems);
  }

  private create(r: ResourceType, ns: string | undefined, body: string, req: http.IncomingMessage, q: URLSearchParams, dryRun: boolean, res: http.ServerResponse): void {
    const o = parseBody(body, req);
    checkKind(r, o);
    const meta = { ...metaOf(o) };
    if (r.namespaced) {
      if (ns === undefined) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
      if (meta.namespace !== undefined && meta.namespace !== '' && meta.namespace !== ns) throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
      meta.namespace = ns;
      if (!this.store.get('namespaces')!.has(ns)) throw new ApiError(404, 'NotFound', `namespaces "${ns}" not found`, { name: ns, kind: 'namespaces' });
    } else delete meta.namespace;
    if (!meta.name && typeof meta.generateName === 'string' && meta.generateName) meta.name = `${meta.generateName}${randomSuffix()}`;
    for (const k of ['uid', 'resourceVersion', 'creationTimestamp', 'deletionTimestamp', 'selfLink']) delete meta[k];
    o.metadata = meta;
    // status belongs to the status subresource (and its owners): the strategies set it on create
    if (r.resource === 'pods') o.status = { phase: 'Pending', qosClass: 'BestEffort' };
    if (r.resource === 'namespaces') { o.status = { phase: 'Active' }; o.spec = { ...(isObj(o.spec) ? o.spec : {}), finalizers: ['kubernetes'] }; }
    if (r.resource === 'networkpolicies') { delete o.status; meta.generation = 1; }
    const warnings: string[] = [];
    this.admit(r, o, q, warnings);
    const key = r.namespaced ? `${ns}/${String(meta.name)}` : String(meta.name);
    if (this.store.get(r.resource)!.has(key)) throw new ApiError(409, 'AlreadyExists', `${qualified(r)} "${String(meta.name)}" already exists`, { name: meta.name, group: r.group, kind: r.resource });
    const out = dryRun ? { ...o, kind: r.kind, apiVersion: apiVersionOf(r), metadata: { ...meta, uid: randomUUID(), creationTimestamp: now() } } : this.put(r.resource, o);
    this.reply(res, 201, out, 'application/json', warningHeader(warnings));
  }

  private update(r: ResourceType, ns: string | undefined, name: string, current: Obj | undefined, input: Obj, q: URLSearchParams, dryRun: boolean, status: boolean, res: http.ServerResponse): void {
    if (!current) throw notFound(r, name);
    checkKind(r, input);
    const o: Obj = structuredClone(input);
    const meta = { ...metaOf(o) }, cur = metaOf(current);
    if (meta.name !== undefined && meta.name !== name) throw badRequest(`the name of the object (${String(meta.name)}) does not match the name on the URL (${name})`);
    if (r.namespaced && meta.namespace !== undefined && meta.namespace !== '' && meta.namespace !== ns) throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
    if (meta.resourceVersion !== undefined && meta.resourceVersion !== '' && meta.resourceVersion !== cur.resourceVersion) {
      throw new ApiError(409, 'Conflict', `Operation cannot be fulfilled on ${qualified(r)} "${name}": the object has been modified; please apply your changes to the latest version and try again`, { name, group: r.group, kind: r.resource });
    }
    meta.name = name;
    if (r.namespaced) meta.namespace = ns;
    for (const k of ['uid', 'creationTimestamp', 'deletionTimestamp', 'generation']) { if (cur[k] !== undefined) meta[k] = cur[k]; else delete meta[k]; }
    o.metadata = meta;
    let next: Obj;
    if (status) next = { ...current, status: o.status }; // the status subresource changes status only
    else {
      next = o;
      if (RESOURCES[r.resource].status) { if (current.status !== undefined) next.status = current.status; else delete next.status; } // and the main resource leaves it alone
      if (r.resource === 'nodes') {
        const was = isObj(current.spec) ? current.spec.podCIDR : undefined, is = isObj(next.spec) ? next.spec.podCIDR : undefined;
        if (was && is !== was) throw invalid(r, name, [`spec.podCIDR: Forbidden: node updates may not change podCIDR except from "" to valid`]);
      }
      if (r.resource === 'pods') {
        const strip = (s: unknown) => { const c = structuredClone(isObj(s) ? s : {}) as Obj; for (const x of Array.isArray(c.containers) ? c.containers : []) if (isObj(x)) delete x.image; return c; };
        if (!deepEqual(strip(next.spec), strip(current.spec))) throw invalid(r, name, ['spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations) or `spec.terminationGracePeriodSeconds`']);
      }
      if (r.resource === 'namespaces') next.spec = current.spec;
    }
    const warnings: string[] = [];
    this.admit(r, next, q, warnings); // defaults first: a change is what differs after them
    if (r.resource === 'networkpolicies' && !deepEqual(next.spec, current.spec)) metaOf(next).generation = Number(cur.generation ?? 1) + 1;
    const same = deepEqual({ ...next, metadata: { ...metaOf(next), resourceVersion: undefined } }, { ...current, metadata: { ...cur, resourceVersion: undefined } });
    const out = same || dryRun ? { ...next, metadata: { ...metaOf(next), resourceVersion: cur.resourceVersion } } : this.put(r.resource, next); // a no-op write is no new version
    this.reply(res, 200, out, 'application/json', warningHeader(warnings));
  }

  private deleteCollection(r: ResourceType, ns: string | undefined, q: URLSearchParams, dryRun: boolean, res: http.ServerResponse): void {
    const sel = this.selection(r, ns, q);
    const gone = this.sorted(r.resource).filter((o) => this.matches(sel, o));
    if (!dryRun) for (const o of gone) this.remove(r.resource, objKey(r, o));
    this.reply(res, 200, { kind: `${r.kind}List`, apiVersion: apiVersionOf(r), metadata: { resourceVersion: String(this.rv) }, items: gone });
  }
}

const isTrue = (v: string | null) => v === 'true' || v === '1';
const objKey = (r: ResourceType, o: Obj) => (r.namespaced ? `${String(metaOf(o).namespace)}/${String(metaOf(o).name)}` : String(metaOf(o).name));
const warningHeader = (w: string[]): Record<string, string> => (w.length ? { Warning: w.map((x) => `299 - ${JSON.stringify(x)}`).join(', ') } : {});
function randomSuffix(): string {
  const alphabet = 'bcdfghjklmnpqrstvwxz2456789';
  return [...randomBytes(5)].map((b) => alphabet[b % alphabet.length]).join('');
}

function groupInfo(g: string): Obj {
  const gv = { groupVersion: `${g}/v1`, version: 'v1' };
  return { name: g, versions: [gv], preferredVersion: gv };
}

function resourceList(group: string): Obj {
  const resources = Object.values(RESOURCES).filter((r) => r.group === group).flatMap((r) => [
    { name: r.resource, singularName: r.singular, namespaced: r.namespaced, kind: r.kind, verbs: VERBS, shortNames: r.shortNames, ...(r.categories ? { categories: r.categories } : {}) },
    ...(r.status ? [{ name: `${r.resource}/status`, singularName: '', namespaced: r.namespaced, kind: r.kind, verbs: ['get', 'patch', 'update'] }] : []),
  ]);
  return { kind: 'APIResourceList', ...(group ? { apiVersion: 'v1' } : {}), groupVersion: group ? `${group}/v1` : 'v1', resources };
}

/** The Accept header's media types with their parameters, in order. */
function mediaTypes(accept: string): { type: string; params: Record<string, string> }[] {
  return accept.split(',').map((part) => {
    const [type, ...ps] = part.split(';').map((s) => s.trim());
    return { type: type.toLowerCase(), params: Object.fromEntries(ps.map((x) => { const i = x.indexOf('='); return [x.slice(0, i).trim(), x.slice(i + 1).trim()]; })) };
  }).filter((m) => m.type);
}

/** The aggregated discovery version a client asks for in JSON (v2 or v2beta1), if any: the first it lists. */
function aggregatedWanted(accept: string): string | undefined {
  for (const m of mediaTypes(accept)) {
    if (m.type !== 'application/json') continue;
    if (m.params.g === 'apidiscovery.k8s.io' && m.params.as === 'APIGroupDiscoveryList' && (m.params.v === 'v2' || m.params.v === 'v2beta1')) return m.params.v;
    if (!m.params.as) return undefined; // plain JSON comes first: the legacy documents
  }
  return undefined;
}

/** Whether the client asks for a meta.k8s.io Table (kubectl get does), before plain JSON. */
function tableWanted(accept: string, q: URLSearchParams): TableWant | undefined {
  for (const m of mediaTypes(accept)) {
    if (m.type !== 'application/json') continue;
    if (m.params.as === 'Table' && m.params.g === 'meta.k8s.io' && (m.params.v === 'v1' || m.params.v === 'v1beta1')) {
      const inc = q.get('includeObject');
      return { version: m.params.v, include: inc === 'None' || inc === 'Object' ? inc : 'Metadata' };
    }
    if (!m.params.as) return undefined;
  }
  return undefined;
}

function parseBody(body: string, req: http.IncomingMessage): Obj {
  const ct = String(req.headers['content-type'] ?? 'application/json').split(';')[0].trim();
  let v: unknown;
  try {
    v = ct === 'application/yaml' ? parseYaml(body) : JSON.parse(body);
  } catch (e) {
    throw badRequest(`the body of the request could not be decoded: ${(e as Error).message}`);
  }
  if (!isObj(v)) throw badRequest('the body of the request is not an object');
  return v;
}

function checkKind(r: ResourceType, o: Obj): void {
  if (o.apiVersion !== undefined && o.apiVersion !== apiVersionOf(r)) throw badRequest(`the API version in the data (${String(o.apiVersion)}) does not match the expected API version (${apiVersionOf(r)})`);
  if (o.kind !== undefined && o.kind !== r.kind) throw badRequest(`the kind in the data (${String(o.kind)}) does not match the expected kind (${r.kind})`);
}

// ---- a serving certificate, made here so the lab needs no openssl ----

function der(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  const n = body.length;
  const len = n < 128 ? Buffer.from([n]) : n < 256 ? Buffer.from([0x81, n]) : Buffer.from([0x82, n >> 8, n & 255]);
  return Buffer.concat([Buffer.from([tag]), len, body]);
}
const seq = (...c: Buffer[]) => der(0x30, ...c);
function oid(s: string): Buffer {
  const [a, b, ...rest] = s.split('.').map(Number);
  const bytes = [a * 40 + b];
  for (const v of rest) {
    const parts = [v & 127];
    for (let x = v >>> 7; x; x >>>= 7) parts.unshift((x & 127) | 128);
    bytes.push(...parts);
  }
  return der(0x06, Buffer.from(bytes));
}
const utcTime = (d: Date) => der(0x17, Buffer.from(d.toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z'));
const ECDSA_SHA256 = seq(oid('1.2.840.10045.4.3.2'));

/**
 * A self-signed ECDSA P-256 certificate for `ips` and `dnsNames` that is its own CA
 * (a kubeconfig's certificate-authority is the certificate itself), valid for `days`.
 */
export function selfSignedCert(ips: string[], dnsNames: string[], cn = 'twill-lab-apiserver', days = 365): { cert: string; key: string } {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const serial = randomBytes(16);
  serial[0] &= 0x7f;
  const name = seq(der(0x31, seq(oid('2.5.4.3'), der(0x0c, Buffer.from(cn)))));
  const from = new Date(Date.now() - 3600_000), until = new Date(Date.now() + days * 86400_000);
  const san = seq(...ips.map((ip) => der(0x87, Buffer.from(ip.split('.').map(Number)))), ...dnsNames.map((d) => der(0x82, Buffer.from(d))));
  const ext = (id: string, critical: boolean, value: Buffer) => seq(oid(id), ...(critical ? [der(0x01, Buffer.from([0xff]))] : []), der(0x04, value));
  const tbs = seq(
    der(0xa0, der(0x02, Buffer.from([2]))), der(0x02, serial), ECDSA_SHA256, name, seq(utcTime(from), utcTime(until)), name,
    publicKey.export({ type: 'spki', format: 'der' }),
    der(0xa3, seq(
      ext('2.5.29.19', true, seq(der(0x01, Buffer.from([0xff])))), // basicConstraints CA:TRUE
      ext('2.5.29.15', true, der(0x03, Buffer.from([0x02, 0x84]))), // keyUsage digitalSignature, keyCertSign
      ext('2.5.29.17', false, san),
    )),
  );
  const cert = seq(tbs, ECDSA_SHA256, der(0x03, Buffer.from([0]), sign('sha256', tbs, privateKey)));
  const pem = `-----BEGIN CERTIFICATE-----\n${cert.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END CERTIFICATE-----\n`;
  return { cert: pem, key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}

// ---- kubeconfig, and running as a lab process ----

export interface KubeconfigSpec { server: string; token?: string; caPem?: string; cluster?: string; user?: string; namespace?: string }

/** Writes a kubeconfig for kubectl (and any client-go program): one cluster (its CA embedded), one user with a bearer token, one current context. */
export function writeKubeconfig(file: string, k: KubeconfigSpec): void {
  const cluster = k.cluster ?? 'twill-lab', user = k.user ?? 'twill-lab-admin';
  const doc = {
    apiVersion: 'v1', kind: 'Config', preferences: {},
    clusters: [{ name: cluster, cluster: { server: k.server, ...(k.caPem ? { 'certificate-authority-data': Buffer.from(k.caPem).toString('base64') } : {}) } }],
    users: [{ name: user, user: k.token ? { token: k.token } : {} }],
    contexts: [{ name: cluster, context: { cluster, user, ...(k.namespace ? { namespace: k.namespace } : {}) } }],
    'current-context': cluster,
  };
  writeFileSync(`${file}.tmp`, stringifyYaml(doc), { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

/** The line a lab process prints once it serves: `listening on https://127.0.0.1:<port>`. */
export const LISTENING = 'listening on ';

/**
 * Serves HTTPS on `listen` (host:port, port 0 for any; kubectl sends its token over TLS
 * only) with a certificate made for that address, and plain HTTP on `socket` when given
 * (for agents in node namespaces); writes a kubeconfig for the HTTPS side.
 */
export async function startKubeApiServer(o: { listen: string; socket?: string; token?: string; kubeconfig?: string; log?: (line: string) => void }): Promise<{ api: KubeApiServer; server: string }> {
  const api = new KubeApiServer({ token: o.token, systemNamespaces: true, recordRequests: false, log: o.log });
  const i = o.listen.lastIndexOf(':');
  const host = o.listen.slice(0, i).replace(/^\[|\]$/g, '');
  if (!/^[0-9.]+$/.test(host)) throw new Error(`--listen ${o.listen}: want an IPv4 address and a port`);
  const { cert, key } = selfSignedCert([host], ['localhost']);
  const port = await api.listenTls(Buffer.from(key), Buffer.from(cert), Number(o.listen.slice(i + 1)), host);
  if (o.socket) await api.listen(o.socket);
  const server = `https://${host}:${port}`;
  if (o.kubeconfig) writeKubeconfig(o.kubeconfig, { server, token: o.token, caPem: cert });
  return { api, server };
}

async function main(argv: string[]): Promise<void> {
  const arg = (n: string) => { const i = argv.indexOf(n); return i >= 0 ? argv[i + 1] : undefined; };
  const socket = arg('--socket'), tokenFile = arg('--token-file');
  const { api, server } = await startKubeApiServer({
    listen: arg('--listen') ?? '127.0.0.1:0', socket, kubeconfig: arg('--kubeconfig'),
    token: tokenFile ? readFileSync(tokenFile, 'utf8').trim() : undefined,
    log: (l) => process.stderr.write(`${new Date().toISOString()} ${l}\n`),
  });
  const stop = () => { void api.close().finally(() => { if (socket) rmSync(socket, { force: true }); process.exit(0); }); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write(`${LISTENING}${server}${socket ? ` and unix://${socket}` : ''}\n`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((e: Error) => { process.stderr.write(`kube-apiserver: ${e.stack ?? e.message}\n`); process.exit(1); });
}
