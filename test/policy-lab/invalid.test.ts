// An invalid NetworkPolicy manifest given to `twill lab apply -f` (the CLI, as a
// subprocess, against this test's lab) exits non-zero with an error naming the field
// and the problem, and changes nothing: the policies in force stay in force, on every
// agent and on the wire (probed before and after with real connections).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { stringify } from 'yaml';
import { labDown, labModel, labUp } from '../../lab/lab.js';
import type { LabState } from '../../lab/state.js';
import { request } from '../../agent/socket.js';
import type { Protocol } from '../../policy/model.js';
import { CLI, diffRows, ensureBuilt, observe, podKey, policyLabName, Prober, tmpDir, writeFile } from './helpers.js';

const name = policyLabName();
let s: LabState;
let dir: string;
let prober: Prober | undefined;

// x/a and y/a on node1, x/b on node2 (round-robin in manifest order)
const PODS = ['x/a', 'x/b', 'y/a'];
const ports = [
  { name: 'serve-80-tcp', containerPort: 80, protocol: 'TCP' },
  { name: 'serve-80-udp', containerPort: 80, protocol: 'UDP' },
];

beforeAll(async () => {
  ensureBuilt();
  dir = tmpDir();
  const items = [
    ...['x', 'y'].map((n) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: n, labels: { ns: n } } })),
    ...PODS.map((k) => k.split('/')).map(([ns, p]) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { namespace: ns, name: p, labels: { pod: p } }, spec: { containers: [{ name: 'c', ports }] } })),
  ];
  s = await labUp({ name, nodes: 2, manifests: [writeFile(dir, 'cluster.yaml', stringify({ apiVersion: 'v1', kind: 'List', items }))] });
  prober = await Prober.start(s.pods);
  await prober.waitAllAnswer([[80, 'TCP'], [80, 'UDP']]);
}, 240_000);

afterAll(async () => {
  await prober?.close();
  await labDown(name);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const np = (nsName: string, spec: unknown) => ({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { namespace: nsName.split('/')[0], name: nsName.split('/')[1] }, spec });
const yaml = (...docs: unknown[]) => docs.map((d) => stringify(d)).join('---\n');
const lab = (...args: string[]) => spawnSync(process.execPath, [CLI, 'lab', ...args, '--name', name], { encoding: 'utf8', timeout: 60_000 });

// In force throughout: x/a admits only namespace y (TCP 80). Expected, rows/columns x/a x/b y/a:
const GOOD = np('x/a-from-y', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }], ports: [{ protocol: 'TCP', port: 80 }] }] });
const IN_FORCE: [number, Protocol, string[]][] = [[80, 'TCP', ['...', 'X..', '...']], [80, 'UDP', ['...', 'X..', 'X..']]]; // UDP: only TCP 80 is allowed

async function expectInForce(): Promise<void> {
  const { rows } = await observe(s, prober!, PODS, IN_FORCE, () => true);
  const problems = IN_FORCE.map(([port, proto, want], k) => {
    const d = diffRows(PODS, rows[k], want);
    return d ? `${port}/${proto}:\n${d}` : '';
  }).filter(Boolean);
  expect(problems.join('\n')).toBe('');
}

async function revs(): Promise<number[]> {
  return Promise.all(s.nodes.map(async (n) => ((await request(n.socket, { op: 'status' })) as { rev: number }).rev));
}

// [what, manifest, the field path and problem the error must name]
const INVALID: [string, string, RegExp][] = [
  ['port out of range', yaml(np('x/bad-port', { podSelector: {}, ingress: [{ ports: [{ port: 70000 }] }] })), /NetworkPolicy x\/bad-port: spec\.ingress\[0\]\.ports\[0\]\.port: must be 1-65535/],
  ['endPort below port', yaml(np('x/bad-endport', { podSelector: {}, egress: [{ ports: [{ port: 90, endPort: 80 }] }] })), /spec\.egress\[0\]\.ports\[0\]\.endPort: must be greater than or equal to `port`/],
  ['endPort with a named port', yaml(np('x/bad-endport-named', { podSelector: {}, ingress: [{ ports: [{ port: 'serve-80-tcp', endPort: 90 }] }] })), /spec\.ingress\[0\]\.ports\[0\]\.endPort: may not be specified when `port` is non-numeric/],
  ['unknown protocol', yaml(np('x/bad-proto', { podSelector: {}, ingress: [{ ports: [{ protocol: 'ICMP', port: 80 }] }] })), /spec\.ingress\[0\]\.ports\[0\]\.protocol: unsupported value "ICMP"/],
  ['invalid CIDR', yaml(np('x/bad-cidr', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.244.300.0/24' } }] }] })), /spec\.ingress\[0\]\.from\[0\]\.ipBlock\.cidr: invalid CIDR "10\.244\.300\.0\/24"/],
  ['except outside the cidr', yaml(np('x/bad-except', { podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: '10.244.1.0/24', except: ['10.244.2.0/24'] } }] }] })), /spec\.egress\[0\]\.to\[0\]\.ipBlock\.except\[0\]: must be a strict subset of `cidr`/],
  ['ipBlock with a podSelector in one peer', yaml(np('x/bad-peer', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8' }, podSelector: {} }] }] })), /spec\.ingress\[0\]\.from\[0\]: may not specify both ipBlock and another peer/],
  ['an empty peer', yaml(np('x/empty-peer', { podSelector: {}, ingress: [{ from: [{}] }] })), /spec\.ingress\[0\]\.from\[0\]: must specify a peer/],
  ['unknown selector operator', yaml(np('x/bad-op', { podSelector: { matchExpressions: [{ key: 'pod', operator: 'Equals', values: ['a'] }] }, ingress: [{}] })), /spec\.podSelector\.matchExpressions\[0\]\.operator: must be In, NotIn, Exists or DoesNotExist/],
  ['In without values', yaml(np('x/bad-in', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'In' }] } }] }] })), /spec\.ingress\[0\]\.from\[0\]\.podSelector\.matchExpressions\[0\]\.values: must be specified/],
  ['invalid label value', yaml(np('x/bad-label', { podSelector: { matchLabels: { pod: 'not a label!' } }, ingress: [{}] })), /spec\.podSelector\.matchLabels\.pod: invalid label value "not a label!"/],
  ['unknown policyType', yaml(np('x/bad-type', { podSelector: {}, policyTypes: ['Ingress', 'Sideways'] })), /spec\.policyTypes\[1\]: unsupported value "Sideways"/],
  ['unknown spec field', yaml(np('x/bad-field', { podSelector: {}, ingres: [{}] })), /spec\.ingres: unknown field/],
  ['invalid policy name', yaml(np('x/Bad_Name', { podSelector: {} })), /metadata\.name: must be a lowercase DNS-1123 subdomain/],
  // the same name as the policy in force, now invalid: the one in force stays
  ['a replacement of the policy in force', yaml(np('x/a-from-y', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }], ports: [{ protocol: 'TCP', port: 0 }] }] })), /NetworkPolicy x\/a-from-y: spec\.ingress\[0\]\.ports\[0\]\.port: must be 1-65535/],
  // one valid policy that would deny everything in x and y, then an invalid one: nothing is applied
  ['a valid policy beside an invalid one', yaml(np('x/deny-all', { podSelector: {}, ingress: [], egress: [] }), np('y/deny-all', { podSelector: {}, ingress: [] }), np('y/bad', { podSelector: {}, egress: [{ to: [{ namespaceSelector: { matchLabels: { ns: 'x' } } }], ports: [{ protocol: 'SCTP', port: 'no_such' }] }] })), /NetworkPolicy y\/bad: spec\.egress\[0\]\.ports\[0\]\.port: must be 1-65535 or an IANA_SVC_NAME/],
];

describe('twill lab apply -f with an invalid manifest', () => {
  let rev0: number[];

  it('applies the policy that stays in force, and it is enforced', async () => {
    const r = lab('apply', '-f', writeFile(dir, 'good.yaml', yaml(GOOD)));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/applied: 1 NetworkPolicies in force/);
    rev0 = await revs();
    expect(new Set(rev0).size).toBe(1);
    await expectInForce();
  }, 60_000);

  for (const [what, text, message] of INVALID) {
    it(`${what}: exits non-zero naming the field and the problem; nothing changes`, async () => {
      const before = JSON.stringify(labModel(name).policies);
      const f = writeFile(dir, 'bad.yaml', text);
      const r = lab('apply', '-f', f);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).toContain(f); // the file it came from
      expect(JSON.stringify(labModel(name).policies)).toBe(before);
      expect(await revs()).toEqual(rev0);
    }, 30_000);
  }

  it('a YAML syntax error exits non-zero with the parser\'s message and position', () => {
    const r = lab('apply', '-f', writeFile(dir, 'broken.yaml', 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x, namespace: x\nspec: {}\n'));
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/YAML:.*line \d+/s);
  });

  it('`lab delete -f` with an invalid manifest also exits non-zero and deletes nothing', async () => {
    const r = lab('delete', '-f', writeFile(dir, 'bad-delete.yaml', yaml(np('x/a-from-y', { podSelector: {}, ingress: [{ ports: [{ port: 'Not-A-Name' }] }] }))));
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/spec\.ingress\[0\]\.ports\[0\]\.port: must be 1-65535 or an IANA_SVC_NAME/);
    expect(labModel(name).policies.map(podKey)).toEqual(['x/a-from-y']);
    expect(await revs()).toEqual(rev0);
  });

  it('after all of them, the policy in force is still what every agent enforces, on the wire', async () => {
    expect(labModel(name).policies.map(podKey)).toEqual(['x/a-from-y']);
    expect(await revs()).toEqual(rev0);
    await expectInForce();
  }, 60_000);
});
