// The lab's stand-in Kubernetes API server (lab/kube-apiserver.ts) and its patches
// (lab/kube-patch.ts), over its unix socket: discovery, selectors on lists and
// watches, watch semantics (filter edges, bookmarks only when asked, initial events,
// 410), the three patch types, the status subresource, errors as Status objects,
// limit/continue, Tables, and a kubeconfig whose certificate a TLS client accepts.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import https from 'node:https';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { KubeApiServer, formatLabelSelector, humanDuration, labelsMatch, parseLabelSelector, startKubeApiServer } from '../../lab/kube-apiserver.js';
import { STRATEGIES, jsonPatch, mergePatch, strategicMergePatch } from '../../lab/kube-patch.js';

let dir: string, api: KubeApiServer, sock: string;
beforeEach(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'twt-kapi-'));
  sock = path.join(dir, 'api.sock');
  api = new KubeApiServer({ systemNamespaces: true, bookmarkIntervalMs: 100 });
  await api.listen(sock);
});
afterEach(async () => {
  await api.close();
  rmSync(dir, { recursive: true, force: true });
});

interface Reply { status: number; headers: http.IncomingHttpHeaders; body: Record<string, any> }
function call(method: string, p: string, o: { body?: unknown; type?: string; accept?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: sock, method, path: p, headers: { Accept: o.accept ?? 'application/json', ...(o.body !== undefined ? { 'Content-Type': o.type ?? 'application/json' } : {}) } }, (res) => {
      let t = '';
      res.on('data', (d) => (t += d));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: t ? JSON.parse(t) : {} }));
    });
    req.on('error', reject);
    req.end(o.body === undefined ? undefined : typeof o.body === 'string' ? o.body : JSON.stringify(o.body));
  });
}
/** Opens a watch; events() is what arrived so far; stop() ends it. */
function watch(p: string, accept = 'application/json') {
  const events: { type: string; object: Record<string, any> }[] = [];
  let buf = '';
  const req = http.get({ socketPath: sock, path: p, headers: { Accept: accept } }, (res) => {
    res.on('data', (d) => { buf += d; let i; while ((i = buf.indexOf('\n')) >= 0) { events.push(JSON.parse(buf.slice(0, i))); buf = buf.slice(i + 1); } });
  });
  req.on('error', () => undefined);
  return { events, stop: () => req.destroy() };
}
const until = async (ok: () => boolean, ms = 2000) => { const end = Date.now() + ms; while (!ok() && Date.now() < end) await new Promise((r) => setTimeout(r, 10)); return ok(); };
const pod = (ns: string, name: string, labels: Record<string, string> = {}, node = 'n1') => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: ns, labels }, spec: { nodeName: node, containers: [{ name: 'c', image: 'i' }] } });
const netpol = (name: string, spec: unknown) => ({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name }, spec });
const PODS = '/api/v1/namespaces/default/pods', NP = '/apis/networking.k8s.io/v1/namespaces/default/networkpolicies';

describe('discovery', () => {
  it('serves /version, /api, /apis and the group documents, legacy or aggregated as the Accept header asks', async () => {
    expect((await call('GET', '/version')).body).toMatchObject({ major: '1', minor: '30' });
    expect((await call('GET', '/api')).body).toMatchObject({ kind: 'APIVersions', versions: ['v1'] });
    expect((await call('GET', '/apis')).body.groups).toEqual([{ name: 'networking.k8s.io', versions: [{ groupVersion: 'networking.k8s.io/v1', version: 'v1' }], preferredVersion: { groupVersion: 'networking.k8s.io/v1', version: 'v1' } }]);
    const core = (await call('GET', '/api/v1')).body;
    expect(core.resources.find((r: any) => r.name === 'pods')).toMatchObject({ namespaced: true, kind: 'Pod', shortNames: ['po'], verbs: expect.arrayContaining(['list', 'watch', 'patch']) });
    expect(core.resources.map((r: any) => r.name)).toEqual(['nodes', 'nodes/status', 'namespaces', 'namespaces/status', 'pods', 'pods/status']);
    expect((await call('GET', '/apis/networking.k8s.io/v1')).body.resources).toEqual([expect.objectContaining({ name: 'networkpolicies', shortNames: ['netpol'], namespaced: true })]);
    const agg = await call('GET', '/apis', { accept: 'application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json' });
    expect(agg.headers['content-type']).toBe('application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList');
    expect(agg.body.items[0].versions[0].resources[0]).toMatchObject({ resource: 'networkpolicies', scope: 'Namespaced', responseKind: { kind: 'NetworkPolicy' } });
    expect((await call('GET', '/api', { accept: 'application/json' })).body.kind).toBe('APIVersions');
    expect((await call('GET', '/openapi/v3')).status).toBe(404);
    expect((await call('GET', '/apis/apps/v1')).body).toMatchObject({ kind: 'Status', code: 404, reason: 'NotFound' });
  });
});

describe('selectors', () => {
  it('parses and matches label selectors as labels.Parse does', () => {
    const m = (sel: string, l: Record<string, string>) => labelsMatch(parseLabelSelector(sel), l);
    expect(m('app=web', { app: 'web' })).toBe(true);
    expect(m('app==web,tier!=db', { app: 'web' })).toBe(true);
    expect(m('app in (web, api),!legacy', { app: 'api' })).toBe(true);
    expect(m('app notin (web)', {})).toBe(true);
    expect(m('app', {})).toBe(false);
    expect(m('!app', {})).toBe(true);
    expect(m('gen>2', { gen: '3' })).toBe(true);
    expect(m('', { any: 'x' })).toBe(true);
    expect(() => parseLabelSelector('app in (web')).toThrow(/expected: '\)'/);
    expect(() => parseLabelSelector('a b')).toThrow();
    expect(formatLabelSelector({ matchLabels: { b: '1' }, matchExpressions: [{ key: 'a', operator: 'In', values: ['y', 'x'] }] })).toBe('a in (x,y),b=1');
    expect(formatLabelSelector({})).toBe('<none>');
    expect([humanDuration(5_000), humanDuration(150_000), humanDuration(3 * 3600_000)]).toEqual(['5s', '2m30s', '3h']);
  });

  it('lists filter by namespace, labels and fields; an unknown field is a 400', async () => {
    await call('POST', '/api/v1/namespaces', { body: { metadata: { name: 'prod' } } });
    for (const [ns, n, l, node] of [['default', 'a', { app: 'web' }, 'n1'], ['default', 'b', { app: 'db' }, 'n2'], ['prod', 'c', { app: 'web' }, 'n2']] as const) {
      expect((await call('POST', `/api/v1/namespaces/${ns}/pods`, { body: pod(ns, n, l, node) })).status).toBe(201);
    }
    const names = async (p: string) => (await call('GET', p)).body.items.map((o: any) => `${o.metadata.namespace}/${o.metadata.name}`);
    expect(await names('/api/v1/pods')).toEqual(['default/a', 'default/b', 'prod/c']);
    expect(await names('/api/v1/namespaces/prod/pods')).toEqual(['prod/c']);
    expect(await names('/api/v1/pods?labelSelector=app%3Dweb')).toEqual(['default/a', 'prod/c']);
    expect(await names('/api/v1/pods?fieldSelector=spec.nodeName%3Dn2,metadata.namespace!%3Dprod')).toEqual(['default/b']);
    expect(await names('/api/v1/namespaces/default/pods?labelSelector=app+notin+(web)')).toEqual(['default/b']);
    const bad = await call('GET', '/api/v1/pods?fieldSelector=spec.bogus%3Dx');
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ kind: 'Status', reason: 'BadRequest', message: 'field label not supported: spec.bogus' });
  });
});

describe('watches', () => {
  it('are filtered by namespace and selector; objects crossing the filter are ADDED or DELETED; bookmarks only when asked', async () => {
    await call('POST', '/api/v1/namespaces', { body: { metadata: { name: 'prod' } } });
    const rv = (await call('GET', '/api/v1/pods')).body.metadata.resourceVersion;
    const nsw = watch(`/api/v1/namespaces/default/pods?watch=1&resourceVersion=${rv}`);
    const lw = watch(`/api/v1/pods?watch=1&resourceVersion=${rv}&labelSelector=app%3Dweb&allowWatchBookmarks=true`);
    await new Promise((r) => setTimeout(r, 50));
    await call('POST', PODS, { body: pod('default', 'a', { app: 'db' }) });
    await call('POST', '/api/v1/namespaces/prod/pods', { body: pod('prod', 'b', { app: 'web' }) });
    await call('PATCH', `${PODS}/a`, { body: { metadata: { labels: { app: 'web' } } }, type: 'application/merge-patch+json' });
    await call('PATCH', `${PODS}/a`, { body: { metadata: { labels: { app: 'db' } } }, type: 'application/strategic-merge-patch+json' });
    await call('DELETE', `${PODS}/a`);
    expect(await until(() => nsw.events.length >= 4 && lw.events.filter((e) => e.type === 'BOOKMARK').length >= 1)).toBe(true);
    await new Promise((r) => setTimeout(r, 50));
    expect(nsw.events.map((e) => `${e.type} ${e.object.metadata.name}`)).toEqual(['ADDED a', 'MODIFIED a', 'MODIFIED a', 'DELETED a']);
    expect(nsw.events.some((e) => e.type === 'BOOKMARK')).toBe(false); // not asked for
    const lwo = lw.events.filter((e) => e.type !== 'BOOKMARK');
    expect(lwo.map((e) => `${e.type} ${e.object.metadata.namespace}/${e.object.metadata.name}`)).toEqual(['ADDED prod/b', 'ADDED default/a', 'DELETED default/a']);
    const bm = lw.events.find((e) => e.type === 'BOOKMARK')!;
    expect(bm.object).toMatchObject({ kind: 'Pod', apiVersion: 'v1', metadata: { resourceVersion: expect.any(String) } });
    nsw.stop(); lw.stop();
  });

  it('without a version start with the current objects; sendInitialEvents ends them with a bookmark; an expired version gets 410', async () => {
    await call('POST', PODS, { body: pod('default', 'a') });
    const w0 = watch('/api/v1/namespaces/default/pods?watch=true');
    const wi = watch('/api/v1/pods?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan');
    expect(await until(() => w0.events.length >= 1 && wi.events.length >= 2)).toBe(true);
    expect(w0.events[0]).toMatchObject({ type: 'ADDED', object: { metadata: { name: 'a' } } });
    expect(wi.events[1]).toMatchObject({ type: 'BOOKMARK', object: { metadata: { annotations: { 'k8s.io/initial-events-end': 'true' } } } });
    w0.stop(); wi.stop();
    api.expireHistory();
    const old = watch('/api/v1/pods?watch=1&resourceVersion=101');
    expect(await until(() => old.events.length >= 1)).toBe(true);
    expect(old.events[0]).toMatchObject({ type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired' } });
  });

  it('serve Tables to kubectl get -w: column definitions in the first event only', async () => {
    const w = watch('/api/v1/namespaces/default/pods?watch=1&resourceVersion=0', 'application/json;as=Table;v=v1;g=meta.k8s.io,application/json');
    await call('POST', PODS, { body: pod('default', 'a') });
    await call('POST', PODS, { body: pod('default', 'b') });
    expect(await until(() => w.events.length >= 2)).toBe(true);
    expect(w.events[0].object).toMatchObject({ kind: 'Table', apiVersion: 'meta.k8s.io/v1', rows: [{ cells: ['a', '0/1', 'Pending', '0', expect.any(String), '<none>', 'n1', '<none>', '<none>'], object: { kind: 'PartialObjectMetadata' } }] });
    expect(w.events[0].object.columnDefinitions.map((c: any) => c.name)).toEqual(['Name', 'Ready', 'Status', 'Restarts', 'Age', 'IP', 'Node', 'Nominated Node', 'Readiness Gates']);
    expect(w.events[1].object.columnDefinitions).toEqual([]);
    w.stop();
  });
});

describe('writes', () => {
  it('a Pod is created Pending whatever status it carries; its status is written through pods/status, which changes nothing else', async () => {
    const created = await call('POST', PODS, { body: { ...pod('default', 'a'), status: { phase: 'Running', podIP: '10.0.0.1' } } });
    expect(created.body.status).toEqual({ phase: 'Pending', qosClass: 'BestEffort' });
    expect(created.body.metadata).toMatchObject({ uid: expect.stringMatching(/^[0-9a-f-]{36}$/), creationTimestamp: expect.stringMatching(/Z$/) });
    const st = await call('PATCH', `${PODS}/a/status`, { body: { metadata: { labels: { sneaky: 'x' } }, status: { phase: 'Running', podIP: '10.0.0.1' } }, type: 'application/merge-patch+json' });
    expect(st.body.status).toMatchObject({ phase: 'Running', podIP: '10.0.0.1' });
    expect(st.body.metadata.labels).toEqual({});
    const put = await call('PUT', `${PODS}/a`, { body: { ...st.body, metadata: { ...st.body.metadata, labels: { v: '2' } }, status: { phase: 'Failed' } } });
    expect(put.body.status.phase).toBe('Running'); // the main resource leaves status alone
    expect(put.body.metadata.labels).toEqual({ v: '2' });
    const spec = await call('PATCH', `${PODS}/a`, { body: { spec: { nodeName: 'other' } }, type: 'application/merge-patch+json' });
    expect(spec.status).toBe(422);
  });

  it('errors are Status objects with the API server\'s codes', async () => {
    const missing = await call('GET', `${NP}/nope`);
    expect(missing.body).toEqual({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'networkpolicies.networking.k8s.io "nope" not found', reason: 'NotFound', details: { name: 'nope', group: 'networking.k8s.io', kind: 'networkpolicies' }, code: 404 });
    expect((await call('POST', NP, { body: netpol('p', { podSelector: {} }) })).status).toBe(201);
    expect((await call('POST', NP, { body: netpol('p', { podSelector: {} }) })).body).toMatchObject({ code: 409, reason: 'AlreadyExists' });
    const cur = (await call('GET', `${NP}/p`)).body;
    await call('PATCH', `${NP}/p`, { body: { metadata: { labels: { a: 'b' } } }, type: 'application/merge-patch+json' });
    expect((await call('PUT', `${NP}/p`, { body: cur })).body).toMatchObject({ code: 409, reason: 'Conflict' }); // a stale resourceVersion
    expect((await call('PATCH', `${NP}/p`, { body: 'a: b', type: 'application/apply-patch+yaml' })).body).toMatchObject({ code: 415, reason: 'UnsupportedMediaType' });
    const bad = await call('POST', NP, { body: netpol('bad', { podSelector: {}, policyTypes: ['Sideways'], ingress: [{ ports: [{ port: 70000 }] }] }) });
    expect(bad.body).toMatchObject({ kind: 'Status', code: 422, reason: 'Invalid', details: { name: 'bad', kind: 'NetworkPolicy', causes: expect.arrayContaining([expect.objectContaining({ field: 'spec.policyTypes[0]' })]) } });
    expect((await call('POST', '/api/v1/namespaces/nowhere/pods', { body: pod('nowhere', 'x') })).body).toMatchObject({ code: 404, message: 'namespaces "nowhere" not found' });
    expect((await call('POST', NP, { body: { ...netpol('k', { podSelector: {} }), kind: 'Pod' } })).status).toBe(400);
  });

  it('NetworkPolicies are defaulted; unknown fields are dropped with a warning, or refused with fieldValidation=Strict', async () => {
    const r = await call('POST', NP, { body: netpol('p', { podSelector: {}, egress: [{ ports: [{ port: 53 }] }], bogus: true }) });
    expect(r.status).toBe(201);
    expect(r.body.spec).toEqual({ podSelector: {}, egress: [{ ports: [{ port: 53, protocol: 'TCP' }] }], policyTypes: ['Ingress', 'Egress'] });
    expect(r.headers.warning).toBe('299 - "unknown field \\"spec.bogus\\""');
    expect(r.body.metadata.generation).toBe(1);
    const strict = await call('POST', `${NP}?fieldValidation=Strict`, { body: netpol('q', { podSelector: {}, bogus: true }) });
    expect(strict.body).toMatchObject({ code: 400, reason: 'BadRequest', message: expect.stringContaining('strict decoding error: unknown field "spec.bogus"') });
    const same = await call('PATCH', `${NP}/p`, { body: { spec: { podSelector: {} } }, type: 'application/strategic-merge-patch+json' });
    expect(same.body.metadata.resourceVersion).toBe(r.body.metadata.resourceVersion); // nothing changed: no new version
    const changed = await call('PATCH', `${NP}/p`, { body: [{ op: 'replace', path: '/spec/podSelector', value: { matchLabels: { app: 'x' } } }], type: 'application/json-patch+json' });
    expect(changed.body.metadata.generation).toBe(2);
    const dry = await call('DELETE', `${NP}/p?dryRun=All`);
    expect(dry.body).toMatchObject({ kind: 'Status', status: 'Success' });
    expect((await call('GET', `${NP}/p`)).status).toBe(200);
    expect((await call('DELETE', `${NP}/p`)).status).toBe(200);
    expect((await call('GET', `${NP}/p`)).status).toBe(404);
  });

  it('lists page with limit and continue; a continue token outlives no change (410 Expired)', async () => {
    for (const n of ['a', 'b', 'c']) await call('POST', PODS, { body: pod('default', n) });
    const p1 = (await call('GET', `${PODS}?limit=2`)).body;
    expect(p1.items.map((o: any) => o.metadata.name)).toEqual(['a', 'b']);
    const p2 = (await call('GET', `${PODS}?limit=2&continue=${encodeURIComponent(p1.metadata.continue)}`)).body;
    expect(p2.items.map((o: any) => o.metadata.name)).toEqual(['c']);
    expect(p2.metadata.continue).toBeUndefined();
    await call('DELETE', `${PODS}/c`);
    expect((await call('GET', `${PODS}?limit=2&continue=${encodeURIComponent(p1.metadata.continue)}`)).body).toMatchObject({ code: 410, reason: 'Expired' });
  });

  it('deleting a Namespace deletes what is in it', async () => {
    await call('POST', '/api/v1/namespaces', { body: { metadata: { name: 'tmp' } } });
    await call('POST', '/api/v1/namespaces/tmp/pods', { body: pod('tmp', 'x') });
    await call('DELETE', '/api/v1/namespaces/tmp');
    expect((await call('GET', '/api/v1/namespaces/tmp/pods/x')).status).toBe(404);
  });
});

describe('patches', () => {
  it('strategic merge: maps merge, keyed lists merge by key with the directives kubectl sends, atomic lists are replaced', () => {
    const cur = {
      metadata: { labels: { a: '1', b: '2' }, finalizers: ['x', 'y'] },
      spec: { containers: [{ name: 'app', image: 'v1', env: [{ name: 'A', value: '1' }] }, { name: 'side', image: 's' }], tolerations: [{ key: 't' }] },
    };
    const patched = strategicMergePatch(cur, {
      metadata: { labels: { b: null, c: '3' }, '$deleteFromPrimitiveList/finalizers': ['x'], finalizers: ['z'] },
      spec: {
        '$setElementOrder/containers': [{ name: 'side' }, { name: 'app' }],
        containers: [{ name: 'app', image: 'v2', env: [{ name: 'B', value: '2' }] }, { name: 'gone', $patch: 'delete' }],
        tolerations: [{ key: 'u' }],
      },
    }, STRATEGIES.pods);
    expect(patched).toEqual({
      metadata: { labels: { a: '1', c: '3' }, finalizers: ['y', 'z'] },
      spec: { containers: [{ name: 'side', image: 's' }, { name: 'app', image: 'v2', env: [{ name: 'A', value: '1' }, { name: 'B', value: '2' }] }], tolerations: [{ key: 'u' }] },
    });
    const np = { spec: { podSelector: {}, ingress: [{ from: [{ podSelector: {} }] }, { ports: [{ port: 80 }] }], policyTypes: ['Ingress'] } };
    expect(strategicMergePatch(np, { spec: { ingress: [{ ports: [{ port: 443 }] }] } }, STRATEGIES.networkpolicies)).toEqual({ spec: { podSelector: {}, ingress: [{ ports: [{ port: 443 }] }], policyTypes: ['Ingress'] } });
    expect(strategicMergePatch({ spec: { a: 1, b: 2 } }, { spec: { $patch: 'replace', c: 3 } }, {})).toEqual({ spec: { c: 3 } });
    expect(strategicMergePatch({ spec: { a: 1, b: 2 } }, { spec: { $retainKeys: ['b', 'c'], c: 3 } }, {})).toEqual({ spec: { b: 2, c: 3 } });
    expect(() => strategicMergePatch({ spec: { containers: [] } }, { spec: { containers: [{ image: 'x' }] } }, STRATEGIES.pods)).toThrow(/merge key "name"/);
  });

  it('JSON merge patch and JSON patch', () => {
    expect(mergePatch({ a: { b: 1, c: 2 }, l: [1] }, { a: { b: null }, l: [2] })).toEqual({ a: { c: 2 }, l: [2] });
    const doc = { metadata: { labels: { 'a/b': '1' } }, l: [1, 2] };
    expect(jsonPatch(doc, [
      { op: 'add', path: '/l/-', value: 3 }, { op: 'remove', path: '/l/0' }, { op: 'replace', path: '/metadata/labels/a~1b', value: '2' },
      { op: 'copy', from: '/l', path: '/m' }, { op: 'move', from: '/m', path: '/n' }, { op: 'test', path: '/n/1', value: 3 },
    ])).toEqual({ metadata: { labels: { 'a/b': '2' } }, l: [2, 3], n: [2, 3] });
    expect(doc.l).toEqual([1, 2]); // the original is untouched
    expect(() => jsonPatch(doc, [{ op: 'test', path: '/l/0', value: 9 }])).toThrow(/test failed/);
    expect(() => jsonPatch(doc, [{ op: 'remove', path: '/nope' }])).toThrow(/does not exist/);
  });
});

describe('as a lab process', () => {
  it('serves HTTPS with a certificate of its own and writes a kubeconfig that trusts it; plain HTTP on the socket', async () => {
    const kc = path.join(dir, 'kubeconfig');
    const { api: lab, server } = await startKubeApiServer({ listen: '127.0.0.1:0', socket: path.join(dir, 'lab.sock'), token: 't0k', kubeconfig: kc });
    try {
      const cfg = parseYaml(readFileSync(kc, 'utf8'));
      expect(cfg.clusters[0].cluster.server).toBe(server);
      expect(cfg.users[0].user.token).toBe('t0k');
      const ca = Buffer.from(cfg.clusters[0].cluster['certificate-authority-data'], 'base64');
      const u = new URL(server);
      const get = (token: string) => new Promise<number>((resolve, reject) => {
        https.get({ host: u.hostname, port: u.port, path: '/api/v1/namespaces', ca, headers: { Authorization: `Bearer ${token}` } }, (res) => { res.resume(); resolve(res.statusCode!); }).on('error', reject);
      });
      expect(await get('t0k')).toBe(200);
      expect(await get('wrong')).toBe(401);
    } finally {
      await lab.close();
    }
  });
});
