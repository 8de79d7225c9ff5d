// Validation of networking.k8s.io/v1 NetworkPolicy objects as read from YAML, after
// upstream pkg/apis/networking/validation (ValidateNetworkPolicySpec and friends) and
// metav1 label-selector validation. It also type-checks the untyped YAML, so the
// compiler can trust the shapes. Each problem is reported as "field.path: problem".
import { isIPv4, isIPv6 } from 'node:net';
import type {
  IPBlock, LabelSelector, LabelSelectorRequirement, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, PolicyType, Protocol,
} from './model.js';

/** An untyped object as JSON or YAML gives it. */
export type Obj = Record<string, unknown>;
export const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export class Problems {
  readonly list: string[] = [];
  add(path: string, msg: string): void {
    this.list.push(`${path}: ${msg}`);
  }
}

/** Label key: [prefix/]name, prefix a DNS subdomain <= 253, name <= 63 (IsQualifiedName). */
export function labelKeyProblem(key: string): string | undefined {
  const parts = key.split('/');
  let name = key;
  if (parts.length === 2) {
    const prefix = parts[0];
    name = parts[1];
    if (prefix.length === 0 || prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix)) return 'prefix part must be a DNS-1123 subdomain';
  } else if (parts.length > 2) {
    return "a qualified name must consist of alphanumerics, '-', '_' or '.', with an optional DNS subdomain prefix and '/'";
  }
  if (name.length === 0 || name.length > 63 || !QUALIFIED_NAME.test(name)) {
    return "name part must be 1-63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric";
  }
  return undefined;
}

export function labelValueProblem(v: string): string | undefined {
  if (v.length === 0) return undefined;
  if (v.length > 63 || !QUALIFIED_NAME.test(v)) return "must be empty or 1-63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric";
  return undefined;
}

/** IANA_SVC_NAME (IsValidPortName): 1-15 chars, lowercase alphanumerics and '-', a letter, no '--', no leading/trailing '-'. */
export function isPortName(s: string): boolean {
  return s.length >= 1 && s.length <= 15 && /^[a-z0-9-]+$/.test(s) && /[a-z]/.test(s) && !s.includes('--') && !s.startsWith('-') && !s.endsWith('-');
}

function stringMap(v: unknown, path: string, p: Problems, kind: 'labels'): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (!isObj(v)) {
    p.add(path, 'must be a map of strings');
    return {};
  }
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    const kp = labelKeyProblem(k);
    if (kp) p.add(`${path}`, `invalid label key "${k}": ${kp}`);
    if (typeof val !== 'string') {
      p.add(`${path}.${k}`, 'must be a string');
      continue;
    }
    const vp = kind === 'labels' ? labelValueProblem(val) : undefined;
    if (vp) p.add(`${path}.${k}`, `invalid label value "${val}": ${vp}`);
    out[k] = val;
  }
  return out;
}

export function validateLabelSelector(v: unknown, path: string, p: Problems): LabelSelector {
  if (v === null || v === undefined) return {};
  if (!isObj(v)) {
    p.add(path, 'must be a label selector object');
    return {};
  }
  const sel: LabelSelector = {};
  if (v.matchLabels !== undefined && v.matchLabels !== null) sel.matchLabels = stringMap(v.matchLabels, `${path}.matchLabels`, p, 'labels');
  if (v.matchExpressions !== undefined && v.matchExpressions !== null) {
    if (!Array.isArray(v.matchExpressions)) p.add(`${path}.matchExpressions`, 'must be a list');
    else {
      sel.matchExpressions = [];
      v.matchExpressions.forEach((e, i) => {
        const ep = `${path}.matchExpressions[${i}]`;
        if (!isObj(e)) return p.add(ep, 'must be an object');
        const key = typeof e.key === 'string' ? e.key : '';
        if (typeof e.key !== 'string') p.add(`${ep}.key`, 'Required value');
        else {
          const kp = labelKeyProblem(key);
          if (kp) p.add(`${ep}.key`, kp);
        }
        const op = e.operator;
        const values = e.values === undefined || e.values === null ? [] : e.values;
        if (!Array.isArray(values) || values.some((x) => typeof x !== 'string')) {
          p.add(`${ep}.values`, 'must be a list of strings');
          return;
        }
        if (op === 'In' || op === 'NotIn') {
          if (values.length === 0) p.add(`${ep}.values`, "must be specified when `operator` is 'In' or 'NotIn'");
        } else if (op === 'Exists' || op === 'DoesNotExist') {
          if (values.length > 0) p.add(`${ep}.values`, "may not be specified when `operator` is 'Exists' or 'DoesNotExist'");
        } else {
          p.add(`${ep}.operator`, 'must be In, NotIn, Exists or DoesNotExist');
          return;
        }
        values.forEach((val: string, j: number) => {
          const vp = labelValueProblem(val);
          if (vp) p.add(`${ep}.values[${j}]`, vp);
        });
        const req: LabelSelectorRequirement = { key, operator: op };
        if (values.length) req.values = values as string[];
        sel.matchExpressions!.push(req);
      });
    }
  }
  for (const k of Object.keys(v)) if (k !== 'matchLabels' && k !== 'matchExpressions') p.add(`${path}.${k}`, 'unknown field');
  return sel;
}

type Cidr = { v6: boolean; bits: bigint; len: number };

function parseAnyCidr(s: string): Cidr | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const ip = s.slice(0, slash);
  const lenText = s.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenText)) return undefined;
  const len = Number(lenText);
  if (isIPv4(ip)) {
    if (len > 32) return undefined;
    const n = ip.split('.').reduce((a, o) => a * 256n + BigInt(Number(o)), 0n);
    return { v6: false, bits: n, len };
  }
  if (isIPv6(ip) && !ip.includes('.') && !ip.includes('%')) { // Go's ParseCIDR takes no zone
    if (len > 128) return undefined;
    const [head, tail] = ip.includes('::') ? ip.split('::') : [ip, undefined];
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
    const n = groups.reduce((a, g) => a * 65536n + BigInt(parseInt(g, 16)), 0n);
    return { v6: true, bits: n, len };
  }
  return undefined;
}

function validateIPBlock(v: unknown, path: string, p: Problems): IPBlock | undefined {
  if (!isObj(v)) {
    p.add(path, 'must be an object');
    return undefined;
  }
  if (typeof v.cidr !== 'string' || v.cidr === '') {
    p.add(`${path}.cidr`, 'Required value');
    return undefined;
  }
  const c = parseAnyCidr(v.cidr);
  if (!c) {
    p.add(`${path}.cidr`, `invalid CIDR "${v.cidr}": must be a valid IPv4 or IPv6 CIDR such as 10.0.0.0/8`);
    return undefined;
  }
  const block: IPBlock = { cidr: v.cidr };
  if (v.except !== undefined && v.except !== null) {
    if (!Array.isArray(v.except)) p.add(`${path}.except`, 'must be a list');
    else {
      block.except = [];
      const width = c.v6 ? 128 : 32;
      v.except.forEach((e, i) => {
        const ep = `${path}.except[${i}]`;
        const x = typeof e === 'string' ? parseAnyCidr(e) : undefined;
        if (!x) return p.add(ep, `invalid CIDR ${JSON.stringify(e)}`);
        // upstream: the except CIDR must lie inside cidr and be strictly smaller
        const inside = x.v6 === c.v6 && x.len > c.len && x.bits >> BigInt(width - c.len) === c.bits >> BigInt(width - c.len);
        if (!inside) return p.add(ep, `must be a strict subset of \`cidr\` (${v.cidr})`);
        block.except!.push(e as string);
      });
    }
  }
  return block;
}

function validatePeer(v: unknown, path: string, p: Problems): NetworkPolicyPeer {
  if (!isObj(v)) {
    p.add(path, 'must be an object');
    return {};
  }
  const peer: NetworkPolicyPeer = {};
  let n = 0;
  if (v.podSelector !== undefined && v.podSelector !== null) {
    n++;
    peer.podSelector = validateLabelSelector(v.podSelector, `${path}.podSelector`, p);
  }
  if (v.namespaceSelector !== undefined && v.namespaceSelector !== null) {
    n++;
    peer.namespaceSelector = validateLabelSelector(v.namespaceSelector, `${path}.namespaceSelector`, p);
  }
  if (v.ipBlock !== undefined && v.ipBlock !== null) {
    n++;
    const b = validateIPBlock(v.ipBlock, `${path}.ipBlock`, p);
    if (b) peer.ipBlock = b;
  }
  if (n === 0) p.add(path, 'must specify a peer');
  else if (n > 1 && v.ipBlock !== undefined && v.ipBlock !== null) p.add(path, 'may not specify both ipBlock and another peer');
  return peer;
}

function validatePort(v: unknown, path: string, p: Problems): NetworkPolicyPort {
  if (!isObj(v)) {
    p.add(path, 'must be an object');
    return {};
  }
  const port: NetworkPolicyPort = {};
  if (v.protocol !== undefined && v.protocol !== null) {
    if (v.protocol === 'TCP' || v.protocol === 'UDP' || v.protocol === 'SCTP') port.protocol = v.protocol as Protocol;
    else p.add(`${path}.protocol`, `unsupported value ${JSON.stringify(v.protocol)}: must be TCP, UDP or SCTP`);
  }
  const pv = v.port;
  if (pv !== undefined && pv !== null) {
    if (typeof pv === 'number' && Number.isInteger(pv) && pv >= 1 && pv <= 65535) port.port = pv;
    else if (typeof pv === 'string' && isPortName(pv)) port.port = pv;
    else p.add(`${path}.port`, 'must be 1-65535 or an IANA_SVC_NAME');
  }
  const ev = v.endPort;
  if (ev !== undefined && ev !== null) {
    if (pv === undefined || pv === null) p.add(`${path}.endPort`, 'may not be specified when `port` is not specified');
    else if (typeof pv === 'string') p.add(`${path}.endPort`, 'may not be specified when `port` is non-numeric');
    else if (typeof ev !== 'number' || !Number.isInteger(ev) || ev < 1 || ev > 65535) p.add(`${path}.endPort`, 'must be 1-65535');
    else if (typeof pv === 'number' && ev < pv) p.add(`${path}.endPort`, 'must be greater than or equal to `port`');
    else port.endPort = ev;
  }
  return port;
}

function list<T>(v: unknown, path: string, p: Problems, each: (x: unknown, path: string) => T): T[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) {
    p.add(path, 'must be a list');
    return undefined;
  }
  return v.map((x, i) => each(x, `${path}[${i}]`));
}

/** Validates and types a NetworkPolicy object; problems are "spec.field.path: message". */
export function validateNetworkPolicy(obj: Obj, p: Problems): NetworkPolicy {
  const meta = isObj(obj.metadata) ? obj.metadata : {};
  const name = typeof meta.name === 'string' ? meta.name : '';
  const namespace = typeof meta.namespace === 'string' ? meta.namespace : 'default';
  if (!name) p.add('metadata.name', 'Required value');
  else if (name.length > 253 || !DNS1123_SUBDOMAIN.test(name)) p.add('metadata.name', 'must be a lowercase DNS-1123 subdomain');
  if (!DNS1123_LABEL.test(namespace) || namespace.length > 63) p.add('metadata.namespace', 'must be a lowercase DNS-1123 label');
  const spec = obj.spec;
  if (!isObj(spec)) {
    p.add('spec', 'Required value');
    return { namespace, name, spec: { podSelector: {} } };
  }
  // podSelector is required in the API, but an empty one ({}) selects every pod in the namespace
  const podSelector = validateLabelSelector(spec.podSelector ?? {}, 'spec.podSelector', p);
  const ports = (v: unknown, path: string) => list(v, path, p, (x, pp) => validatePort(x, pp, p));
  const peers = (v: unknown, path: string) => list(v, path, p, (x, pp) => validatePeer(x, pp, p));
  const ingress = list(spec.ingress, 'spec.ingress', p, (r, path) => {
    if (!isObj(r)) {
      p.add(path, 'must be an object');
      return {};
    }
    return { from: peers(r.from, `${path}.from`), ports: ports(r.ports, `${path}.ports`) };
  });
  const egress = list(spec.egress, 'spec.egress', p, (r, path) => {
    if (!isObj(r)) {
      p.add(path, 'must be an object');
      return {};
    }
    return { to: peers(r.to, `${path}.to`), ports: ports(r.ports, `${path}.ports`) };
  });
  let policyTypes: PolicyType[] | undefined;
  if (spec.policyTypes !== undefined && spec.policyTypes !== null) {
    if (!Array.isArray(spec.policyTypes)) p.add('spec.policyTypes', 'must be a list');
    else if (spec.policyTypes.length > 2) p.add('spec.policyTypes', 'may not specify more than two policyTypes');
    else {
      policyTypes = [];
      spec.policyTypes.forEach((t, i) => {
        if (t === 'Ingress' || t === 'Egress') policyTypes!.push(t);
        else p.add(`spec.policyTypes[${i}]`, `unsupported value ${JSON.stringify(t)}: must be Ingress or Egress`);
      });
    }
  }
  for (const k of Object.keys(spec)) {
    if (!['podSelector', 'ingress', 'egress', 'policyTypes'].includes(k)) p.add(`spec.${k}`, 'unknown field');
  }
  const out: NetworkPolicy = { namespace, name, spec: { podSelector } };
  if (ingress) out.spec.ingress = ingress.map(stripUndefined);
  if (egress) out.spec.egress = egress.map(stripUndefined);
  if (policyTypes) out.spec.policyTypes = policyTypes;
  return out;
}

function stripUndefined<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}
