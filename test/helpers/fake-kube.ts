// A stand-in Kubernetes API server (none can run here) that speaks the real wire
// format for what twill reads and writes: v1 Nodes, Namespaces and Pods,
// networking.k8s.io/v1 NetworkPolicies; typed lists with a resourceVersion;
// watch streams of {"type","object"} lines with BOOKMARKs, resumable from a
// version, ERROR events carrying a 410 Status once a version has expired; GET,
// POST, DELETE and JSON merge patch (RFC 7386); Status objects for errors;
// bearer-token authentication. It listens on a unix socket (as `kubectl proxy
// --unix-socket` does), so agents in node namespaces reach it without any IP route,
// or with HTTPS on loopback for the client's TLS path.
import http from 'node:http';
import https from 'node:https';
import { rmSync } from 'node:fs';
import { isObj, type Obj } from '../../policy/validate.js';

interface Resource { group: string; kind: string; namespaced: boolean }
const RESOURCES: Record<string, Resource> = {
  nodes: { group: 'v1', kind: 'Node', namespaced: false },
  namespaces: { group: 'v1', kind: 'Namespace', namespaced: false },
  pods: { group: 'v1', kind: 'Pod', namespaced: true },
  networkpolicies: { group: 'networking.k8s.io/v1', kind: 'NetworkPolicy', namespaced: true },
};
interface Event { rv: number; resource: string; type: 'ADDED' | 'MODIFIED' | 'DELETED'; object: Obj }
interface Watcher { resource: string; res: http.ServerResponse }

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


/** RFC 7386: null deletes, objects merge, everything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObj(patch)) return patch;
  const out: Obj = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

export class FakeKube {
  private rv = 100;
  private oldest = 0; // watches from a version before this get 410 Gone
  private readonly store = new Map<string, Map<string, Obj>>(Object.keys(RESOURCES).map((r) => [r, new Map()]));
  private history: Event[] = [];
  private readonly watchers = new Set<Watcher>();
  private server?: http.Server;
  readonly requests: string[] = []; // "METHOD path" of each request, for tests

  constructor(private readonly token?: string) {}

  listen(socketPath: string): Promise<void> {
    rmSync(socketPath, { force: true });
    this.server = http.createServer((req, res) => this.handle(req, res));
    return new Promise((resolve) => this.server!.listen(socketPath, resolve));
  }

  /** HTTPS on loopback, as an API server serves in a cluster; resolves with the port. */
  listenTls(key: Buffer, cert: Buffer): Promise<number> {
    this.server = https.createServer({ key, cert }, (req, res) => this.handle(req, res));
    return new Promise((resolve) => this.server!.listen(0, '127.0.0.1', () => resolve((this.server!.address() as { port: number }).port)));
  }

  async close(): Promise<void> {
    this.closeWatches();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  /** Ends every open watch, as an API server does when a watch's timeout runs out. */
  closeWatches(): void {
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
  }

  /** Forgets the event history: a watch from any version seen so far gets 410 Gone (etcd compaction). */
  expireHistory(): void {
    this.oldest = this.rv + 1;
    this.history = [];
  }

  // ---- objects, as a controller or the kubelet would write them ----

  put(resource: string, obj: Obj): Obj {
    const meta = isObj(obj.metadata) ? obj.metadata : {};
    const r = RESOURCES[resource];
    const ns = r.namespaced ? String(meta.namespace ?? 'default') : undefined;
    const key = ns ? `${ns}/${String(meta.name)}` : String(meta.name);
    const had = this.store.get(resource)!.get(key);
    const stored: Obj = {
      ...obj, kind: r.kind, apiVersion: r.group,
      metadata: { ...meta, ...(ns ? { namespace: ns } : {}), uid: (had?.metadata as Obj | undefined)?.uid ?? `uid-${this.rv}`, resourceVersion: String(++this.rv) },
    };
    if (resource === 'namespaces') (stored.metadata as Obj).labels = { ...(meta.labels as Obj | undefined), 'kubernetes.io/metadata.name': meta.name };
    this.store.get(resource)!.set(key, stored);
    this.emit({ rv: this.rv, resource, type: had ? 'MODIFIED' : 'ADDED', object: stored });
    return stored;
  }

  remove(resource: string, key: string): boolean {
    const had = this.store.get(resource)!.get(key);
    if (!had) return false;
    this.store.get(resource)!.delete(key);
    const object = { ...had, metadata: { ...(had.metadata as Obj), resourceVersion: String(++this.rv) } };
    this.emit({ rv: this.rv, resource, type: 'DELETED', object });
    return true;
  }

  get(resource: string, key: string): Obj | undefined { return this.store.get(resource)!.get(key); }

  private emit(e: Event): void {
    this.history.push(e);
    for (const w of this.watchers) if (w.resource === e.resource) w.res.write(JSON.stringify({ type: e.type, object: e.object }) + '\n');
  }

  // ---- HTTP ----

  private status(res: http.ServerResponse, code: number, reason: string, message: string): void {
    res.writeHead(code, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code }));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    this.requests.push(`${req.method} ${url.pathname}`);
    if (this.token && req.headers.authorization !== `Bearer ${this.token}`) return this.status(res, 401, 'Unauthorized', 'Unauthorized');
    // /api/v1/[namespaces/<ns>/]<resource>[/<name>]  or  /apis/networking.k8s.io/v1/...
    const m = /^\/(?:api\/v1|apis\/networking\.k8s\.io\/v1)(?:\/namespaces\/([^/]+)(?=\/(?:pods|networkpolicies)))?\/(nodes|namespaces|pods|networkpolicies)(?:\/([^/]+))?$/.exec(url.pathname);
    if (!m) return this.status(res, 404, 'NotFound', `the server could not find the requested resource (${url.pathname})`);
    const [, ns, resource, name] = m;
    const r = RESOURCES[resource];
    const key = name ? (r.namespaced ? `${ns}/${name}` : name) : undefined;
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      if (req.method === 'GET' && !key && url.searchParams.get('watch')) return this.watch(resource, url.searchParams.get('resourceVersion') ?? '0', res);
      if (req.method === 'GET' && !key) {
        const items = [...this.store.get(resource)!.values()].filter((o) => !ns || (o.metadata as Obj).namespace === ns);
        res.writeHead(200, { 'Content-Type': 'application/json' });
        return res.end(JSON.stringify({ kind: `${r.kind}List`, apiVersion: r.group, metadata: { resourceVersion: String(this.rv) }, items }));
      }
      const current = key ? this.store.get(resource)!.get(key) : undefined;
      if (req.method === 'GET' || req.method === 'PATCH' || req.method === 'DELETE') {
        if (!current) return this.status(res, 404, 'NotFound', `${resource} "${name}" not found`);
      }
      let input: unknown;
      if (req.method === 'POST' || req.method === 'PATCH') {
        try { input = JSON.parse(body); } catch { return this.status(res, 400, 'BadRequest', 'body is not JSON'); }
        if (req.method === 'PATCH' && req.headers['content-type'] !== 'application/merge-patch+json') return this.status(res, 415, 'UnsupportedMediaType', 'only merge patches here');
      }
      let out: Obj;
      switch (req.method) {
        case 'GET': out = current!; break;
        case 'PATCH': out = this.put(resource, mergePatch(current, input) as Obj); break;
        case 'DELETE': this.remove(resource, key!); out = current!; break;
        case 'POST': {
          const o = input as Obj, meta = (isObj(o.metadata) ? o.metadata : {}) as Obj;
          const k = r.namespaced ? `${ns ?? meta.namespace ?? 'default'}/${String(meta.name)}` : String(meta.name);
          if (this.store.get(resource)!.has(k)) return this.status(res, 409, 'AlreadyExists', `${resource} "${String(meta.name)}" already exists`);
          out = this.put(resource, r.namespaced ? { ...o, metadata: { ...meta, namespace: ns ?? meta.namespace ?? 'default' } } : o);
          res.writeHead(201, { 'Content-Type': 'application/json' });
          return res.end(JSON.stringify(out));
        }
        default: return this.status(res, 405, 'MethodNotAllowed', `${req.method} is not supported here`);
      }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(out));
    });
  }

  private watch(resource: string, fromRv: string, res: http.ServerResponse): void {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    const from = Number(fromRv);
    if (from !== 0 && from < this.oldest - 1) {
      res.end(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', status: 'Failure', message: `too old resource version: ${from} (${this.oldest})`, reason: 'Expired', code: 410 } }) + '\n');
      return;
    }
    for (const e of this.history) if (e.resource === resource && e.rv > from) res.write(JSON.stringify({ type: e.type, object: e.object }) + '\n');
    res.write(JSON.stringify({ type: 'BOOKMARK', object: { kind: RESOURCES[resource].kind, apiVersion: RESOURCES[resource].group, metadata: { resourceVersion: String(this.rv) } } }) + '\n');
    const w: Watcher = { resource, res };
    this.watchers.add(w);
    res.on('close', () => this.watchers.delete(w));
  }
}
