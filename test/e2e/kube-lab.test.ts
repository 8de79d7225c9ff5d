// A lab whose agents learn the cluster from a Kubernetes API server (the
// stand-in of lab/kube-apiserver.ts, on a unix socket) instead of the
// datastore directory: they announce their VTEPs on their Node objects as
// flanneld does and find each other there; NetworkPolicies created through the
// API are enforced; and a flannel node (the kernel's VXLAN, set up as flannel
// sets up flannel.1) that joins by the annotations flanneld writes is reached
// both ways.
import { afterAll, beforeAll, expect, test } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { labUp, labDown } from '../../lab/lab.js';
import { type LabState } from '../../lab/state.js';
import { stopPid } from '../../lab/proc.js';
import { reachability, allReachable, formatMatrix } from '../../lab/measure.js';
import { addFlannelNode } from '../helpers/flannel-node.js';
import { FLANNEL } from '../../agent/sources/kube/source.js';
import { vtepMacFor } from '../../agent/addressing.js';
import { FakeKube, nodeObject } from '../helpers/fake-kube.js';
import { pingOk, probeTcpFrom, testLabName, until } from '../helpers/lab.js';

const name = testLabName();
const TOKEN = 'lab-token';
let s: LabState, api: FakeKube, dir: string, workloadPid = 0;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'twt-kubelab-'));
  api = new FakeKube(TOKEN);
  await api.listen(path.join(dir, 'api.sock'));
  s = await labUp({ name, nodes: 2, podsPerNode: 1, kubernetes: { server: `unix://${path.join(dir, 'api.sock')}`, token: TOKEN } });
});

afterAll(async () => {
  if (workloadPid) await stopPid(workloadPid);
  await labDown(name);
  await api.close();
  rmSync(dir, { recursive: true, force: true });
});


test('each agent announces its VTEP on its Node as flanneld does, and the pods reach each other through what the API says', async () => {
  for (const n of s.nodes) {
    const ann = (api.get('nodes', n.name)!.metadata as { annotations: Record<string, string> }).annotations;
    expect(ann[FLANNEL.backendType]).toBe('vxlan');
    expect(JSON.parse(ann[FLANNEL.backendData])).toEqual({ VNI: 1, VtepMAC: vtepMacFor(n.name) });
    expect(ann[FLANNEL.publicIP]).toBe(n.underlayIP);
  }
  expect(api.get('pods', 'default/node1-p1')!.status).toMatchObject({ podIP: s.pods[0].ip });
  const m = await reachability(s.pods);
  expect(allReachable(m), formatMatrix(s.pods, m)).toBe(true);
});

test('a NetworkPolicy created through the API is enforced, and deleting it lifts it', async () => {
  const [a, b] = s.pods;
  api.put('networkpolicies', { metadata: { namespace: 'default', name: 'deny-ingress' }, spec: { podSelector: {}, policyTypes: ['Ingress'] } });
  expect(await until(async () => !(await probeTcpFrom(a.netns, b.ip)), 10_000), 'still allowed after 10 s').toBe(true);
  api.remove('networkpolicies', 'default/deny-ingress');
  expect(await until(() => probeTcpFrom(a.netns, b.ip), 10_000), 'still denied 10 s after the delete').toBe(true);
});

test('a flannel node that joins through the API (kernel VXLAN, annotations as flanneld writes them) is reached both ways', async () => {
  const fl = { name: 'node3', underlayIP: '172.30.0.13', podCIDR: '10.244.3.0/24', vtepMAC: '02:fa:00:00:03:00' };
  const kernelPod = await addFlannelNode(s, fl);
  workloadPid = kernelPod.workloadPid;
  const ip = kernelPod.ip;
  api.put('nodes', nodeObject('node3', fl.podCIDR, fl.underlayIP, fl.vtepMAC)); // as flanneld announces itself
  expect(await until(() => pingOk(s.pods[0].netns, ip), 10_000), 'the flannel pod never answered').toBe(true);
  const pods = [...s.pods, kernelPod];
  const m = await reachability(pods);
  expect(allReachable(m), formatMatrix(pods, m)).toBe(true);
});
