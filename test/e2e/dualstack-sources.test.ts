// Dual-stack labs whose agents learn the cluster from the Kubernetes API (the
// lab's stand-in, driven as the kubelet and node IPAM would: spec.podCIDRs with
// both families, pods' status.podIPs) or from a real etcd (flannel's dual-stack
// leases): each node announces its IPv6 VTEP in flannel's format, and pods reach
// each other over IPv6 across the nodes.
import { afterAll, describe, expect, test } from 'vitest';
import { labUp, labDown } from '../../lab/lab.js';
import type { LabState } from '../../lab/state.js';
import { KubeClient } from '../../agent/sources/kube/client.js';
import { probeTcpFrom, pingOk, sh, testLabName, until } from '../helpers/lab.js';

const labs: string[] = [];
afterAll(async () => { for (const n of labs) await labDown(n); });

async function up(source: 'kubernetes' | 'etcd'): Promise<LabState> {
  const name = testLabName();
  labs.push(name);
  return labUp({ name, nodes: 2, podsPerNode: 1, ipFamily: 'dual', ...(source === 'kubernetes' ? { kubernetes: 'lab' as const } : { etcd: true }) });
}

async function crossNodeIPv6(s: LabState): Promise<void> {
  const [a, b] = s.pods;
  expect(a.ip6 && b.ip6).toBeTruthy();
  expect(await until(() => pingOk(a.netns, b.ip6!), 5000), `${a.name} -> ${b.ip6}`).toBe(true);
  expect(await probeTcpFrom(a.netns, b.ip6!)).toBe(true);
  expect(await probeTcpFrom(b.netns, a.ip6!)).toBe(true);
}

describe('dual-stack cluster sources', () => {
  test('Kubernetes: Nodes carry both pod CIDRs and flannel\'s IPv6 annotations, Pods both podIPs; IPv6 crosses the nodes', async () => {
    const s = await up('kubernetes');
    await crossNodeIPv6(s);
    const k = new KubeClient(s.kubernetes!);
    try {
      for (const n of s.nodes) {
        const node = await k.get(`/api/v1/nodes/${n.name}`) as { spec: { podCIDRs: string[] }; metadata: { annotations: Record<string, string> } };
        expect(node.spec.podCIDRs).toEqual([n.podCIDR, n.podCIDR6]);
        const a = node.metadata.annotations;
        expect(a['flannel.alpha.coreos.com/public-ipv6']).toBe(n.underlayIP6);
        expect(JSON.parse(a['flannel.alpha.coreos.com/backend-v6-data'])).toEqual({ VNI: 1, VtepMAC: expect.stringMatching(/^02:/) });
        expect(JSON.parse(a['flannel.alpha.coreos.com/backend-v6-data']).VtepMAC).not.toBe(JSON.parse(a['flannel.alpha.coreos.com/backend-data']).VtepMAC);
      }
      const p = await k.get(`/api/v1/namespaces/default/pods/${s.pods[0].name}`) as { status: { podIPs: { ip: string }[] } };
      expect(p.status.podIPs.map((x) => x.ip)).toEqual([s.pods[0].ip, s.pods[0].ip6]);
    } finally {
      k.close();
    }
  }, 120_000);

  test('etcd: leases keyed with both subnets, with PublicIPv6 and BackendV6Data as flanneld writes them; IPv6 crosses the nodes', async () => {
    const s = await up('etcd');
    await crossNodeIPv6(s);
    const keys = Buffer.from('/coreos.com/network/subnets/').toString('base64'), end = Buffer.from('/coreos.com/network/subnets0').toString('base64');
    const r = sh(s.nodes[0].netns, ['curl', '-s', '-X', 'POST', 'http://172.30.0.2:2379/v3/kv/range', '-d', JSON.stringify({ key: keys, range_end: end })]);
    const kvs = (JSON.parse(r.out) as { kvs: { key: string; value: string }[] }).kvs.map((x) => [Buffer.from(x.key, 'base64').toString(), JSON.parse(Buffer.from(x.value, 'base64').toString())] as const);
    expect(kvs).toHaveLength(2);
    for (const n of s.nodes) {
      const [key, v] = kvs.find(([, v]) => v.PublicIP === n.underlayIP)!;
      expect(key).toBe(`/coreos.com/network/subnets/${n.podCIDR.replace('/', '-')}&${n.podCIDR6!.replace('/', '-')}`);
      expect(v).toMatchObject({ PublicIPv6: n.underlayIP6, BackendType: 'vxlan', BackendV6Data: { VNI: 1 } });
    }
  }, 120_000);
});
