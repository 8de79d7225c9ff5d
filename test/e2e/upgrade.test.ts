// Upgrading an agent costs no connection (agent/handover.ts): under an
// iperf3 stream across the nodes, a 10 ms ping, and a TCP connection through a
// ClusterIP (whose replies need the client node's translated-flow table), each
// node's agent is replaced by a new process, as a DaemonSet rolling update with
// maxSurge does (`twill lab upgrade`). The lab is dual-stack: an IPv6 ping and
// a connection through the Service's IPv6 ClusterIP ride along (the IPv6 flow
// tables are handed over too). Prints the figures.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { defineService, labDown, labUp, labUpgrade } from '../../lab/lab.js';
import type { LabState } from '../../lab/state.js';
import { testLabName } from '../helpers/lab.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function run(netns: string, args: string[]): { child: ChildProcess; out: Promise<{ code: number | null; text: string }> } {
  const child = spawn('ip', ['netns', 'exec', netns, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  child.stdout!.on('data', (d) => { text += d; });
  child.stderr!.on('data', (d) => { text += d; });
  return { child, out: new Promise((r) => child.once('exit', (code) => r({ code, text }))) };
}

// A TCP connection kept open, echoing a line every 50 ms; prints how many echoes came back and whether it broke.
const KEEPALIVE = (ip: string, ms: number) => `
  const c = require('net').connect(8080, '${ip}'); let sent = 0, got = 0, broke = '';
  c.on('connect', () => { const iv = setInterval(() => { c.write('x'); sent++; }, 50);
    setTimeout(() => { clearInterval(iv); setTimeout(() => { console.log(JSON.stringify({ sent, got, broke, from: c.remoteAddress })); process.exit(0); }, 500); }, ${ms}); });
  c.on('data', (d) => { got += d.length; }); c.on('error', (e) => { broke = e.code; }); c.on('close', () => { broke ||= 'closed'; });`;

describe('agent upgrade without an outage', () => {
  const name = testLabName();
  let s: LabState;
  const pod = (n: string) => s.pods.find((p) => p.name === n)!;

  beforeAll(async () => {
    s = await labUp({ name, nodes: 2, podsPerNode: 2, ipFamily: 'dual' });
    await defineService(s, { namespace: 'default', name: 'keep', clusterIP: '10.96.3.1', clusterIP6: 'fd00:10:96::301', ports: [{ name: 'tcp', protocol: 'TCP', port: 8080 }], endpoints: ['node2-p2'] });
  });
  afterAll(async () => {
    await labDown(name);
  });

  test('both nodes upgraded under iperf3, a 10 ms ping and a Service connection: no connection lost, at most 100 ms of pings each', async () => {
    const server = run(pod('node2-p1').netns, ['iperf3', '-s', '-1']);
    await sleep(300);
    const iperf = run(pod('node1-p1').netns, ['iperf3', '-c', pod('node2-p1').ip, '-t', '9', '-J']);
    const ping = run(pod('node1-p2').netns, ['ping', '-i', '0.01', '-c', '800', '-q', pod('node2-p2').ip]);
    const keep = run(pod('node1-p1').netns, [process.execPath, '-e', KEEPALIVE('10.96.3.1', 8000)]);
    const ping6 = run(pod('node1-p2').netns, ['ping', '-6', '-i', '0.01', '-c', '800', '-q', pod('node2-p1').ip6!]);
    const keep6 = run(pod('node1-p2').netns, [process.execPath, '-e', KEEPALIVE('fd00:10:96::301', 8000)]);
    await sleep(2000);
    const up2 = await labUpgrade(s, 'node2');
    await sleep(2500);
    const up1 = await labUpgrade(s, 'node1');
    const [i, p, k, p6, k6] = await Promise.all([iperf.out, ping.out, keep.out, ping6.out, keep6.out]);
    server.child.kill();
    const m = /(\d+) packets transmitted, (\d+) received/.exec(p.text), m6 = /(\d+) packets transmitted, (\d+) received/.exec(p6.text);
    const lost = m ? Number(m[1]) - Number(m[2]) : NaN, lost6 = m6 ? Number(m6[1]) - Number(m6[2]) : NaN;
    const j = JSON.parse(i.text) as { error?: string; end?: { sum_received?: { bits_per_second: number }; sum_sent?: { retransmits: number } } };
    const echoes = (t: string) => JSON.parse(t.trim().split('\n').pop()!) as { sent: number; got: number; broke: string; from: string };
    const kr = echoes(k.text), kr6 = echoes(k6.text);
    console.log(`upgrade: node2 taken over in ${up2.ms.toFixed(0)} ms, node1 in ${up1.ms.toFixed(0)} ms; ping every 10 ms: ${lost} lost of ${m?.[1]} (${lost * 10} ms over two upgrades); ` +
      `iperf3 9 s: ${((j.end?.sum_received?.bits_per_second ?? 0) / 1e9).toFixed(2)} Gbps, ${j.end?.sum_sent?.retransmits} retransmits${j.error ? `, error ${j.error}` : ''}; ` +
      `Service connection: ${kr.got} of ${kr.sent} echoes${kr.broke ? `, broke: ${kr.broke}` : ', unbroken'}; ` +
      `IPv6 ping: ${lost6} lost of ${m6?.[1]}; IPv6 Service connection: ${kr6.got} of ${kr6.sent} echoes${kr6.broke ? `, broke: ${kr6.broke}` : ', unbroken'}`);
    expect(j.error).toBeUndefined();
    expect(i.code).toBe(0);
    expect(kr.broke).toBe('');
    expect(kr.got).toBe(kr.sent);
    expect(kr.from).toBe('10.96.3.1');
    expect(lost).toBeLessThanOrEqual(20); // 100 ms per upgrade
    expect(kr6.broke).toBe('');
    expect(kr6.got).toBe(kr6.sent);
    expect(kr6.from).toBe('fd00:10:96::301');
    expect(lost6).toBeLessThanOrEqual(20);
  });
});
