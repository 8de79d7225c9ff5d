// twill-cni end to end against a real agent: a one-node lab (namespaces tw<lab>-*),
// pod namespaces twt-cni-<random> made here, the standalone binary run inside the
// node's netns as a runtime runs it. Nothing is added to the root namespace and
// nothing is sent outside these namespaces.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { labUp, labDown } from '../../lab/lab.js';
import type { LabNode, LabState } from '../../lab/state.js';
import { request } from '../../agent/socket.js';
import { hostIfName } from '../../cni/plugin.js';
import { installNodeCni, cniAdd, cniDel } from '../../cni/runtime.js';
import { BIN, cni, cniSync, ensureBinary, inNs, linkExists, percentile, pool, PodNamespaces, PATH_ENV, type CniCall } from './helpers.js';

const LAB = `c${randomBytes(2).toString('hex')}`;
let s: LabState;
let node: LabNode;
let ipamRoot: string;
const pods = new PodNamespaces();
const fakeAgents: net.Server[] = [];

beforeAll(async () => {
  ensureBinary();
  ipamRoot = mkdtempSync(path.join(tmpdir(), 'twill-cni-ipam-'));
  s = await labUp({ name: LAB, nodes: 1, podsPerNode: 0 });
  node = s.nodes[0];
}, 180_000);

afterAll(async () => {
  for (const f of fakeAgents) f.close();
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
  return existsSync(d) ? readdirSync(d).filter((n) => /^\d/.test(n) && readdirSync(path.join(d, n)).length > 0 || n.startsWith('.tmp-')) : [];
};
const agentPods = async () => (await request(node.socket, { op: 'pods' })) as { containerId: string; name: string; namespace: string; ip: string; hostIf: string }[];
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
