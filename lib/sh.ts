// Small wrappers over iproute2 and friends, for the product (the CNI plugin wires
// pods with them) and the lab and tests alike.
import { execFileSync, spawn, spawnSync } from 'node:child_process';

export function run(cmd: string, args: string[], input?: string): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${(err.stderr || err.message).trim()}`);
  }
}

/** `ip -n ns ...` (or plain `ip ...` when ns is ""). */
export function ipn(ns: string, ...args: string[]): string {
  return run('ip', ns ? ['-n', ns, ...args] : args);
}

/** Runs a command inside a network namespace. */
export function nsExec(ns: string, cmd: string, ...args: string[]): string {
  return run('ip', ['netns', 'exec', ns, cmd, ...args]);
}

export function sysctl(ns: string, key: string, value: string): void {
  nsExec(ns, 'sysctl', '-qw', `${key}=${value}`);
}

export function netnsList(): string[] {
  const r = spawnSync('ip', ['-j', 'netns', 'list'], { encoding: 'utf8' });
  if (r.status !== 0 || !r.stdout.trim()) return [];
  return (JSON.parse(r.stdout) as { name: string }[]).map((n) => n.name);
}

export function netnsDel(ns: string): void {
  spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
}

export function linkMac(ns: string, dev: string): string {
  const j = JSON.parse(ipn(ns, '-j', 'link', 'show', 'dev', dev)) as { address: string }[];
  return j[0].address;
}

/** Runs a command without blocking the event loop; kills it after timeoutMs. Never rejects. */
export function capture(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('close', (code) => { clearTimeout(t); resolve({ code, out, err }); });
  });
}

/** Resolves once `stream` has carried `text` (a server saying it listens); rejects after timeoutMs or when it ends first. */
export function untilOutput(stream: NodeJS.ReadableStream, text: string, what: string, timeoutMs = 5000): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const finish = (err?: Error) => {
      clearTimeout(t);
      stream.removeListener('data', onData);
      stream.removeListener('end', onEnd);
      stream.resume(); // keep draining whatever follows
      if (err) reject(err);
      else resolve();
    };
    const onData = (d: Buffer | string) => { seen = (seen + d).slice(-4096); if (seen.includes(text)) finish(); };
    const onEnd = () => finish(new Error(`${what} ended before it said "${text}"`));
    const t = setTimeout(() => finish(new Error(`${what} did not say "${text}" within ${timeoutMs} ms`)), timeoutMs);
    stream.on('data', onData);
    stream.on('end', onEnd);
  });
}
