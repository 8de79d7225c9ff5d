// The overlay's trust checks end to end (issue 15), in a lab of two nodes with
// two pods each. Hand-made VXLAN (test/helpers/overlay.ts, written with the
// dataplane's packet codecs) is sent as a hostile tenant would: from a pod to a
// node's VXLAN port, from a host on the underlay that is not a node, and from a
// node with inner sources it does not own or inner destinations the overlay
// never carries. Each test captures in the target (a pod's eth0, a node's TUN)
// and reads the engine counter that counts the drop. Every capture also sees a
// control packet sent the legitimate way afterwards, so "nothing arrived" means
// the capture was live and its filter right. One forged packet is sent under a
// NetworkPolicy the same packet sent directly fails; oversized DF packets from
// the overlay get ICMP fragmentation-needed back through the overlay.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { labDown, labPolicies, labUp, LAB_METRICS_PORT } from '../../lab/lab.js';
import type { LabPod, LabState } from '../../lab/state.js';
import { ipn, netnsDel, netnsList } from '../../lib/sh.js';
import { request } from '../../agent/socket.js';
import { counters, sh, testLabName } from '../helpers/lab.js';
import { packetCapture, sendUdp, sendVxlan, until, type InnerUdp } from '../helpers/overlay.js';

const name = testLabName();
let s: LabState;
let dir = '';

// Four pods with a label naming each, so a policy can pick one; the lab puts
// manifest pods on the nodes in turn: node1, node2, node1, node2.
const POD_NAMES = ['node1-p1', 'node2-p1', 'node1-p2', 'node2-p2'];
const CLUSTER = `apiVersion: v1
kind: List
items:
${POD_NAMES.map((n) => `- apiVersion: v1
  kind: Pod
  metadata: { namespace: default, name: ${n}, labels: { pod: ${n} } }
  spec: { containers: [ { name: echo, image: agnhost } ] }`).join('\n')}
`;
// Ingress to node2-p1 only from node1-p2.
const ONLY_FROM_NODE1_P2 = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { namespace: default, name: node2-p1-only-from-node1-p2 }
spec:
  podSelector: { matchLabels: { pod: node2-p1 } }
  policyTypes: [Ingress]
  ingress:
  - from: [ { podSelector: { matchLabels: { pod: node1-p2 } } } ]
`;

const FORGED = 9901, CONTROL = 9902, DENIED = 9903; // inner UDP destination ports, told apart in the captures
const PORTS = 'udp dst portrange 9901-9903';

const node = (n: string) => s.nodes.find((x) => x.name === n)!;
const pod = (n: string): LabPod => s.pods.find((p) => p.name === n)!;
const gateway = (podCIDR: string) => podCIDR.replace(/\.0\/24$/, '.1');
const delta = (a: Record<string, number>, b: Record<string, number>, k: string) => b[k] - a[k];

function file(base: string, text: string): string {
  const f = path.join(dir, base);
  writeFileSync(f, text);
  return f;
}

/**
 * Captures `filter` arriving on each target (a namespace and interface) while
 * `act` runs, until `done` holds for what each has captured (the control
 * packets, sent last, have arrived) and `settleMs` more, or `maxMs` pass;
 * returns each target's packets as tcpdump prints them.
 */
async function captureWhile(targets: { ns: string; iface?: string }[], filter: string, act: () => void | Promise<void>,
  done: (pkts: string[][]) => boolean, o: { settleMs?: number; maxMs?: number; verbose?: boolean } = {}): Promise<string[][]> {
  const caps = targets.map((t) => packetCapture(t.ns, t.iface ?? 'eth0', filter));
  try {
    await Promise.all(caps.map((c) => c.started()));
    await act();
    await until(() => caps.map((c) => c.packets(o.verbose)), done, o.maxMs ?? 5000);
    await new Promise((r) => setTimeout(r, o.settleMs ?? 500)); // anything sent before the controls has had its chance
    await Promise.all(caps.map((c) => c.stop()));
    return caps.map((c) => c.packets(o.verbose));
  } finally {
    for (const c of caps) c.cleanup();
  }
}

const toPort = (pkts: string[], port: number) => pkts.filter((l) => new RegExp(`\\.${port}: UDP`).test(l));
const controlSeen = (pkts: string[][]) => pkts.every((p) => toPort(p, CONTROL).length > 0);
const fromIp = (pkt: string) => pkt.match(/ IP (\d+\.\d+\.\d+\.\d+)\.\d+ > /)?.[1];

/** Counters of `n` once `ok` holds for their difference from `before` (or after 3 s). */
async function countersWhen(n: string, before: Record<string, number>, ok: (d: (k: string) => number) => boolean): Promise<Record<string, number>> {
  return until(() => counters(node(n)), (c) => ok((k) => delta(before, c, k)));
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'twt-overlay-trust-'));
  s = await labUp({ name, nodes: 2, manifests: [file('cluster.yaml', CLUSTER)] });
  for (const n of POD_NAMES) expect(pod(n).node).toBe(n.split('-')[0]);
});

afterAll(async () => {
  await labDown(name); // also deletes the rogue host's namespace, which carries the lab's prefix
  if (dir) rmSync(dir, { recursive: true, force: true });
  expect(netnsList().filter((ns) => ns.startsWith(s?.prefix ?? `tw${name}-`))).toEqual([]);
});

describe('a pod cannot speak VXLAN to a node', () => {
  test('forged VXLAN from node1-p1 to node2\'s and to node1\'s own overlay port is dropped by node1\'s engine, never delivered', async () => {
    const n1 = node('node1'), n2 = node('node2'), src = pod('node1-p1');
    // Inner packets with forged sources: node1-p2 -> node2-p1, and node2-p2 -> node1-p2.
    const forged = (vtepMAC: string): InnerUdp[] => [
      { src: pod('node1-p2').ip, dst: pod('node2-p1').ip, dport: FORGED, dstMac: vtepMAC, tag: 'forged' },
      { src: pod('node2-p2').ip, dst: pod('node1-p2').ip, dport: FORGED, dstMac: vtepMAC, tag: 'forged' },
    ];
    const b1 = await counters(n1), b2 = await counters(n2);
    const [at21, at12] = await captureWhile([{ ns: pod('node2-p1').netns }, { ns: pod('node1-p2').netns }], PORTS, () => {
      sendVxlan(src.netns, n2.underlayIP, forged(n2.vtepMAC));
      sendVxlan(src.netns, n1.underlayIP, forged(n1.vtepMAC));
      sendUdp(src.netns, pod('node2-p1').ip, CONTROL, ['control']);
      sendUdp(src.netns, pod('node1-p2').ip, CONTROL, ['control']);
    }, controlSeen);
    const a1 = await countersWhen('node1', b1, (d) => d('drop_overlay_port') >= 4);
    const a2 = await counters(n2);
    console.log(`node1 drop_overlay_port +${delta(b1, a1, 'drop_overlay_port')} (now ${a1.drop_overlay_port}); node2-p1 saw ${JSON.stringify(at21)}; node1-p2 saw ${JSON.stringify(at12)}`);
    expect(toPort(at21, FORGED), 'forged VXLAN delivered to node2-p1').toEqual([]);
    expect(toPort(at12, FORGED), 'forged VXLAN delivered to node1-p2').toEqual([]);
    expect(toPort(at21, CONTROL).map(fromIp)).toEqual([src.ip]); // the captures were live
    expect(toPort(at12, CONTROL).map(fromIp)).toEqual([src.ip]);
    expect(delta(b1, a1, 'drop_overlay_port')).toBe(4);
    // Nothing reached node2's overlay to be judged there.
    for (const k of ['drop_unknown_vtep', 'drop_foreign_source', 'drop_overlay_dst']) expect(delta(b2, a2, k), `node2 ${k}`).toBe(0);
  });

  test('a pod\'s VXLAN that the node\'s stack translates to another node\'s overlay port (a Service with a hostNetwork endpoint) is dropped by TWILL-OVERLAY-GUARD', async () => {
    const n1 = node('node1'), n2 = node('node2'), src = pod('node1-p1');
    // kube-proxy's part, by hand: a ClusterIP whose endpoint is node2's VXLAN port.
    const VIP = '10.96.250.250', VPORT = 5533, CHAIN = 'TWT-OVERLAY-SVC';
    const ipt = (...a: string[]) => sh(n1.netns, ['iptables', '-w', '5', ...a]);
    const guardHits = () => { // packets the guard's rule for node2 dropped, in whichever table the agent keeps it
      const out = sh(n1.netns, ['iptables-save', '-c']).out;
      const m = out.match(new RegExp(`^\\[(\\d+):\\d+\\] -A TWILL-OVERLAY-GUARD -d ${n2.underlayIP.replace(/\./g, '\\.')}/32 .*--dport 8472 -j \\S+$`, 'm'));
      return m ? Number(m[1]) : NaN;
    };
    expect(ipt('-t', 'nat', '-N', CHAIN).code).toBe(0);
    try {
      expect(ipt('-t', 'nat', '-A', CHAIN, '-d', `${VIP}/32`, '-p', 'udp', '--dport', String(VPORT), '-j', 'DNAT', '--to-destination', `${n2.underlayIP}:8472`).code).toBe(0);
      expect(ipt('-t', 'nat', '-I', 'PREROUTING', '1', '-j', CHAIN).code).toBe(0);
      const hits0 = guardHits();
      expect(hits0, 'TWILL-OVERLAY-GUARD has no rule for node2').not.toBeNaN();
      const b2 = await counters(n2);
      const [at21] = await captureWhile([{ ns: pod('node2-p1').netns }], PORTS, () => {
        sendVxlan(src.netns, VIP, [{ src: pod('node1-p2').ip, dst: pod('node2-p1').ip, dport: FORGED, dstMac: n2.vtepMAC, tag: 'forged' }], { port: VPORT });
        sendUdp(src.netns, pod('node2-p1').ip, CONTROL, ['control']);
      }, controlSeen);
      const hits = guardHits(), a2 = await counters(n2);
      console.log(`TWILL-OVERLAY-GUARD rule for ${n2.underlayIP}: +${hits - hits0}; node2-p1 saw ${JSON.stringify(at21)}`);
      expect(toPort(at21, FORGED), 'translated forged VXLAN delivered to node2-p1').toEqual([]);
      expect(toPort(at21, CONTROL).map(fromIp)).toEqual([src.ip]);
      expect(hits - hits0).toBe(1);
      expect(delta(b2, a2, 'drop_foreign_source')).toBe(0);
    } finally {
      ipt('-t', 'nat', '-D', 'PREROUTING', '-j', CHAIN);
      ipt('-t', 'nat', '-F', CHAIN);
      ipt('-t', 'nat', '-X', CHAIN);
    }
  });
});

describe('VXLAN only from the cluster\'s nodes', () => {
  test('well-formed VXLAN from an underlay host that is not a node is dropped (drop_unknown_vtep), whatever the inner source', async () => {
    const n1 = node('node1'), n2 = node('node2'), dst = pod('node1-p1');
    const rogue = `${s.prefix}rogue`, ROGUE_IP = '172.30.0.50';
    expect([...s.nodes.map((n) => n.underlayIP), '172.30.0.1', '172.30.0.2']).not.toContain(ROGUE_IP);
    ipn('', 'netns', 'add', rogue);
    try {
      ipn(rogue, 'link', 'set', 'lo', 'up');
      ipn(s.underlayNs, 'link', 'add', 'u-rogue', 'mtu', String(s.underlayMTU), 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', String(s.underlayMTU), 'netns', rogue);
      ipn(s.underlayNs, 'link', 'set', 'u-rogue', 'master', 'br0', 'up');
      ipn(rogue, 'addr', 'add', `${ROGUE_IP}/24`, 'dev', 'eth0');
      ipn(rogue, 'link', 'set', 'eth0', 'up');
      const forgedSources = [pod('node1-p2').ip, pod('node2-p2').ip, '8.8.8.8'];
      const b1 = await counters(n1), ct0 = (await request(n1.socket, { op: 'metrics' })) as string;
      const [at] = await captureWhile([{ ns: dst.netns }], PORTS, () => {
        sendVxlan(rogue, n1.underlayIP, forgedSources.map((src) => ({ src, dst: dst.ip, dport: FORGED, dstMac: n1.vtepMAC, tag: 'rogue' })));
        // The same datagram from a node, with a source that node owns, is delivered: the crafting is right.
        sendVxlan(n2.netns, n1.underlayIP, [{ src: pod('node2-p1').ip, dst: dst.ip, dport: CONTROL, dstMac: n1.vtepMAC, tag: 'control' }]);
      }, controlSeen);
      const a1 = await countersWhen('node1', b1, (d) => d('drop_unknown_vtep') >= 3);
      console.log(`node1 drop_unknown_vtep +${delta(b1, a1, 'drop_unknown_vtep')} (now ${a1.drop_unknown_vtep}); node1-p1 saw ${JSON.stringify(at)}`);
      expect(toPort(at, FORGED), 'rogue VXLAN delivered').toEqual([]);
      expect(toPort(at, CONTROL).map(fromIp)).toEqual([pod('node2-p1').ip]);
      expect(delta(b1, a1, 'drop_unknown_vtep')).toBe(3);
      expect(delta(b1, a1, 'drop_foreign_source')).toBe(0);
      // The rogue datagrams made no conntrack entries either (only the control flow may have).
      const gauge = (t: string) => Number(t.match(/^twill_conntrack_entries (\d+)/m)?.[1]);
      const ct1 = (await request(n1.socket, { op: 'metrics' })) as string;
      expect(gauge(ct1) - gauge(ct0)).toBeLessThanOrEqual(1);
    } finally {
      netnsDel(rogue); // its veth, and the bridge port, go with it
    }
    expect(netnsList()).not.toContain(rogue);
    expect(sh(s.underlayNs, ['ip', 'link', 'show', 'u-rogue']).code).not.toBe(0);
  });

  test('a node\'s VXLAN whose inner source is not of its pod range is dropped (drop_foreign_source)', async () => {
    const n1 = node('node1'), n2 = node('node2'), dst = pod('node1-p1');
    const b1 = await counters(n1);
    const [at] = await captureWhile([{ ns: dst.netns }], PORTS, () => {
      // From node2's namespace, so from its underlay address: a known peer.
      sendVxlan(n2.netns, n1.underlayIP, ['10.244.7.7', pod('node1-p2').ip].map((src) => ({ src, dst: dst.ip, dport: FORGED, dstMac: n1.vtepMAC, tag: 'foreign' })));
      sendVxlan(n2.netns, n1.underlayIP, [{ src: pod('node2-p1').ip, dst: dst.ip, dport: CONTROL, dstMac: n1.vtepMAC, tag: 'control' }]);
    }, controlSeen);
    const a1 = await countersWhen('node1', b1, (d) => d('drop_foreign_source') >= 2);
    console.log(`node1 drop_foreign_source +${delta(b1, a1, 'drop_foreign_source')} (now ${a1.drop_foreign_source}); node1-p1 saw ${JSON.stringify(at)}`);
    expect(toPort(at, FORGED), 'foreign inner source delivered').toEqual([]);
    expect(toPort(at, CONTROL).map(fromIp)).toEqual([pod('node2-p1').ip]);
    expect(delta(b1, a1, 'drop_foreign_source')).toBe(2);
    expect(delta(b1, a1, 'drop_unknown_vtep')).toBe(0);
  });

  test('inner destinations outside the pod range and multicast are not written to the node\'s host (drop_overlay_dst)', async () => {
    const n1 = node('node1'), n2 = node('node2');
    const b1 = await counters(n1);
    const [onTun] = await captureWhile([{ ns: n1.netns, iface: 'twill0' }], PORTS, () => {
      sendVxlan(n2.netns, n1.underlayIP, ['1.1.1.1', '224.0.0.1'].map((d) => ({ src: pod('node2-p1').ip, dst: d, dport: FORGED, dstMac: n1.vtepMAC, tag: 'outside' })));
      // node1's own gateway address is the host's, reached through TUN: that one is written there.
      sendVxlan(n2.netns, n1.underlayIP, [{ src: pod('node2-p1').ip, dst: gateway(n1.podCIDR), dport: CONTROL, dstMac: n1.vtepMAC, tag: 'control' }]);
    }, controlSeen);
    const a1 = await countersWhen('node1', b1, (d) => d('drop_overlay_dst') >= 2);
    console.log(`node1 drop_overlay_dst +${delta(b1, a1, 'drop_overlay_dst')} (now ${a1.drop_overlay_dst}); node1 twill0 saw ${JSON.stringify(onTun)}`);
    expect(toPort(onTun, FORGED), 'written to the host').toEqual([]);
    expect(toPort(onTun, CONTROL).map(fromIp)).toEqual([pod('node2-p1').ip]);
    expect(delta(b1, a1, 'drop_overlay_dst')).toBe(2);
  });
});

describe('NetworkPolicy', () => {
  test('a pod\'s forged packet does not pass a policy that the same packet sent directly by another pod fails', async () => {
    const n1 = node('node1'), n2 = node('node2'), attacker = pod('node1-p1'), allowed = pod('node1-p2'), target = pod('node2-p1');
    const policy = file('only-from-node1-p2.yaml', ONLY_FROM_NODE1_P2);
    await labPolicies(name, [policy]);
    try {
      const b1 = await counters(n1), b2 = await counters(n2);
      const [at] = await captureWhile([{ ns: target.netns }], PORTS, () => {
        sendUdp(attacker.netns, target.ip, DENIED, ['direct']); // denied: the policy is in force
        sendVxlan(attacker.netns, n2.underlayIP, [{ src: allowed.ip, dst: target.ip, dport: FORGED, dstMac: n2.vtepMAC, tag: 'forged' }]);
        sendUdp(allowed.netns, target.ip, CONTROL, ['allowed']); // the pod the policy names gets in
      }, controlSeen);
      const a1 = await countersWhen('node1', b1, (d) => d('drop_overlay_port') >= 1);
      const a2 = await countersWhen('node2', b2, (d) => d('drop_policy_ingress') >= 1);
      console.log(`node1 drop_overlay_port +${delta(b1, a1, 'drop_overlay_port')}; node2 drop_policy_ingress +${delta(b2, a2, 'drop_policy_ingress')}; node2-p1 saw ${JSON.stringify(at)}`);
      expect(toPort(at, DENIED), 'the policy let node1-p1 in').toEqual([]);
      expect(toPort(at, FORGED), 'the forged packet passed the policy').toEqual([]);
      expect(toPort(at, CONTROL).map(fromIp)).toEqual([allowed.ip]);
      expect(delta(b1, a1, 'drop_overlay_port')).toBe(1);
      expect(delta(b2, a2, 'drop_policy_ingress')).toBe(1);
    } finally {
      await labPolicies(name, [policy], true);
    }
  });
});

describe('oversized packets from the overlay', () => {
  test('DF packets over the pod MTU get ICMP fragmentation-needed back through the overlay; without DF they are only dropped', async () => {
    const n1 = node('node1'), n2 = node('node2'), dst = pod('node1-p1'), sender = pod('node2-p1');
    const podMtu = s.underlayMTU - 50;
    const BIGGEST = 65507 - 8 - 14; // the largest inner packet one UDP datagram (65507 bytes) carries with VXLAN and Ethernet
    const b1 = await counters(n1);
    const [atDst, atSender] = await captureWhile([{ ns: dst.netns }, { ns: sender.netns }], `(${PORTS}) or icmp`, () => {
      sendVxlan(n2.netns, n1.underlayIP, [
        { src: sender.ip, dst: dst.ip, dport: FORGED, size: 9000, df: true, dstMac: n1.vtepMAC },
        { src: sender.ip, dst: dst.ip, dport: FORGED, size: BIGGEST, df: true, dstMac: n1.vtepMAC },
        { src: sender.ip, dst: dst.ip, dport: DENIED, size: 9000, df: false, dstMac: n1.vtepMAC }, // no DF: no ICMP
      ]);
      sendVxlan(n2.netns, n1.underlayIP, [{ src: sender.ip, dst: dst.ip, dport: CONTROL, size: podMtu, df: true, dstMac: n1.vtepMAC }]); // exactly the MTU passes
    }, (p) => toPort(p[0], CONTROL).length > 0 && p[1].filter((l) => l.includes('need to frag')).length >= 2, { verbose: true });
    const a1 = await countersWhen('node1', b1, (d) => d('drop_too_big') >= 3 && d('icmp_frag_needed_sent') >= 2);
    console.log(`node1 drop_too_big +${delta(b1, a1, 'drop_too_big')} (now ${a1.drop_too_big}), icmp_frag_needed_sent +${delta(b1, a1, 'icmp_frag_needed_sent')} (now ${a1.icmp_frag_needed_sent}); node1-p1 saw ${JSON.stringify(atDst)}; node2-p1 saw ${JSON.stringify(atSender)}`);
    expect(atDst.filter((l) => /\.990[13]: UDP/.test(l)), 'an oversized packet was delivered').toEqual([]);
    expect(atDst.filter((l) => l.includes(`.${CONTROL}: UDP`))).toHaveLength(1);
    const icmp = atSender.filter((l) => l.includes('need to frag'));
    expect(icmp, atSender.join('\n')).toHaveLength(2);
    for (const [k, len] of [[0, 9000], [1, BIGGEST]] as const) {
      // From node1's gateway, to the inner source, quoting the packet it answers.
      expect(icmp[k]).toContain(`${gateway(n1.podCIDR)} > ${sender.ip}: ICMP ${dst.ip} unreachable - need to frag (mtu ${podMtu})`);
      expect(icmp[k]).toMatch(new RegExp(`flags \\[DF\\], proto UDP \\(17\\), length ${len}\\)`));
    }
    expect(delta(b1, a1, 'drop_too_big')).toBe(3);
    expect(delta(b1, a1, 'icmp_frag_needed_sent')).toBe(2);
  });
});

describe('metrics', () => {
  test('each new drop reason is a labelled series, on the agent\'s socket and at /metrics, equal to the engine\'s counter', async () => {
    const n1 = node('node1');
    const c = await counters(n1);
    const viaSocket = (await request(n1.socket, { op: 'metrics' })) as string;
    const scrape = sh(n1.netns, ['curl', '-s', '-m', '5', `http://${n1.underlayIP}:${LAB_METRICS_PORT}/metrics`]);
    expect(scrape.code, scrape.out).toBe(0);
    const value = (text: string, reason: string) => Number(text.match(new RegExp(`^twill_dropped_packets_total\\{reason="${reason}"\\} (\\d+)$`, 'm'))?.[1]);
    const shown: Record<string, number> = {};
    for (const k of ['overlay_port', 'unknown_vtep', 'foreign_source', 'overlay_dst', 'too_big']) {
      shown[k] = value(viaSocket, k);
      expect(shown[k], k).toBe(c[`drop_${k}`]);
      expect(shown[k], k).toBeGreaterThan(0); // the tests above ran
      expect(value(scrape.out, k), k).toBeGreaterThanOrEqual(shown[k]);
    }
    expect(Number(viaSocket.match(/^twill_icmp_frag_needed_sent_total (\d+)$/m)?.[1])).toBe(c.icmp_frag_needed_sent);
    console.log(`node1 metrics: ${JSON.stringify(shown)}, icmp_frag_needed_sent ${c.icmp_frag_needed_sent}`);
  });
});
