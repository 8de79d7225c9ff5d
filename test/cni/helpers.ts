// Helpers for the CNI plugin tests: build the binary when its sources changed,
// run it like a runtime does (inside the node's netns, CNI_* env, netconf on
// stdin), and make pod namespaces named twt-cni-<random> (only those).
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = path.join(ROOT, 'dist/cni/twill-cni');
export const PATH_ENV = process.env.PATH || '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Builds dist/cni/twill-cni (esbuild + SEA, from the TypeScript sources) unless it is newer than every source it bundles. */
export function ensureBinary(): void {
  const srcs = [
    ...readdirSync(path.join(ROOT, 'cni')).filter((f) => f.endsWith('.ts') || f.endsWith('.mjs')).map((f) => path.join(ROOT, 'cni', f)),
    path.join(ROOT, 'lib/sh.ts'), path.join(ROOT, 'lib/ipv4.ts'), path.join(ROOT, 'lib/ipv6.ts'), path.join(ROOT, 'agent/socket.ts'),
  ];
  if (existsSync(BIN) && srcs.every((f) => statSync(f).mtimeMs < statSync(BIN).mtimeMs)) return;
  execFileSync(process.execPath, [path.join(ROOT, 'cni/build-sea.mjs')], { stdio: 'pipe' });
}

export interface CniCall {
  command: string;
  containerId?: string;
  netns?: string;
  ifname?: string;
  args?: string;
  env?: Record<string, string | undefined>; // overrides; undefined removes
}
export interface CniOut { code: number; out: string; err: string; json: Record<string, unknown> | undefined; ms: number }

function envOf(c: CniCall): Record<string, string> {
  const e: Record<string, string | undefined> = {
    PATH: PATH_ENV, CNI_COMMAND: c.command, CNI_CONTAINERID: c.containerId, CNI_NETNS: c.netns,
    CNI_IFNAME: c.ifname ?? 'eth0', CNI_PATH: path.dirname(BIN), CNI_ARGS: c.args, ...c.env,
  };
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(e)) if (v !== undefined) out[k] = v;
  return out;
}

function parse(stdout: string): Record<string, unknown> | undefined {
  try { return stdout.trim() ? (JSON.parse(stdout) as Record<string, unknown>) : undefined; } catch { return undefined; }
}

/** Runs the plugin inside the node's netns, as the runtime would. */
export function cniSync(nodeNs: string, c: CniCall, stdin: unknown): CniOut {
  const t = performance.now();
  const r = spawnSync('ip', ['netns', 'exec', nodeNs, BIN], { input: typeof stdin === 'string' ? stdin : JSON.stringify(stdin), env: envOf(c), encoding: 'utf8', timeout: 30_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr, json: parse(r.stdout), ms: performance.now() - t };
}

/** The same, asynchronously; `onSpawn` gets the child (to kill it). */
export function cni(nodeNs: string, c: CniCall, stdin: unknown, onSpawn?: (pid: number) => void): Promise<CniOut> {
  return new Promise((resolve) => {
    const t = performance.now();
    const ch = spawn('ip', ['netns', 'exec', nodeNs, BIN], { env: envOf(c), stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '', err = '';
    ch.stdout.on('data', (d) => { out += d; });
    ch.stderr.on('data', (d) => { err += d; });
    ch.stdin.on('error', () => undefined);
    ch.stdin.end(typeof stdin === 'string' ? stdin : JSON.stringify(stdin));
    if (onSpawn && ch.pid) onSpawn(ch.pid);
    ch.on('close', (code, sig) => resolve({ code: code ?? (sig ? -1 : -1), out, err, json: parse(out), ms: performance.now() - t }));
  });
}

/** Pod namespaces: twt-cni-<run><n>, created and deleted only through this. */
export class PodNamespaces {
  readonly run = randomBytes(3).toString('hex');
  private n = 0;
  readonly made = new Set<string>();

  add(): { name: string; path: string } {
    const name = `twt-cni-${this.run}${(this.n++).toString(36)}`;
    execFileSync('ip', ['netns', 'add', name]);
    this.made.add(name);
    return { name, path: `/var/run/netns/${name}` };
  }

  del(name: string): void {
    if (!this.made.has(name) || !name.startsWith('twt-cni-')) return;
    spawnSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
    this.made.delete(name);
  }

  delAll(): void { for (const n of [...this.made]) this.del(n); }
}

/** Runs a command inside a namespace; never throws. */
export function inNs(ns: string, cmd: string[]): { code: number; out: string } {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8', timeout: 20_000 });
  return { code: r.status ?? -1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

export function linkExists(ns: string, dev: string): boolean {
  return spawnSync('ip', ['-n', ns, 'link', 'show', 'dev', dev], { stdio: 'ignore' }).status === 0;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

/** Runs fns with at most `limit` in flight. */
export async function pool<T>(n: number, limit: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(n);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, n) }, async () => {
    while (next < n) { const i = next++; out[i] = await fn(i); }
  }));
  return out;
}
