// Small wrappers over iproute2 and friends for the lab and the tests.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

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

/**
 * A process's start time: field 22 of /proc/<pid>/stat (clock ticks after boot), or
 * undefined when there is no such process. A pid with the start time recorded when the
 * lab made the process names that process only: a reused pid starts later.
 */
export function procStart(pid: number): number | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const v = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]); // fields 3.. after "comm)"; 22 is the 20th
    return Number.isFinite(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/** True while `pid` is the very process whose start time was `start` (alive, not a zombie). */
export function sameProcess(pid: number, start: number | undefined): boolean {
  return start !== undefined && alive(pid) && procStart(pid) === start;
}

/**
 * Stops a process we started, named by pid and start time: SIGTERM, then SIGKILL if it is
 * still there after graceMs. A pid whose process has another start time (exited, the pid
 * reused) is never signalled. True when it was ours and alive.
 */
export async function stopProcess(pid: number, start: number | undefined, graceMs = 2000): Promise<boolean> {
  if (!sameProcess(pid, start)) return false;
  try { process.kill(pid, 'SIGTERM'); } catch { return false; }
  const deadline = Date.now() + graceMs;
  while (sameProcess(pid, start) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  if (sameProcess(pid, start)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  while (sameProcess(pid, start)) await new Promise((r) => setTimeout(r, 10));
  return true;
}

/** Stops a process we started and still hold (a child, not yet reaped): SIGTERM, then SIGKILL if it is still there after graceMs. */
export async function stopPid(pid: number, graceMs = 2000): Promise<void> {
  await stopProcess(pid, procStart(pid), graceMs);
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie (exited, not yet reaped by its parent) counts as gone.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.split(') ')[1]?.[0] !== 'Z';
  } catch {
    return false;
  }
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
