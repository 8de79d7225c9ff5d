// The lab end to end: two nodes, two pods each, real agents and engines in
// network namespaces. Every forwarding path, ICMP fragmentation-needed,
// anti-spoofing, a packet count proving one underlay crossing per packet and
// no kernel forwarding, an agent kill -9 and restart, and a clean teardown.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { labUp, labDown, startAgent, LAB_METRICS_PORT } from '../../lab/lab.js';
import { request } from '../../agent/socket.js';
import { labDir, labPrefix, loadState, saveState, type LabState } from '../../lab/state.js';
import { reachability, allReachable, formatMatrix } from '../../lab/measure.js';
import { netnsList } from '../../lib/sh.js';
import { alive } from '../../lab/proc.js';
import { counters, sh, kernelForwarded, linkStats, pingOk, probeTcpFrom, testLabName, underlayCapture } from '../helpers/lab.js';

const name = testLabName();
let s: LabState;

beforeAll(async () => {
  s = await labUp({ name, nodes: 2, podsPerNode: 2 });
});
afterAll(async () => {
  await labDown(name);
});

const pod = (n: string) => s.pods.find((p) => p.name === n)!;
const node = (n: string) => s.nodes.find((x) => x.name === n)!;

describe('forwarding paths', () => {
  test('every pod reaches every other pod by ICMP, TCP and UDP (same node and across nodes)', async () => {
    const m = await reachability(s.pods);
    expect(allReachable(m), formatMatrix(s.pods, m)).toBe(true);
  });

  test('node host to its own pods and to pods on the other node, and back (through TUN)', async () => {
    for (const p of s.pods) expect(pingOk(node('node1').netns, p.ip), `node1 → ${p.name}`).toBe(true);
    const r = sh(node('node2').netns, [process.execPath, '-e', `
      const net = require('net'); const s = net.connect(8080, '${pod('node1-p1').ip}');
      s.on('connect', () => s.write('hi')); s.on('data', d => { console.log(String(d)); process.exit(0); });
      s.on('error', () => process.exit(1)); setTimeout(() => process.exit(2), 3000);`]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain('hi');
  });

  test('pod to its node, to its gateway, and to the other node', () => {
    const p = pod('node1-p1');
    expect(pingOk(p.netns, node('node1').underlayIP)).toBe(true);
    expect(pingOk(p.netns, '10.244.1.1')).toBe(true);
    expect(pingOk(p.netns, node('node2').underlayIP)).toBe(true);
  });

  test('TTL is decremented once per engine hop', () => {
    const r = sh(pod('node1-p1').netns, ['ping', '-c', '1', '-W', '1', pod('node2-p1').ip]);
    expect(r.out).toMatch(/ttl=62/); // two engines routed it, as two kernels would under flannel
  });
});

describe('outer UDP source ports', () => {
  test('each flow keeps one source port, and flows spread over several (as the kernel\'s vxlan hashes them)', async () => {
    // The kernel then splits UDP GSO sends before the underlay, so the capture sees every datagram.
    expect(sh(node('node1').netns, ['ethtool', '-K', 'eth0', 'tx-udp-segmentation', 'off']).code).toBe(0);
    const cap = underlayCapture(s.underlayNs, 'u-node1', 'udp dst port 8472', 64);
    try {
      await cap.started();
      // 16 flows: UDP from 16 source ports to node2-p1's echo server, two datagrams each.
      const r = sh(pod('node1-p1').netns, [process.execPath, '-e', `
        const dgram = require('dgram'); let left = 16;
        for (let i = 0; i < 16; i++) {
          const s = dgram.createSocket('udp4');
          s.bind(40000 + i, () => { s.send('a', 8081, '${pod('node2-p1').ip}'); s.send('b', 8081, '${pod('node2-p1').ip}', () => { s.close(); if (--left === 0) process.exit(0); }); });
        }`]);
      expect(r.code, r.out).toBe(0);
      await cap.stop(1500);
      const f = spawnSync('tshark', ['-r', cap.file, '-d', 'udp.port==8472,vxlan', '-T', 'fields', '-E', 'aggregator=;', '-e', 'udp.srcport', '-e', 'udp.dstport'], { encoding: 'utf8' });
      expect(f.status, f.stderr).toBe(0);
      const outerOf = new Map<string, Set<string>>();
      for (const line of f.stdout.trim().split('\n')) {
        const [src, dst] = line.split('\t').map((x) => x.split(';')); // [outer, inner]
        if (dst?.[1] !== '8081') continue;
        outerOf.set(src[1], (outerOf.get(src[1]) ?? new Set()).add(src[0]));
      }
      expect(outerOf.size).toBe(16);
      for (const [inner, outers] of outerOf) expect([...outers], `flow from ${inner}`).toHaveLength(1);
      const used = new Set([...outerOf.values()].map((o) => [...o][0]));
      expect(used.size).toBeGreaterThan(1);
      expect(used.has('8472')).toBe(false);
    } finally {
      cap.cleanup();
      sh(node('node1').netns, ['ethtool', '-K', 'eth0', 'tx-udp-segmentation', 'on']);
    }
  });
});

describe('MTU', () => {
  test('a DF packet over the pod MTU gets ICMP fragmentation-needed with the MTU', async () => {
    const p = pod('node1-p2');
    sh(p.netns, ['ip', 'link', 'set', 'eth0', 'mtu', '1500']); // let the pod send more than the path takes
    try {
      const before = (await counters(node('node1'))).icmp_frag_needed_sent;
      const r = sh(p.netns, ['ping', '-c', '1', '-W', '1', '-M', 'do', '-s', '1472', pod('node2-p2').ip]);
      expect(r.code).not.toBe(0);
      const after = (await counters(node('node1'))).icmp_frag_needed_sent;
      expect(after - before).toBeGreaterThanOrEqual(1);
      // The pod's kernel learned the path MTU from our ICMP error.
      const route = sh(p.netns, ['ip', 'route', 'get', pod('node2-p2').ip]).out;
      expect(route).toMatch(/mtu 1450/);
      expect(pingOk(p.netns, pod('node2-p2').ip, ['-M', 'do', '-s', '1422'])).toBe(true);
    } finally {
      sh(p.netns, ['ip', 'link', 'set', 'eth0', 'mtu', '1450']);
      sh(p.netns, ['ip', 'route', 'flush', 'cache']);
    }
  });
});

describe('anti-spoofing', () => {
  test('a frame whose source IP is not the pod\'s is dropped and counted', async () => {
    const p = pod('node1-p1');
    sh(p.netns, ['ip', 'addr', 'add', '10.244.1.200/32', 'dev', 'eth0']);
    try {
      const before = (await counters(node('node1'))).drop_spoofed;
      expect(pingOk(p.netns, pod('node2-p1').ip, ['-I', '10.244.1.200'])).toBe(false);
      expect((await counters(node('node1'))).drop_spoofed - before).toBeGreaterThanOrEqual(1);
      expect(pingOk(p.netns, pod('node2-p1').ip)).toBe(true); // its own address still works
    } finally {
      sh(p.netns, ['ip', 'addr', 'del', '10.244.1.200/32', 'dev', 'eth0']);
    }
  });

  test('a frame whose source MAC is not the pod\'s is dropped and counted', async () => {
    const p = pod('node1-p2');
    sh(p.netns, ['ip', 'link', 'set', 'eth0', 'address', '02:00:00:00:be:ef']);
    try {
      const before = (await counters(node('node1'))).drop_spoofed;
      expect(pingOk(p.netns, pod('node2-p2').ip)).toBe(false);
      expect((await counters(node('node1'))).drop_spoofed - before).toBeGreaterThanOrEqual(1);
    } finally {
      sh(p.netns, ['ip', 'link', 'set', 'eth0', 'address', p.mac]);
    }
    expect(pingOk(p.netns, pod('node2-p2').ip)).toBe(true);
  });
});

describe('the kernel stays out of the fast path', () => {
  test('each pod packet crosses the underlay once and no kernel forwards it', async () => {
    const a = pod('node1-p1'), b = pod('node2-p1');
    expect(pingOk(a.netns, b.ip)).toBe(true); // warm ARP
    const fwd1 = kernelForwarded(node('node1').netns), fwd2 = kernelForwarded(node('node2').netns);
    const ul1 = linkStats(node('node1').netns, 'eth0'), dst = linkStats(b.netns, 'eth0');
    const c1 = await counters(node('node1')), c2 = await counters(node('node2'));
    const N = 200;
    const r = sh(a.netns, ['ping', '-c', String(N), '-i', '0.002', '-q', b.ip]);
    expect(r.out).toMatch(new RegExp(`${N} packets transmitted, ${N} received`));
    expect(r.out).not.toMatch(/duplicates/);
    const d1 = await counters(node('node1')), d2 = await counters(node('node2'));
    // Each request left node1 as one VXLAN datagram and arrived at node2 as one...
    expect(d1.tx_vxlan - c1.tx_vxlan).toBe(N);
    expect(d2.rx_vxlan - c2.rx_vxlan).toBe(N);
    // ...the underlay carried no more than that (UDP GSO may put several datagrams in one skb, which veth counts once)...
    expect(linkStats(node('node1').netns, 'eth0').txPackets - ul1.txPackets).toBeLessThanOrEqual(N + 4);
    // ...the destination pod got each exactly once (ARP aside)...
    const got = linkStats(b.netns, 'eth0').rxPackets - dst.rxPackets;
    expect(got).toBeGreaterThanOrEqual(N);
    expect(got).toBeLessThanOrEqual(N + 2);
    // ...and no kernel forwarded any of it.
    expect(kernelForwarded(node('node1').netns) - fwd1).toBe(0);
    expect(kernelForwarded(node('node2').netns) - fwd2).toBe(0);
  });
});

describe('metrics', () => {
  const scrape = (path = '/metrics') => sh(node('node2').netns, ['curl', '-s', '-w', '\\n%{http_code}', `http://${node('node1').underlayIP}:${LAB_METRICS_PORT}${path}`]);
  const value = (text: string, series: string) => Number(text.split('\n').find((l) => l.startsWith(`${series} `))?.split(' ')[1]);

  // Scraped from node2, as a Prometheus elsewhere in the cluster would.
  test('each agent serves Prometheus text at /metrics on its node; the counters follow the traffic', async () => {
    const before = scrape();
    const [body, code] = [before.out.slice(0, before.out.lastIndexOf('\n')), before.out.slice(before.out.lastIndexOf('\n') + 1)];
    expect(code).toBe('200');
    expect(body).toContain('# TYPE twill_received_packets_total counter');
    expect(body).toContain('# TYPE twill_pods gauge');
    expect(body).toMatch(new RegExp(`^twill_info\\{node="node1",pod_cidr="${node('node1').podCIDR}",vtep_mac="${node('node1').vtepMAC}"\\} 1$`, 'm'));
    expect(value(body, 'twill_pods')).toBe(3); // node1-p1, node1-p2 and the lab's DNS pod (kube-system/coredns)
    expect(value(body, 'twill_cluster_nodes')).toBe(2);
    for (const line of body.trim().split('\n')) expect(line).toMatch(/^(# (HELP|TYPE) (twill|process|nodejs)_\w+ .+|(twill|process|nodejs)_\w+(\{\w+="[^"]*"(,\w+="[^"]*")*\})? \d+(\.\d+)?(e[-+]?\d+)?)$/);
    // the process's own figures (prom-client's names) and each worker's time
    expect(value(body, 'process_resident_memory_bytes')).toBeGreaterThan(10e6);
    expect(value(body, 'nodejs_heap_size_used_bytes')).toBeGreaterThan(1e6);
    expect(value(body, 'process_open_fds')).toBeGreaterThan(5);
    expect(body).toMatch(/^nodejs_eventloop_lag_seconds\{quantile="0\.99"\} /m);
    expect(body).toMatch(/^nodejs_gc_runs_total\{kind="\w+"\} \d+$/m);
    expect(body).toMatch(/^twill_worker_busy_seconds_total\{worker="0"\} /m);
    expect(body).toMatch(/^twill_worker_spin_seconds_total\{worker="0"\} /m);
    const rx0 = value(body, 'twill_received_packets_total{from="pod"}'), tx0 = value(body, 'twill_sent_packets_total{to="vxlan"}');
    expect(sh(pod('node1-p1').netns, ['ping', '-c', '20', '-i', '0.01', '-q', pod('node2-p1').ip]).code).toBe(0);
    const after = (await request(node('node1').socket, { op: 'metrics' })) as string; // the same text on the agent's socket
    expect(value(after, 'twill_received_packets_total{from="pod"}') - rx0).toBeGreaterThanOrEqual(20);
    expect(value(after, 'twill_sent_packets_total{to="vxlan"}') - tx0).toBeGreaterThanOrEqual(20);
    expect(scrape('/other').out.endsWith('404')).toBe(true);
    // the kubelet's probes
    expect(scrape('/healthz').out).toBe('ok\n\n200'); // the body, then curl's status line
    expect(scrape('/readyz').out).toBe('ok\n\n200');
  });
});

describe('agent restart', () => {
  // The node's supervisor restarts the agent by itself (test/e2e/supervision.test.ts);
  // startAgent finds the supervisor running and waits for the agent it restarted.
  test('after kill -9, the restarted agent answers and traffic between existing pods recovers within 2 s', async () => {
    const n = node('node1'), a = pod('node1-p1'), b = pod('node2-p1');
    expect(await probeTcpFrom(a.netns, b.ip)).toBe(true);
    const old = n.pid;
    process.kill(old, 'SIGKILL');
    while (alive(old)) await new Promise((r) => setTimeout(r, 10));
    const t0 = Date.now();
    await startAgent(s, n);
    saveState(s);
    expect(n.pid).not.toBe(old);
    let ok = false;
    while (!ok && Date.now() - t0 < 2000) ok = pingOk(a.netns, b.ip, ['-W', '0.2']);
    const took = Date.now() - t0;
    expect(ok, `traffic did not recover within 2 s`).toBe(true);
    expect(took).toBeLessThan(2000);
    expect(await probeTcpFrom(a.netns, b.ip)).toBe(true);
  });
});

describe('teardown', () => {
  test('lab down leaves no namespace, process or file behind; so does a failed up', async () => {
    const other = testLabName();
    const t = await labUp({ name: other, nodes: 1, podsPerNode: 1 });
    const pids = [...t.pids];
    await labDown(other);
    expect(netnsList().filter((n) => n.startsWith(labPrefix(other)))).toEqual([]);
    expect(existsSync(labDir(other))).toBe(false);
    for (const pid of pids) expect(alive(pid)).toBe(false);
    expect(loadState(other)).toBeUndefined();

    // An agent that cannot start (MTU below IPv4's minimum) fails `up`, which cleans up after itself.
    const bad = testLabName();
    await expect(labUp({ name: bad, nodes: 2, podsPerNode: 1, underlayMTU: 100 })).rejects.toThrow(/agent of node1 exited/);
    expect(netnsList().filter((n) => n.startsWith(labPrefix(bad)))).toEqual([]);
    expect(existsSync(labDir(bad))).toBe(false);
  });
});
