// Processes the lab starts, named by pid and start time, so a reused pid is never
// signalled (lab down, the supervisors).
import { readFileSync } from 'node:fs';

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
