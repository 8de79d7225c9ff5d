// A lab whose agents learn the cluster from a real etcd (Debian's etcd-server,
// on a control-plane host of the lab's underlay), in flannel's etcd layout: each
// agent leases its own subnet as flanneld does, a flanneld-style lease brings in
// a kernel-VXLAN flannel node, NetworkPolicies under /twill/ are enforced, and a
// restarted agent keeps its subnet.
import { afterAll, beforeAll, expect, test } from 'vitest';
import { labUp, labDown, startAgent } from '../../lab/lab.js';
import { saveState, type LabState } from '../../lab/state.js';
import { alive, stopPid } from '../../lab/proc.js';
import { etcdctl } from '../../lab/etcd-role.js';
import { reachability, allReachable, formatMatrix } from '../../lab/measure.js';
import { FLANNEL_PREFIX, MODEL_PREFIX, subnetKeyOf } from '../../agent/sources/etcd/source.js';
import { vtepMacFor } from '../../agent/addressing.js';
import { addFlannelNode } from '../helpers/flannel-node.js';
import { pingOk, probeTcpFrom, testLabName, until } from '../helpers/lab.js';

const name = testLabName();
let s: LabState, workloadPid = 0;

beforeAll(async () => {
  s = await labUp({ name, nodes: 2, podsPerNode: 1, etcd: true });
});
afterAll(async () => {
  if (workloadPid) await stopPid(workloadPid);
  await labDown(name);
});

const leases = (): Record<string, { PublicIP: string; BackendType: string; BackendData: { VNI: number; VtepMAC: string }; NodeName?: string }> => {
  const lines = etcdctl(s, 'get', '--prefix', `${FLANNEL_PREFIX}/subnets/`).trim().split('\n');
  const out: Record<string, never> = {};
  for (let i = 0; i + 1 < lines.length; i += 2) out[lines[i]] = JSON.parse(lines[i + 1]) as never;
  return out;
};

test('each agent leases a subnet in etcd as flanneld does, and the pods reach each other through what etcd says', async () => {
  const l = leases();
  expect(Object.keys(l).sort()).toEqual(s.nodes.map((n) => `${FLANNEL_PREFIX}/subnets/${subnetKeyOf(n.podCIDR)}`).sort());
  for (const n of s.nodes) {
    expect(l[`${FLANNEL_PREFIX}/subnets/${subnetKeyOf(n.podCIDR)}`]).toEqual({ PublicIP: n.underlayIP, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: vtepMacFor(n.name) }, NodeName: n.name });
  }
  expect(new Set(s.nodes.map((n) => n.podCIDR)).size).toBe(2);
  const m = await reachability(s.pods);
  expect(allReachable(m), formatMatrix(s.pods, m)).toBe(true);
});

test('a NetworkPolicy written under /twill/ is enforced, and deleting it lifts it', async () => {
  const [a, b] = s.pods;
  const key = `${MODEL_PREFIX}networkpolicies/default/deny-ingress`;
  etcdctl(s, 'put', key, JSON.stringify({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { namespace: 'default', name: 'deny-ingress' }, spec: { podSelector: {}, policyTypes: ['Ingress'] } }));
  expect(await until(async () => !(await probeTcpFrom(a.netns, b.ip)), 10_000), 'still allowed after 10 s').toBe(true);
  etcdctl(s, 'del', key);
  expect(await until(() => probeTcpFrom(a.netns, b.ip), 10_000), 'still denied 10 s after the delete').toBe(true);
});

test('a flannel node that joins by a flanneld lease (kernel VXLAN) is reached both ways', async () => {
  const fl = { name: 'node3', underlayIP: '172.30.0.13', podCIDR: '10.244.3.0/24', vtepMAC: '02:fa:00:00:03:00' };
  const kernelPod = await addFlannelNode(s, fl);
  workloadPid = kernelPod.workloadPid;
  // What flanneld writes (no NodeName: flannel's LeaseAttrs), under a lease of its own.
  const lease = etcdctl(s, 'lease', 'grant', '600').match(/lease ([0-9a-f]+) granted/)![1];
  etcdctl(s, 'put', `--lease=${lease}`, `${FLANNEL_PREFIX}/subnets/${subnetKeyOf(fl.podCIDR)}`, JSON.stringify({ PublicIP: fl.underlayIP, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: fl.vtepMAC } }));
  expect(await until(() => pingOk(s.pods[0].netns, kernelPod.ip), 10_000), 'the flannel pod never answered').toBe(true);
  const pods = [...s.pods, kernelPod];
  const m = await reachability(pods);
  expect(allReachable(m), formatMatrix(pods, m)).toBe(true);
});

test('a restarted agent keeps its subnet (its public IP holds the lease), and traffic resumes', async () => {
  const n = s.nodes[0], before = n.podCIDR;
  process.kill(n.pid, 'SIGKILL');
  while (alive(n.pid)) await new Promise((r) => setTimeout(r, 10));
  await startAgent(s, n);
  saveState(s);
  expect(n.podCIDR).toBe(before);
  expect(Object.keys(leases())).toHaveLength(3); // node1, node2, the flannel node: no second lease for node1
  expect(await until(() => pingOk(s.pods[0].netns, s.pods[1].ip), 5000)).toBe(true);
});
