// A dual-stack lab (`twill lab up --ip-family dual`, as kind's networking.ipFamily
// dual): IPv6 pods beside IPv4 ones, carried over the nodes' IPv6 underlay as
// flannel's dual-stack vxlan backend carries them, with a kernel-VXLAN node set
// up as flannel sets up flannel.1 and flannel-v6.1 (default offloads on its
// veth underlay) in the same cluster. Every path for IPv6: pod to pod on a node
// and across nodes, host to pod, Services and DNS through kube-proxy's ip6tables
// rules, Packet Too Big, anti-spoofing, an agent restart, and bulk TCP.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { labUp, labDown, datastoreDir, labPolicies } from '../../lab/lab.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { commitChanges } from '../../lab/datastore.js';
import { readSupervisorStatus } from '../../lab/supervisor.js';
import { type LabState, type LabPod } from '../../lab/state.js';
import { stopPid } from '../../lab/proc.js';
import { addFlannelNode } from '../helpers/flannel-node.js';
import { reachability, allReachable, formatMatrix, tcpThroughput, serviceReachability, allServicesReachable } from '../../lab/measure.js';
import { connectedEcho, counters, pingOk, probeTcpFrom, sh, testLabName, until } from '../helpers/lab.js';

const name = testLabName();
let s: LabState;
let kernelPod: LabPod & { ip6?: string };
const flannelNode = {
  name: 'node3', underlayIP: '172.30.0.13', podCIDR: '10.244.3.0/24', vtepMAC: '02:fa:00:00:03:00',
  underlayIP6: 'fc00:f853:ccd:e793::13', podCIDR6: 'fd00:10:244:3::/64', vtepMAC6: '02:fa:00:00:03:06',
};
const v6 = (p: LabPod & { ip6?: string }): LabPod => ({ ...p, ip: p.ip6! });
const pod = (n: string) => s.pods.find((p) => p.name === n)!;

beforeAll(async () => {
  s = await labUp({ name, nodes: 2, podsPerNode: 2, ipFamily: 'dual' });
  kernelPod = await addFlannelNode(s, flannelNode);
  // The twill nodes learn the flannel node as they would from its Node object (spec.podCIDRs, backend-v6-data, public-ipv6).
  commitChanges(datastoreDir(s), [{ put: 'node', object: { ...flannelNode, backend: 'flannel-vxlan' } }]);
  await until(() => pingOk(s.pods[0].netns, kernelPod.ip6!), 5000);
}, 120_000);

afterAll(async () => {
  if (process.env.KEEP_LAB) return;
  if (kernelPod?.workloadPid) await stopPid(kernelPod.workloadPid);
  await labDown(name);
});

describe('dual-stack lab', () => {
  test('every pod has an IPv4 and an IPv6 address, from its node\'s ranges', () => {
    for (const p of s.pods) {
      const n = s.nodes.find((x) => x.name === p.node)!;
      expect(p.ip6, p.name).toMatch(new RegExp(`^${n.podCIDR6!.replace('::/64', '::')}[0-9a-f]+$`));
      const addrs = sh(p.netns, ['ip', '-6', '-o', 'addr', 'show', 'dev', 'eth0', 'scope', 'global']).out;
      expect(addrs).toContain(`${p.ip6}/64`);
      expect(sh(p.netns, ['ip', '-6', 'route', 'show', 'default']).out).toContain(`via ${n.podCIDR6!.replace('::/64', '::1')}`);
    }
  });

  test('IPv6: every pod reaches every other (ICMPv6, TCP, UDP), on a node, across nodes and to and from the flannel node, both ways', async () => {
    const pods = [...s.pods, kernelPod].map(v6);
    const m = await reachability(pods);
    expect(allReachable(m), formatMatrix(pods, m)).toBe(true);
  });

  test('IPv4 works beside it, the flannel node included', async () => {
    const pods = [...s.pods, kernelPod];
    const m = await reachability(pods);
    expect(allReachable(m), formatMatrix(pods, m)).toBe(true);
  });

  test('IPv6 host to pod: a node reaches its own pods and other nodes\' pods through its TUN device, and they answer', async () => {
    for (const n of s.nodes) {
      for (const p of s.pods) {
        expect(pingOk(n.netns, p.ip6!), `${n.name} -> ${p.name}`).toBe(true);
        expect(await probeTcpFrom(n.netns, p.ip6!), `${n.name} -> ${p.name} TCP`).toBe(true);
      }
    }
  });

  test('Services over IPv6 through kube-proxy\'s ip6tables rules: ClusterIP TCP and UDP answered from the ClusterIP, DNS answers AAAA', async () => {
    const all = [...s.pods];
    const m = await serviceReachability(all, 'fd00:10:96::64', 'echo.default.svc.cluster.local');
    expect(allServicesReachable(m), JSON.stringify(m)).toBe(true);
    const m4 = await serviceReachability(all, '10.96.0.100', 'echo.default.svc.cluster.local');
    expect(allServicesReachable(m4), JSON.stringify(m4)).toBe(true);
    const r = connectedEcho(pod('node1-p1').netns, 'fd00:10:96::64');
    expect(r.tcp).toMatchObject({ ok: true, from: 'fd00:10:96::64' });
    expect(r.udp).toMatchObject({ ok: true, from: 'fd00:10:96::64' });
    expect(sh(pod('node2-p1').netns, ['getent', 'ahostsv6', 'node1-p2.default.pod.cluster.local']).out).toContain(pod('node1-p2').ip6);
    expect((await counters(s.nodes[0])).translated_replies + (await counters(s.nodes[1])).translated_replies).toBeGreaterThan(0);
  });

  test('ipMasq over IPv6: a pod reaches addresses outside the pod range (another node, the underlay\'s gateway) masqueraded by its node\'s ip6tables rule', () => {
    const a = pod('node1-p1');
    const masq = () => Number(/(\d+)\s+\d+\s+MASQUERADE/.exec(sh(s.nodes[0].netns, ['ip6tables', '-t', 'nat', '-L', 'TWILL-POSTROUTING', '-v', '-n', '-x']).out)?.[1] ?? NaN);
    const before = masq();
    expect(pingOk(a.netns, s.nodes[1].underlayIP6!)).toBe(true);
    expect(pingOk(a.netns, 'fc00:f853:ccd:e793::1')).toBe(true);
    expect(masq()).toBeGreaterThan(before);
  });

  test('Packet Too Big: 1431 to 1450 bytes fit a local pod, and get ICMPv6 Packet Too Big (mtu 1430) across the IPv6 overlay', () => {
    const a = pod('node1-p1'), local = pod('node1-p2'), remote = pod('node2-p1');
    const before = sh(a.netns, ['ip', '-6', 'route', 'get', remote.ip6!]).out;
    expect(before).not.toContain('mtu 1430');
    expect(sh(a.netns, ['ping', '-6', '-c', '1', '-W', '1', '-M', 'do', '-s', '1392', local.ip6!]).code).toBe(0); // 1440 bytes
    const r = sh(a.netns, ['ping', '-6', '-c', '2', '-i', '0.3', '-W', '1', '-M', 'do', '-s', '1392', remote.ip6!]);
    expect(r.out).toMatch(/mtu[ =:]*1430/i);
    expect(sh(a.netns, ['ip', '-6', 'route', 'get', remote.ip6!]).out).toContain('mtu 1430'); // the pod learned it
    expect(sh(a.netns, ['ping', '-6', '-c', '1', '-W', '1', '-M', 'do', '-s', '1382', remote.ip6!]).code).toBe(0); // 1430 bytes fit
  });

  test('anti-spoofing: a pod sending from an IPv6 address that is not its own is dropped', async () => {
    const a = pod('node1-p1'), b = pod('node2-p1');
    const forged = s.nodes[0].podCIDR6!.replace('::/64', '::99');
    sh(a.netns, ['ip', '-6', 'addr', 'add', `${forged}/64`, 'dev', 'eth0', 'nodad']);
    try {
      const before = (await counters(s.nodes[0])).drop_spoofed;
      expect(pingOk(a.netns, b.ip6!, ['-I', forged])).toBe(false);
      expect((await counters(s.nodes[0])).drop_spoofed).toBeGreaterThan(before);
      expect(pingOk(a.netns, b.ip6!, ['-I', a.ip6!])).toBe(true); // its own address still works
    } finally {
      sh(a.netns, ['ip', '-6', 'addr', 'del', `${forged}/64`, 'dev', 'eth0']);
    }
  });

  test('NetworkPolicy over IPv6: an IPv6 ipBlock with an except admits one pod and not its neighbour; IPv4 to the isolated pod is denied; lifting it restores both', async () => {
    const a = pod('node1-p1'), b = pod('node1-p2'), target = pod('node2-p1');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'twt-pol6-')), file = path.join(dir, 'p.yaml');
    writeFileSync(file, `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-node1-v6, namespace: default}
spec:
  podSelector: {matchLabels: {}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - ipBlock: {cidr: ${s.nodes[0].podCIDR6}, except: [${b.ip6}/128]}
`.replace('matchLabels: {}', 'matchExpressions: [{key: app, operator: DoesNotExist}]'));
    try {
      await labPolicies(name, [file]);
      expect(await probeTcpFrom(a.netns, target.ip6!), 'allowed by the ipBlock').toBe(true);
      expect(await probeTcpFrom(b.netns, target.ip6!), 'in the except').toBe(false);
      expect(await probeTcpFrom(a.netns, target.ip), 'IPv4: no rule admits it').toBe(false);
      expect(pingOk(kernelPod.netns, target.ip6!), 'the flannel pod is outside the block').toBe(false);
      expect((await counters(s.nodes[1])).drop_policy_ingress).toBeGreaterThan(0);
      await labPolicies(name, [file], true);
      expect(await probeTcpFrom(b.netns, target.ip6!)).toBe(true);
      expect(await probeTcpFrom(a.netns, target.ip)).toBe(true);
    } finally {
      await labPolicies(name, [file], true).catch(() => undefined); // lifted whatever happened, for the tests after
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  test('kill -9 of node2\'s agent: IPv6 across nodes comes back with no command typed', async () => {
    const a = pod('node1-p1'), b = pod('node2-p1');
    const old = readSupervisorStatus(s.nodes[1])!.agent!.pid;
    process.kill(old, 'SIGKILL');
    const t0 = Date.now();
    let ok = false;
    while (!ok && Date.now() - t0 < 8000) ok = pingOk(a.netns, b.ip6!, ['-W', '0.2']);
    console.log(`dual-stack: IPv6 across nodes back ${Date.now() - t0} ms after kill -9 of node2's agent`);
    expect(ok).toBe(true);
    expect(await probeTcpFrom(b.netns, a.ip6!)).toBe(true);
    expect(await probeTcpFrom(a.netns, kernelPod.ip6!)).toBe(true);
  }, 30_000);

  test('bulk TCP over IPv6: across twill nodes beside IPv4, and with the flannel node both ways, over 1 Gbps (iperf3, 3 s each)', async () => {
    const a = pod('node1-p1'), b = pod('node2-p1');
    const six = (await tcpThroughput(v6(b), a.netns, 3, 1, 5501)).gbps;
    const four = (await tcpThroughput(b, a.netns, 3, 1, 5502)).gbps;
    const f2t = (await tcpThroughput(v6(a), kernelPod.netns, 3, 1, 5503)).gbps;
    const t2f = (await tcpThroughput(v6(kernelPod), a.netns, 3, 1, 5504)).gbps;
    console.log(`dual-stack iperf3 3 s: twill IPv6 ${six.toFixed(2)} Gbps, IPv4 ${four.toFixed(2)} Gbps (×${(six / four).toFixed(2)}); flannel pod -> twill pod IPv6 ${f2t.toFixed(2)}, twill -> flannel ${t2f.toFixed(2)} Gbps`);
    for (const [what, g] of [['twill IPv6', six], ['flannel -> twill IPv6', f2t], ['twill -> flannel IPv6', t2f]] as const) expect(g, what).toBeGreaterThanOrEqual(1);
  }, 90_000);
});
