// An IPv6-only lab (`twill lab up --ip-family ipv6`, as kind's networking.ipFamily
// ipv6): pods have IPv6 addresses only, the nodes keep an IPv4 underlay address
// beside their IPv6 one (as kind's nodes do) but the pods' traffic crosses the
// IPv6 underlay only. Pod to pod on a node and across nodes, host to pod,
// Services and DNS through kube-proxy's ip6tables rules, and a node whose
// agent learns the cluster from the Kubernetes API.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { labUp, labDown } from '../../lab/lab.js';
import type { LabState } from '../../lab/state.js';
import { reachability, allReachable, formatMatrix, serviceReachability, allServicesReachable } from '../../lab/measure.js';
import { readSupervisorStatus } from '../../lab/supervisor.js';
import { connectedEcho, counters, pingOk, probeTcpFrom, sh, testLabName, until } from '../helpers/lab.js';

const name = testLabName(), kubeName = testLabName();
let s: LabState;

beforeAll(async () => {
  s = await labUp({ name, nodes: 2, podsPerNode: 2, ipFamily: 'ipv6' });
}, 120_000);

afterAll(async () => {
  if (process.env.KEEP_LAB) return;
  await labDown(name);
  await labDown(kubeName);
});

describe('IPv6-only lab', () => {
  test('pods have an IPv6 address and route only; nodes have no IPv4 pod range', () => {
    for (const p of s.pods) {
      expect(p.ip6, p.name).toBeTruthy();
      expect(p.ip).toBe(p.ip6);
      expect(sh(p.netns, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']).out.trim()).toBe('');
      expect(sh(p.netns, ['ip', '-4', 'route']).out.trim()).toBe('');
    }
    for (const n of s.nodes) {
      expect(n.podCIDR).toBe('');
      expect(sh(n.netns, ['ip', '-4', 'route', 'show', 'dev', 'twill0']).out.trim()).toBe('');
    }
  });

  test('every pod reaches every other over IPv6 (ICMPv6, TCP, UDP), on a node and across nodes', async () => {
    const m = await reachability(s.pods);
    expect(allReachable(m), formatMatrix(s.pods, m)).toBe(true);
  });

  test('a node reaches its own and the other node\'s pods', async () => {
    for (const n of s.nodes) for (const p of s.pods) {
      expect(pingOk(n.netns, p.ip6!), `${n.name} -> ${p.name}`).toBe(true);
      expect(await probeTcpFrom(n.netns, p.ip6!), `${n.name} -> ${p.name} TCP`).toBe(true);
    }
  });

  test('Services (IPv6 ClusterIPs) and DNS (kube-dns at fd00:10:96::a) work from every pod', async () => {
    expect(sh(s.pods[0].netns, ['cat', '/etc/resolv.conf']).out).toContain('nameserver fd00:10:96::a');
    const m = await serviceReachability(s.pods, 'fd00:10:96::64', 'echo.default.svc.cluster.local');
    expect(allServicesReachable(m), JSON.stringify(m)).toBe(true);
    const r = connectedEcho(s.pods[3].netns, 'fd00:10:96::64');
    expect(r.tcp).toMatchObject({ ok: true, from: 'fd00:10:96::64' });
    expect(r.udp).toMatchObject({ ok: true, from: 'fd00:10:96::64' });
  });

  test('Packet Too Big across nodes and anti-spoofing, as in a dual-stack lab', async () => {
    const a = s.pods.find((p) => p.name === 'node1-p1')!, remote = s.pods.find((p) => p.name === 'node2-p2')!;
    expect(sh(a.netns, ['ping', '-6', '-c', '2', '-i', '0.3', '-W', '1', '-M', 'do', '-s', '1392', remote.ip6!]).out).toMatch(/mtu[ =:]*1430/i);
    const forged = 'fd00:10:244:1::77';
    sh(a.netns, ['ip', '-6', 'addr', 'add', `${forged}/64`, 'dev', 'eth0', 'nodad']);
    try {
      const before = (await counters(s.nodes[0])).drop_spoofed;
      expect(pingOk(a.netns, remote.ip6!, ['-I', forged])).toBe(false);
      expect((await counters(s.nodes[0])).drop_spoofed).toBeGreaterThan(before);
    } finally {
      sh(a.netns, ['ip', '-6', 'addr', 'del', `${forged}/64`, 'dev', 'eth0']);
    }
  });

  test('kill -9 of node1\'s agent: traffic comes back with no command typed', async () => {
    const a = s.pods.find((p) => p.name === 'node1-p1')!, b = s.pods.find((p) => p.name === 'node2-p1')!;
    process.kill(readSupervisorStatus(s.nodes[0])!.agent!.pid, 'SIGKILL');
    expect(await until(() => pingOk(a.netns, b.ip6!, ['-W', '0.2']), 8000)).toBe(true);
    expect(await probeTcpFrom(b.netns, a.ip6!)).toBe(true);
  }, 30_000);

  test('with the Kubernetes API as the source: IPv6-only Nodes (spec.podCIDRs with one IPv6 range) reach each other', async () => {
    const k = await labUp({ name: kubeName, nodes: 2, podsPerNode: 1, ipFamily: 'ipv6', kubernetes: 'lab' });
    const [a, b] = k.pods;
    expect(await until(() => pingOk(a.netns, b.ip6!), 5000)).toBe(true);
    expect(await probeTcpFrom(b.netns, a.ip6!)).toBe(true);
  }, 120_000);
});
