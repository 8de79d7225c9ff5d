// The command line's conventions, on the built CLI as a subprocess: --help/-h on
// stdout with exit 0 for every command and subcommand the usage texts list,
// --version, strict options (an unknown one exits 2 with a hint, before anything
// runs), --flag=value, one usage text per command that matches the README, policy
// matrix/trace on manifests without addresses, agent config errors that name the
// file, and a reader closing the pipe early. No lab is brought up.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { labDir } from '../../lab/state.js';
import { VERSION } from '../../cni/spec.js';
import { closest, distance } from '../../cli/args.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = join(root, 'dist/cli/twill.js');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string; bin: Record<string, string> };
let dir: string;

beforeAll(() => {
  // tsc emits even when another part of the tree has type errors; the CLI is what we need
  spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'ignore' });
  dir = mkdtempSync(join(tmpdir(), 'twill-cli-'));
}, 180_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const twill = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, TWILL_LOG_FORMAT: 'json' } });
function write(name: string, text: string): string {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
}
/** The names in a usage text's "commands:" section. */
const listed = (usage: string): string[] => {
  const m = /\ncommands:\n((?: {2}\S.*\n)+)/.exec(usage);
  return m ? m[1].split('\n').filter(Boolean).map((l) => l.trim().split(/\s+/)[0]) : [];
};

describe('help', () => {
  const expected: Record<string, string[]> = {
    lab: ['up', 'status', 'exec', 'metrics', 'upgrade', 'apply', 'delete', 'down', 'demo'],
    policy: ['matrix', 'trace', 'bench'],
    bench: ['micro', 'cni', 'policy'],
    agent: [],
  };

  it('twill --help and -h: the usage on stdout, exit 0, listing every command', () => {
    for (const h of ['--help', '-h']) {
      const r = twill(h);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(/^usage: twill <command> \[options\]\n/);
      expect(listed(r.stdout).sort()).toEqual(Object.keys(expected).sort());
      expect(r.stdout).toContain('--version');
    }
    expect(twill('help').stdout).toBe(twill('--help').stdout);
  });

  it('every command and subcommand: --help and -h on stdout, exit 0, its own usage', () => {
    let checked = 0;
    for (const [cmd, subs] of Object.entries(expected)) {
      for (const h of ['--help', '-h']) {
        const r = twill(cmd, h);
        expect(r.status, `${cmd} ${h}: ${r.stderr}`).toBe(0);
        expect(r.stderr).toBe('');
        expect(r.stdout).toMatch(new RegExp(`^usage: twill ${cmd}\\b`));
        expect(r.stdout).toMatch(/\n {2}-h, --help +print this help\n/);
        expect(listed(r.stdout)).toEqual(subs);
        checked++;
        for (const sub of listed(r.stdout)) {
          const s = twill(cmd, sub, h);
          expect(s.status, `${cmd} ${sub} ${h}: ${s.stderr}`).toBe(0);
          expect(s.stderr).toBe('');
          expect(s.stdout).toMatch(new RegExp(`^usage: twill ${cmd} ${sub}\\b`));
          expect(listed(s.stdout)).toEqual([]);
          checked++;
        }
      }
    }
    expect(checked).toBe(2 * (4 + 9 + 3 + 3));
  });

  it('--help wins wherever it stands before --, even beside a mistake; `twill help CMD` is CMD --help', () => {
    const a = twill('lab', 'up', '--nodez', '3', '--help');
    expect(a.status).toBe(0);
    expect(a.stdout).toMatch(/^usage: twill lab up /);
    expect(twill('help', 'lab', 'exec').stdout).toBe(twill('lab', 'exec', '--help').stdout);
  });

  it('a usage error prints the error and the usage on stderr, nothing on stdout, exit 2', () => {
    for (const args of [[], ['lab'], ['policy'], ['lob'], ['lab', 'stauts']]) {
      const r = twill(...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/\n\nusage: twill/);
    }
    expect(twill().stderr).toMatch(/^twill: missing command\n/);
    expect(twill('lob').stderr).toMatch(/^twill: unknown command "lob" \(did you mean lab\?\)/);
    expect(twill('lab', 'stauts').stderr).toMatch(/^twill lab: unknown command "stauts" \(did you mean status\?\)/);
  });
});

describe('version', () => {
  it('twill --version prints the package version, exit 0', () => {
    const r = twill('--version');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`twill ${pkg.version}\n`);
    expect(VERSION).toBe(pkg.version); // cni/spec.ts's VERSION (twill --version and twill-cni's) follows package.json
  });
});

describe('strict options', () => {
  it('lab up --nodez 3: exit 2 with a hint naming --nodes, and no lab comes up', () => {
    const name = `cli${randomBytes(3).toString('hex')}`;
    const r = twill('lab', 'up', '--name', name, '--nodez', '3');
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^twill lab up: unknown option --nodez \(did you mean --nodes\?\)\n\nusage: twill lab up /);
    expect(existsSync(labDir(name))).toBe(false);
  });

  it('every kind of mistake is a usage error naming it', () => {
    const cases: [string[], RegExp][] = [
      [['lab', 'up', '--pods', '3'], /unknown option --pods \(did you mean --pods-per-node\?\)/],
      [['lab', 'up', '--nodes'], /--nodes needs a value/],
      [['lab', 'up', '--nodes=abc'], /--nodes must be a whole number, at least 1, not "abc"/],
      [['lab', 'up', '--nodes', '0'], /--nodes must be a whole number, at least 1, not "0"/],
      [['lab', 'up', '--proxy-mode=ipvs'], /--proxy-mode must be iptables or nftables, not "ipvs"/],
      [['lab', 'up', 'extra'], /unexpected argument "extra"/],
      [['lab', 'status', '--json=yes'], /--json takes no value/],
      [['lab', 'exec'], /missing POD/],
      [['lab', 'exec', 'p1', 'ls'], /unexpected argument "ls" \(COMMAND\.\.\. goes after --/],
      [['lab', 'exec', 'p1'], /missing -- COMMAND/],
      [['lab', 'metrics'], /missing NODE/],
      [['lab', 'apply'], /missing -f FILE/],
      [['policy', 'matrix'], /missing -f FILE/],
      [['policy', 'trace', '-f', 'x.yaml', '--from', 'a'], /missing --to NS\/POD/],
      [['policy', 'matrix', '-f', 'x.yaml', '--port', '70000'], /--port must be 1-65535, not "70000"/],
      [['policy', 'matrix', '-f', 'x.yaml', '--protocol', 'ICMP'], /--protocol must be TCP or UDP or SCTP, not "ICMP"/],
      [['policy', 'matrx'], /unknown command "matrx" \(did you mean matrix\?\)/],
      [['bench', 'macro'], /unknown command "macro"/],
      [['bench', '--quik'], /unknown option --quik \(did you mean --quick\?\)/],
      [['bench', 'micro', '--jsn'], /unknown option --jsn \(did you mean --json\?\)/],
      [['agent'], /missing --config FILE/],
      [['agent', '--confg', 'x.json'], /unknown option --confg \(did you mean --config\?\)/],
      [['--verison'], /unknown option --verison \(did you mean --version\?\)/],
    ];
    for (const [args, msg] of cases) {
      const r = twill(...args);
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stdout, args.join(' ')).toBe('');
      expect(r.stderr, args.join(' ')).toMatch(msg);
      expect(r.stderr, args.join(' ')).toMatch(/\n\nusage: twill/);
    }
  });

  it('--flag=value reads as --flag value, and -f as --filename', () => {
    const f = write('eq.yaml', PODS_WITH_IPS);
    const spaced = twill('policy', 'matrix', '-f', f, '--port', '5432', '--protocol', 'UDP', '--json');
    const joined = twill('policy', 'matrix', `--filename=${f}`, '--port=5432', '--protocol=udp', '--json');
    const old = twill('policy', 'matrix', '--file', f, '--port', '5432', '--protocol', 'UDP', '--json'); // the older spelling still works
    expect(spaced.status, spaced.stderr).toBe(0);
    expect(joined.stdout).toBe(spaced.stdout);
    expect(old.stdout).toBe(spaced.stdout);
    expect(JSON.parse(spaced.stdout).pods).toEqual(['default/a', 'default/b']);
  });

  it('closest(): typos, prefixes, and nothing for what is far from every choice', () => {
    expect(distance('nodez', 'nodes')).toBe(1);
    expect(distance('stauts', 'status')).toBe(1);
    expect(closest('--nodez', ['--nodes', '--name', '--workers'])).toBe('--nodes');
    expect(closest('--pods', ['--pods-per-node', '--nodes'])).toBe('--pods-per-node');
    expect(closest('--frobnicate', ['--nodes', '--name'])).toBeUndefined();
  });
});

describe('the README and the usage texts agree', () => {
  it('every `npx twill ...` line names a command whose usage lists each option the line uses', () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const lines = readme.split('\n').filter((l) => /^npx twill /.test(l)).map((l) => l.replace(/\s+#.*$/, ''));
    expect(lines.length).toBeGreaterThanOrEqual(10);
    expect(readme).not.toMatch(/node dist\/cli\/twill\.js/);
    for (const line of lines) {
      const words = line.split(/\s+/).slice(2);
      const path: string[] = [];
      for (const w of words) {
        if (w.startsWith('-') || w.startsWith('[')) break;
        const u = twill(...path, '--help').stdout;
        if (!listed(u).includes(w)) break;
        path.push(w);
      }
      const usage = twill(...path, '--help');
      expect(usage.status, line).toBe(0);
      const own = line.split(' -- ')[0];
      for (const flag of own.match(/(?<=\s|\[)--?[a-z][\w-]*/g) ?? []) {
        expect(usage.stdout, `${line}: ${flag}`).toMatch(new RegExp(`(^|[\\s,\\[])${flag}\\b`));
      }
    }
  });

  it('package.json has the twill bin `npx twill` and `npm link` use', () => {
    expect(pkg.bin.twill).toBe('dist/cli/twill.js');
    expect(readFileSync(cli, 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
  });
});

const PODS_WITH_IPS = `
apiVersion: v1
kind: Pod
metadata: {name: a, labels: {app: a}}
status: {podIP: 10.244.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: b, labels: {app: b}}
status: {podIP: 10.244.2.2}
`;

// Manifests as repositories hold them: no status at all.
const APP = `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: frontend, namespace: shop, labels: {app: frontend}}
  spec: {containers: [{name: web, image: nginx, ports: [{containerPort: 80}]}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: db, namespace: shop, labels: {app: db}}
  spec: {containers: [{name: pg, image: postgres, ports: [{containerPort: 5432, name: pg}]}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: logs, namespace: shop, labels: {app: logs}}
  spec: {hostNetwork: true, containers: [{name: c, image: fluentbit}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, labels: {app: other}}
spec: {containers: [{name: c, image: busybox}]}
status: {podIP: 10.244.1.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-frontend, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: frontend}}}], ports: [{port: pg}]}]
`;

describe('policy matrix and trace on manifests without addresses', () => {
  const note = 'twill policy matrix: 2 pods without status.podIP given addresses from 10.244.0.0/16, as `twill lab up -f` gives them: shop/frontend 10.244.1.3, shop/db 10.244.2.2\n';

  it('matrix: the pods get addresses as the lab gives them (node1, node2, ..., skipping used ones), said in one stderr line', () => {
    const f = write('app.yaml', APP);
    const r = twill('policy', 'matrix', '-f', f, '--port', '5432', '--json');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe(note);
    const m = JSON.parse(r.stdout) as { pods: string[]; allowed: boolean[][] };
    expect(m.pods).toEqual(['shop/frontend', 'shop/db', 'default/other']); // the host-network pod has no pod address
    const rows = m.allowed.map((row) => row.map((a) => (a ? '.' : 'X')).join(''));
    expect(rows).toEqual(['...', '...', '.X.']); // only frontend reaches db on 5432
    const text = twill('policy', 'matrix', '-f', f, '--port', '5432');
    expect(text.stdout).toContain('(. allowed, X denied)');
  });

  it('trace: works on such pods, names the deciding policy; a host-network pod is said to be outside NetworkPolicy', () => {
    const f = write('app2.yaml', APP);
    const ok = twill('policy', 'trace', '-f', f, '--from', 'shop/frontend', '--to', 'shop/db', '--port', '5432');
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stderr).toBe(note.replace('policy matrix', 'policy trace'));
    expect(ok.stdout).toMatch(/^shop\/frontend -> shop\/db 5432\/TCP: ALLOWED\n/);
    expect(ok.stdout).toMatch(/ingress +allow \[shop\/db-from-frontend ingress\[0\]\]/);
    const denied = twill('policy', 'trace', '-f', f, '--from', 'other', '--to', 'shop/db', '--port', '5432', '--json');
    expect(JSON.parse(denied.stdout)).toMatchObject({ from: 'default/other', to: 'shop/db', allowed: false });
    const host = twill('policy', 'trace', '-f', f, '--from', 'shop/logs', '--to', 'shop/db');
    expect(host.status).toBe(1);
    expect(host.stderr).toContain('pod shop/logs is on the host network: NetworkPolicy does not apply to it');
    const none = twill('policy', 'trace', '-f', f, '--from', 'shop/nope', '--to', 'shop/db');
    expect(none.status).toBe(1);
    expect(none.stderr).toContain(`no pod shop/nope in ${f}; the pods: shop/frontend, shop/db, shop/logs, default/other`);
  });

  it('--cluster-cidr: addresses from another range; one too small is an error saying so', () => {
    const f = write('app3.yaml', APP);
    const r = twill('policy', 'matrix', '-f', f, '--cluster-cidr', '10.1.0.0/16');
    expect(r.stderr).toContain('given addresses from 10.1.0.0/16, as `twill lab up -f` gives them: shop/frontend 10.1.1.2, shop/db 10.1.2.2\n');
    const small = twill('policy', 'matrix', '-f', f, '--cluster-cidr', '10.1.0.0/24');
    expect(small.status).toBe(1);
    expect(small.stderr).toMatch(/cluster CIDR 10\.1\.0\.0\/24 has no room/);
    expect(twill('policy', 'matrix', '-f', f, '--cluster-cidr', '10.1.0.0').status).toBe(2);
  });

  it('manifests whose pods all have addresses: nothing on stderr', () => {
    const r = twill('policy', 'matrix', '-f', write('ips.yaml', PODS_WITH_IPS));
    expect(r.status).toBe(0);
    expect(r.stderr).toBe('');
  });

  it('a missing manifest file: named, exit 1', () => {
    const r = twill('policy', 'matrix', '-f', join(dir, 'nope.yaml'));
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`twill policy matrix: cannot read ${join(dir, 'nope.yaml')}: no such file\n`);
  });
});

describe('errors name what failed', () => {
  it('twill agent --config: the file, and for bad JSON the position with its line and column', () => {
    const bad = write('bad.json', '{\n  "node": "n1",\n  datastore: "/tmp/x"\n}\n');
    const r = twill('agent', '--config', bad);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`twill agent: agent config ${bad}: not valid JSON: Expected double-quoted property name in JSON at position 20 (line 3, column 3)\n`);
    const missing = twill('agent', '--config', join(dir, 'none.json'));
    expect(missing.stderr).toBe(`twill agent: agent config ${join(dir, 'none.json')}: no such file\n`);
    const level = twill('agent', '--config', write('lvl.json', JSON.stringify({ node: 'n1', datastore: dir, stateDir: dir, socket: join(dir, 's'), logLevel: 'loud' })));
    expect(level.stderr).toMatch(/lvl\.json: "logLevel": "loud" is not a log level \(trace, debug, info, warn, error, fatal, silent\)/);
    const noState = twill('agent', '--config', write('nostate.json', JSON.stringify({ node: 'n1', datastore: dir })));
    expect(noState.stderr).toMatch(/nostate\.json: no "stateDir"/);
  });

  it('an unreachable cluster source: the source and its URL (run in a namespace of its own)', () => {
    const ns = `twcli-${randomBytes(3).toString('hex')}`;
    expect(spawnSync('ip', ['netns', 'add', ns]).status).toBe(0);
    // lo up, nothing listening: every connection is refused; a veth (both ends in it) is the etcd node's underlay
    for (const a of [['link', 'set', 'lo', 'up'], ['link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1'], ['addr', 'add', '10.99.0.1/24', 'dev', 'v0'], ['link', 'set', 'v0', 'up']]) {
      expect(spawnSync('ip', ['-n', ns, ...a]).status, a.join(' ')).toBe(0);
    }
    try {
      const agent = (cfg: object) => {
        const f = write(`src-${randomBytes(3).toString('hex')}.json`, JSON.stringify({ node: 'n1', stateDir: join(dir, 'state'), socket: join(dir, 'state', 'agent.sock'), ...cfg }));
        return spawnSync('ip', ['netns', 'exec', ns, process.execPath, cli, 'agent', '--config', f], { encoding: 'utf8', timeout: 30_000 });
      };
      const kube = agent({ kubernetes: { server: 'http://127.0.0.1:6443' } });
      expect(kube.status).toBe(1);
      expect(kube.stderr).toBe('twill agent: kubernetes server http://127.0.0.1:6443: connect ECONNREFUSED 127.0.0.1:6443\n');
      const sock = join(dir, 'no-apiserver.sock');
      const unix = agent({ kubernetes: { server: `unix://${sock}` } });
      expect(unix.stderr).toBe(`twill agent: kubernetes server unix://${sock}: connect ENOENT ${sock}\n`);
      const etcd = agent({ etcd: { endpoints: ['http://127.0.0.1:2379'] }, publicIP: '10.99.0.1' });
      expect(etcd.status).toBe(1);
      expect(etcd.stderr).toMatch(/^twill agent: etcd http:\/\/127\.0\.0\.1:2379\b.*ECONNREFUSED/);
    } finally {
      spawnSync('ip', ['netns', 'del', ns]);
    }
  });
});

describe('a reader that stops early (`twill ... | head`)', () => {
  it('no EPIPE error: nothing on stderr, exit 0', async () => {
    // a matrix of 300 pods is ~1 MB of text: far more than a pipe holds
    const pods = Array.from({ length: 300 }, (_, i) => `---\napiVersion: v1\nkind: Pod\nmetadata: {name: p${i}}\nstatus: {podIP: 10.244.${1 + Math.floor(i / 250)}.${2 + (i % 250)}}\n`).join('');
    const f = write('many.yaml', pods);
    const ch = spawn(process.execPath, [cli, 'policy', 'matrix', '-f', f], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    ch.stderr.on('data', (d: Buffer) => (err += d));
    await new Promise<void>((resolve) => ch.stdout.once('data', () => { ch.stdout.destroy(); resolve(); })); // `head -1`
    const code = await new Promise<number | null>((resolve) => ch.on('close', resolve));
    expect(err).toBe('');
    expect(code).toBe(0);
  });
});
