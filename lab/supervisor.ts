// A node's supervisor, as the kubelet is for a node's pods: one detached process per
// lab node (`node dist/lab/supervisor.js <lab> <node>`, started by startAgent in
// lab/lab.ts). It runs the node's agent inside the node's namespace and restarts it
// at once when it exits, with a growing delay while it keeps crashing (the kubelet's
// CrashLoopBackOff, scaled down and capped). What it knows goes to
// <node stateDir>/supervisor.json, written atomically: the live agent's pid and start
// time, the restart count, the last exit. On SIGTERM it stops its agent (SIGTERM, then
// SIGKILL after a grace) and exits. Its own log is <node stateDir>/supervisor.log; the
// agent's runs all append to the node's agent.log.
//
// On SIGUSR2 it upgrades the agent without an outage, as a DaemonSet with maxSurge
// does: it starts a second agent beside the first, which takes the node over
// (agent/handover.ts), and once the new one answers on the node's socket
// it stops the old one, now idle (`twill lab upgrade`, labUpgrade in lab/lab.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { distFile } from '../lib/paths.js';
import { procStart, sameProcess } from './proc.js';
import { loadState, type LabNode, type LabProcess } from './state.js';
import { request } from '../agent/socket.js';

export interface AgentExit {
  pid: number;
  code: number | null;
  signal: string | null;
  reason: string; // "exited with code 1", "killed by SIGKILL", "failed to start: ..."
  at: string; // ISO time
  ranMs: number;
}

export interface SupervisorStatus {
  supervisor: LabProcess;
  state: 'running' | 'backoff' | 'stopping' | 'stopped';
  agent?: LabProcess & { since: string }; // the agent it runs now; absent while none does
  restarts: number; // agents started after the first, as the kubelet's restartCount
  upgrades?: number; // hand-overs to a new agent (SIGUSR2)
  lastExit?: AgentExit;
  nextStartAt?: string; // while in backoff
}

/** After this long a run counts as healthy, and the next exit restarts at once again. */
export const HEALTHY_RUN_MS = 10_000;
/** The longest wait between two starts of an agent that keeps crashing. */
export const MAX_BACKOFF_MS = 10_000;
/** How long a stopping agent gets between SIGTERM and SIGKILL. */
export const AGENT_GRACE_MS = 3000;

/**
 * The delay before the next start, given how many exits in a row came from runs shorter
 * than HEALTHY_RUN_MS (this one included): none after the first, then 0.5 s doubling to MAX_BACKOFF_MS.
 */
export function backoffMs(quickExits: number): number {
  if (quickExits <= 1) return 0;
  return Math.min(MAX_BACKOFF_MS, 500 * 2 ** (quickExits - 2));
}

export const supervisorStatusFile = (n: Pick<LabNode, 'stateDir'>): string => path.join(n.stateDir, 'supervisor.json');
export const supervisorLogFile = (n: Pick<LabNode, 'stateDir'>): string => path.join(n.stateDir, 'supervisor.log');
export const agentConfigFile = (n: Pick<LabNode, 'stateDir'>): string => path.join(n.stateDir, 'agent.json');

export function readSupervisorStatus(n: Pick<LabNode, 'stateDir'>): SupervisorStatus | undefined {
  try {
    return JSON.parse(readFileSync(supervisorStatusFile(n), 'utf8')) as SupervisorStatus;
  } catch {
    return undefined;
  }
}

/** What `lab status` shows of a node's agent: only processes that are verifiably the ones recorded. */
export interface AgentView {
  pid: number | null; // the live agent, or null
  restarts: number;
  lastExit: AgentExit | null;
  state: SupervisorStatus['state'] | 'unsupervised';
  supervisorPid: number | null; // the live supervisor, or null
}

export function agentView(n: LabNode): AgentView {
  const st = readSupervisorStatus(n);
  const sup = n.supervisor && sameProcess(n.supervisor.pid, n.supervisor.start) ? n.supervisor.pid : null;
  const agent = st?.agent && sameProcess(st.agent.pid, st.agent.start) ? st.agent.pid
    : sameProcess(n.pid, n.pidStart) ? n.pid : null;
  return { pid: agent, restarts: st?.restarts ?? 0, lastExit: st?.lastExit ?? null, state: sup && st ? st.state : 'unsupervised', supervisorPid: sup };
}

function exitReason(code: number | null, signal: string | null): string {
  return signal ? `killed by ${signal}` : `exited with code ${code}`;
}

/** Runs one node's supervisor until SIGTERM (or until its node is gone). */
export function supervise(labName: string, nodeName: string): void {
  const s = loadState(labName);
  const n = s?.nodes.find((x) => x.name === nodeName);
  if (!s || !n) throw new Error(`supervisor: no node ${nodeName} in lab "${labName}"`);
  const node = n;
  const say = (m: string) => process.stdout.write(`${new Date().toISOString()} ${node.name}: ${m}\n`);
  const status: SupervisorStatus = { supervisor: { pid: process.pid, start: procStart(process.pid)! }, state: 'running', restarts: 0 };
  let child: ChildProcess | undefined;
  let childExited: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopping = false;
  let quickExits = 0;
  let started = 0;

  const write = () => {
    const f = supervisorStatusFile(node);
    try {
      writeFileSync(`${f}.tmp`, JSON.stringify(status));
      renameSync(`${f}.tmp`, f);
    } catch (e) {
      if (!existsSync(node.stateDir)) finish('the node\'s state directory is gone');
      else say(`cannot write ${f}: ${(e as Error).message}`);
    }
  };
  const finish = (why: string) => {
    say(`exiting: ${why}`);
    process.exit(0);
  };

  const launch = () => {
    timer = undefined;
    if (stopping) return;
    // The lab was torn down behind our back (or by a `lab down` that did not know us): nothing left to run.
    if (!existsSync(path.join('/run/netns', node.netns))) return finish(`namespace ${node.netns} is gone`);
    if (!existsSync(agentConfigFile(node))) return finish(`${agentConfigFile(node)} is gone`);
    if (started++ > 0) status.restarts++;
    run(spawnAgent(), Date.now());
  };

  const spawnAgent = (): ChildProcess => {
    const log = openSync(node.log, 'a'); // every run appends to the one log
    const c = spawn('ip', ['netns', 'exec', node.netns, process.execPath, distFile('cli/twill.js'), 'agent', '--config', agentConfigFile(node)], { stdio: ['ignore', log, log] });
    closeSync(log);
    return c;
  };

  // c becomes the agent this supervisor runs (and restarts when it exits).
  const run = (c: ChildProcess, t0: number) => {
    child = c;
    let onExit!: () => void;
    childExited = new Promise<void>((r) => (onExit = r));
    let done = false;
    const exited = (code: number | null, signal: string | null, reason: string) => {
      if (done) return;
      done = true;
      if (child !== c) { say(`agent pid ${c.pid}, replaced by pid ${child?.pid}, ${reason}`); return; } // an upgrade's predecessor
      child = undefined;
      onExit();
      const ranMs = Date.now() - t0;
      status.agent = undefined;
      status.lastExit = { pid: c.pid ?? 0, code, signal, reason, at: new Date().toISOString(), ranMs };
      if (stopping) return;
      quickExits = ranMs < HEALTHY_RUN_MS ? quickExits + 1 : 1;
      const delay = backoffMs(quickExits);
      say(`agent pid ${c.pid} ${reason} after ${(ranMs / 1000).toFixed(1)} s; ${delay ? `restarting in ${delay} ms (${quickExits} quick exits in a row)` : 'restarting now'}`);
      status.state = delay ? 'backoff' : 'running';
      status.nextStartAt = delay ? new Date(Date.now() + delay).toISOString() : undefined;
      write();
      timer = setTimeout(launch, delay);
    };
    c.once('error', (e) => exited(null, null, `failed to start: ${e.message}`));
    c.once('exit', (code, signal) => exited(code, signal, exitReason(code, signal)));
    if (c.pid === undefined) return; // 'error' follows
    const start = procStart(c.pid);
    status.agent = { pid: c.pid, start: start ?? 0, since: new Date(t0).toISOString() };
    status.state = 'running';
    status.nextStartAt = undefined;
    write();
    say(`agent pid ${c.pid} started${status.restarts ? ` (restart ${status.restarts})` : ''}`);
  };

  const stop = async (sig: string) => {
    if (stopping) return;
    stopping = true;
    if (timer) clearTimeout(timer);
    status.state = 'stopping';
    write();
    const c = child;
    if (c && childExited) {
      say(`${sig}: stopping agent pid ${c.pid}`);
      c.kill('SIGTERM'); // our own child, not yet reaped: its pid cannot have been reused
      const k = setTimeout(() => { say(`agent pid ${c.pid} still there after ${AGENT_GRACE_MS} ms: SIGKILL`); c.kill('SIGKILL'); }, AGENT_GRACE_MS);
      await childExited;
      clearTimeout(k);
    }
    status.state = 'stopped';
    status.agent = undefined;
    write();
    finish(sig);
  };
  let upgrading = false;
  const upgrade = async () => {
    const old = child;
    if (!old || stopping || upgrading) return;
    upgrading = true;
    const t0 = Date.now(), next = spawnAgent();
    say(`SIGUSR2: upgrading: agent pid ${next.pid} takes over from pid ${old.pid}`);
    try {
      for (;;) { // the new agent serves the node's socket once it has taken over
        if (next.exitCode !== null || next.signalCode !== null) throw new Error(`the new agent exited (${exitReason(next.exitCode, next.signalCode)})`);
        if (Date.now() - t0 > 30_000) throw new Error('the new agent did not take over within 30 s');
        const st = await request(node.socket, { op: 'status' }, 1000).catch(() => undefined) as { pid?: number } | undefined;
        if (st?.pid === next.pid) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      if (stopping) { next.kill('SIGTERM'); return; }
      run(next, t0);
      status.upgrades = (status.upgrades ?? 0) + 1;
      write();
      old.kill('SIGTERM'); // idle since it handed over
      say(`agent pid ${next.pid} took over in ${Date.now() - t0} ms; old agent pid ${old.pid} stopped`);
    } catch (e) {
      if (next.exitCode === null) next.kill('SIGTERM');
      // An old agent that handed over is idle: stop it too, and it is restarted as after any exit.
      const st = await request(node.socket, { op: 'status' }, 1000).catch(() => undefined) as { pid?: number; handedOver?: boolean } | undefined;
      const idle = st === undefined || st.handedOver === true;
      say(`upgrade failed: ${(e as Error).message}; ${idle ? `restarting the old agent pid ${old.pid}` : `the old agent pid ${old.pid} stays`}`);
      if (idle) old.kill('SIGTERM');
    } finally {
      upgrading = false;
    }
  };
  process.on('SIGUSR2', () => void upgrade());
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGHUP', () => undefined); // detached; a hangup means nothing here
  say(`supervising the agent of ${node.name} (lab "${labName}", namespace ${node.netns})`);
  launch();
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [labName, nodeName] = process.argv.slice(2);
  if (!labName || !nodeName) {
    process.stderr.write('usage: node dist/lab/supervisor.js <lab> <node>\n');
    process.exit(2);
  }
  supervise(labName, nodeName);
}
