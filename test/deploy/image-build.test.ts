// deploy/Dockerfile's build stage, step by step, in a clean directory: the files a
// fresh clone has, less .dockerignore (the build context), this machine standing in
// for the base image (Node, python3, make, g++). This is what a user's `docker
// build` first runs: `npm ci` must accept the committed lock, the addon and the
// TypeScript must build at the steps the Dockerfile gives them, and the runtime
// stage's COPY --from sources must then exist.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildContext, copyArgs, readDockerfile, runBuildStage, type StepLog } from '../helpers/rootfs.js';

const df = readDockerfile();
const build = df.stages.find((s) => s.name === 'build')!;
const runtime = df.stages[df.stages.length - 1];
let T = '';
let ctx = '', src = '';
let sent: string[] = [], ignored: string[] = [];
const steps: StepLog[] = [];

beforeAll(() => {
  T = mkdtempSync(path.join(tmpdir(), 'twt-img-'));
  ctx = path.join(T, 'context');
  ({ sent, ignored } = buildContext(ctx));
  const root = path.join(T, 'root'); // the build stage's "/"
  runBuildStage(build, ctx, root, (s) => steps.push(s));
  const wd = build.instrs.filter((i) => i.op === 'WORKDIR').map((i) => i.args.trim()).pop() ?? '/';
  src = path.join(root, wd);
  for (const s of steps) process.stderr.write(`  Dockerfile:${s.line} ${s.op} ${s.args.slice(0, 70)}: ${s.skipped ? `skipped (${s.skipped})` : `${s.ms} ms`}\n`);
}, 600_000);

afterAll(() => { if (T) rmSync(T, { recursive: true, force: true }); });

describe('deploy/Dockerfile, build stage, from a clean clone', () => {
  test('the context is the sources: no host builds, no node_modules, no tests', () => {
    expect(sent).toContain('package-lock.json');
    expect(sent).toContain('dataplane/native/binding.gyp');
    expect(sent.some((f) => f.startsWith('test/'))).toBe(false);
    expect(ignored.some((f) => f.startsWith('test/'))).toBe(true);
    for (const f of sent) expect(f, f).not.toMatch(/(^|\/)(node_modules|dist|build)\//);
  });

  test('dependencies are installed before the sources come in, scripts only once they are there', () => {
    const ops = build.instrs.map((i) => `${i.op} ${i.args}`);
    const ci = ops.findIndex((o) => /^RUN npm ci\b/.test(o));
    const all = ops.findIndex((o) => /^COPY \. /.test(o));
    expect(ci).toBeGreaterThan(-1);
    expect(ops[ci]).toContain('--ignore-scripts'); // "install" needs the addon's sources, "prepare" tsconfig.json
    expect(ci).toBeLessThan(all);
    expect(ops.slice(0, ci).filter((o) => o.startsWith('COPY'))).toEqual(['COPY package.json package-lock.json ./']);
  });

  test('every step ran: npm ci accepted the lock, the addon, the TypeScript and twill-cni built, dev dependencies pruned', () => {
    expect(steps.filter((s) => !s.skipped).map((s) => s.op)).toContain('RUN');
    expect(existsSync(path.join(src, 'dataplane/native/build/Release/twill_native.node'))).toBe(true);
    expect(existsSync(path.join(src, 'dist/cli/twill.js'))).toBe(true);
    expect(existsSync(path.join(src, 'dist/agent/main.js'))).toBe(true);
    const cni = path.join(src, 'dist/cni/twill-cni');
    expect(statSync(cni).size).toBeGreaterThan(10 << 20); // the single executable, not the shell fallback
    const v = spawnSync(cni, [], { env: { CNI_COMMAND: 'VERSION' }, encoding: 'utf8' });
    expect(v.stdout).toContain('supportedVersions');
    const deps = JSON.parse(readFileSync(path.join(src, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
    for (const d of Object.keys(deps.dependencies)) expect(existsSync(path.join(src, 'node_modules', d)), d).toBe(true);
    for (const d of Object.keys(deps.devDependencies)) expect(existsSync(path.join(src, 'node_modules', d)), d).toBe(false);
  });

  test('the agent starts from the built tree with the production dependencies only', () => {
    const r = spawnSync(process.execPath, [path.join(src, 'dist/cli/twill.js')], { encoding: 'utf8' });
    expect(r.stderr).toMatch(/usage:[\s\S]*\bagent\b/); // usage: every import resolved
    expect(r.stderr).not.toMatch(/ERR_MODULE_NOT_FOUND|Cannot find/);
    const addon = spawnSync(process.execPath, ['-e', `import(${JSON.stringify(path.join(src, 'dist/dataplane/native/index.js'))}).then((m) => console.log(typeof m.native.tunOpen))`], { encoding: 'utf8' });
    expect(addon.stdout.trim(), addon.stderr).toBe('function');
  });

  test('what the runtime stage copies from the build stage exists', () => {
    const wd = build.instrs.filter((i) => i.op === 'WORKDIR').map((i) => i.args.trim()).pop()!;
    const froms = runtime.instrs.filter((i) => i.op === 'COPY' && i.flags.from === 'build');
    expect(froms.length).toBeGreaterThan(0);
    for (const i of froms) {
      for (const s of copyArgs(i).srcs) {
        expect(s.startsWith(`${wd}/`), s).toBe(true);
        expect(existsSync(path.join(src, s.slice(wd.length + 1))), s).toBe(true);
      }
    }
    expect(readdirSync(path.join(src, 'node_modules')).length).toBeGreaterThan(0);
  });
});
