// The Kubernetes cluster source against an API server speaking the real wire
// format (lab/kube-apiserver.ts, as test/helpers/fake-kube.ts): lists, watches resumed after the server
// ends them, a relist after 410 Gone, flannel's node annotations both ways, and
// authentication.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { FakeKube, nodeObject as node } from '../helpers/fake-kube.js';
import { KubeClient, KubeError, inClusterConfig } from '../../agent/sources/kube/client.js';
import { FLANNEL, KubeSource, announceNode } from '../../agent/sources/kube/source.js';
import { vtepMacFor } from '../../agent/addressing.js';
import type { ClusterView } from '../../agent/sources/file.js';

const TOKEN = 'sa-token-1';
let dir: string, api: FakeKube, client: KubeClient;
const server = () => `unix://${path.join(dir, 'api.sock')}`;

const pod = (ns: string, name: string, ip: string, labels: Record<string, string>) =>
  ({ metadata: { namespace: ns, name, labels }, spec: { containers: [{ name: 'c', ports: [{ containerPort: 8080, protocol: 'TCP', name: 'http' }] }] }, status: { podIP: ip, podIPs: [{ ip }] } });
const denyAll = (ns: string, name: string) => ({ metadata: { namespace: ns, name }, spec: { podSelector: {}, policyTypes: ['Ingress'] } });

beforeEach(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'twt-kube-'));
  api = new FakeKube(TOKEN);
  await api.listen(path.join(dir, 'api.sock'));
  client = new KubeClient({ server: server(), token: TOKEN });
});
afterEach(async () => {
  client.close();
  await api.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Watches until `ok(view)`; the view it stopped at. */
function until(src: KubeSource, ok: (v: ClusterView) => boolean, timeoutMs = 5000): { done: Promise<ClusterView>; stop: () => void } {
  let stop = () => {};
  const done = new Promise<ClusterView>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('the view never got there')), timeoutMs);
    stop = src.watch((v) => { if (ok(v)) { clearTimeout(t); resolve(v); } });
  });
  return { done, stop: () => stop() };
}

describe('Kubernetes source', () => {
  it('announces the node as flanneld does, and reads it back with the other kinds', async () => {
    api.put('nodes', node('n1', '10.244.1.0/24', '172.30.0.11'));
    api.put('nodes', node('n2', '10.244.2.0/24', '172.30.0.12', '0a:0b:0c:0d:0e:0f'));
    api.put('nodes', node('n3', '10.244.3.0/24', '172.30.0.13')); // no agent yet: no VTEP, not in the view
    api.put('namespaces', { metadata: { name: 'prod', labels: { team: 'a' } } });
    api.put('pods', pod('prod', 'web', '10.244.1.5', { app: 'web' }));
    api.put('pods', { ...pod('prod', 'hostnet', '172.30.0.11', {}), spec: { hostNetwork: true, containers: [] } });
    api.put('networkpolicies', denyAll('prod', 'deny'));

    const rec = await announceNode(client, 'n1', 1);
    expect(rec).toEqual({ name: 'n1', underlayIP: '172.30.0.11', podCIDR: '10.244.1.0/24', vtepMAC: vtepMacFor('n1'), backend: 'twill' });
    const ann = (api.get('nodes', 'n1')!.metadata as { annotations: Record<string, string> }).annotations;
    expect(JSON.parse(ann[FLANNEL.backendData])).toEqual({ VNI: 1, VtepMAC: vtepMacFor('n1') });
    expect([ann[FLANNEL.backendType], ann[FLANNEL.publicIP], ann[FLANNEL.subnetManager]]).toEqual(['vxlan', '172.30.0.11', 'true']);
    expect(vtepMacFor('n1')).toMatch(/^02(:[0-9a-f]{2}){5}$/);

    const v = await new KubeSource(client, '10.244.0.0/16').read();
    expect(v.clusterCIDR).toBe('10.244.0.0/16');
    expect(v.nodes.map((n) => [n.name, n.backend, n.vtepMAC])).toEqual([['n1', 'twill', vtepMacFor('n1')], ['n2', 'flannel-vxlan', '0a:0b:0c:0d:0e:0f']]);
    expect(v.model!.namespaces).toEqual([{ name: 'prod', labels: { team: 'a', 'kubernetes.io/metadata.name': 'prod' } }]);
    expect(v.model!.pods).toEqual([ // in key order, as the API server lists them
      { namespace: 'prod', name: 'hostnet', labels: {}, containerPorts: [] }, // host network: no pod IP for policy
      { namespace: 'prod', name: 'web', labels: { app: 'web' }, ip: '10.244.1.5', containerPorts: [{ containerPort: 8080, protocol: 'TCP', name: 'http' }] },
    ]);
    expect(v.model!.policies).toEqual([{ namespace: 'prod', name: 'deny', spec: { podSelector: {}, policyTypes: ['Ingress'] } }]);
  });

  it('watches: adds, changes and deletes arrive; a watch the server ends resumes without losing events', async () => {
    api.put('nodes', node('n1', '10.244.1.0/24', '172.30.0.11', '02:00:00:00:00:01'));
    const src = new KubeSource(client, '10.244.0.0/16');
    await src.read();
    const w = until(src, (v) => v.nodes.length === 2 && v.model!.pods.some((p) => p.labels.v === '2') && v.model!.policies.length === 0);
    try {
      api.put('nodes', node('n2', '10.244.2.0/24', '172.30.0.12', '02:00:00:00:00:02'));
      api.put('pods', pod('default', 'a', '10.244.1.7', { v: '1' }));
      api.put('networkpolicies', denyAll('default', 'p'));
      await new Promise((r) => setTimeout(r, 100));
      api.closeWatches(); // the server's watch timeout: the next events happen while no watch is open
      api.put('pods', pod('default', 'a', '10.244.1.7', { v: '2' }));
      api.remove('networkpolicies', 'default/p');
      const v = await w.done;
      expect(v.model!.pods).toHaveLength(1);
      expect(v.rev).toBeGreaterThan(1);
    } finally {
      w.stop();
    }
    const watches = api.requests.filter((r) => r === 'GET /api/v1/pods');
    expect(watches.length).toBeGreaterThanOrEqual(3); // the list, the first watch and the resumed one
  });

  it('a node that loses its VTEP annotations leaves the view; one whose version expired is relisted', async () => {
    api.put('nodes', node('n1', '10.244.1.0/24', '172.30.0.11', '02:00:00:00:00:01'));
    api.put('nodes', node('n2', '10.244.2.0/24', '172.30.0.12', '02:00:00:00:00:02'));
    api.put('pods', pod('default', 'gone-while-away', '10.244.1.9', {}));
    const src = new KubeSource(client, '10.244.0.0/16');
    expect((await src.read()).nodes).toHaveLength(2);
    const w = until(src, (v) => v.nodes.length === 1 && v.model!.pods.length === 1 && v.model!.pods[0].name === 'new');
    try {
      await new Promise((r) => setTimeout(r, 100));
      api.put('nodes', node('n2', '10.244.2.0/24', '172.30.0.12')); // its agent is gone and the annotations with it
      await new Promise((r) => setTimeout(r, 100));
      api.closeWatches();
      // While nobody watches: a pod goes, another comes, and the history is compacted away.
      api.remove('pods', 'default/gone-while-away');
      api.put('pods', pod('default', 'new', '10.244.1.10', {}));
      api.expireHistory();
      const v = await w.done;
      expect(v.nodes.map((n) => n.name)).toEqual(['n1']);
    } finally {
      w.stop();
    }
  });

  it('a wrong token is refused with the API\'s 401, named', async () => {
    const bad = new KubeClient({ server: server(), token: 'nope' });
    try {
      const err = await new KubeSource(bad, '10.244.0.0/16').read().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(KubeError);
      expect((err as KubeError).status).toBe(401);
      expect((err as Error).message).toMatch(/GET \/api\/v1\/\w+: HTTP 401/);
    } finally {
      bad.close();
    }
  });

  it('in a cluster: HTTPS verified against the service account CA, with its token file; a server the CA did not sign is refused', async () => {
    const sa = path.join(dir, 'serviceaccount');
    mkdirSync(sa);
    const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', path.join(sa, 'ca.crt'), '-days', '1', '-subj', '/CN=twill-test-ca');
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'srv.key', '-out', 'srv.csr', '-subj', '/CN=kubernetes');
    writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:kubernetes.default.svc\n');
    ssl('x509', '-req', '-in', 'srv.csr', '-CA', path.join(sa, 'ca.crt'), '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'srv.crt', '-days', '1', '-extfile', 'san.ext');
    writeFileSync(path.join(sa, 'token'), `${TOKEN}\n`);
    const tls = new FakeKube(TOKEN);
    const port = await tls.listenTls(readFileSync(path.join(dir, 'srv.key')), readFileSync(path.join(dir, 'srv.crt')));
    try {
      tls.put('nodes', node('n1', '10.244.1.0/24', '127.0.0.1', '02:00:00:00:00:01'));
      const cfg = inClusterConfig({ KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(port) }, sa)!;
      expect(cfg).toEqual({ server: `https://127.0.0.1:${port}`, tokenFile: path.join(sa, 'token'), caFile: path.join(sa, 'ca.crt') });
      const c = new KubeClient(cfg);
      try {
        expect((await new KubeSource(c, '10.244.0.0/16').read()).nodes.map((n) => n.name)).toEqual(['n1']);
      } finally {
        c.close();
      }
      ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'other.key', '-out', 'other.crt', '-days', '1', '-subj', '/CN=other-ca');
      const wrong = new KubeClient({ ...cfg, caFile: path.join(dir, 'other.crt') });
      try {
        await expect(wrong.get('/api/v1/nodes')).rejects.toThrow(/certificate/);
      } finally {
        wrong.close();
      }
      expect(inClusterConfig({}, sa)).toBeUndefined(); // outside a cluster
    } finally {
      await tls.close();
    }
  });
});

