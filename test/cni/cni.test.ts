// twill-cni end to end against a real agent: a one-node lab (namespaces tw<lab>-*),
// pod namespaces twt-cni-<random> made here, the standalone binary run inside the
// node's netns as a runtime runs it. Nothing is added to the root namespace and
// nothing is sent outside these namespaces.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, existsSync, watch } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { labUp, labDown } from '../../lab/lab.js';
import type { LabNode, LabState } from '../../lab/state.js';
import type { ChildProcess } from 'node:child_process';
import { request } from '../../agent/socket.js';
import { hostIfName } from '../../cni/plugin.js';
import { familyOf } from '../../cni/ipam.js';
import { installNodeCni, cniAdd, cniDel } from '../../cni/runtime.js';
import { BIN, ROOT, cni, cniSync, ensureBinary, inNs, linkExists, percentile, pool, PodNamespaces, PATH_ENV, type CniCall } from './helpers.js';

const LAB = `c${randomBytes(2).toString('hex')}`;
let s: LabState;
let node: LabNode;
let ipamRoot: string;
const pods = new PodNamespaces();
const fakeAgents: net.Server[] = [];
const standIns: ChildProcess[] = []; // stand-in agents (test/cni/standin-agent.mjs), killed at the end

beforeAll(async () => {
  ensureBinary();
  ipamRoot = mkdtempSync(path.join(tmpdir(), 'twill-cni-ipam-'));
  s = await labUp({ name: LAB, nodes: 1, podsPerNode: 0 });
  node = s.nodes[0];
}, 180_000);

afterAll(async () => {
  for (const f of fakeAgents) f.close();
  for (const ch of standIns) ch.kill('SIGKILL');
  pods.delAll();
  await labDown(LAB);
  rmSync(ipamRoot, { recursive: true, force: true });
}, 120_000);

let nets = 0;
/** A network configuration with its own IPAM dir (network name), so tests do not see each other's addresses. */
function conf(version = '1.1.0', extra: Record<string, unknown> = {}, ipam: Record<string, unknown> = {}): Record<string, unknown> {
  return { cniVersion: version, name: `twill${nets}`, type: 'twill-cni', agentSocket: node.socket, ipam: { dataDir: ipamRoot, ...ipam }, ...extra };
}
const freshConf = (...a: Parameters<typeof conf>) => { nets++; return conf(...a); };

const run = (c: CniCall, stdin: unknown) => cniSync(node.netns, c, stdin);
const ipamHeld = (network: string): string[] => {
  const d = path.join(ipamRoot, network);
  return existsSync(d) ? readdirSync(d).filter((n) => familyOf(n) && readdirSync(path.join(d, n)).length > 0 || n.startsWith('.tmp-')) : [];
};
const agentPods = async (sock = node.socket) => (await request(sock, { op: 'pods' })) as { containerId: string; name: string; namespace: string; ip: string; ip6?: string; hostIf: string }[];
const cid = () => randomBytes(8).toString('hex');

function expectError(r: { code: number; json?: Record<string, unknown> }, code: number, msg?: RegExp): void {
  expect(r.code, JSON.stringify(r)).not.toBe(0);
  expect(r.json, JSON.stringify(r)).toBeDefined();
  expect(r.json!.code, JSON.stringify(r.json)).toBe(code);
  expect(typeof r.json!.cniVersion).toBe('string');
  expect(typeof r.json!.msg).toBe('string');
  expect(typeof r.json!.details).toBe('string'); // says what to fix
  if (msg) expect(String(r.json!.msg) + ' ' + String(r.json!.details)).toMatch(msg);
}

describe('VERSION', () => {
  test('reports the supported versions', () => {
    const r = run({ command: 'VERSION' }, { cniVersion: '1.1.0' });
    expect(r.code).toBe(0);
    expect(r.json).toEqual({ cniVersion: '1.1.0', supportedVersions: ['0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  });

  test('the binary is a standalone executable (no node needed on the host) or the documented wrapper', () => {
    const head = readdirSync(path.dirname(BIN));
    expect(head).toContain('twill-cni');
    // Runs with an empty environment (no PATH at all): it does not look for node.
    const r = spawnSync(BIN, [], { env: { CNI_COMMAND: 'VERSION' }, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('supportedVersions');
  });

  test('without CNI_COMMAND (a person running it): name, version and supported versions on stderr, exit 0, as the reference plugins', async () => {
    const pkg = JSON.parse(readFileSync(path.join(path.dirname(BIN), '../../package.json'), 'utf8')) as { version: string };
    const want = `CNI plugin twill-cni version ${pkg.version}\nCNI protocol versions supported: 0.3.1, 0.4.0, 1.0.0, 1.1.0\n`;
    for (const env of [{}, { CNI_COMMAND: '' }, { PATH: PATH_ENV, CNI_CONTAINERID: 'x', CNI_IFNAME: 'eth0' }]) {
      // stdin stays open and is never written, as at a terminal: the plugin must not wait for it
      const ch = spawn(BIN, [], { env, stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '', err = '';
      ch.stdout.on('data', (d: Buffer) => (out += d));
      ch.stderr.on('data', (d: Buffer) => (err += d));
      const killer = setTimeout(() => ch.kill('SIGKILL'), 10_000);
      const code = await new Promise<number | null>((resolve) => ch.on('close', resolve));
      clearTimeout(killer);
      ch.stdin.destroy();
      expect(code, `${JSON.stringify(env)}: ${err}`).toBe(0);
      expect(err).toBe(want);
      expect(out).toBe('');
    }
  });
});

describe('errors: the spec\'s code, a message saying what to fix, non-zero exit, nothing left behind', () => {
  test('bad JSON → 6', () => {
    const p = pods.add();
    expectError(run({ command: 'ADD', containerId: cid(), netns: p.path }, '{"cniVersion": "1.1.0", '), 6, /not valid JSON/);
  });

  test('missing name / type / cniVersion → 7', () => {
    const p = pods.add();
    const { name: _n, ...noName } = conf();
    const { type: _t, ...noType } = conf();
    const { cniVersion: _v, ...noVersion } = conf();
    expectError(run({ command: 'ADD', containerId: cid(), netns: p.path }, noName), 7, /"name"/);
    expectError(run({ command: 'ADD', containerId: cid(), netns: p.path }, noType), 7, /"type"/);
    expectError(run({ command: 'ADD', containerId: cid(), netns: p.path }, noVersion), 7, /cniVersion/);
  });

  test('unsupported cniVersion → 1', () => {
    const p = pods.add();
    for (const v of ['0.2.0', '2.0.0']) expectError(run({ command: 'ADD', containerId: cid(), netns: p.path }, conf(v)), 1, /0\.3\.1, 0\.4\.0, 1\.0\.0, 1\.1\.0/);
  });

  test('missing or bad environment variables → 4', () => {
    const p = pods.add();
    expectError(run({ command: 'ADD', netns: p.path }, conf()), 4, /CNI_CONTAINERID/);
    expectError(run({ command: 'FROB', containerId: cid(), netns: p.path }, conf()), 4, /unknown CNI_COMMAND/);
    expectError(run({ command: 'ADD', containerId: cid(), netns: p.path, args: 'K8S_POD_NAME' }, conf()), 4, /CNI_ARGS/);
    expectError(run({ command: 'ADD', containerId: cid(), netns: p.path, ifname: 'a/b' }, conf()), 4, /CNI_IFNAME/);
  });

  test('missing netns → 4 (unset) or 3 (path does not exist)', () => {
    const c = freshConf();
    expectError(run({ command: 'ADD', containerId: cid() }, c), 4, /CNI_NETNS/);
    expectError(run({ command: 'ADD', containerId: cid(), netns: '/var/run/netns/twt-cni-doesnotexist' }, c), 3, /does not exist/);
    expect(ipamHeld(String(c.name))).toEqual([]);
  });

  test('a delegated IPAM type → 2', () => {
    const p = pods.add();
    expectError(run({ command: 'ADD', containerId: cid(), netns: p.path }, conf('1.1.0', {}, { type: 'host-local' })), 2, /ipam\.type/);
  });

  test('an interface that already exists in the pod → 4, and the address and veth are rolled back', () => {
    const p = pods.add();
    expect(inNs(p.name, ['ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'other0']).code).toBe(0);
    const c = freshConf();
    const id = cid();
    expectError(run({ command: 'ADD', containerId: id, netns: p.path }, c), 4, /already exists/);
    expect(ipamHeld(String(c.name))).toEqual([]);
    expect(linkExists(node.netns, hostIfName(id, 'eth0'))).toBe(false);
    expect(linkExists(p.name, 'eth0')).toBe(true); // not ours: untouched
  });

  test('agent not ready → 11 (try again later), nothing created', () => {
    const p = pods.add();
    const c = freshConf('1.1.0', { agentSocket: path.join(s.dir, 'no-agent.sock') });
    expectError(run({ command: 'ADD', containerId: cid(), netns: p.path }, c), 11, /not ready/);
    expect(ipamHeld(String(c.name))).toEqual([]);
  });

  test('agent failing the registration after the veth is made → 11, veth and address rolled back', async () => {
    // A stand-in agent that answers status like the real one and drops the add.
    const sock = path.join(s.dir, `fake-${randomBytes(3).toString('hex')}.sock`);
    const real = (await request(node.socket, { op: 'status' })) as Record<string, unknown>;
    const srv = net.createServer((conn) => conn.on('data', (d) => {
      const req = JSON.parse(String(d).split('\n')[0]) as { op: string };
      if (req.op === 'status') conn.end(JSON.stringify({ ok: true, result: real }) + '\n');
      else conn.end(JSON.stringify({ ok: false, error: 'engine did not apply the new pod within 2 s' }) + '\n');
    }));
    fakeAgents.push(srv);
    await new Promise<void>((r) => srv.listen(sock, r));
    const p = pods.add();
    const c = freshConf('1.1.0', { agentSocket: sock });
    const id = cid();
    const r = await cni(node.netns, { command: 'ADD', containerId: id, netns: p.path }, c);
    expectError(r, 11, /engine did not apply/);
    expect(linkExists(node.netns, hostIfName(id, 'eth0'))).toBe(false);
    expect(linkExists(p.name, 'eth0')).toBe(false);
    expect(ipamHeld(String(c.name))).toEqual([]);
  });

  test('an exhausted range → 11 with "no free address"', () => {
    const c = freshConf('1.1.0', {}, { rangeStart: '10.244.1.250', rangeEnd: '10.244.1.250' });
    const a = pods.add(), b = pods.add();
    const idA = cid();
    const ra = run({ command: 'ADD', containerId: idA, netns: a.path }, c);
    expect(ra.code, ra.out + ra.err).toBe(0);
    expectError(run({ command: 'ADD', containerId: cid(), netns: b.path }, c), 11, /no free address/);
    expect(linkExists(b.name, 'eth0')).toBe(false);
    expect(run({ command: 'DEL', containerId: idA, netns: a.path }, c).code).toBe(0);
  });
});

describe('ADD, CHECK, DEL', () => {
  test('ADD wires the pod, registers it with the agent (name/namespace from CNI_ARGS), and the pod pings its gateway', async () => {
    const p = pods.add();
    const c = freshConf();
    const id = cid();
    const r = run({ command: 'ADD', containerId: id, netns: p.path, args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0' }, c);
    expect(r.code, r.out + r.err).toBe(0);
    const res = r.json as { cniVersion: string; interfaces: { name: string; mac: string; mtu?: number; sandbox?: string }[]; ips: { address: string; gateway: string; interface: number }[]; routes: { dst: string; gw: string }[] };
    expect(res.cniVersion).toBe('1.1.0');
    expect(res.interfaces).toHaveLength(2);
    expect(res.interfaces[0]).toMatchObject({ name: hostIfName(id, 'eth0'), mtu: 1500 });
    expect(res.interfaces[1]).toMatchObject({ name: 'eth0', sandbox: p.path, mtu: 1450 });
    expect(res.ips[0].address).toMatch(/^10\.244\.1\.\d+\/24$/);
    expect(res.ips[0]).toMatchObject({ gateway: '10.244.1.1', interface: 1 });
    expect(res.routes).toEqual([{ dst: '0.0.0.0/0', gw: '10.244.1.1' }]);
    const ip = res.ips[0].address.split('/')[0];
    expect(inNs(p.name, ['ip', '-br', 'addr', 'show', 'dev', 'eth0']).out).toContain(res.ips[0].address);
    expect(inNs(p.name, ['cat', '/sys/class/net/eth0/address']).out.trim()).toBe(res.interfaces[1].mac);
    const reg = (await agentPods()).find((x) => x.containerId === id);
    expect(reg).toMatchObject({ name: 'web-0', namespace: 'shop', ip, hostIf: hostIfName(id, 'eth0') });
    expect(inNs(p.name, ['ping', '-c', '1', '-W', '2', '10.244.1.1']).code).toBe(0);

    // CHECK with the ADD's result: fine. With a wrong prevResult: the plugin-specific CHECK failure code.
    const chk = run({ command: 'CHECK', containerId: id, netns: p.path }, { ...c, prevResult: res });
    expect(chk.code, chk.out + chk.err).toBe(0);
    expect(chk.out.trim()).toBe('');
    const wrong = { ...res, ips: [{ ...res.ips[0], address: '10.244.1.254/24' }] };
    expectError(run({ command: 'CHECK', containerId: id, netns: p.path }, { ...c, prevResult: wrong }), 100, /prevResult does not match/);
    expectError(run({ command: 'CHECK', containerId: id, netns: p.path }, c), 7, /prevResult/);
    inNs(p.name, ['ip', 'route', 'del', 'default']);
    expectError(run({ command: 'CHECK', containerId: id, netns: p.path }, { ...c, prevResult: res }), 100, /default route/);

    // DEL: veth gone, address free, agent no longer serves it; DEL again succeeds.
    const del = run({ command: 'DEL', containerId: id, netns: p.path }, { ...c, prevResult: res });
    expect(del.code, del.out + del.err).toBe(0);
    expect(del.out.trim()).toBe('');
    expect(linkExists(node.netns, hostIfName(id, 'eth0'))).toBe(false);
    expect(linkExists(p.name, 'eth0')).toBe(false);
    expect(ipamHeld(String(c.name))).toEqual([]);
    expect((await agentPods()).some((x) => x.containerId === id)).toBe(false);
    expect(run({ command: 'DEL', containerId: id, netns: p.path }, c).code).toBe(0);
    expectError(run({ command: 'CHECK', containerId: id, netns: p.path }, { ...c, prevResult: res }), 3);
  });

  test('DEL succeeds with the agent down and with the netns gone', () => {
    const p = pods.add();
    const c = freshConf();
    const id = cid();
    expect(run({ command: 'ADD', containerId: id, netns: p.path }, c).code).toBe(0);
    pods.del(p.name); // the pod's netns is gone (the veth went with it)
    const down = { ...c, agentSocket: path.join(s.dir, 'no-agent.sock') };
    const r = run({ command: 'DEL', containerId: id, netns: p.path }, down);
    expect(r.code, r.out + r.err).toBe(0);
    expect(ipamHeld(String(c.name))).toEqual([]);
    expect(run({ command: 'DEL', containerId: id }, c).code).toBe(0); // no CNI_NETNS at all
  });

  test('results follow the requested version; prevResult is kept when chained', () => {
    for (const v of ['0.3.1', '0.4.0', '1.0.0']) {
      const p = pods.add();
      const c = freshConf(v);
      const id = cid();
      const r = run({ command: 'ADD', containerId: id, netns: p.path }, c);
      expect(r.code, r.out + r.err).toBe(0);
      const res = r.json as { cniVersion: string; ips: Record<string, unknown>[]; interfaces: Record<string, unknown>[] };
      expect(res.cniVersion).toBe(v);
      if (v === '1.0.0') expect(res.ips[0].version).toBeUndefined();
      else expect(res.ips[0].version).toBe('4');
      expect(res.interfaces[1].mtu).toBeUndefined(); // mtu is 1.1.0's
      if (v === '0.3.1') expectError(run({ command: 'CHECK', containerId: id, netns: p.path }, { ...c, prevResult: res }), 1, /CHECK/);
      expect(run({ command: 'DEL', containerId: id, netns: p.path }, c).code).toBe(0);
    }
    const p = pods.add();
    const c = freshConf('1.0.0');
    const id = cid();
    const prevResult = { cniVersion: '1.0.0', interfaces: [{ name: 'lo0', mac: '00:00:00:00:00:00', sandbox: p.path }], ips: [{ address: '192.0.2.7/32', interface: 0 }], dns: { nameservers: ['10.96.0.10'] } };
    const r = run({ command: 'ADD', containerId: id, netns: p.path }, { ...c, prevResult });
    expect(r.code, r.out + r.err).toBe(0);
    const res = r.json as { interfaces: { name: string }[]; ips: { address: string; interface: number }[]; dns: unknown };
    expect(res.interfaces.map((i) => i.name)).toEqual(['lo0', hostIfName(id, 'eth0'), 'eth0']);
    expect(res.ips[0]).toEqual({ address: '192.0.2.7/32', interface: 0 });
    expect(res.ips[1].interface).toBe(2);
    expect(res.dns).toEqual({ nameservers: ['10.96.0.10'] });
    expect(run({ command: 'DEL', containerId: id, netns: p.path }, c).code).toBe(0);
  });
});

describe('STATUS and GC (1.1.0)', () => {
  test('STATUS: 0 and no output with the agent up; 50 with it down; 1 before 1.1.0', () => {
    const ok = run({ command: 'STATUS' }, conf());
    expect(ok.code, ok.out).toBe(0);
    expect(ok.out.trim()).toBe('');
    expectError(run({ command: 'STATUS' }, conf('1.1.0', { agentSocket: path.join(s.dir, 'no-agent.sock') })), 50, /agent/);
    expectError(run({ command: 'STATUS' }, conf('1.0.0')), 1, /STATUS/);
  });

  test('GC releases every attachment not in cni.dev/valid-attachments (veth, agent, address) and keeps the rest', async () => {
    const c = freshConf();
    const ids = [cid(), cid(), cid()];
    const ps = ids.map(() => pods.add());
    for (let i = 0; i < 3; i++) expect(run({ command: 'ADD', containerId: ids[i], netns: ps[i].path }, c).code).toBe(0);
    expectError(run({ command: 'GC' }, c), 7, /valid-attachments/);
    expectError(run({ command: 'GC' }, { ...conf('1.0.0'), name: c.name }), 1, /GC/);
    const gc = run({ command: 'GC' }, { ...c, 'cni.dev/valid-attachments': [{ containerID: ids[0], ifname: 'eth0' }] });
    expect(gc.code, gc.out + gc.err).toBe(0);
    expect(gc.out.trim()).toBe('');
    expect(ipamHeld(String(c.name))).toHaveLength(1);
    expect(linkExists(node.netns, hostIfName(ids[0], 'eth0'))).toBe(true);
    for (const id of ids.slice(1)) expect(linkExists(node.netns, hostIfName(id, 'eth0'))).toBe(false);
    const served = (await agentPods()).map((x) => x.containerId);
    expect(served).toContain(ids[0]);
    expect(served).not.toContain(ids[1]);
    expect(inNs(ps[0].name, ['ping', '-c', '1', '-W', '2', '10.244.1.1']).code).toBe(0);
    expect(run({ command: 'GC' }, { ...c, 'cni.dev/valid-attachments': [] }).code).toBe(0);
    expect(ipamHeld(String(c.name))).toEqual([]);
    expect(linkExists(node.netns, hostIfName(ids[0], 'eth0'))).toBe(false);
  });
});

describe('concurrency, crashes and latency', () => {
  const N = 100;
  test(`${N} parallel ADDs then ${N} parallel DELs: no address twice, none leaked, every pod reaches its gateway`, async () => {
    const c = freshConf();
    const ps = Array.from({ length: N }, () => pods.add());
    const ids = ps.map(() => cid());
    // All N processes are started at once (no pool); the runtime would do no better.
    const adds = await Promise.all(ps.map((p, i) => cni(node.netns, { command: 'ADD', containerId: ids[i], netns: p.path, args: `K8S_POD_NAMESPACE=par;K8S_POD_NAME=p${i}` }, c)));
    const failed = adds.filter((r) => r.code !== 0);
    expect(failed.map((r) => r.out + r.err).slice(0, 3)).toEqual([]);
    const ips = adds.map((r) => (r.json as { ips: { address: string }[] }).ips[0].address);
    expect(new Set(ips).size).toBe(N);
    expect(ipamHeld(String(c.name))).toHaveLength(N);
    const served = new Set((await agentPods()).map((x) => x.containerId));
    expect(ids.every((id) => served.has(id))).toBe(true);
    const unreachable = await pool(N, 16, async (i) => (inNs(ps[i].name, ['ping', '-c', '1', '-W', '2', '10.244.1.1']).code === 0 ? undefined : ips[i]));
    expect(unreachable.filter(Boolean)).toEqual([]);
    const dels = await Promise.all(ps.map((p, i) => cni(node.netns, { command: 'DEL', containerId: ids[i], netns: p.path }, c)));
    expect(dels.filter((r) => r.code !== 0).map((r) => r.out + r.err)).toEqual([]);
    expect(ipamHeld(String(c.name))).toEqual([]);
    const left = new Set((await agentPods()).map((x) => x.containerId));
    expect(ids.filter((id) => left.has(id))).toEqual([]);
    expect(ids.filter((id) => linkExists(node.netns, hostIfName(id, 'eth0')))).toEqual([]);
    for (const p of ps) pods.del(p.name);
  }, 300_000);

  test('kill -9 at random points of ADD, then a retried ADD or a DEL converges to a clean state', async () => {
    const c = freshConf();
    const rounds = 24;
    let killedMidway = 0;
    for (let i = 0; i < rounds; i++) {
      const p = pods.add();
      const id = cid();
      let pid = 0;
      const pending = cni(node.netns, { command: 'ADD', containerId: id, netns: p.path }, c, (x) => { pid = x; });
      // An ADD takes ~50-70 ms here: kill anywhere in it (start-up, IPAM, veth, agent), sometimes after.
      await new Promise((r) => setTimeout(r, 5 + Math.random() * 80));
      // pid is `ip netns exec`, which execs the plugin: same process.
      try { process.kill(pid, 'SIGKILL'); } catch { /* already done */ }
      if ((await pending).code !== 0) killedMidway++;
      if (i % 2 === 0) {
        const r = run({ command: 'ADD', containerId: id, netns: p.path }, c);
        expect(r.code, `round ${i}: ${r.out}${r.err}`).toBe(0);
        expect(ipamHeld(String(c.name))).toHaveLength(1);
        expect(inNs(p.name, ['ping', '-c', '1', '-W', '2', '10.244.1.1']).code, `round ${i}`).toBe(0);
        const chk = run({ command: 'CHECK', containerId: id, netns: p.path }, { ...c, prevResult: r.json });
        expect(chk.code, `round ${i}: ${chk.out}`).toBe(0);
      }
      const d = run({ command: 'DEL', containerId: id, netns: p.path }, c);
      expect(d.code, `round ${i}: ${d.out}${d.err}`).toBe(0);
      expect(ipamHeld(String(c.name)), `round ${i}`).toEqual([]);
      expect(linkExists(node.netns, hostIfName(id, 'eth0')), `round ${i}`).toBe(false);
      expect(linkExists(p.name, 'eth0'), `round ${i}`).toBe(false);
      expect((await agentPods()).some((x) => x.containerId === id), `round ${i}`).toBe(false);
      pods.del(p.name);
    }
    console.log(`kill -9 during ADD: ${killedMidway}/${rounds} ADDs were killed before they finished`);
    expect(killedMidway).toBeGreaterThan(0);
  }, 180_000);

  test('ADD latency, process start included (sequential ADDs)', async () => {
    const c = freshConf();
    const ms: number[] = [];
    const made: { id: string; p: { name: string; path: string } }[] = [];
    for (let i = 0; i < 30; i++) {
      const p = pods.add();
      const id = cid();
      const r = run({ command: 'ADD', containerId: id, netns: p.path }, c);
      expect(r.code, r.out + r.err).toBe(0);
      ms.push(r.ms);
      made.push({ id, p });
    }
    const p50 = percentile(ms, 50), p99 = percentile(ms, 99);
    console.log(`twill-cni ADD latency over ${ms.length} sequential calls (incl. ip netns exec + process start): p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, min ${Math.min(...ms).toFixed(1)} ms`);
    for (const { id, p } of made) { run({ command: 'DEL', containerId: id, netns: p.path }, c); pods.del(p.name); }
    expect(p50).toBeLessThan(1000); // a sanity bound; the target (100 ms) is reported, not asserted, on shared machines
  }, 120_000);
});

// Dual-stack and IPv6-only. The lab's node is 10.244.1.0/24; its IPv6 range is fd00:10:244:1::/64
// (kind's, one /64 per node), gateway ::1. When the lab's agent does not announce podCIDR6 itself,
// a stand-in agent in this process answers `status` with the real one's plus podCIDR6/gatewayIP6
// and forwards add/del/pods to the real agent (so the IPv4 path is the engine's, as before); the
// IPv6-only node is a stand-in that serves add/del/pods from memory (the real node is IPv4).
describe('dual-stack and IPv6-only', () => {
  const V6 = { podCIDR6: 'fd00:10:244:1::/64', gatewayIP6: 'fd00:10:244:1::1' };
  const V6ONLY = { node: 'six', mtu: 1450, ...V6 }; // an IPv6-only node's status (no podCIDR at all, or '')
  type Res = { cniVersion: string; interfaces: { name: string; mac: string; mtu?: number; sandbox?: string }[]; ips: { version?: string; address: string; gateway: string; interface: number }[]; routes: { dst: string; gw: string }[] };
  let dualSock = '';
  let nativeV6 = false; // the lab's own agent announces podCIDR6 (its engine serves IPv6)

  /** A stand-in agent (test/cni/standin-agent.mjs): with `forward`, status = the real one's + extra and other ops go to the real agent; without, status = extra and the rest is served from memory. */
  async function standIn(extra: Record<string, unknown>, forward: boolean): Promise<{ sock: string; adds: () => Promise<Record<string, unknown>[]> }> {
    const sock = path.join(s.dir, `standin-${randomBytes(3).toString('hex')}.sock`);
    const ch = spawn(process.execPath, [path.join(ROOT, 'test/cni/standin-agent.mjs'), sock, JSON.stringify(extra), ...(forward ? [node.socket] : [])], { stdio: ['ignore', 'pipe', 'inherit'] });
    standIns.push(ch);
    await new Promise<void>((resolve, reject) => {
      ch.stdout!.once('data', () => resolve());
      ch.once('exit', (code) => reject(new Error(`stand-in agent exited with ${code}`)));
    });
    return { sock, adds: async () => (await request(sock, { op: 'standin-adds' })) as Record<string, unknown>[] };
  }

  beforeAll(async () => {
    const st = (await request(node.socket, { op: 'status' })) as { podCIDR6?: string };
    nativeV6 = !!st.podCIDR6;
    dualSock = nativeV6 ? node.socket : (await standIn(V6, true)).sock;
    if (nativeV6) expect(st.podCIDR6).toBe(V6.podCIDR6);
  });

  const dualConf = (version = '1.1.0', ipam: Record<string, unknown> = {}) => freshConf(version, { agentSocket: dualSock }, ipam);
  const sysctl = (ns: string, k: string) => inNs(ns, ['cat', `/proc/sys/net/ipv6/conf/${k}`]).out.trim();
  const defaultRoutes6 = (ns: string) => JSON.parse(inNs(ns, ['ip', '-j', '-6', 'route', 'show', 'default']).out) as { gateway?: string; dev?: string }[];

  test('ADD: an IPv4 and an IPv6 address (::2 up), a default route per family, IPv6 usable at once, the node side without IPv6; CHECK; DEL frees both', async () => {
    const p = pods.add();
    const c = dualConf();
    const id = cid();
    const hostIf = hostIfName(id, 'eth0');
    const r = run({ command: 'ADD', containerId: id, netns: p.path, args: 'K8S_POD_NAMESPACE=ds;K8S_POD_NAME=web-0' }, c);
    expect(r.code, r.out + r.err).toBe(0);
    const res = r.json as Res;
    expect(res.ips).toHaveLength(2);
    expect(res.ips[0]).toMatchObject({ gateway: '10.244.1.1', interface: 1 });
    expect(res.ips[0].address).toMatch(/^10\.244\.1\.\d+\/24$/);
    expect(res.ips[1]).toEqual({ address: 'fd00:10:244:1::2/64', gateway: 'fd00:10:244:1::1', interface: 1 });
    expect(res.routes).toEqual([{ dst: '0.0.0.0/0', gw: '10.244.1.1' }, { dst: '::/0', gw: 'fd00:10:244:1::1' }]);
    const [ip4, ip6] = res.ips.map((x) => x.address.split('/')[0]);
    // In the pod: both addresses, the IPv6 one not tentative (nodad), ::/0 via the gateway, no RA, no DAD.
    expect(inNs(p.name, ['ip', '-br', 'addr', 'show', 'dev', 'eth0']).out).toContain(res.ips[0].address);
    expect(inNs(p.name, ['ip', '-6', '-br', 'addr', 'show', 'dev', 'eth0', 'scope', 'global']).out).toContain('fd00:10:244:1::2/64');
    expect(inNs(p.name, ['ip', '-6', 'addr', 'show', 'dev', 'eth0', 'tentative']).out.trim()).toBe('');
    expect(defaultRoutes6(p.name)).toEqual([expect.objectContaining({ gateway: 'fd00:10:244:1::1', dev: 'eth0' })]);
    expect([sysctl(p.name, 'eth0/accept_ra'), sysctl(p.name, 'eth0/accept_dad'), sysctl(p.name, 'eth0/disable_ipv6')]).toEqual(['0', '0', '0']);
    // The node side: IPv6 off (no RS, MLD or DAD from the node's stack into the pod), so no IPv6 address at all.
    expect(sysctl(node.netns, `${hostIf}/disable_ipv6`)).toBe('1');
    expect(inNs(node.netns, ['ip', '-6', 'addr', 'show', 'dev', hostIf]).out.trim()).toBe('');
    // The agent's record carries both.
    expect((await agentPods(dualSock)).find((x) => x.containerId === id)).toMatchObject({ name: 'web-0', namespace: 'ds', ip: ip4, ip6, hostIf });
    expect(ipamHeld(String(c.name)).sort()).toEqual([ip4, ip6]);
    // IPv4 works as before with IPv6 on in the pod; IPv6 too once the engine serves it.
    expect(inNs(p.name, ['ping', '-c', '1', '-W', '2', '10.244.1.1']).code).toBe(0);
    if (nativeV6) expect(inNs(p.name, ['ping', '-6', '-c', '1', '-W', '2', 'fd00:10:244:1::1']).code).toBe(0);

    // CHECK: both addresses and both routes.
    const chk = run({ command: 'CHECK', containerId: id, netns: p.path }, { ...c, prevResult: res });
    expect(chk.code, chk.out + chk.err).toBe(0);
    expectError(run({ command: 'CHECK', containerId: id, netns: p.path }, { ...c, prevResult: { ...res, ips: [res.ips[0]] } }), 100, /prevResult does not match/);
    expectError(run({ command: 'CHECK', containerId: id, netns: p.path }, { ...c, prevResult: { ...res, ips: [res.ips[0], { ...res.ips[1], address: 'fd00:10:244:1::99/64' }] } }), 100, /prevResult does not match/);
    inNs(p.name, ['ip', '-6', 'route', 'del', 'default']);
    expectError(run({ command: 'CHECK', containerId: id, netns: p.path }, { ...c, prevResult: res }), 100, /default route \(::\/0\) via fd00:10:244:1::1/);
    inNs(p.name, ['ip', '-6', 'route', 'add', 'default', 'via', 'fd00:10:244:1::1', 'dev', 'eth0']);
    expect(run({ command: 'CHECK', containerId: id, netns: p.path }, { ...c, prevResult: res }).code).toBe(0);
    inNs(p.name, ['ip', '-6', 'addr', 'del', 'fd00:10:244:1::2/64', 'dev', 'eth0']);
    expectError(run({ command: 'CHECK', containerId: id, netns: p.path }, { ...c, prevResult: res }), 100, /does not have fd00:10:244:1::2\/64/);

    // DEL frees both families; a second ADD gets ::3 (after the last reserved, as host-local).
    const del = run({ command: 'DEL', containerId: id, netns: p.path }, { ...c, prevResult: res });
    expect(del.code, del.out + del.err).toBe(0);
    expect(ipamHeld(String(c.name))).toEqual([]);
    expect(linkExists(node.netns, hostIf)).toBe(false);
    expect((await agentPods(dualSock)).some((x) => x.containerId === id)).toBe(false);
    const id2 = cid();
    const r2 = run({ command: 'ADD', containerId: id2, netns: p.path }, c);
    expect((r2.json as Res).ips[1].address).toBe('fd00:10:244:1::3/64');
    expect(run({ command: 'DEL', containerId: id2, netns: p.path }, c).code).toBe(0);
    expect(ipamHeld(String(c.name))).toEqual([]);
  });

  test('results in every version: 0.3.1 and 0.4.0 say version 4 and 6, 1.0.0 none', () => {
    for (const v of ['0.3.1', '0.4.0', '1.0.0']) {
      const p = pods.add();
      const c = dualConf(v);
      const id = cid();
      const r = run({ command: 'ADD', containerId: id, netns: p.path }, c);
      expect(r.code, r.out + r.err).toBe(0);
      const res = r.json as Res;
      expect(res.cniVersion).toBe(v);
      expect(res.ips.map((x) => x.version)).toEqual(v === '1.0.0' ? [undefined, undefined] : ['4', '6']);
      expect(res.ips.map((x) => x.interface)).toEqual([1, 1]);
      expect(res.routes.map((x) => x.dst)).toEqual(['0.0.0.0/0', '::/0']);
      if (v === '0.4.0') expect(run({ command: 'CHECK', containerId: id, netns: p.path }, { ...c, prevResult: res }).code).toBe(0);
      expect(run({ command: 'DEL', containerId: id, netns: p.path }, c).code).toBe(0);
      expect(ipamHeld(String(c.name))).toEqual([]);
      pods.del(p.name);
    }
  });

  test('an IPv6-only node (podCIDR empty): one IPv6 address, ::/0 only, no IPv4; the agent gets ip "" and ip6; CHECK, GC', async () => {
    const v6only = await standIn({ ...V6ONLY, podCIDR: '', gatewayIP: '' }, false);
    const p = pods.add();
    const c = freshConf('1.1.0', { agentSocket: v6only.sock });
    const id = cid();
    const r = run({ command: 'ADD', containerId: id, netns: p.path, args: 'K8S_POD_NAMESPACE=six;K8S_POD_NAME=only' }, c);
    expect(r.code, r.out + r.err).toBe(0);
    const res = r.json as Res;
    expect(res.ips).toEqual([{ address: 'fd00:10:244:1::2/64', gateway: 'fd00:10:244:1::1', interface: 1 }]);
    expect(res.routes).toEqual([{ dst: '::/0', gw: 'fd00:10:244:1::1' }]);
    expect(inNs(p.name, ['ip', '-4', 'addr', 'show', 'dev', 'eth0']).out.trim()).toBe('');
    expect(inNs(p.name, ['ip', '-4', 'route', 'show']).out.trim()).toBe('');
    expect(defaultRoutes6(p.name)).toEqual([expect.objectContaining({ gateway: 'fd00:10:244:1::1', dev: 'eth0' })]);
    expect(await v6only.adds()).toEqual([expect.objectContaining({ containerId: id, name: 'only', namespace: 'six', ip: '', ip6: 'fd00:10:244:1::2', hostIf: hostIfName(id, 'eth0') })]);
    expect(run({ command: 'CHECK', containerId: id, netns: p.path }, { ...c, prevResult: res }).code).toBe(0);
    // podCIDR absent altogether: the same.
    const absent = await standIn(V6ONLY, false);
    const p2 = pods.add();
    const id2 = cid();
    const r2 = run({ command: 'ADD', containerId: id2, netns: p2.path }, { ...c, agentSocket: absent.sock });
    expect(r2.code, r2.out + r2.err).toBe(0);
    expect((r2.json as Res).ips.map((x) => x.address)).toEqual(['fd00:10:244:1::3/64']);
    // Neither family: the agent has no range yet → 11 (the runtime retries), nothing made.
    const none = await standIn({ node: 'nowhere', mtu: 1450, podCIDR: '', gatewayIP: '' }, false);
    const p3 = pods.add();
    expectError(run({ command: 'ADD', containerId: cid(), netns: p3.path }, { ...c, agentSocket: none.sock }), 11, /no pod CIDR/);
    expect(linkExists(p3.name, 'eth0')).toBe(false);
    // GC keeps the first, frees the second.
    const gc = run({ command: 'GC' }, { ...c, 'cni.dev/valid-attachments': [{ containerID: id, ifname: 'eth0' }] });
    expect(gc.code, gc.out + gc.err).toBe(0);
    expect(ipamHeld(String(c.name))).toEqual(['fd00:10:244:1::2']);
    expect(linkExists(node.netns, hostIfName(id2, 'eth0'))).toBe(false);
    expect(run({ command: 'DEL', containerId: id, netns: p.path }, c).code).toBe(0);
    expect(ipamHeld(String(c.name))).toEqual([]);
    expect(linkExists(node.netns, hostIfName(id, 'eth0'))).toBe(false);
  });

  test('conf overrides: ipam.subnet6/gateway6/rangeStart6/rangeEnd6 make a pod dual-stack on an IPv4 node; an exhausted IPv6 range → 11 and the IPv4 address is rolled back', () => {
    const c = freshConf('1.1.0', {}, { subnet6: 'fd00:10:244:1::/64', gateway6: 'fd00:10:244:1::1', rangeStart6: 'fd00:10:244:1::a0', rangeEnd6: 'fd00:10:244:1::a0' });
    const a = pods.add(), b = pods.add();
    const idA = cid();
    const ra = run({ command: 'ADD', containerId: idA, netns: a.path }, c); // the real agent: IPv4 only
    expect(ra.code, ra.out + ra.err).toBe(0);
    expect((ra.json as Res).ips.map((x) => x.address)).toEqual([expect.stringMatching(/^10\.244\.1\.\d+\/24$/), 'fd00:10:244:1::a0/64']);
    expect(ipamHeld(String(c.name))).toHaveLength(2);
    const idB = cid();
    expectError(run({ command: 'ADD', containerId: idB, netns: b.path }, c), 11, /no free address in fd00:10:244:1::\/64/);
    expect(ipamHeld(String(c.name))).toHaveLength(2); // B's IPv4 address was taken, then released
    expect(linkExists(b.name, 'eth0')).toBe(false);
    expect(linkExists(node.netns, hostIfName(idB, 'eth0'))).toBe(false);
    // STATUS says so too.
    expectError(run({ command: 'STATUS' }, c), 50, /no free address in fd00:10:244:1::\/64/);
    expect(run({ command: 'DEL', containerId: idA, netns: a.path }, c).code).toBe(0);
    expect(ipamHeld(String(c.name))).toEqual([]);
    expect(run({ command: 'STATUS' }, c).code).toBe(0);
    // Wrong families are refused with 7.
    const p = pods.add();
    expectError(run({ command: 'ADD', containerId: cid(), netns: p.path }, conf('1.1.0', {}, { subnet6: '10.244.9.0/24' })), 7, /ipam\.subnet6/);
    expectError(run({ command: 'ADD', containerId: cid(), netns: p.path }, conf('1.1.0', {}, { subnet: 'fd00:10:244:1::/64' })), 7, /ipam\.subnet/);
    expectError(run({ command: 'ADD', containerId: cid(), netns: p.path }, conf('1.1.0', {}, { subnet6: 'fd00:10:244:1::/64', rangeEnd6: 'fd00:10:244:2::9' })), 7, /not inside/);
    expect(linkExists(p.name, 'eth0')).toBe(false);
  });

  test('STATUS, and GC releasing both addresses of each stale attachment', async () => {
    const c = dualConf();
    expect(run({ command: 'STATUS' }, c).code).toBe(0);
    const ids = [cid(), cid(), cid()];
    const ps = ids.map(() => pods.add());
    for (let i = 0; i < 3; i++) expect(run({ command: 'ADD', containerId: ids[i], netns: ps[i].path }, c).code).toBe(0);
    expect(ipamHeld(String(c.name))).toHaveLength(6);
    const gc = run({ command: 'GC' }, { ...c, 'cni.dev/valid-attachments': [{ containerID: ids[0], ifname: 'eth0' }] });
    expect(gc.code, gc.out + gc.err).toBe(0);
    const held = ipamHeld(String(c.name));
    expect(held.map((n) => familyOf(n)).sort()).toEqual([4, 6]);
    expect(gc.err.match(/GC: released/g)).toHaveLength(2); // once per attachment, both addresses together
    expect(gc.err).toMatch(/GC: released 10\.244\.1\.\d+, fd00:10:244:1::[0-9a-f]+ of /);
    const served = (await agentPods(dualSock)).map((x) => x.containerId);
    expect(served).toContain(ids[0]);
    expect(served).not.toContain(ids[1]);
    expect(run({ command: 'GC' }, { ...c, 'cni.dev/valid-attachments': [] }).code).toBe(0);
    expect(ipamHeld(String(c.name))).toEqual([]);
  });

  test('30 parallel dual-stack ADDs then DELs: no address twice in either family, none leaked', async () => {
    const N = 30;
    const c = dualConf();
    const ps = Array.from({ length: N }, () => pods.add());
    const ids = ps.map(() => cid());
    const adds = await Promise.all(ps.map((p, i) => cni(node.netns, { command: 'ADD', containerId: ids[i], netns: p.path }, c)));
    expect(adds.filter((r) => r.code !== 0).map((r) => r.out + r.err).slice(0, 3)).toEqual([]);
    const res = adds.map((r) => r.json as Res);
    expect(new Set(res.map((x) => x.ips[0].address)).size).toBe(N);
    expect(new Set(res.map((x) => x.ips[1].address)).size).toBe(N);
    expect(res.every((x) => x.ips[1].address !== 'fd00:10:244:1::1/64')).toBe(true);
    expect(ipamHeld(String(c.name))).toHaveLength(2 * N);
    const dels = await Promise.all(ps.map((p, i) => cni(node.netns, { command: 'DEL', containerId: ids[i], netns: p.path }, c)));
    expect(dels.filter((r) => r.code !== 0).map((r) => r.out + r.err)).toEqual([]);
    expect(ipamHeld(String(c.name))).toEqual([]);
    for (const p of ps) pods.del(p.name);
  }, 180_000);

  test('kill -9 at random points of a dual-stack ADD, then a retried ADD or a DEL converges to a clean state', async () => {
    const c = dualConf();
    const rounds = 24;
    let killedMidway = 0;
    // How long an ADD takes here, so that the kills spread over all of it (and a little after).
    const probe = pods.add(), probeId = cid();
    const t = await cni(node.netns, { command: 'ADD', containerId: probeId, netns: probe.path }, c);
    expect(t.code, t.out + t.err).toBe(0);
    expect(run({ command: 'DEL', containerId: probeId, netns: probe.path }, c).code).toBe(0);
    pods.del(probe.name);
    const seen = new Map<string, number>(); // what a kill left: addresses held (families) and whether the veth was there
    for (let i = 0; i < rounds; i++) {
      const p = pods.add();
      const id = cid();
      let pid = 0;
      // Two rounds in three: at a random moment (mostly process start-up, which is most of an ADD);
      // one in three: the instant the IPAM dir shows an allocation being prepared (.tmp-…), or the
      // IPv4 address taken (inotify), to land inside or between the two allocations.
      const trigger = i % 6 === 2 ? (f: string) => f.startsWith('.tmp-') : (f: string) => familyOf(f) === 4;
      const watcher = i % 3 === 2 ? watch(path.join(ipamRoot, String(c.name)), (_e, f) => { if (f && trigger(f)) try { process.kill(pid, 'SIGKILL'); } catch { /* done */ } }) : undefined;
      const pending = cni(node.netns, { command: 'ADD', containerId: id, netns: p.path }, c, (x) => { pid = x; });
      if (!watcher) {
        await new Promise((r) => setTimeout(r, Math.random() * t.ms * 1.2));
        try { process.kill(pid, 'SIGKILL'); } catch { /* already done */ }
      }
      if ((await pending).code !== 0) killedMidway++;
      watcher?.close();
      const left = `${ipamHeld(String(c.name)).map((n) => (n.startsWith('.tmp') ? 'tmp' : `v${familyOf(n)}`)).sort().join('+') || 'nothing'}${linkExists(node.netns, hostIfName(id, 'eth0')) ? '+veth' : ''}`;
      seen.set(left, (seen.get(left) ?? 0) + 1);
      if (i % 2 === 0) {
        const r = run({ command: 'ADD', containerId: id, netns: p.path }, c);
        expect(r.code, `round ${i}: ${r.out}${r.err}`).toBe(0);
        expect(ipamHeld(String(c.name)).map((n) => familyOf(n)).sort(), `round ${i}`).toEqual([4, 6]);
        const chk = run({ command: 'CHECK', containerId: id, netns: p.path }, { ...c, prevResult: r.json });
        expect(chk.code, `round ${i}: ${chk.out}`).toBe(0);
      }
      const d = run({ command: 'DEL', containerId: id, netns: p.path }, c);
      expect(d.code, `round ${i}: ${d.out}${d.err}`).toBe(0);
      expect(ipamHeld(String(c.name)), `round ${i}`).toEqual([]);
      expect(linkExists(node.netns, hostIfName(id, 'eth0')), `round ${i}`).toBe(false);
      expect(linkExists(p.name, 'eth0'), `round ${i}`).toBe(false);
      expect((await agentPods(dualSock)).some((x) => x.containerId === id), `round ${i}`).toBe(false);
      pods.del(p.name);
    }
    console.log(`kill -9 during dual-stack ADD (one ADD: ${t.ms.toFixed(0)} ms): ${killedMidway}/${rounds} ADDs were killed before they finished; left behind: ${[...seen].map(([k, n]) => `${k} ×${n}`).join(', ')}`);
    expect(killedMidway).toBeGreaterThan(0);
  }, 180_000);

  test('the lab runtime helper reports the IPv6 address of a dual-stack ADD', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'twill-cni-rt6-'));
    try {
      const rt = installNodeCni(dir, dualSock);
      const a = pods.add();
      const id = cid();
      const ra = cniAdd(node.netns, rt, { containerId: id, netns: a.name });
      expect(ra.ip).toMatch(/^10\.244\.1\.\d+$/);
      expect(ra).toMatchObject({ prefixLen: 24, gateway: '10.244.1.1', ip6: expect.stringMatching(/^fd00:10:244:1::[0-9a-f]+$/), prefixLen6: 64, gateway6: 'fd00:10:244:1::1' });
      cniDel(node.netns, rt, { containerId: id, netns: a.name });
      expect(linkExists(node.netns, ra.hostIf)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the lab runtime helper (cni/runtime.ts)', () => {
  test('installs the conflist and binary under the node dir; two pods added through it reach each other and the node', () => {
    const rt = installNodeCni(node.stateDir, node.socket);
    expect(rt.confFile).toBe(path.join(s.dir, node.name, 'cni/net.d/10-twill.conflist'));
    expect(existsSync(path.join(s.dir, node.name, 'cni/bin/twill-cni'))).toBe(true);
    const a = pods.add(), b = pods.add();
    const ra = cniAdd(node.netns, rt, { containerId: cid(), netns: a.name, podName: 'a', podNamespace: 'rt' });
    const idB = cid();
    const rb = cniAdd(node.netns, rt, { containerId: idB, netns: b.name, podName: 'b', podNamespace: 'rt' });
    expect(ra.ip).not.toBe(rb.ip);
    expect(ra.gateway).toBe('10.244.1.1');
    expect(inNs(a.name, ['ping', '-c', '1', '-W', '2', rb.ip]).code).toBe(0);
    expect(inNs(node.netns, ['ping', '-c', '1', '-W', '2', ra.ip]).code).toBe(0);
    cniDel(node.netns, rt, { containerId: idB, netns: b.name });
    expect(linkExists(node.netns, rb.hostIf)).toBe(false);
    expect(() => cniAdd(node.netns, rt, { containerId: cid(), netns: '/var/run/netns/twt-cni-nope' })).toThrow(/code 3/);
  });
});

test('the test environment: only twt-cni-* namespaces were made here', () => {
  expect([...pods.made].every((n) => n.startsWith('twt-cni-'))).toBe(true);
  expect(PATH_ENV).toBeTruthy();
});
