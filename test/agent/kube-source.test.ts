// The Kubernetes cluster source against an API server speaking the real wire
// format (lab/kube-apiserver.ts, as test/helpers/fake-kube.ts): lists, watches resumed after the server
// ends them, a relist after 410 Gone, flannel's node annotations both ways (IPv4,
// and IPv6 as flannel's dual stack writes them), and authentication.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { FakeKube, nodeObject as node } from '../helpers/fake-kube.js';
import { KubeClient, KubeError, inClusterConfig } from '../../agent/sources/kube/client.js';
import { FLANNEL, KubeSource, announceNode, nodeAddressing } from '../../agent/sources/kube/source.js';
import { gatewayOf6, vtepMac6For, vtepMacFor } from '../../agent/addressing.js';
import type { ClusterView } from '../../agent/sources/file.js';
import { LabKube } from '../../lab/kube-role.js';
import { labNetworkConfig } from '../../lab/etcd-role.js';

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


/** A Node as kind's dual-stack kubelet and node IPAM make it (no annotations yet). */
const dualNode = (name: string, i: number) => ({
  metadata: { name, annotations: {} as Record<string, string> },
  spec: { podCIDR: `10.244.${i}.0/24`, podCIDRs: [`10.244.${i}.0/24`, `fd00:10:244:${i.toString(16)}::/64`] },
  status: { addresses: [{ type: 'InternalIP', address: `172.18.0.${10 + i}` }, { type: 'InternalIP', address: `fc00:f853:ccd:e793::${10 + i}` }, { type: 'Hostname', address: name }] },
});
/** The annotations flanneld's dual-stack vxlan backend writes on its Node (kube subnet manager's AcquireLease). */
const flannelDual = (ip: string, ip6: string, mac: string, mac6: string): Record<string, string> => ({
  [FLANNEL.backendType]: 'vxlan',
  [FLANNEL.backendData]: `{"VNI":1,"VtepMAC":"${mac}"}`,
  [FLANNEL.backendV6Data]: `{"VNI":1,"VtepMAC":"${mac6}"}`,
  [FLANNEL.publicIP]: ip,
  [FLANNEL.publicIPv6]: ip6,
  [FLANNEL.subnetManager]: 'true',
});
/**
 * What a flannel node makes of another Node, as flannel's kube subnet manager reads
 * it with EnableIPv6 (handleAddLeaseEvent, nodeToLease): kube-subnet-manager "true",
 * public-ipv6 parsed as an IPv6 address, backend-v6-data's VtepMAC, the IPv6 one of spec.podCIDRs.
 */
function flannelLease6(o: Record<string, unknown>): { subnet6: string; publicIPv6: string; vtepMAC6: string } | undefined {
  const ann = (o.metadata as { annotations?: Record<string, string> }).annotations ?? {};
  if (ann[FLANNEL.subnetManager] !== 'true' || ann[FLANNEL.backendType] !== 'vxlan') return undefined;
  const pub6 = ann[FLANNEL.publicIPv6];
  if (!pub6 || !pub6.includes(':')) return undefined;
  const data = JSON.parse(ann[FLANNEL.backendV6Data] ?? 'null') as { VNI?: number; VtepMAC?: string } | null;
  const subnet6 = ((o.spec as { podCIDRs?: string[] }).podCIDRs ?? []).find((c) => c.includes(':'));
  if (!data?.VtepMAC || data.VNI !== 1 || !subnet6) return undefined;
  return { subnet6, publicIPv6: pub6, vtepMAC6: data.VtepMAC };
}

describe('Kubernetes source, dual stack (flannel\'s IPv6 annotations)', () => {
  const annotations = (n: string) => (api.get('nodes', n)!.metadata as { annotations: Record<string, string> }).annotations;

  it('a twill node and a flannel node learn each other\'s IPv6 VTEPs', async () => {
    api.put('nodes', dualNode('t1', 1)); // twill's
    api.put('nodes', { ...dualNode('f2', 2), metadata: { name: 'f2', annotations: flannelDual('172.18.0.12', 'fc00:f853:ccd:e793::12', '0a:00:00:00:00:02', '0a:00:00:00:06:02') } });

    // twill announces both families, in flannel's format
    const rec = await announceNode(client, 't1', 1, '172.18.0.11', 'fc00:f853:ccd:e793::11');
    expect(rec).toEqual({ name: 't1', underlayIP: '172.18.0.11', podCIDR: '10.244.1.0/24', vtepMAC: vtepMacFor('t1'), backend: 'twill', podCIDR6: 'fd00:10:244:1::/64', underlayIP6: 'fc00:f853:ccd:e793::11', vtepMAC6: vtepMac6For('t1') });
    const ann = annotations('t1');
    expect(ann[FLANNEL.backendV6Data]).toBe(`{"VNI":1,"VtepMAC":"${vtepMac6For('t1')}"}`); // byte for byte what flanneld's json.Marshal writes
    expect(ann[FLANNEL.publicIPv6]).toBe('fc00:f853:ccd:e793::11');
    expect(ann[FLANNEL.backendData]).toBe(`{"VNI":1,"VtepMAC":"${vtepMacFor('t1')}"}`);
    expect(vtepMac6For('t1')).toMatch(/^02(:[0-9a-f]{2}){5}$/);
    expect(vtepMac6For('t1')).not.toBe(vtepMacFor('t1'));
    expect(gatewayOf6(rec.podCIDR6!)).toBe('fd00:10:244:1::1');

    // the flannel node reads twill's Node as nodeToLease does
    expect(flannelLease6(api.get('nodes', 't1')!)).toEqual({ subnet6: 'fd00:10:244:1::/64', publicIPv6: 'fc00:f853:ccd:e793::11', vtepMAC6: vtepMac6For('t1') });

    // and twill reads the flannel node's
    const src = new KubeSource(client, { clusterCIDR: '10.244.0.0/16', clusterCIDR6: 'fd00:10:244::/56' });
    const v = await src.read();
    expect(v.clusterCIDR6).toBe('fd00:10:244::/56');
    expect(v.nodes).toEqual([ // in name order, as the API server lists them
      { name: 'f2', underlayIP: '172.18.0.12', podCIDR: '10.244.2.0/24', vtepMAC: '0a:00:00:00:00:02', backend: 'flannel-vxlan', podCIDR6: 'fd00:10:244:2::/64', underlayIP6: 'fc00:f853:ccd:e793::12', vtepMAC6: '0a:00:00:00:06:02' },
      rec,
    ]);

    // a flannel node that joins later, watched: its IPv6 arrives with it
    const w = until(src, (x) => x.nodes.some((n) => n.name === 'f3' && n.vtepMAC6 === '0a:00:00:00:06:03'));
    try {
      api.put('nodes', { ...dualNode('f3', 3), metadata: { name: 'f3', annotations: flannelDual('172.18.0.13', 'fc00:f853:ccd:e793::13', '0a:00:00:00:00:03', '0a:00:00:00:06:03') } });
      const after = await w.done;
      expect(after.nodes.find((n) => n.name === 'f3')).toMatchObject({ podCIDR6: 'fd00:10:244:3::/64', underlayIP6: 'fc00:f853:ccd:e793::13' });
      expect(after.clusterCIDR6).toBe('fd00:10:244::/56');
    } finally {
      w.stop();
    }
  });

  it('a node with only IPv4 works as today: no IPv6 annotations, no IPv6 fields, and a view without clusterCIDR6', async () => {
    api.put('nodes', node('v4', '10.244.4.0/24', '172.18.0.14'));
    const rec = await announceNode(client, 'v4', 1, '172.18.0.14', 'fc00:f853:ccd:e793::14'); // an IPv6 underlay, but no IPv6 pod CIDR
    expect(rec).toEqual({ name: 'v4', underlayIP: '172.18.0.14', podCIDR: '10.244.4.0/24', vtepMAC: vtepMacFor('v4'), backend: 'twill' });
    expect(Object.keys(annotations('v4')).filter((k) => k.includes('v6') || k.includes('ipv6'))).toEqual([]);
    // a dual-stack Node whose agent has no IPv6 underlay address announces IPv4 only, and takes back IPv6 it announced before
    api.put('nodes', dualNode('d5', 5));
    expect((await announceNode(client, 'd5', 1, '172.18.0.15', 'fc00:f853:ccd:e793::15')).vtepMAC6).toBe(vtepMac6For('d5'));
    const back = await announceNode(client, 'd5', 1, '172.18.0.15');
    expect(back.podCIDR6).toBeUndefined();
    expect(annotations('d5')[FLANNEL.backendV6Data]).toBeUndefined();
    expect(annotations('d5')[FLANNEL.publicIPv6]).toBeUndefined();
    // a flannel node without IPv6 (EnableIPv6 off) beside them
    api.put('nodes', node('f6', '10.244.6.0/24', '172.18.0.16', '0a:00:00:00:00:06'));
    const v = await new KubeSource(client, '10.244.0.0/16').read();
    expect('clusterCIDR6' in v).toBe(false);
    expect(v.nodes.map((n) => [n.name, n.podCIDR6])).toEqual([['d5', undefined], ['f6', undefined], ['v4', undefined]]);
    // a flannel node announcing IPv6 without public-ipv6 falls back to its IPv6 InternalIP, as public-ip to the IPv4 one
    api.put('nodes', { ...dualNode('f7', 7), metadata: { name: 'f7', annotations: { ...flannelDual('172.18.0.17', '', '0a:00:00:00:00:07', '0a:00:00:00:06:07'), [FLANNEL.publicIPv6]: undefined as unknown as string } } });
    expect((await new KubeSource(client, '10.244.0.0/16').read()).nodes.find((n) => n.name === 'f7')).toMatchObject({ underlayIP6: 'fc00:f853:ccd:e793::17', vtepMAC6: '0a:00:00:00:06:07' });
  });

  it('the lab writes a dual-stack Node and Pod as the kubelet and node IPAM would, and its agent announces both families on it', async () => {
    const lab = new LabKube({ server: server(), token: TOKEN });
    try {
      await lab.node({ name: 'node1', underlayIP: '172.30.0.11', podCIDR: '10.244.1.0/24', underlayIP6: 'fc00:f853:ccd:e793::11', podCIDR6: 'fd00:10:244:1::/64' });
      await lab.node({ name: 'node2', underlayIP: '172.30.0.12', podCIDR: '10.244.2.0/24' }); // IPv4 only, as before
      await lab.namespace('default');
      await lab.pod('default', 'p', 'node1', '10.244.1.2', { app: 'a' }, [], '172.30.0.11', { ip6: 'fd00:10:244:1::2', hostIP6: 'fc00:f853:ccd:e793::11' });
    } finally {
      lab.close();
    }
    const n1 = api.get('nodes', 'node1')!;
    expect(n1.spec).toEqual({ podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'] });
    expect((n1.status as { addresses: unknown[] }).addresses).toEqual([{ type: 'InternalIP', address: '172.30.0.11' }, { type: 'InternalIP', address: 'fc00:f853:ccd:e793::11' }, { type: 'Hostname', address: 'node1' }]);
    expect(api.get('nodes', 'node2')!.spec).toEqual({ podCIDR: '10.244.2.0/24', podCIDRs: ['10.244.2.0/24'] });
    const st = api.get('pods', 'default/p')!.status as Record<string, unknown>;
    expect([st.podIP, st.podIPs, st.hostIPs]).toEqual(['10.244.1.2', [{ ip: '10.244.1.2' }, { ip: 'fd00:10:244:1::2' }], [{ ip: '172.30.0.11' }, { ip: 'fc00:f853:ccd:e793::11' }]]);
    // the node's agent announces its IPv6 VTEP on it
    expect(await announceNode(client, 'node1', 1, '172.30.0.11', 'fc00:f853:ccd:e793::11')).toMatchObject({ podCIDR6: 'fd00:10:244:1::/64', underlayIP6: 'fc00:f853:ccd:e793::11', vtepMAC6: vtepMac6For('node1') });
    expect(labNetworkConfig('10.244.0.0/16', 'fd00:10:244::/56')).toEqual({ Network: '10.244.0.0/16', SubnetLen: 24, EnableIPv6: true, IPv6Network: 'fd00:10:244::/56', IPv6SubnetLen: 64, Backend: { Type: 'vxlan' } });
    expect(labNetworkConfig('10.244.0.0/16')).toEqual({ Network: '10.244.0.0/16', SubnetLen: 24, Backend: { Type: 'vxlan' } });
  });

  it('a node that announced IPv4 only and then IPv6 too is noticed by a dual-stack flanneld, which drops updates that change one family only', async () => {
    /** flanneld's handleUpdateLeaseEvent with EnableIPv4 and EnableIPv6: whether it acts on this update. */
    const flannelActs = (o: Record<string, unknown>, n: Record<string, unknown>): boolean => {
      const a = (o.metadata as { annotations?: Record<string, string> }).annotations ?? {}, b = (n.metadata as { annotations?: Record<string, string> }).annotations ?? {};
      if (b[FLANNEL.subnetManager] !== 'true') return false;
      let changed = true;
      if (a[FLANNEL.backendData] === b[FLANNEL.backendData] && a[FLANNEL.backendType] === b[FLANNEL.backendType] && a[FLANNEL.publicIP] === b[FLANNEL.publicIP]) changed = false;
      if (a[FLANNEL.backendV6Data] === b[FLANNEL.backendV6Data] && a[FLANNEL.backendType] === b[FLANNEL.backendType] && a[FLANNEL.publicIPv6] === b[FLANNEL.publicIPv6]) changed = false;
      return changed;
    };
    api.put('nodes', dualNode('u1', 1));
    await announceNode(client, 'u1', 1, '172.18.0.11'); // no IPv6 underlay yet
    const v4only = api.get('nodes', 'u1')!;
    expect(flannelLease6(v4only)).toBeUndefined();
    const list = await client.get<{ metadata: { resourceVersion: string } }>('/api/v1/nodes');
    const seen: Record<string, unknown>[] = [];
    const stop = client.watch('/api/v1/nodes', list.metadata.resourceVersion, (e) => { if (e.type === 'MODIFIED') seen.push(e.object); }, () => {});
    try {
      const rec = await announceNode(client, 'u1', 1, '172.18.0.11', 'fc00:f853:ccd:e793::11');
      expect(rec.vtepMAC6).toBe(vtepMac6For('u1'));
      const final = api.get('nodes', 'u1')!;
      expect(flannelActs(v4only, final)).toBe(false); // in one patch, flanneld would never learn the IPv6 half
      for (const deadline = Date.now() + 5000; seen.length < 2 && Date.now() < deadline;) await new Promise((r) => setTimeout(r, 20));
      expect(seen).toHaveLength(2); // the IPv4 backend data respelt, then the announcement
      expect(flannelActs(v4only, seen[0])).toBe(false); // dropped: only the IPv4 triple changed, and to the same VTEP
      expect(JSON.parse((seen[0].metadata as { annotations: Record<string, string> }).annotations[FLANNEL.backendData])).toEqual({ VNI: 1, VtepMAC: vtepMacFor('u1') });
      expect(flannelActs(seen[0], seen[1])).toBe(true); // both triples changed: flanneld makes a lease of it
      expect(flannelLease6(seen[1])).toEqual({ subnet6: 'fd00:10:244:1::/64', publicIPv6: 'fc00:f853:ccd:e793::11', vtepMAC6: vtepMac6For('u1') });
      expect((seen[1].metadata as { annotations: Record<string, string> }).annotations[FLANNEL.backendData]).toBe(`{"VNI":1,"VtepMAC":"${vtepMacFor('u1')}"}`);
      // announcing the same again changes nothing
      await announceNode(client, 'u1', 1, '172.18.0.11', 'fc00:f853:ccd:e793::11');
      expect(api.get('nodes', 'u1')!.metadata).toEqual(final.metadata);
    } finally {
      stop();
    }
  });

  it('public-ipv6-overwrite is announced as public-ipv6; node-public-ipv6 is read back as --public-ipv6; a malformed one is refused by name', async () => {
    api.put('nodes', { ...dualNode('o1', 1), metadata: { name: 'o1', annotations: { [FLANNEL.publicIPv6Overwrite]: '2001:db8::99', [FLANNEL.nodePublicIPv6]: '2001:db8::98' } } });
    expect(await nodeAddressing(client, 'o1')).toEqual({ internalIP: '172.18.0.11', internalIP6: 'fc00:f853:ccd:e793::11', nodePublicIPv6: '2001:db8::98', overwrite6: '2001:db8::99' });
    const rec = await announceNode(client, 'o1', 1, '172.18.0.11', 'fc00:f853:ccd:e793::11');
    expect(rec).toMatchObject({ underlayIP6: '2001:db8::99', podCIDR6: 'fd00:10:244:1::/64' });
    expect(annotations('o1')[FLANNEL.publicIPv6]).toBe('2001:db8::99');
    api.put('nodes', { ...dualNode('o2', 2), metadata: { name: 'o2', annotations: { [FLANNEL.nodePublicIPv6]: '10.1.2.3' } } });
    await expect(nodeAddressing(client, 'o2')).rejects.toThrow(/node o2: annotation flannel\.alpha\.coreos\.com\/node-public-ipv6 is "10\.1\.2\.3", not an IPv6 address/);
  });
});
