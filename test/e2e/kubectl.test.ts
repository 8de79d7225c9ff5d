// kubectl drives a lab in Kubernetes mode (`twill lab up --kubernetes`): the lab
// runs its stand-in API server (lab/kube-apiserver.ts) as a lab process and writes
// a kubeconfig; the agents learn the cluster from that server, and a real kubectl
// (the one on the PATH, or TWILL_KUBECTL) lists, watches, labels, applies and
// deletes through it: NetworkPolicies applied with kubectl are enforced by the
// agents, a changed version applied again (a strategic merge patch) is enforced
// as changed, and kubectl delete -f lifts it. kubectl gets a HOME and a cache dir
// of its own and the lab's kubeconfig by flag, never the user's ~/.kube.
import { afterAll, beforeAll, expect, test } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { addPod, labDown, labUp } from '../../lab/lab.js';
import { loadState, type LabState } from '../../lab/state.js';
import { sameProcess } from '../../lab/proc.js';
import { labKubeconfigFile } from '../../lab/kube-role.js';
import { probeTcpFrom, testLabName, until } from '../helpers/lab.js';

const name = testLabName();
let s: LabState, dir: string, kubeconfig: string;
const watchers: ChildProcess[] = [];

/** kubectl with the lab's kubeconfig, a HOME and a discovery cache of its own. */
function argv(args: string[]): string[] {
  const a = ['kubectl', '--kubeconfig', kubeconfig, '--cache-dir', path.join(dir, 'cache'), ...args];
  if (process.env.TWILL_KUBECTL) a[0] = process.env.TWILL_KUBECTL;
  return a;
}
const env = () => ({ ...process.env, HOME: dir, KUBECONFIG: '' });
function kubectl(...args: string[]): Promise<string> {
  const [cmd, ...rest] = argv(args);
  return new Promise((resolve, reject) => {
    execFile(cmd, rest, { env: env(), timeout: 30_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`kubectl ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}
/** The table kubectl prints, as rows of cells (the header row first). */
const rows = (out: string) => out.trim().split('\n').map((l) => l.trim().split(/\s+/));


beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'twt-kubectl-'));
  s = await labUp({ name, nodes: 2, podsPerNode: 2, kubernetes: 'lab' });
  kubeconfig = labKubeconfigFile(s);
});

afterAll(async () => {
  for (const w of watchers) if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
  await labDown(name);
  rmSync(dir, { recursive: true, force: true });
});

const pod = (n: string) => s.pods.find((p) => p.name === n)!;

test('the lab runs its API server as a lab process and writes a kubeconfig kubectl can use (HTTPS on loopback, its CA, a token)', async () => {
  const cfg = parseYaml(readFileSync(kubeconfig, 'utf8'));
  expect(cfg.clusters[0].cluster.server).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  expect(cfg.clusters[0].cluster['certificate-authority-data']).toBeTruthy();
  expect(cfg.users[0].user.token).toBe(s.kubernetes!.token);
  expect(s.kubernetes!.server).toBe(`unix://${path.join(s.dir, 'kube-apiserver.sock')}`); // the agents' way in
  const st = loadState(name)!;
  expect(st.pids.some((p) => sameProcess(p, st.pidStarts?.[p]) && readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('kube-apiserver.js'))).toBe(true);
  expect(JSON.parse(await kubectl('version', '-o', 'json')).serverVersion).toMatchObject({ major: '1', minor: '30', gitVersion: 'v1.30.0+twill-lab' });
});

test('kubectl get nodes, get pods -A, selectors and field selectors', async () => {
  const nodes = rows(await kubectl('get', 'nodes'));
  expect(nodes[0]).toEqual(['NAME', 'STATUS', 'ROLES', 'AGE', 'VERSION']);
  expect(nodes.slice(1).map((r) => [r[0], r[1]])).toEqual([['node1', 'Ready'], ['node2', 'Ready']]);
  const wide = await kubectl('get', 'nodes', '-o', 'wide');
  expect(wide).toMatch(/node1\s+Ready.*172\.30\.0\.11/);

  const all = rows(await kubectl('get', 'pods', '-A', '-o', 'wide'));
  expect(all[0].slice(0, 6)).toEqual(['NAMESPACE', 'NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE']);
  const byName = new Map(all.slice(1).map((r) => [`${r[0]}/${r[1]}`, r]));
  expect([...byName.keys()].sort()).toEqual(['default/node1-p1', 'default/node1-p2', 'default/node2-p1', 'default/node2-p2', 'kube-system/coredns']);
  for (const p of s.pods) expect(byName.get(`default/${p.name}`)!.slice(2, 4).concat(byName.get(`default/${p.name}`)![6], byName.get(`default/${p.name}`)![7])).toEqual(['1/1', 'Running', p.ip, p.node]);

  await kubectl('label', 'pod', 'node1-p1', 'role=server');
  await kubectl('label', 'pod', 'node2-p1', 'role=client');
  const names = (out: string) => out.trim().split('\n').filter(Boolean).sort();
  expect(names(await kubectl('get', 'pods', '-n', 'default', '-l', 'role=server', '-o', 'name'))).toEqual(['pod/node1-p1']);
  expect(names(await kubectl('get', 'pods', '-n', 'default', '-l', 'role in (server,client)', '-o', 'name'))).toEqual(['pod/node1-p1', 'pod/node2-p1']);
  expect(names(await kubectl('get', 'pods', '-n', 'default', '-l', '!role', '-o', 'name'))).toEqual(['pod/node1-p2', 'pod/node2-p2']);
  expect(names(await kubectl('get', 'pods', '-A', '--field-selector', 'spec.nodeName=node2', '-o', 'name'))).toEqual(['pod/node2-p1', 'pod/node2-p2']);
  expect(await kubectl('get', 'netpol', '-A')).toBe(''); // "No resources found" goes to stderr
  await expect(kubectl('get', 'pods', '--field-selector', 'spec.bogus=1')).rejects.toThrow(/field label not supported: spec.bogus/);
});

test('kubectl apply -f of a default-deny NetworkPolicy is enforced; a changed version applied again is enforced as changed; delete -f lifts it', async () => {
  const [server, other, client, far] = [pod('node1-p1'), pod('node1-p2'), pod('node2-p1'), pod('node2-p2')];
  const file = path.join(dir, 'policy.yaml');
  writeFileSync(file, [
    'apiVersion: networking.k8s.io/v1', 'kind: NetworkPolicy',
    'metadata:', '  name: guard', '  namespace: default',
    'spec:', '  podSelector: {}', '  policyTypes: [Ingress]', '',
  ].join('\n'));
  expect(await until(() => probeTcpFrom(client.netns, server.ip), 10_000), 'pods not reachable before any policy').toBe(true);
  expect((await kubectl('apply', '-f', file)).trim()).toBe('networkpolicy.networking.k8s.io/guard created');
  expect(rows(await kubectl('get', 'netpol', '-A'))).toEqual([['NAMESPACE', 'NAME', 'POD-SELECTOR', 'AGE'], ['default', 'guard', '<none>', expect.any(String)]]);
  expect(await until(async () => !(await probeTcpFrom(client.netns, server.ip)) && !(await probeTcpFrom(other.netns, far.ip)), 10_000), 'default-deny not enforced within 10 s').toBe(true);

  // v2: only role=server pods are isolated, and role=client pods may reach them
  writeFileSync(file, [
    'apiVersion: networking.k8s.io/v1', 'kind: NetworkPolicy',
    'metadata:', '  name: guard', '  namespace: default', '  labels: {version: "2"}',
    'spec:', '  podSelector:', '    matchLabels: {role: server}',
    '  ingress:', '  - from:', '    - podSelector:', '        matchLabels: {role: client}', '',
  ].join('\n'));
  expect((await kubectl('apply', '-f', file)).trim()).toBe('networkpolicy.networking.k8s.io/guard configured');
  const np = JSON.parse(await kubectl('get', 'netpol', 'guard', '-n', 'default', '-o', 'json'));
  expect(np.metadata.generation).toBe(2);
  expect(np.metadata.labels).toEqual({ version: '2' });
  expect(np.spec).toEqual({ podSelector: { matchLabels: { role: 'server' } }, ingress: [{ from: [{ podSelector: { matchLabels: { role: 'client' } } }] }], policyTypes: ['Ingress'] });
  expect(JSON.parse(np.metadata.annotations['kubectl.kubernetes.io/last-applied-configuration']).spec.podSelector).toEqual({ matchLabels: { role: 'server' } });
  expect(await until(async () => (await probeTcpFrom(client.netns, server.ip)) && (await probeTcpFrom(other.netns, far.ip)), 10_000), 'v2 did not open client -> server and the unselected pods within 10 s').toBe(true);
  expect(await probeTcpFrom(other.netns, server.ip)).toBe(false); // not a client: still denied
  expect((await kubectl('apply', '-f', file)).trim()).toBe('networkpolicy.networking.k8s.io/guard unchanged');

  expect((await kubectl('delete', '-f', file)).trim()).toBe('networkpolicy.networking.k8s.io "guard" deleted');
  expect(await until(() => probeTcpFrom(other.netns, server.ip), 10_000), 'still denied 10 s after kubectl delete').toBe(true);
  expect(await kubectl('get', 'netpol', '-A')).toBe('');
});

test('kubectl get pods -w sees a pod the lab adds, and its status once the kubelet (the lab) writes it', async () => {
  const [cmd, ...args] = argv(['get', 'pods', '-n', 'default', '-w']);
  const w = spawn(cmd, args, { env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
  watchers.push(w);
  let out = '';
  w.stdout!.on('data', (d) => (out += d));
  w.stderr!.on('data', (d) => (out += d));
  expect(await until(() => out.includes('node2-p2'), 10_000), `the watch never listed the pods: ${out}`).toBe(true);
  const late = await addPod(s, s.nodes[1], 'late', 'default', { labels: { role: 'late' } });
  expect(await until(() => /\nlate\s+1\/1\s+Running/.test(out), 10_000), `the watch never showed late Running: ${out}`).toBe(true);
  expect(out).toMatch(/\nlate\s+0\/1\s+Pending/); // created first, then its status: two events
  w.kill('SIGTERM');
  expect(rows(await kubectl('get', 'pods', 'late', '-o', 'wide'))[1].slice(0, 7)).toEqual(['late', '1/1', 'Running', '0', expect.any(String), late.ip, 'node2']);
});
