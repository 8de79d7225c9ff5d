// NetworkPolicy and node hosts: only the pod's own node is exempt from a pod's
// ingress policy (kubelet probes, hostNetwork pods there), as Kubernetes defines
// it; another node's host traffic is judged like any other source, so a
// default-deny keeps it out and an ipBlock naming its address lets it in.
// A node's host traffic to pods leaves through its TUN device, whose route
// (10.244.0.0/16 dev twill0 src 10.244.N.1) gives it the node's gateway address:
// that is the source the destination pod sees, checked by capture below.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { labDown, labPolicies, labUp } from '../../lab/lab.js';
import type { LabPod, LabState } from '../../lab/state.js';
import { sh, testLabName, underlayCapture } from '../helpers/lab.js';

const name = testLabName();
let s: LabState;
let dir = '';

const CLUSTER = `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: { namespace: default, name: web, labels: { app: web } }
  spec: { containers: [ { name: echo, image: agnhost } ] }
- apiVersion: v1
  kind: Pod
  metadata: { namespace: default, name: client, labels: { app: client } }
  spec: { containers: [ { name: echo, image: agnhost } ] }
`;
const DENY = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { namespace: default, name: web-deny-ingress }
spec:
  podSelector: { matchLabels: { app: web } }
  policyTypes: [Ingress]
`;
const ALLOW_NODE2 = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { namespace: default, name: web-allow-node2 }
spec:
  podSelector: { matchLabels: { app: web } }
  policyTypes: [Ingress]
  ingress:
  - from: [ { ipBlock: { cidr: 10.244.2.1/32 } } ]
`;

const node = (n: string) => s.nodes.find((x) => x.name === n)!;
const pod = (n: string): LabPod => s.pods.find((p) => p.name === n)!;
const gateway = (podCIDR: string) => podCIDR.replace(/\.0\/24$/, '.1');

function file(base: string, text: string): string {
  const f = path.join(dir, base);
  writeFileSync(f, text);
  return f;
}

/** One TCP echo round trip from `ns` to ip:8080 (the pod workload) within 2 s, from `localAddress` if given. */
function tcpFrom(ns: string, ip: string, localAddress?: string): { ok: boolean; out: string } {
  const r = sh(ns, [process.execPath, '-e', `
    const net = require('net');
    const s = net.connect({ port: 8080, host: '${ip}'${localAddress ? `, localAddress: '${localAddress}'` : ''} });
    s.on('connect', () => s.write('x'));
    s.on('data', () => { console.log('echo from ' + s.localAddress); process.exit(0); });
    s.on('error', (e) => { console.log(String(e)); process.exit(1); });
    setTimeout(() => { console.log('timeout'); process.exit(2); }, 2000);`]);
  return { ok: r.code === 0, out: r.out.trim() };
}

/** The source address the destination pod sees on the SYN of a connection from `fromNs`. */
async function sourceSeenBy(dst: LabPod, fromNs: string): Promise<{ src: string; ok: boolean }> {
  const cap = underlayCapture(dst.netns, 'eth0', 'tcp dst port 8080 and tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0', 1);
  try {
    await cap.started();
    const { ok } = tcpFrom(fromNs, dst.ip);
    await cap.stop(1500);
    const r = spawnSync('tcpdump', ['-n', '-r', cap.file], { encoding: 'utf8' });
    const m = r.stdout.match(/ IP (\d+\.\d+\.\d+\.\d+)\.\d+ > /);
    return { src: m?.[1] ?? `(nothing captured: ${r.stdout}${r.stderr})`, ok };
  } finally {
    cap.cleanup();
  }
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'twt-node-policy-'));
  s = await labUp({ name, nodes: 2, manifests: [file('cluster.yaml', CLUSTER)] }); // web on node1, client on node2
  expect(pod('web').node).toBe('node1');
  expect(pod('client').node).toBe('node2');
});

afterAll(async () => {
  await labDown(name);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('node hosts and a pod\'s ingress policy', () => {
  test('without a policy, both nodes\' hosts reach node1\'s pod; host traffic arrives from the node\'s gateway address', async () => {
    const web = pod('web');
    for (const n of ['node1', 'node2']) {
      const gw = gateway(node(n).podCIDR);
      // The route the host's socket takes to the pod network gives it the gateway address...
      expect(sh(node(n).netns, ['ip', 'route', 'get', web.ip]).out).toMatch(new RegExp(`dev twill0 src ${gw.replace(/\./g, '\\.')}`));
      // ...and that is the source the pod sees: no rewrite on the way.
      const seen = await sourceSeenBy(web, node(n).netns);
      console.log(`${n} host -> ${web.ip} (node1's pod): source seen by the pod ${seen.src}`);
      expect(seen.src).toBe(gw);
      expect(seen.ok, `${n} host did not reach web`).toBe(true);
    }
    expect(gateway(node('node2').podCIDR)).toBe('10.244.2.1');
    expect(tcpFrom(pod('client').netns, web.ip).ok).toBe(true);
  });

  test('default-deny ingress on node1\'s pod admits node1\'s own host, not node2\'s host nor node2\'s pod', async () => {
    const web = pod('web');
    await labPolicies(name, [file('deny.yaml', DENY)]);
    // The pod's own node: from its gateway address (the default) and from its underlay address.
    const own = tcpFrom(node('node1').netns, web.ip);
    expect(own.ok, own.out).toBe(true);
    expect(own.out).toBe(`echo from ${gateway(node('node1').podCIDR)}`);
    const ownUnderlay = tcpFrom(node('node1').netns, web.ip, node('node1').underlayIP);
    expect(ownUnderlay.ok, ownUnderlay.out).toBe(true);
    // Another node's host and a pod on it are judged like any source: denied.
    const other = tcpFrom(node('node2').netns, web.ip);
    expect(other.ok, `node2 host got in: ${other.out}`).toBe(false);
    const otherPod = tcpFrom(pod('client').netns, web.ip);
    expect(otherPod.ok, `node2's pod got in: ${otherPod.out}`).toBe(false);
  });

  test('an ipBlock for node2\'s gateway address lets node2\'s host in again, and only it', async () => {
    const web = pod('web');
    await labPolicies(name, [file('allow-node2.yaml', ALLOW_NODE2)]);
    const other = tcpFrom(node('node2').netns, web.ip);
    expect(other.ok, other.out).toBe(true);
    expect(other.out).toBe('echo from 10.244.2.1');
    expect(tcpFrom(pod('client').netns, web.ip).ok, 'node2\'s pod is not in the ipBlock').toBe(false);
    expect(tcpFrom(node('node1').netns, web.ip).ok).toBe(true);
  });

  test('deleting both policies lets everyone in again', async () => {
    const web = pod('web');
    await labPolicies(name, [file('deny.yaml', DENY), file('allow-node2.yaml', ALLOW_NODE2)], true);
    expect(tcpFrom(node('node2').netns, web.ip).ok).toBe(true);
    expect(tcpFrom(pod('client').netns, web.ip).ok).toBe(true);
  });
});
