// `twill policy` end to end: the built CLI as a subprocess, and policyCommand in-process.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { policyCommand } from '../../cli/policy-command.js';
import { e2eModel, modelYaml, policy, PODS } from './fixture.js';

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
