// The underlay chosen as flanneld chooses it (agent/underlay.ts), in
// network namespaces of this test's own with veth underlays: the pod MTU follows
// the interface's MTU (1500, 9001 as on AWS, 1460 as on GCE), the interface is
// found by name, by address, by regex or by the default route, publicIP changes
// what is announced; flannel's public-ip-overwrite and node-public-ip annotations
// against the stand-in API server; and agents started in a namespace whose
// underlay is 9001 bytes, with no underlayMTU in their config, report pod MTU 8951.
// IPv6 beside it, as flanneld's dual stack picks it: the same interface, its first
// global IPv6 address in flannel's order, publicIPv6 announced instead, flannel's
// IPv6 annotations (node-public-ipv6, public-ipv6-overwrite) on the Node.
// Nothing is sent anywhere: the addresses (TEST-NET, 2001:db8::/32, ULAs) only sit on interfaces.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chooseUnderlay, podMtuOf } from '../../agent/underlay.js';
import { KubeClient } from '../../agent/sources/kube/client.js';
import { FLANNEL, announceNode, nodeAddressing } from '../../agent/sources/kube/source.js';
import { createDatastore } from '../../lab/datastore.js';
import { request } from '../../agent/socket.js';
import { distFile } from '../../lib/paths.js';
import { ipn, netnsDel } from '../../lib/sh.js';
import { stopPid } from '../../lab/proc.js';
import { FakeKube, nodeObject } from '../helpers/fake-kube.js';

const tag = `twu${randomBytes(2).toString('hex')}`; // this run's namespaces: twuXXXX-*
const made: string[] = [];
const pids: number[] = [];
let dir: string;

function netns(name: string): string {
  const ns = `${tag}-${name}`;
  ipn('', 'netns', 'add', ns);
  made.push(ns);
  ipn(ns, 'link', 'set', 'lo', 'up');
  return ns;
}
/** A veth underlay: `name` (with `mtu` and `addrs`) and its peer, both inside `ns`. */
function veth(ns: string, name: string, mtu: number, addrs: string[]): void {
  ipn(ns, 'link', 'add', name, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', `p-${name}`, 'mtu', String(mtu));
  for (const a of addrs) ipn(ns, 'addr', 'add', a, 'dev', name);
  ipn(ns, 'link', 'set', name, 'up');
  ipn(ns, 'link', 'set', `p-${name}`, 'up');
}
/** A namespace whose one underlay, eth0, has this MTU and the default route. */
function node(name: string, mtu: number, address = '192.0.2.10'): string {
  const ns = netns(name);
  veth(ns, 'eth0', mtu, [`${address}/24`]);
  ipn(ns, 'route', 'add', 'default', 'via', address.replace(/\.\d+$/, '.1'));
  return ns;
}

let sel: string; // the selection namespace
let dual: string; // the same, dual stack
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'twt-underlay-'));
  sel = netns('sel');
  veth(sel, 'eth0', 1500, ['198.51.100.10/24']);
  veth(sel, 'ens5', 9001, ['10.20.0.5/16', '10.20.0.6/16']);
  veth(sel, 'eth1', 1460, ['169.254.7.7/16', '172.16.1.5/24']); // link-local first: flannel prefers the global one
  veth(sel, 'bare0', 1500, []);
  ipn(sel, 'route', 'add', 'default', 'via', '198.51.100.1');

  dual = netns('dual');
  veth(dual, 'eth0', 1500, ['198.51.100.10/24']);
  // the kernel lists an interface's addresses newest first: flannel's order must put the permanent one first
  ipn(dual, 'addr', 'add', '2001:db8:1::10/64', 'dev', 'eth0', 'nodad');
  ipn(dual, 'addr', 'add', '2001:db8:1::20/64', 'dev', 'eth0', 'nodad', 'valid_lft', '3600', 'preferred_lft', '3600'); // dynamic, as SLAAC's
  ipn(dual, 'addr', 'add', '2001:db8:1::99/64', 'dev', 'eth0', 'nodad', 'preferred_lft', '0'); // deprecated: never
  veth(dual, 'ens5', 9001, ['10.20.0.5/16']);
  ipn(dual, 'addr', 'add', 'fc00:f853:ccd:e793::11/64', 'dev', 'ens5', 'nodad');
  ipn(dual, 'addr', 'add', 'fc00:f853:ccd:e793::12/64', 'dev', 'ens5', 'nodad');
  veth(dual, 'eth1', 1460, ['172.16.1.5/24']); // IPv6 link-local only
  veth(dual, 'v6only0', 1500, []);
  ipn(dual, 'addr', 'add', '2001:db8:9::9/64', 'dev', 'v6only0', 'nodad');
  ipn(dual, 'route', 'add', 'default', 'via', '198.51.100.1');
});
afterAll(async () => {
  for (const p of pids) await stopPid(p);
  for (const ns of made) netnsDel(ns);
  rmSync(dir, { recursive: true, force: true });
});

describe('underlay MTU', () => {
  it.each([[1500, 1450], [9001, 8951], [1460, 1410]])('an underlay of %i bytes gives pods %i', (mtu, pod) => {
    const ns = node(`mtu${mtu}`, mtu);
    const u = chooseUnderlay({}, { netns: ns });
    expect(u).toMatchObject({ iface: 'eth0', address: '192.0.2.10', publicIP: '192.0.2.10', linkMTU: mtu, mtu, podMTU: pod, chosenBy: 'the default route' });
    expect(podMtuOf(mtu)).toBe(pod);
  });

  it('underlayMTU in the config overrides the interface; one that leaves pods under 68 bytes is refused', () => {
    expect(chooseUnderlay({ underlayMTU: 9001 }, { netns: sel })).toMatchObject({ iface: 'eth0', linkMTU: 1500, mtu: 9001, podMTU: 8951 });
    expect(() => chooseUnderlay({ underlayMTU: 100 }, { netns: sel })).toThrow(/underlay MTU 100 \(config "underlayMTU"\) leaves 50 bytes for pods/);
  });
});

describe('underlay interface and address, as flanneld picks them', () => {
  it('by default: the interface of the default route, its first global address', () => {
    expect(chooseUnderlay({}, { netns: sel })).toMatchObject({ iface: 'eth0', address: '198.51.100.10', publicIP: '198.51.100.10', mtu: 1500 });
  });

  it('iface by name: the first that exists wins', () => {
    expect(chooseUnderlay({ iface: ['nosuch0', 'ens5', 'eth1'] }, { netns: sel })).toMatchObject({ iface: 'ens5', address: '10.20.0.5', mtu: 9001, podMTU: 8951, chosenBy: 'iface ens5' });
    expect(chooseUnderlay({ iface: 'eth1' }, { netns: sel })).toMatchObject({ iface: 'eth1', address: '172.16.1.5', mtu: 1460, podMTU: 1410 }); // global before link-local
    expect(chooseUnderlay({ iface: ['bare0', 'eth1'] }, { netns: sel })).toMatchObject({ iface: 'eth1' }); // one without IPv4 is passed over, as flanneld does
  });

  it('iface by address: the interface holding it, and that address (a secondary one too)', () => {
    expect(chooseUnderlay({ iface: ['203.0.113.1', '10.20.0.6'] }, { netns: sel })).toMatchObject({ iface: 'ens5', address: '10.20.0.6', publicIP: '10.20.0.6', chosenBy: 'iface 10.20.0.6' });
  });

  it('ifaceRegex: against addresses first, then names; iface entries are tried before any regex', () => {
    expect(chooseUnderlay({ ifaceRegex: ['^zzz', '^172\\.16\\.'] }, { netns: sel })).toMatchObject({ iface: 'eth1', address: '172.16.1.5', chosenBy: 'ifaceRegex ^172\\.16\\. (address)' });
    expect(chooseUnderlay({ ifaceRegex: '^ens[0-9]+$' }, { netns: sel })).toMatchObject({ iface: 'ens5', address: '10.20.0.5', chosenBy: 'ifaceRegex ^ens[0-9]+$ (name)' });
    expect(chooseUnderlay({ iface: ['nosuch0', 'eth1'], ifaceRegex: ['^ens'] }, { netns: sel })).toMatchObject({ iface: 'eth1' });
    expect(chooseUnderlay({ iface: ['nosuch0'], ifaceRegex: ['^ens'] }, { netns: sel })).toMatchObject({ iface: 'ens5' });
  });

  it('nothing matching, an interface without IPv4, a bad regex and no default route are each said plainly', () => {
    expect(() => chooseUnderlay({ iface: ['nosuch0'], ifaceRegex: ['^wlan'] }, { netns: sel }))
      .toThrow(/no interface matches iface \["nosuch0"\] or ifaceRegex \["\^wlan"\]; interfaces here: lo:\[127\.0\.0\.1\].*eth0:\[198\.51\.100\.10\]/);
    expect(() => chooseUnderlay({ iface: 'bare0' }, { netns: sel })).toThrow(/no interface matches iface \["bare0"\] with an IPv4 address \(bare0 \(iface bare0\) has no IPv4 address\)/);
    expect(() => chooseUnderlay({ ifaceRegex: '(' }, { netns: sel })).toThrow(/ifaceRegex "\(":/);
    const lone = netns('noroute');
    veth(lone, 'eth0', 1500, ['192.0.2.20/24']);
    expect(() => chooseUnderlay({}, { netns: lone })).toThrow(/no IPv4 default route in .*noroute.*set "iface", "ifaceRegex" or "publicIP"/);
    expect(() => chooseUnderlay({ publicIP: 'ten' }, { netns: sel })).toThrow(/publicIP "ten" is not an IPv4 address/);
  });

  it('publicIP changes what is announced; one held here also picks its interface (flanneld), one held nowhere (a NAT\'s) keeps the default route\'s', () => {
    expect(chooseUnderlay({ publicIP: '10.20.0.6' }, { netns: sel })).toMatchObject({ iface: 'ens5', address: '10.20.0.6', publicIP: '10.20.0.6', mtu: 9001 });
    expect(chooseUnderlay({ publicIP: '203.0.113.7' }, { netns: sel })).toMatchObject({ iface: 'eth0', address: '198.51.100.10', publicIP: '203.0.113.7' });
    expect(chooseUnderlay({ iface: 'eth1', publicIP: '203.0.113.7' }, { netns: sel })).toMatchObject({ iface: 'eth1', address: '172.16.1.5', publicIP: '203.0.113.7', podMTU: 1410 });
    // the address a cluster source already holds for the node (the lab's datastore) picks its interface the same way
    expect(chooseUnderlay({}, { netns: sel, known: '172.16.1.5' })).toMatchObject({ iface: 'eth1', publicIP: '172.16.1.5', mtu: 1460 });
  });
});

describe('the IPv6 underlay address, as flanneld\'s dual stack picks it', () => {
  it('by default: the default route\'s interface, its first global IPv6 address (permanent before dynamic, never a deprecated one)', () => {
    const u = chooseUnderlay({}, { netns: dual });
    expect(u).toMatchObject({ iface: 'eth0', address: '198.51.100.10', publicIP: '198.51.100.10', address6: '2001:db8:1::10', publicIP6: '2001:db8:1::10', podMTU: 1450 });
  });

  it('the same interface as IPv4 however it was found; of two configured addresses, the kernel\'s first (the newest), as flannel takes it', () => {
    expect(chooseUnderlay({ iface: 'ens5' }, { netns: dual })).toMatchObject({ iface: 'ens5', address: '10.20.0.5', address6: 'fc00:f853:ccd:e793::12', publicIP6: 'fc00:f853:ccd:e793::12' });
    expect(chooseUnderlay({ iface: '10.20.0.5' }, { netns: dual })).toMatchObject({ iface: 'ens5', address6: 'fc00:f853:ccd:e793::12' });
    // an IPv6 address in iface: the interface holding it, and that address (written another way too)
    expect(chooseUnderlay({ iface: ['nosuch0', 'fc00:f853:ccd:e793:0::11'] }, { netns: dual })).toMatchObject({ iface: 'ens5', address: '10.20.0.5', address6: 'fc00:f853:ccd:e793:0::11', chosenBy: 'iface fc00:f853:ccd:e793:0::11' });
    // a regex that chose by an IPv4 address picks the IPv6 address it matches too
    expect(chooseUnderlay({ ifaceRegex: '^10\\.20\\.|::11$' }, { netns: dual })).toMatchObject({ iface: 'ens5', address: '10.20.0.5', address6: 'fc00:f853:ccd:e793::11' });
    // an interface whose one IPv6 address is not global (kernel's link-local) gives no IPv6 underlay
    const u = chooseUnderlay({ iface: 'eth1' }, { netns: dual });
    expect(u).toMatchObject({ iface: 'eth1', address: '172.16.1.5' });
    expect(u.address6).toBeUndefined();
    expect(u.publicIP6).toBeUndefined();
    // and an interface with IPv6 only is passed over, as one without IPv4 is
    expect(() => chooseUnderlay({ iface: '2001:db8:9::9' }, { netns: dual })).toThrow(/v6only0 \(iface 2001:db8:9::9\) has no IPv4 address/);
  });

  it('a node whose interface has no IPv6 at all simply has none; IPv4 as before', () => {
    const u = chooseUnderlay({}, { netns: sel });
    expect(u).toMatchObject({ iface: 'eth0', address: '198.51.100.10', publicIP: '198.51.100.10' });
    expect('address6' in u || 'publicIP6' in u).toBe(false);
  });

  it('publicIPv6 changes what is announced; one held here picks its interface (flanneld looks it up), on another interface than IPv4\'s it is refused', () => {
    expect(chooseUnderlay({ publicIPv6: '2001:db8:ffff::1' }, { netns: dual })).toMatchObject({ iface: 'eth0', address6: '2001:db8:1::10', publicIP6: '2001:db8:ffff::1', publicIP: '198.51.100.10' });
    expect(chooseUnderlay({ publicIPv6: 'fc00:f853:ccd:e793::11' }, { netns: dual })).toMatchObject({ iface: 'ens5', address: '10.20.0.5', address6: 'fc00:f853:ccd:e793::11', publicIP6: 'fc00:f853:ccd:e793::11', chosenBy: 'the interface holding fc00:f853:ccd:e793::11' });
    expect(chooseUnderlay({ publicIP: '10.20.0.5', publicIPv6: 'fc00:f853:ccd:e793::11' }, { netns: dual })).toMatchObject({ iface: 'ens5', address6: 'fc00:f853:ccd:e793::11' });
    expect(() => chooseUnderlay({ iface: 'eth0', publicIPv6: 'fc00:f853:ccd:e793::11' }, { netns: dual })).toThrow(/publicIPv6 fc00:f853:ccd:e793::11 is on interface ens5, not on eth0 \(iface eth0\)/);
    expect(() => chooseUnderlay({ iface: 'eth1', publicIPv6: '2001:db8:ffff::1' }, { netns: dual })).toThrow(/publicIPv6 2001:db8:ffff::1 given, but interface eth1 \(iface eth1\) has no global IPv6 address/);
    expect(() => chooseUnderlay({ publicIPv6: '10.0.0.1' }, { netns: dual })).toThrow(/publicIPv6 "10.0.0.1" is not an IPv6 address/);
    // the IPv6 address a cluster source already holds for the node (the lab's datastore), when the interface has it
    expect(chooseUnderlay({}, { netns: dual, known6: '2001:db8:1::20' })).toMatchObject({ iface: 'eth0', address6: '2001:db8:1::20', publicIP6: '2001:db8:1::20' });
  });
});

describe('flannel\'s public-IP annotations on the Node', () => {
  let api: FakeKube, client: KubeClient;
  beforeAll(async () => {
    api = new FakeKube();
    await api.listen(path.join(dir, 'api.sock'));
    client = new KubeClient({ server: `unix://${path.join(dir, 'api.sock')}` });
  });
  afterAll(async () => { client.close(); await api.close(); });
  const annotations = (n: string) => (api.get('nodes', n)!.metadata as { annotations: Record<string, string> }).annotations;
  const withAnn = (o: Record<string, unknown>, ann: Record<string, string>) => ({ ...o, metadata: { ...(o.metadata as object), annotations: ann } });

  it('public-ip is the address the agent chose (not the InternalIP) when nothing overrides it', async () => {
    api.put('nodes', nodeObject('a1', '10.244.1.0/24', '172.30.0.11'));
    const rec = await announceNode(client, 'a1', 1, '198.51.100.10');
    expect(rec.underlayIP).toBe('198.51.100.10');
    expect(annotations('a1')[FLANNEL.publicIP]).toBe('198.51.100.10');
  });

  it('public-ip-overwrite is announced as public-ip and is the VTEP the others send to', async () => {
    api.put('nodes', withAnn(nodeObject('a2', '10.244.2.0/24', '172.30.0.12'), { [FLANNEL.publicIPOverwrite]: '203.0.113.9' }));
    expect(await nodeAddressing(client, 'a2')).toEqual({ overwrite: '203.0.113.9', internalIP: '172.30.0.12', nodePublicIP: undefined });
    const rec = await announceNode(client, 'a2', 1, '198.51.100.10');
    expect(rec).toMatchObject({ name: 'a2', underlayIP: '203.0.113.9', podCIDR: '10.244.2.0/24' });
    expect(annotations('a2')).toMatchObject({ [FLANNEL.publicIP]: '203.0.113.9', [FLANNEL.publicIPOverwrite]: '203.0.113.9', [FLANNEL.backendType]: 'vxlan' });
  });

  it('node-public-ip is read back for the agent to use as its publicIP; a malformed annotation is refused by name', async () => {
    api.put('nodes', withAnn(nodeObject('a3', '10.244.3.0/24', '172.30.0.13'), { [FLANNEL.nodePublicIP]: '192.0.2.33' }));
    expect((await nodeAddressing(client, 'a3')).nodePublicIP).toBe('192.0.2.33');
    api.put('nodes', withAnn(nodeObject('a4', '10.244.4.0/24', '172.30.0.14'), { [FLANNEL.publicIPOverwrite]: 'not-an-ip' }));
    await expect(announceNode(client, 'a4', 1, '198.51.100.10')).rejects.toThrow(/node a4: annotation flannel\.alpha\.coreos\.com\/public-ip-overwrite is "not-an-ip", not an IPv4 address/);
  });
});

describe('an agent started on a 9001-byte underlay, with no underlayMTU in its config', () => {
  async function startAgent(name: string, ns: string, cfg: Record<string, unknown>): Promise<{ status: Record<string, unknown>; log: string }> {
    const stateDir = path.join(dir, name), socket = path.join(stateDir, 'agent.sock'), logFile = path.join(dir, `${name}.log`), cfgFile = path.join(dir, `${name}.json`);
    writeFileSync(cfgFile, JSON.stringify({ node: name, stateDir, socket, workers: 1, ...cfg }));
    const out = openSync(logFile, 'a');
    const child: ChildProcess = spawn('ip', ['netns', 'exec', ns, process.execPath, distFile('cli/twill.js'), 'agent', '--config', cfgFile], { stdio: ['ignore', out, out] });
    closeSync(out);
    pids.push(child.pid!); // ip netns exec execs node: this is the agent's pid
    for (const deadline = Date.now() + 15_000; ;) {
      try {
        return { status: (await request(socket, { op: 'status' }, 1000)) as Record<string, unknown>, log: readFileSync(logFile, 'utf8') };
      } catch (e) {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`agent ${name} did not come up (${(e as Error).message}): ${readFileSync(logFile, 'utf8').slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
  const tunMtu = (ns: string) => (JSON.parse(ipn(ns, '-j', 'link', 'show', 'dev', 'twill0')) as { mtu: number }[])[0].mtu;

  it('from a datastore: reports mtu 8951 and sets it on its TUN device', async () => {
    const ns = node('agent9001', 9001, '192.0.2.10');
    const ds = path.join(dir, 'datastore');
    createDatastore(ds, { clusterCIDR: '10.244.0.0/16', nodes: [{ name: 'n1', underlayIP: '192.0.2.10', podCIDR: '10.244.1.0/24', vtepMAC: '02:00:00:00:00:01', backend: 'twill' }], model: { namespaces: [], pods: [], policies: [] } });
    const { status, log } = await startAgent('n1', ns, { datastore: ds });
    expect(status.mtu).toBe(8951);
    expect(tunMtu(ns)).toBe(8951);
    expect(log).toMatch(/"iface":"eth0","address":"192.0.2.10".*"mtu":9001,"podMTU":8951/);
  });

  it('from the Kubernetes API: honours public-ip-overwrite, binds its local address, reports mtu 8951', async () => {
    const ns = node('agentkube', 9001, '192.0.2.20');
    const api = new FakeKube();
    await api.listen(path.join(dir, 'api2.sock'));
    try {
      api.put('nodes', { ...nodeObject('k1', '10.244.7.0/24', '192.0.2.20'), metadata: { name: 'k1', annotations: { [FLANNEL.publicIPOverwrite]: '203.0.113.20' } } });
      const { status } = await startAgent('k1', ns, { kubernetes: { server: `unix://${path.join(dir, 'api2.sock')}` } });
      expect(status).toMatchObject({ mtu: 8951, podCIDR: '10.244.7.0/24' });
      const ann = (api.get('nodes', 'k1')!.metadata as { annotations: Record<string, string> }).annotations;
      expect(ann[FLANNEL.publicIP]).toBe('203.0.113.20'); // what the other nodes send VXLAN to
      // The overlay port is bound on the interface's own address (the overwrite is not on any interface here).
      const ss = spawnSync('ip', ['netns', 'exec', ns, 'ss', '-Hulnp', 'sport = :8472'], { encoding: 'utf8' }).stdout;
      expect(ss).toContain('192.0.2.20:8472');
    } finally {
      await api.close();
    }
  });
});
