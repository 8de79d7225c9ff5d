// The lab supervises its agents as the kubelet would (lab/supervisor.ts): a
// kill -9 of an agent is repaired with no command typed, `lab status` shows the
// live pid, the restarts and the last exit, and `lab down` stops exactly the
// processes the lab started, even after restarts and with a supervisor gone.
// Also: a recorded pid whose start time does not match is never signalled.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { labUp, labDown } from '../../lab/lab.js';
import { labDir, labPrefix, loadState, saveState, type LabState } from '../../lab/state.js';
import { netnsList } from '../../lib/sh.js';
import { alive, procStart, sameProcess, stopProcess } from '../../lab/proc.js';
import { agentConfigFile, backoffMs, MAX_BACKOFF_MS, readSupervisorStatus } from '../../lab/supervisor.js';
import { distFile } from '../../lib/paths.js';
import { pingOk, probeTcpFrom, testLabName } from '../helpers/lab.js';

const name = testLabName();
let s: LabState;

beforeAll(async () => {
  s = await labUp({ name, nodes: 2, podsPerNode: 1 });
});
afterAll(async () => {
  await labDown(name); // a no-op when the last test took it down
});

const twill = (...args: string[]) => spawnSync(process.execPath, [distFile('cli/twill.js'), 'lab', ...args, '--name', name], { encoding: 'utf8', timeout: 30_000 });
interface NodeStatus { name: string; pid: number | null; restarts: number; lastExit: { signal: string | null; code: number | null; reason: string } | null; agentState: string; supervisorPid: number | null }
const status = (): NodeStatus[] => {
  const r = twill('status', '--json');
  expect(r.status, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { nodes: NodeStatus[] }).nodes;
};
const nodeStatus = (n: string) => status().find((x) => x.name === n)!;
const pod = (n: string) => s.pods.find((p) => p.name === n)!;
const cmdline = (pid: number) => { try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' '); } catch { return ''; } };

describe('supervision', () => {
  test('kill -9 of node2\'s agent: traffic across nodes is back within 2 s, with no command typed', async () => {
    const a = pod('node1-p1'), b = pod('node2-p1');
    expect(await probeTcpFrom(a.netns, b.ip)).toBe(true);
    const before = nodeStatus('node2');
    expect(before).toMatchObject({ restarts: 0, lastExit: null, agentState: 'running' });
    const old = before.pid!;
    expect(cmdline(old)).toContain(agentConfigFile(s.nodes[1]));

    process.kill(old, 'SIGKILL');
    const t0 = Date.now();
    let ok = false;
    while (!ok && Date.now() - t0 < 5000) ok = pingOk(a.netns, b.ip, ['-W', '0.2']);
    const took = Date.now() - t0;
    console.log(`supervision: pod-to-pod across nodes back ${took} ms after kill -9 of node2's agent (pid ${old})`);
    expect(ok, 'traffic did not come back within 5 s').toBe(true);
    expect(took).toBeLessThan(2000);
    expect(await probeTcpFrom(a.netns, b.ip)).toBe(true); // and TCP to the echo server
    expect(await probeTcpFrom(b.netns, a.ip)).toBe(true); // both ways

    const after = nodeStatus('node2');
    expect(after.pid).not.toBe(old);
    expect(after.pid).toBeGreaterThan(0);
    expect(alive(after.pid!)).toBe(true);
    expect(cmdline(after.pid!)).toContain(agentConfigFile(s.nodes[1]));
    expect(after).toMatchObject({ restarts: 1, agentState: 'running', lastExit: { signal: 'SIGKILL', code: null, reason: 'killed by SIGKILL' } });
    expect(nodeStatus('node1')).toMatchObject({ restarts: 0, lastExit: null });
    const text = twill('status');
    expect(text.stdout).toMatch(new RegExp(`node node2 .* agent pid ${after.pid} \\(running, restarts 1, last exit: killed by SIGKILL at `));
  });

  test('a supervisor killed -9 leaves its agent running; status says so', async () => {
    const n1 = nodeStatus('node1');
    process.kill(n1.supervisorPid!, 'SIGKILL');
    while (alive(n1.supervisorPid!)) await new Promise((r) => setTimeout(r, 10));
    const now = nodeStatus('node1');
    expect(now).toMatchObject({ pid: n1.pid, supervisorPid: null, agentState: 'unsupervised' });
    expect(pingOk(pod('node1-p1').netns, pod('node2-p1').ip)).toBe(true);
  });

  test('lab down stops every process the lab started (the orphaned agent too) and leaves nothing', () => {
    const st = loadState(name)!;
    const recorded: { pid: number; start: number | undefined; what: string }[] = [
      ...st.nodes.flatMap((n) => [
        { pid: n.supervisor!.pid, start: n.supervisor!.start, what: `supervisor of ${n.name}` },
        { pid: readSupervisorStatus(n)!.agent!.pid, start: readSupervisorStatus(n)!.agent!.start, what: `agent of ${n.name}` },
      ]),
      ...st.pids.map((pid) => ({ pid, start: st.pidStarts?.[pid], what: `process ${pid}` })),
    ];
    expect(recorded.filter((p) => sameProcess(p.pid, p.start)).map((p) => p.what)).toEqual(recorded.filter((p) => !p.what.startsWith('supervisor of node1')).map((p) => p.what));
    const r = twill('down');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/is down: stopped \d+ processes/);
    for (const p of recorded) expect(sameProcess(p.pid, p.start), `${p.what} (pid ${p.pid}) still runs`).toBe(false);
    const dir = labDir(name);
    for (const pattern of [`${dir}/`, `supervisor.js ${name} `]) {
      const g = spawnSync('pgrep', ['-af', pattern], { encoding: 'utf8' });
      expect(g.stdout.trim(), `processes matching ${pattern}`).toBe('');
    }
    expect(netnsList().filter((ns) => ns.startsWith(labPrefix(name)))).toEqual([]);
    expect(existsSync(dir)).toBe(false);
    expect(existsSync('/etc/netns') ? readdirSync('/etc/netns').filter((d) => d.startsWith(labPrefix(name))) : []).toEqual([]);
    expect(loadState(name)).toBeUndefined();
  });
});

describe('pid reuse', () => {
  // A process of our own stands for "whatever now holds a recorded pid".
  const bystander = () => {
    const c = spawn('sleep', ['60'], { stdio: 'ignore' });
    return { pid: c.pid!, start: procStart(c.pid!)!, kill: () => c.kill('SIGKILL') };
  };

  test('a recorded pid whose start time does not match is not signalled', async () => {
    const b = bystander();
    try {
      expect(sameProcess(b.pid, b.start)).toBe(true);
      expect(await stopProcess(b.pid, b.start + 1)).toBe(false);
      expect(await stopProcess(b.pid, undefined)).toBe(false);
      expect(alive(b.pid)).toBe(true);

      // A lab whose records name that pid, each with another start time (a supervisor, an
      // agent, a workload) and once bare, as a lab saved before start times were kept: down leaves it alone.
      const fake = testLabName();
      const dir = labDir(fake);
      const node = { name: 'node1', netns: `${labPrefix(fake)}node1`, underlayIP: '172.30.0.11', podCIDR: '10.244.1.0/24', vtepMAC: '02:00:00:00:00:01', pid: b.pid, pidStart: b.start - 1, supervisor: { pid: b.pid, start: b.start + 7 }, stateDir: path.join(dir, 'node1'), socket: path.join(dir, 'node1', 'agent.sock'), log: path.join(dir, 'node1', 'agent.log') };
      saveState({ name: fake, prefix: labPrefix(fake), dir, underlayNs: `${labPrefix(fake)}underlay`, clusterCIDR: '10.244.0.0/16', underlayMTU: 1500, nodes: [node], pods: [], pids: [b.pid], pidStarts: { [b.pid]: b.start + 3 } });
      let r = await labDown(fake);
      expect(r).toMatchObject({ processes: 0 });
      expect(r.skipped).toBeGreaterThanOrEqual(1);
      expect(alive(b.pid)).toBe(true);
      expect(existsSync(dir)).toBe(false);

      // Written by hand: saveState would record the pid's start time. Bare, the pid is taken only if it lives in a namespace of the lab.
      mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, 'state.json'), JSON.stringify({ name: fake, prefix: labPrefix(fake), dir, underlayNs: `${labPrefix(fake)}underlay`, clusterCIDR: '10.244.0.0/16', underlayMTU: 1500, nodes: [], pods: [], pids: [b.pid] }));
      r = await labDown(fake);
      expect(r.processes).toBe(0);
      expect(alive(b.pid)).toBe(true);

      // With the right start time, it is ours.
      expect(await stopProcess(b.pid, b.start)).toBe(true);
      expect(alive(b.pid)).toBe(false);
    } finally {
      b.kill();
    }
  });

  test('backoff: the first restart at once, then doubling from 0.5 s, capped', () => {
    expect([1, 2, 3, 4, 5].map(backoffMs)).toEqual([0, 500, 1000, 2000, 4000]);
    expect(backoffMs(50)).toBe(MAX_BACKOFF_MS);
  });
});
