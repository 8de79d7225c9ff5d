// twill-cni first in a chain with the reference meta plugins from Debian's
// containernetworking-plugins 1.1.1 (/usr/lib/cni): portmap (hostPort DNAT with
// iptables) and bandwidth (tc tbf on the host veth, and an ifb for the pod's
// egress). libcni (the driver of libcni.test.ts) runs the chain as a runtime
// does: ADD in order, each plugin getting the previous one's result as
// prevResult; DEL in reverse with the cached result.
//
// What the kernel and tools here give: iptables (the alternative is
// iptables-nft; iptables-legacy works too) in a node netns; tc tbf, ingress,
// u32, mirred and ifb (no cls_matchall, which bandwidth does not need).
//
// Known gaps, kept as test.fails so they flip when fixed (see each test):
//  - a hostPort is not reachable from another node (or its pods): the engine
//    sends the pod's reply straight over the overlay, around the node's conntrack;
//  - bandwidth's limits are not enforced: the engine sends to pods with
//    PACKET_QDISC_BYPASS (skips the tbf) and reads pod frames with AF_PACKET
//    before tc ingress (before the redirect to the ifb).
//  - plus, in portmap 1.1.1 itself, CHECK fails for an IPv4-only pod when ip6tables
//    works (containernetworking/plugins#819).
//
// Network safety: a 2-node lab (tw<lab>-*), a pod netns and an "outside client"
// netns twt-rt-<random> (the client hangs off the lab's underlay bridge with
// 172.30.0.250/24); iptables and tc only inside the lab's node namespace.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, symlinkSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { labUp, labDown, nodeCni } from '../../lab/lab.js';
import type { LabNode, LabPod, LabState } from '../../lab/state.js';
import { hostIfName } from '../../cni/plugin.js';
import { ensureBinary } from '../cni/helpers.js';
import {
  agentPods, buildDriver, hex, inCidr24, inNs, ipamHeld, labName, libcni, linkExists, Pids, ping, resultIfaces, resultIP,
  RtNamespaces, sh, startWorkload, tcpEcho, waitForEcho, type DriverReq,
} from './helpers.js';

const LAB = labName();
const HOST_PORT = 18080;
const RATE = 1_000_000; // bits/s, both directions
const BURST = 80_000; // bits
const CLIENT_IP = '172.30.0.250';

let s: LabState;
let n1: LabNode, n2: LabNode;
let peer: LabPod; // the lab's pod on node2
let tmp: string;
let driver: string;
let chainConf: string, twillOnlyConf: string;
let ipamDir: string, network: string;
const nss = new RtNamespaces();
const pids = new Pids();
let client: string; // the outside client's netns
const containerId = `ch-${hex(6)}`;
let pod: { name: string; path: string };
let ip = '';
let hostIf = '';
let ifb = '';

beforeAll(async () => {
  ensureBinary();
  tmp = mkdtempSync(path.join(tmpdir(), 'twt-rt-chain-'));
  driver = buildDriver(path.join(tmp, 'build'));
  s = await labUp({ name: LAB, nodes: 2, podsPerNode: 1 });
  [n1, n2] = s.nodes;
  peer = s.pods.find((p) => p.node === 'node2')!;
  const cni = nodeCni(n1);
  // The reference plugins next to twill-cni in the node's plugin dir.
  for (const p of ['portmap', 'bandwidth']) {
    const dst = path.join(cni.binDir, p);
    if (!existsSync(dst)) symlinkSync(`/usr/lib/cni/${p}`, dst);
  }
  const list = JSON.parse(readFileSync(cni.confFile, 'utf8')) as { name: string; plugins: Record<string, unknown>[] };
  ipamDir = (list.plugins[0].ipam as { dataDir: string }).dataDir;
  network = list.name; // the same name: IPAM is per network name
  chainConf = path.join(path.dirname(cni.confFile), '30-twill-chain.conflist');
  writeFileSync(chainConf, JSON.stringify({
    cniVersion: '1.0.0', name: network,
    plugins: [
      list.plugins[0],
      { type: 'portmap', capabilities: { portMappings: true }, snat: true },
      { type: 'bandwidth', capabilities: { bandwidth: true } },
    ],
  }, null, 1));
  twillOnlyConf = path.join(path.dirname(cni.confFile), '31-twill-only.conflist');
  writeFileSync(twillOnlyConf, JSON.stringify({ cniVersion: '1.0.0', name: network, plugins: [list.plugins[0]] }, null, 1));
  // An outside client on the underlay (not a node: no agent, no overlay).
  client = nss.add().name;
  const veth = `twt${hex(4)}`;
  const steps: string[][] = [
    ['-n', s.underlayNs, 'link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', client],
    ['-n', s.underlayNs, 'link', 'set', veth, 'master', 'br0', 'up'],
    ['-n', client, 'addr', 'add', `${CLIENT_IP}/24`, 'dev', 'eth0'],
    ['-n', client, 'link', 'set', 'eth0', 'up'],
    ['-n', client, 'link', 'set', 'lo', 'up'],
  ];
  for (const a of steps) { const r = sh('ip', a); if (r.code !== 0) throw new Error(`ip ${a.join(' ')}: ${r.err}`); }
  await waitForEcho(peer.netns, peer.ip);
}, 180_000);

afterAll(async () => {
  await pids.stopAll();
  // If a test failed half-way, DEL through the chain so the node's iptables and tc are clean too.
  if (pod && ip) libcni(driver, n1.netns, chainReq('del'));
  nss.delAll();
  await labDown(LAB);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
}, 120_000);

function chainReq(op: DriverReq['op'], conf = chainConf): DriverReq {
  return {
    op, conf, containerId, netns: pod?.path, ifname: 'eth0', path: [nodeCni(n1).binDir], cacheDir: path.join(tmp, 'cache'),
    args: [['IgnoreUnknown', '1'], ['K8S_POD_NAMESPACE', 'rt'], ['K8S_POD_NAME', 'chained']],
    capabilityArgs: {
      portMappings: [{ hostPort: HOST_PORT, containerPort: 8080, protocol: 'tcp' }],
      bandwidth: { ingressRate: RATE, ingressBurst: BURST, egressRate: RATE, egressBurst: BURST },
    },
  };
}

const natRules = () => inNs(n1.netns, ['iptables-save', '-t', 'nat']).out;
const tcOut = (...args: string[]) => inNs(n1.netns, ['tc', ...args]).out;

describe('ADD through twill-cni → portmap → bandwidth', () => {
  test('libcni validates the chain (every plugin answers VERSION for 1.0.0) and sees both capabilities', () => {
    const r = libcni(driver, n1.netns, { ...chainReq('validate') });
    expect(r.code, r.err).toBe(0);
    expect([...(r.json!.capabilities ?? [])].sort()).toEqual(['bandwidth', 'portMappings']);
  });

  test('ADD: each plugin got the previous result; the final result has twill\'s veth and address plus bandwidth\'s ifb', async () => {
    pod = nss.add();
    const r = libcni(driver, n1.netns, chainReq('add'));
    expect(r.code, r.err).toBe(0);
    const res = r.json!.result!;
    ip = resultIP(res);
    hostIf = hostIfName(containerId, 'eth0');
    expect(inCidr24(ip, n1.podCIDR)).toBe(true);
    const { host, pod: podIfs } = resultIfaces(res);
    expect(podIfs.map((i) => i.name)).toEqual(['eth0']);
    expect(host[0].name).toBe(hostIf); // twill-cni's, first
    expect(host.length).toBe(2);
    ifb = host[1].name; // appended by bandwidth
    expect(ifb).toMatch(/^bwp/);
    expect((res.ips as { interface: number }[])[0].interface).toBe(1);
    expect(ipamHeld(ipamDir, network)).toContainEqual({ ip, owner: `${containerId}:eth0` });
    expect((await agentPods(n1.socket)).find((p) => p.containerId === containerId)?.ip).toBe(ip);
    await startWorkload(pod.name, pids);
    expect(ping(pod.name, peer.ip)).toBe(true);
    expect(tcpEcho(pod.name, peer.ip, 8080, 'chained pod to node2')).toBe('chained pod to node2');
  });

  test('portmap: DNAT rules for the pod in the node\'s nat table', () => {
    const nat = natRules();
    expect(nat).toMatch(/-A CNI-HOSTPORT-DNAT .*dnat name: \\"twill\\" id: \\"ch-/);
    expect(nat).toContain(`-j DNAT --to-destination ${ip}:8080`);
    expect(nat).toMatch(new RegExp(`-A CNI-DN-\\w+ -p tcp -m tcp --dport ${HOST_PORT} -j DNAT`));
  });

  test('portmap: the node\'s address and port answer with the pod\'s echo — from the node itself, its loopback, and an outside client', () => {
    expect(tcpEcho(n1.netns, n1.underlayIP, HOST_PORT, 'via node address')).toBe('via node address');
    expect(tcpEcho(n1.netns, '127.0.0.1', HOST_PORT, 'via loopback')).toBe('via loopback');
    expect(tcpEcho(client, n1.underlayIP, HOST_PORT, 'from outside')).toBe('from outside');
  });

  // The pod's SYN-ACK to node2's address leaves through node1's own stack (the engine sends
  // traffic outside the pod range to TUN, where the node masquerades it, as flannel's ipMasq
  // does), so node1's conntrack un-DNATs it.
  test('the hostPort answers a client on another node', () => {
    expect(tcpEcho(n2.netns, n1.underlayIP, HOST_PORT, 'from node2', 1)).toBe('from node2');
  });

  test('bandwidth: tbf on the host veth (to the pod), ingress qdisc + u32/mirred redirect to an ifb with a tbf (from the pod)', () => {
    expect(linkExists(n1.netns, ifb)).toBe(true);
    expect(tcOut('qdisc', 'show', 'dev', hostIf)).toMatch(/qdisc tbf \S+ root .*rate 1Mbit/);
    expect(tcOut('qdisc', 'show', 'dev', hostIf)).toMatch(/qdisc ingress ffff:/);
    expect(tcOut('filter', 'show', 'dev', hostIf, 'ingress')).toContain(`mirred (Egress Redirect to device ${ifb})`);
    expect(tcOut('qdisc', 'show', 'dev', ifb)).toMatch(/qdisc tbf \S+ root .*rate 1Mbit/);
  });

  // Traffic to the pod goes through the host veth's qdisc (the engine's AF_PACKET sends do not
  // bypass it), so the tbf shapes it: 200 KB at 1 Mbit/s takes >= 1.5 s. Traffic from the pod is
  // NOT shaped: the engine reads pod frames with AF_PACKET, before tc ingress redirects them to
  // the ifb, so the ifb shapes copies nobody uses (a known gap, in the README).
  test('bandwidth limits traffic to the pod (200 KB echoed through a 1 Mbit/s limit takes over 1 s)', () => {
    const data = 'x'.repeat(199_999);
    const t = performance.now();
    const r = inNs(n1.netns, ['busybox', 'nc', '-w', '5', ip, '8080'], { input: `${data}\n`, timeout: 30_000 });
    const ms = performance.now() - t;
    const sent = /Sent (\d+) bytes/.exec(tcOut('-s', 'qdisc', 'show', 'dev', hostIf))?.[1];
    console.log(`bandwidth: 200 KB echoed in ${ms.toFixed(0)} ms (got ${r.out.length} bytes); tbf on ${hostIf} sent ${sent} bytes`);
    expect(r.out.length).toBe(200_000);
    expect(ms).toBeGreaterThan(1000);
    expect(Number(sent)).toBeGreaterThan(200_000);
  });

  test('CHECK: twill-cni accepts the chain\'s final result as prevResult; the chain\'s CHECK stops only at portmap 1.1.1\'s IPv6 bug', () => {
    // libcni's cache is per network name and attachment: this twill-only list gets the chain's result.
    const own = libcni(driver, n1.netns, chainReq('check', twillOnlyConf));
    expect(own.code, own.err).toBe(0);
    const chain = libcni(driver, n1.netns, chainReq('check'));
    // twill-cni runs first; portmap 1.1.1 then looks for an IPv6 DNAT chain that an IPv4-only pod never
    // gets (containernetworking/plugins#819). A portmap without the bug (or a node without ip6tables) passes.
    if (chain.code !== 0) {
      console.log(`chain CHECK (portmap 1.1.1, containernetworking/plugins#819): ${chain.err}`);
      expect(chain.err).toMatch(/could not check ipv6 dnat/);
    }
  });
});

describe('DEL through the chain (bandwidth → portmap → twill-cni)', () => {
  test('leaves nothing: DNAT chain and rules, ifb and qdiscs, veth, address, agent entry, libcni cache', async () => {
    const r = libcni(driver, n1.netns, chainReq('del'));
    expect(r.code, r.err).toBe(0);
    const nat = natRules();
    expect(nat).not.toMatch(/CNI-DN-/);
    expect(nat).not.toContain(ip);
    expect(nat).not.toContain(containerId);
    // portmap keeps its shared top-level chains (CNI-HOSTPORT-*) for the next pod, by design.
    expect(linkExists(n1.netns, ifb)).toBe(false);
    expect(linkExists(n1.netns, hostIf)).toBe(false);
    expect(tcOut('qdisc', 'show')).not.toMatch(/tbf/);
    expect(ipamHeld(ipamDir, network).filter((h) => h.owner.startsWith(`${containerId}:`))).toEqual([]);
    expect((await agentPods(n1.socket)).some((p) => p.containerId === containerId)).toBe(false);
    const cache = path.join(tmp, 'cache', 'results');
    expect(existsSync(cache) ? readdirSync(cache).filter((f) => f.includes(containerId)) : []).toEqual([]);
    expect(tcpEcho(n1.netns, n1.underlayIP, HOST_PORT, 'gone?', 1)).toBe('');
    // And DEL is idempotent through the whole chain.
    const again = libcni(driver, n1.netns, chainReq('del'));
    expect(again.code, again.err).toBe(0);
    ip = '';
  });
});
