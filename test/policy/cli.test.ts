// `twill policy` end to end: the built CLI as a subprocess, and policyCommand in-process.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { policyCommand } from '../../cli/policy-command.js';
import { e2eModel, ip6Of, modelYaml, policy, PODS } from './fixture.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = join(root, 'dist/cli/twill.js');
let dir: string;

beforeAll(() => {
  // tsc emits even when another part of the tree has type errors; the CLI file is what we need
  spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'ignore' });
  dir = mkdtempSync(join(tmpdir(), 'twill-policy-cli-'));
}, 180_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
}
const run = (...args: string[]) => spawnSync(process.execPath, [cli, 'policy', ...args], { encoding: 'utf8' });
const rows = (allowed: boolean[][]) => allowed.map((r) => r.map((a) => (a ? '.' : 'X')).join(''));

describe('twill policy (subprocess)', () => {
  it('matrix --json: default-deny-ingress in x (upstream expectation)', () => {
    const f = write('deny.yaml', modelYaml(e2eModel([policy('x', 'deny-ingress', {}, { ingress: [] })])));
    const r = run('matrix', '-f', f, '--json');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.pods).toEqual(PODS);
    expect(rows(out.allowed)).toEqual(['.XX......', 'X.X......', 'XX.......', 'XXX......', 'XXX......', 'XXX......', 'XXX......', 'XXX......', 'XXX......']);
  });

  it('matrix --json across several -f files, with --port and --protocol (named port serve-81-udp)', () => {
    const m = e2eModel([policy('x', 'udp-81', { matchLabels: { pod: 'a' } }, { ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }], ports: [{ protocol: 'UDP', port: 'serve-81-udp' }] }] })]);
    const cluster = write('cluster.yaml', modelYaml({ ...m, policies: [] }));
    const pol = write('pol.yaml', modelYaml({ ...m, namespaces: [], pods: [] }));
    const udp81 = JSON.parse(run('matrix', '-f', cluster, '-f', pol, '--json', '--port', '81', '--protocol', 'UDP').stdout);
    // upstream "UDP: should enforce policy based on Ports": only y reaches x/a
    expect(rows(udp81.allowed).map((r) => r[0]).join('')).toBe('.XX...XXX');
    const tcp81 = JSON.parse(run('matrix', '-f', cluster, '-f', pol, '--json', '--port', '81').stdout);
    expect(rows(tcp81.allowed).map((r) => r[0]).join('')).toBe('.XXXXXXXX');
  });

  it('trace names the deciding policy and rule in both directions', () => {
    const f = write('trace.yaml', modelYaml(e2eModel([
      policy('x', 'deny-all', {}, { ingress: [], egress: [] }),
      policy('x', 'a-from-b', { matchLabels: { pod: 'a' } }, { ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'c' } } }] }, { from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }] }),
      policy('x', 'b-to-a', { matchLabels: { pod: 'b' } }, { egress: [{ to: [{ podSelector: { matchLabels: { pod: 'a' } } }], ports: [{ port: 80 }] }] }),
    ])));
    const ok = run('trace', '-f', f, '--from', 'x/b', '--to', 'x/a', '--port', '80', '--protocol', 'TCP');
    expect(ok.status).toBe(0);
    expect(ok.stdout).toContain('x/b -> x/a 80/TCP: ALLOWED');
    expect(ok.stdout).toMatch(/egress +allow \[x\/b-to-a egress\[0\]\]/);
    expect(ok.stdout).toMatch(/ingress +allow \[x\/a-from-b ingress\[1\]\]/);
    const denied = run('trace', '-f', f, '--from', 'x/b', '--to', 'x/a', '--port', '81', '--json');
    const j = JSON.parse(denied.stdout);
    expect(j.allowed).toBe(false);
    expect(j.egress).toMatchObject({ allowed: false, isolatedBy: ['x/deny-all', 'x/b-to-a'] });
    expect(j.ingress).toMatchObject({ allowed: true, policy: 'x/a-from-b', rule: 'ingress[1]' });
  });

  it('an invalid manifest: message naming the field on stderr, exit code 1', () => {
    const f = write('bad.yaml', `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 80}, {port: 0}]
`);
    const r = run('matrix', '-f', f, '--json');
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('NetworkPolicy x/deny: spec.ingress[0].ports[1].port: must be 1-65535 or an IANA_SVC_NAME');
  });

  it('usage errors exit 2', () => {
    expect(run('matrix').status).toBe(2);
    expect(run('frobnicate').status).toBe(2);
  });
});

describe('policyCommand (in process)', () => {
  it('prints a text matrix', async () => {
    const f = write('allow.yaml', modelYaml(e2eModel([policy('x', 'allow-all', {}, { ingress: [{}] })])));
    const out: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => (out.push(String(s)), true));
    try {
      expect(await policyCommand(['matrix', '-f', f])).toBe(0);
    } finally {
      spy.mockRestore();
    }
    expect(out.join('')).toContain('x/a');
    const lines = out.join('').split('\n').filter((l) => /^[xyz]\//.test(l));
    expect(lines).toHaveLength(9);
    for (const l of lines) expect(l.slice(4)).not.toContain('X');
  });
});

describe('twill policy over IPv6 (dual-stack manifests)', () => {
  const podSel = (pod: string) => ({ matchLabels: { pod } });
  // x/a egress: y/b's IPv6 /128 only (upstream's CIDR case, in IPv6)
  const cidrCase = () => e2eModel([policy('x', 'allow-client-a-via-cidr-egress-rule', podSel('a'), { egress: [{ to: [{ ipBlock: { cidr: `${ip6Of('y', 'b')}/128` } }] }] })], { dualStack: true });

  it('matrix --ip-family IPv6 --json: the IPv6 matrix, with its family; without it, the IPv4 one as before', () => {
    const f = write('cidr6.yaml', modelYaml(cidrCase()));
    const r = run('matrix', '-f', f, '--json', '--ip-family', 'IPv6');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const six = JSON.parse(r.stdout);
    expect(Object.keys(six)).toEqual(['family', 'pods', 'allowed']);
    expect(six.family).toBe('IPv6');
    expect(six.pods).toEqual(PODS);
    expect(rows(six.allowed)[0]).toBe('.XXX.XXXX'); // x/a reaches y/b only
    const four = JSON.parse(run('matrix', '-f', f, '--json').stdout);
    expect(Object.keys(four)).toEqual(['pods', 'allowed']);
    expect(rows(four.allowed)[0]).toBe('.XXXXXXXX'); // over IPv4 the IPv6 block matches no one; x/a is isolated all the same
    expect(rows(four.allowed).slice(1).every((row) => row === '.........')).toBe(true);
    const text = run('matrix', '-f', f, '--ip-family', 'ipv6');
    expect(text.stdout).toContain('(. allowed, X denied; over IPv6)\n');
  });

  it('trace --ip-family IPv6: the pods\' IPv6 addresses, the deciding policy and rule', () => {
    const f = write('trace6.yaml', modelYaml(cidrCase()));
    const ok = run('trace', '-f', f, '--from', 'x/a', '--to', 'y/b', '--ip-family', 'IPv6');
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toContain(`x/a (${ip6Of('x', 'a')}) -> y/b (${ip6Of('y', 'b')}) 80/TCP: ALLOWED`);
    expect(ok.stdout).toMatch(/egress +allow \[x\/allow-client-a-via-cidr-egress-rule egress\[0\]\]/);
    const no = JSON.parse(run('trace', '-f', f, '--from', 'x/a', '--to', 'y/c', '--ip-family', 'IPv6', '--json').stdout);
    expect(no).toMatchObject({ from: 'x/a', to: 'y/c', family: 'IPv6', fromIP: ip6Of('x', 'a'), toIP: ip6Of('y', 'c'), allowed: false });
    expect(no.egress.reason).toBe(`x/a is isolated for egress by x/allow-client-a-via-cidr-egress-rule and no rule allows ${ip6Of('y', 'c')} port 80/TCP`);
    // the same pair over IPv4 (the default): denied, as the IPv4 trace always said it
    const four = run('trace', '-f', f, '--from', 'x/a', '--to', 'y/b');
    expect(four.stdout).toMatch(/^x\/a -> y\/b 80\/TCP: DENIED\n/);
  });

  it('trace from or to an IPv6 address: a pod\'s is that pod; another is judged as a peer outside the pods (ipBlock)', () => {
    const m = e2eModel([policy('x', 'from-doc', podSel('a'), { ingress: [{ from: [{ ipBlock: { cidr: '2001:db8::/32', except: ['2001:db8:bad::/48'] } }] }] })], { dualStack: true });
    const f = write('ext6.yaml', modelYaml(m));
    const ok = run('trace', '-f', f, '--from', '2001:db8::5', '--to', ip6Of('x', 'a'), '--port', '443');
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toContain(`2001:db8::5 -> x/a (${ip6Of('x', 'a')}) 443/TCP: ALLOWED`);
    expect(ok.stdout).toMatch(/egress +allow: 2001:db8::5 is not a known pod: no policy applies/);
    expect(ok.stdout).toMatch(/ingress +allow \[x\/from-doc ingress\[0\]\]/);
    const no = JSON.parse(run('trace', '-f', f, '--from', '2001:db8:bad::5', '--to', 'x/a', '--port', '443', '--json').stdout);
    expect(no).toMatchObject({ from: '2001:db8:bad::5', to: 'x/a', family: 'IPv6', allowed: false, ingress: { allowed: false, isolatedBy: ['x/from-doc'] } });
    // a pod's address, in another spelling, is the pod
    const pod = JSON.parse(run('trace', '-f', f, '--from', 'fd00:10:244:2:0:0:0:1', '--to', 'x/a', '--json').stdout);
    expect(pod).toMatchObject({ from: 'y/a', to: 'x/a', allowed: false });
  });

  it('an IPv6-only pod is traced over IPv6 without asking; errors: no address of the family, mixed families', () => {
    const m = e2eModel([policy('x', 'deny', {}, { ingress: [] })], { dualStack: true });
    m.pods = m.pods.map((p) => (p.namespace === 'z' && p.name === 'a' ? { ...p, ip: undefined } : p.namespace === 'z' && p.name === 'b' ? { ...p, ip6: undefined } : p));
    const f = write('single.yaml', modelYaml(m));
    const six = run('trace', '-f', f, '--from', 'z/a', '--to', 'y/a');
    expect(six.status, six.stderr).toBe(0);
    expect(six.stdout).toContain(`z/a (${ip6Of('z', 'a')}) -> y/a (${ip6Of('y', 'a')}) 80/TCP: ALLOWED`);
    const m4 = JSON.parse(run('matrix', '-f', f, '--json').stdout);
    expect(m4.pods).toEqual(PODS.filter((k) => k !== 'z/a'));
    const m6 = JSON.parse(run('matrix', '-f', f, '--json', '--ip-family', 'IPv6').stdout);
    expect(m6.pods).toEqual(PODS.filter((k) => k !== 'z/b'));
    const none = run('trace', '-f', f, '--from', 'z/b', '--to', 'x/a', '--ip-family', 'IPv6');
    expect(none.status).toBe(1);
    expect(none.stderr).toContain('pod z/b has no IPv6 address (status.podIPs): it is single-stack IPv4');
    const mixed = run('trace', '-f', f, '--from', '10.0.0.1', '--to', ip6Of('x', 'a'));
    expect(mixed.status).toBe(2);
    expect(mixed.stderr).toContain('are of different IP families: a packet has one');
    const bad = run('matrix', '-f', f, '--ip-family', 'IPv5');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('--ip-family must be IPv4 or IPv6, not "IPv5"');
  });

  it('manifests without status: with --ip-family IPv6, IPv6 addresses from the cluster\'s /56, a /64 per node, said on stderr', async () => {
    const f = write('nostatus.yaml', `apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: shop, labels: {app: web}}, spec: {containers: [{name: c}]}}
- {apiVersion: v1, kind: Pod, metadata: {name: db, namespace: shop, labels: {app: db}}, spec: {containers: [{name: c}]}}
- {apiVersion: v1, kind: Pod, metadata: {name: cache, namespace: shop, labels: {app: cache}}, spec: {containers: [{name: c}]}}
- {apiVersion: v1, kind: Pod, metadata: {name: taken, namespace: shop, labels: {app: x}}, spec: {containers: [{name: c}]}, status: {podIP: "fd00:10:244:1::2"}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec: {podSelector: {matchLabels: {app: db}}, ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]}
`);
    const r = run('matrix', '-f', f, '--ip-family', 'IPv6', '--json');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe('twill policy matrix: 3 pods without status.podIP given IPv6 addresses from fd00:10:244::/56, as `twill lab up -f` gives them: shop/web fd00:10:244:1::3, shop/db fd00:10:244:2::2, shop/cache fd00:10:244:1::4\n');
    const m = JSON.parse(r.stdout);
    expect(m.pods).toEqual(['shop/web', 'shop/db', 'shop/cache', 'shop/taken']);
    expect(rows(m.allowed).map((row) => row[1]).join('')).toBe('..XX');
    const other = run('matrix', '-f', f, '--ip-family', 'IPv6', '--cluster-cidr6', 'fd12:3456::/48');
    expect(other.stderr).toContain('given IPv6 addresses from fd12:3456::/48, as `twill lab up -f` gives them: shop/web fd12:3456:0:1::2, shop/db fd12:3456:0:2::2, shop/cache fd12:3456:0:1::3\n');
    expect(run('matrix', '-f', f, '--ip-family', 'IPv6', '--cluster-cidr6', 'fd00::/64').status).toBe(1);
    expect(run('matrix', '-f', f, '--cluster-cidr6', 'fd00::').status).toBe(2);
  });
});
