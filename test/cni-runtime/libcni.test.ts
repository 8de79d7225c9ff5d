// twill-cni driven by the reference library: libcni 1.1.2 (Debian's
// golang-github-appc-cni-dev source, built offline into a small driver,
// test/cni-runtime/libcni-driver/main.go). libcni parses every result and error
// twill-cni prints into the spec's Go types, caches ADD results and hands them
// back as prevResult on CHECK and DEL, so these tests fail if the plugin's output
// does not fit the spec as the reference implementation reads it.
//
// libcni 1.1.2 speaks spec versions up to 1.0.0 (a 1.1.0 result is "unsupported
// CNI result version"), so conflists with cniVersion 0.3.1, 0.4.0 and 1.0.0 are
// written next to the lab's (1.1.0) one, with the same network name and IPAM dir:
// IPAM keeps addresses per network name, so a different name would hand out the
// node's addresses a second time.
//
// Network safety: a 2-node lab (namespaces tw<lab>-*) and pod namespaces
// twt-rt-<random> made here; nothing touches the root namespace.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { labUp, labDown, nodeCni } from '../../lab/lab.js';
import { installNodeCni } from '../../cni/runtime.js';
import type { LabNode, LabPod, LabState } from '../../lab/state.js';
import { hostIfName } from '../../cni/plugin.js';
import { ensureBinary } from '../cni/helpers.js';
import {
  agentPods, buildDriver, hex, inCidr24, ipamHeld, labName, libcni, linkExists, ping, resultIfaces, resultIP,
  RtNamespaces, tcpEcho, sh, waitForEcho, type DriverReq,
} from './helpers.js';

const LAB = labName();
let s: LabState;
let n1: LabNode;
let peer: LabPod; // the pod on node2
let tmp: string;
let driver: string;
let ipamDir: string;
let network: string;
const conflists: Record<string, string> = {};
const dualConflists: Record<string, string> = {}; // the same network, dual-stack through ipam.subnet6 (the lab's agent is IPv4)
const SUBNET6 = 'fd00:10:244:1::/64', GATEWAY6 = 'fd00:10:244:1::1';
const nss = new RtNamespaces();
const VERSIONS = ['0.3.1', '0.4.0', '1.0.0'] as const;

beforeAll(async () => {
  ensureBinary();
  tmp = mkdtempSync(path.join(tmpdir(), 'twt-rt-libcni-'));
  driver = buildDriver(path.join(tmp, 'build'));
  s = await labUp({ name: LAB, nodes: 2, podsPerNode: 1 });
  // The lab writes 1.0.0 conflists; these tests also show what a 1.1.0 one meets in libcni 1.1 / containerd 1.6.
  for (const n of s.nodes) installNodeCni(n.stateDir, n.socket, { cniVersion: '1.1.0' });
  n1 = s.nodes[0];
  peer = s.pods.find((p) => p.node === 'node2')!;
  await waitForEcho(peer.netns, peer.ip); // the lab starts pod workloads in the background
  const cni = nodeCni(n1);
  const list = JSON.parse(readFileSync(cni.confFile, 'utf8')) as { cniVersion: string; name: string; plugins: { ipam: { dataDir: string } }[] };
  ipamDir = list.plugins[0].ipam.dataDir;
  network = list.name;
  for (const v of VERSIONS) {
    const f = path.join(path.dirname(cni.confFile), `20-twill-${v}.conflist`);
    writeFileSync(f, JSON.stringify({ ...list, cniVersion: v }, null, 1));
    conflists[v] = f;
    const ds = path.join(path.dirname(cni.confFile), `30-twill-ds-${v}.conflist`);
    const plugins = list.plugins.map((p, i) => (i === 0 ? { ...p, ipam: { ...p.ipam, subnet6: SUBNET6, gateway6: GATEWAY6 } } : p));
    writeFileSync(ds, JSON.stringify({ ...list, cniVersion: v, plugins }, null, 1));
    dualConflists[v] = ds;
  }
}, 180_000);

afterAll(async () => {
  nss.delAll();
  await labDown(LAB);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
}, 120_000);

const req = (v: string, op: DriverReq['op'], extra: Partial<DriverReq> = {}): DriverReq => ({
  op, conf: conflists[v], ifname: 'eth0', path: [nodeCni(n1).binDir], cacheDir: path.join(tmp, 'cache'), ...extra,
});
const drive = (v: string, op: DriverReq['op'], extra: Partial<DriverReq> = {}) => libcni(driver, n1.netns, req(v, op, extra));

test('ValidateNetworkList: libcni finds twill-cni and reads its VERSION answer for every spec version it speaks', () => {
  for (const v of VERSIONS) {
    const r = drive(v, 'validate');
    expect(r.code, `${v}: ${r.err}`).toBe(0);
    expect(r.json?.cniVersion).toBe(v);
  }
});

describe.each(VERSIONS)('cniVersion %s: AddNetworkList, CheckNetworkList, DelNetworkList', (v) => {
  const containerId = `lc${v.replaceAll('.', '')}-${hex(4)}`;
  let pod: { name: string; path: string };
  let ip = '';
  const rt = () => ({ containerId, netns: pod.path, args: [['IgnoreUnknown', '1'], ['K8S_POD_NAMESPACE', 'rt'], ['K8S_POD_NAME', containerId]] as [string, string][] });

  test('ADD: libcni accepts the result (parsed, converted to 1.0.0), the pod is wired and registered', async () => {
    pod = nss.add();
    const r = drive(v, 'add', rt());
    expect(r.code, r.err).toBe(0);
    const res = r.json!.result!;
    expect(res.cniVersion).toBe(v);
    ip = resultIP(res);
    expect(inCidr24(ip, n1.podCIDR), `${ip} in ${n1.podCIDR}`).toBe(true);
    const { host, pod: podIfs } = resultIfaces(res);
    expect(host.map((i) => i.name)).toEqual([hostIfName(containerId, 'eth0')]);
    expect(podIfs).toEqual([expect.objectContaining({ name: 'eth0', sandbox: pod.path })]);
    const ips = res.ips as { address: string; gateway: string; interface: number; version?: string }[];
    expect(ips[0].interface).toBe(1); // index of the sandbox interface
    expect(ips[0].gateway).toBe(n1.podCIDR.replace(/\.0\/24$/, '.1'));
    if (v === '1.0.0') expect(ips[0].version).toBeUndefined();
    else expect(ips[0].version).toBe('4');
    // libcni's conversion to its current types (1.0.0) succeeded and kept the address.
    expect(resultIP(r.json!.current!)).toBe(ip);
    // The pod netns has the address; IPAM and the agent know the attachment.
    expect(sh('ip', ['-n', pod.name, '-4', '-o', 'addr', 'show', 'dev', 'eth0']).out).toContain(`${ip}/24`);
    expect(ipamHeld(ipamDir, network)).toContainEqual({ ip, owner: `${containerId}:eth0` });
    expect((await agentPods(n1.socket)).find((p) => p.containerId === containerId)).toMatchObject({ ip, name: containerId, namespace: 'rt' });
  });

  test('the pod reaches the pod on the other node (ping and TCP echo)', () => {
    expect(ping(pod.name, peer.ip)).toBe(true);
    expect(tcpEcho(pod.name, peer.ip, 8080, `hello from ${containerId}`)).toBe(`hello from ${containerId}`);
  });

  test('libcni cached the result it parsed and hands it back unchanged', () => {
    const r = drive(v, 'cached', rt());
    expect(r.code, r.err).toBe(0);
    expect(resultIP(r.json!.result!)).toBe(ip);
  });

  test(v === '0.3.1' ? 'CHECK is refused by libcni for 0.3.1 (not part of that version)'
    : 'CHECK with libcni\'s cached prevResult passes; a broken attachment fails with twill\'s error, parsed by libcni', () => {
    if (v === '0.3.1') {
      const r = drive(v, 'check', rt());
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/does not support the CHECK command/);
      return;
    }
    const ok = drive(v, 'check', rt());
    expect(ok.code, ok.err).toBe(0);
    // Remove the pod's default route: CHECK must notice, and libcni must parse the error JSON (code 100).
    expect(sh('ip', ['-n', pod.name, 'route', 'del', 'default']).code).toBe(0);
    const bad = drive(v, 'check', rt());
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/^code 100: .*no default route via/);
    const gw = n1.podCIDR.replace(/\.0\/24$/, '.1');
    expect(sh('ip', ['-n', pod.name, 'route', 'add', 'default', 'via', gw, 'dev', 'eth0']).code).toBe(0);
    expect(drive(v, 'check', rt()).code).toBe(0);
  });

  test('DEL: libcni passes the cached prevResult; address released, agent forgets the pod, veth gone; DEL again succeeds', async () => {
    const r = drive(v, 'del', rt());
    expect(r.code, r.err).toBe(0);
    expect(ipamHeld(ipamDir, network).filter((h) => h.owner.startsWith(`${containerId}:`))).toEqual([]);
    expect((await agentPods(n1.socket)).some((p) => p.containerId === containerId)).toBe(false);
    expect(linkExists(n1.netns, hostIfName(containerId, 'eth0'))).toBe(false);
    expect(sh('ip', ['-n', pod.name, 'link', 'show', 'dev', 'eth0']).code).not.toBe(0);
    // libcni removed its cache entry; a second DEL (no prevResult now) is still a success.
    const cache = path.join(tmp, 'cache', 'results');
    expect(existsSync(cache) ? readdirSync(cache).filter((f) => f.includes(containerId)) : []).toEqual([]);
    const again = drive(v, 'del', rt());
    expect(again.code, again.err).toBe(0);
    nss.del(pod.name);
  });
});

test('libcni with the lab\'s 1.1.0 conflist: the VERSION check passes, ADD fails in libcni (it knows results up to 1.0.0 only)', async () => {
  // This is libcni 1.1.2's limit, not a plugin fault; twill-cni must still leave nothing behind once DEL runs.
  const v11 = { ...req('1.0.0', 'add'), conf: nodeCni(n1).confFile };
  expect(libcni(driver, n1.netns, { ...v11, op: 'validate' }).code).toBe(0);
  const pod = nss.add();
  const containerId = `lc110-${hex(4)}`;
  const r = libcni(driver, n1.netns, { ...v11, containerId, netns: pod.path });
  expect(r.code).toBe(1);
  expect(r.err).toMatch(/unsupported CNI result version "1\.1\.0"/);
  // libcni does not DEL on a failed ADD (a runtime does, as containerd does): do it, with no cached result.
  const d = libcni(driver, n1.netns, { ...v11, op: 'del', containerId, netns: pod.path });
  expect(d.code, d.err).toBe(0);
  expect(ipamHeld(ipamDir, network).filter((h) => h.owner.startsWith(`${containerId}:`))).toEqual([]);
  expect((await agentPods(n1.socket)).some((p) => p.containerId === containerId)).toBe(false);
  nss.del(pod.name);
});

describe.each(VERSIONS)('cniVersion %s, dual-stack (ipam.subnet6): libcni parses both addresses, CHECK and DEL', (v) => {
  test('ADD gives an IPv4 and an IPv6 address and a default route per family; CHECK passes and notices a missing ::/0; DEL frees both', async () => {
    const containerId = `ds${v.replaceAll('.', '')}-${hex(4)}`;
    const pod = nss.add();
    const rt = { conf: dualConflists[v], containerId, netns: pod.path, args: [['IgnoreUnknown', '1'], ['K8S_POD_NAMESPACE', 'rt'], ['K8S_POD_NAME', containerId]] as [string, string][] };
    const r = drive(v, 'add', rt);
    expect(r.code, r.err).toBe(0);
    const res = r.json!.result!;
    const ips = res.ips as { address: string; gateway: string; interface: number; version?: string }[];
    expect(ips.map((x) => x.version)).toEqual(v === '1.0.0' ? [undefined, undefined] : ['4', '6']);
    expect(ips.map((x) => x.interface)).toEqual([1, 1]);
    expect(ips[1]).toMatchObject({ address: expect.stringMatching(/^fd00:10:244:1::[0-9a-f]+\/64$/), gateway: GATEWAY6 });
    expect((res.routes as { dst: string }[]).map((x) => x.dst)).toEqual(['0.0.0.0/0', '::/0']);
    // libcni's conversion to 1.0.0 kept both.
    expect((r.json!.current!.ips as { address: string }[]).map((x) => x.address)).toEqual(ips.map((x) => x.address));
    const [ip4, ip6] = ips.map((x) => x.address.split('/')[0]);
    expect(inCidr24(ip4, n1.podCIDR)).toBe(true);
    expect(sh('ip', ['-n', pod.name, '-6', '-o', 'addr', 'show', 'dev', 'eth0', 'scope', 'global']).out).toContain(`${ip6}/64`);
    expect(ipamHeld(ipamDir, network).filter((h) => h.owner === `${containerId}:eth0`).map((h) => h.ip).sort()).toEqual([ip4, ip6]);
    expect((await agentPods(n1.socket)).find((p) => p.containerId === containerId)).toMatchObject({ ip: ip4, ip6 });
    // IPv4 across nodes is unchanged with IPv6 on in the pod.
    expect(ping(pod.name, peer.ip)).toBe(true);
    if (v !== '0.3.1') {
      expect(drive(v, 'check', rt).code).toBe(0);
      expect(sh('ip', ['-n', pod.name, '-6', 'route', 'del', 'default']).code).toBe(0);
      const bad = drive(v, 'check', rt);
      expect(bad.code).toBe(1);
      expect(bad.err).toMatch(/^code 100: .*no default route \(::\/0\) via fd00:10:244:1::1/);
    }
    const d = drive(v, 'del', rt);
    expect(d.code, d.err).toBe(0);
    expect(ipamHeld(ipamDir, network).filter((h) => h.owner.startsWith(`${containerId}:`))).toEqual([]);
    expect(linkExists(n1.netns, hostIfName(containerId, 'eth0'))).toBe(false);
    nss.del(pod.name);
  });
});
