// Idle costs nothing: an engine with 2 workers and no traffic blocks in poll()
// (waking at most once a second), so over a 2 s window in which the test itself
// only sleeps, the whole process uses < 2% of one core. Busy polling
// (busyPollUs) engages under steady traffic (twill_worker_spin_seconds_total
// grows) and stops by itself once the traffic stops: after a datagram every
// 1 ms, the engine is back under 2%. Also reports the CPU time
// of the engine's own threads (those that appeared with Engine.start), read from
// /proc/self/task/<tid>/stat (utime + stime, in clock ticks of `getconf CLK_TCK`).
// Runs in a throwaway network namespace (twt-eng-<random>, always deleted).
// Workers run the compiled JavaScript: `npx tsc -p tsconfig.json` first.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { Engine } from '../../dataplane/engine/engine.js';
import { defaultEngineConfig } from '../../dataplane/engine/config.js';
import { compileFib } from '../../dataplane/tables/fib.js';

const sh = (cmd: string, ...args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const N = `twt-eng-${randomBytes(3).toString('hex')}i`;
const ipn = (...args: string[]) => sh('ip', '-n', N, ...args);
const CLK_TCK = Number(sh('getconf', 'CLK_TCK').trim()) || 100;
const WINDOW_MS = 2000;
const LIMIT = 0.02; // of one core

let created = false;
let engine: Engine | undefined;
let engineTids: number[] = [];

function tids(): number[] {
  return readdirSync('/proc/self/task').map(Number);
}
/** utime + stime of one thread in clock ticks (0 if it has exited). */
function threadTicks(tid: number): number {
  try {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // comm may hold spaces
    return Number(rest[11]) + Number(rest[12]); // fields 14 and 15 (state is field 3 = rest[0])
  } catch {
    return 0;
  }
}
const cpuMs = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };

beforeAll(async () => {
  try {
    sh('ip', 'netns', 'add', N);
    created = true;
    ipn('link', 'set', 'lo', 'up');
    sh('ip', 'netns', 'exec', N, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
    ipn('link', 'add', 'ul0', 'type', 'veth', 'peer', 'name', 'ul1');
    ipn('addr', 'add', '172.30.99.1/24', 'dev', 'ul0');
    ipn('link', 'set', 'ul0', 'up');
    ipn('link', 'set', 'ul1', 'up');
    ipn('tuntap', 'add', 'dev', 'twill0', 'mode', 'tun', 'multi_queue');
    ipn('link', 'set', 'twill0', 'mtu', '1450');
    ipn('addr', 'add', '10.244.1.1/32', 'dev', 'twill0');
    ipn('link', 'set', 'twill0', 'up');
    ipn('route', 'add', '10.244.0.0/16', 'dev', 'twill0', 'src', '10.244.1.1');

    const before = new Set(tids());
    engine = new Engine(
      defaultEngineConfig({ node: 'n', underlayIp: '172.30.99.1', vtepMac: '02:00:00:99:01:01', netns: `/var/run/netns/${N}`, workers: 2 }),
      pino({ level: 'silent' }),
    );
    const fib = compileFib({
      clusterCIDR: '10.244.0.0/16', podCIDR: '10.244.1.0/24', hostIPs: ['10.244.1.1', '172.30.99.1'], pods: [],
      remotes: [{ name: 'u', podCIDR: '10.244.2.0/24', underlayIP: '172.30.99.2', vtepMAC: '02:00:00:99:02:01' }],
    });
    await engine.start({ ...fib, gatewayIP: '10.244.1.1' });
    engineTids = tids().filter((t) => !before.has(t));
  } catch (e) {
    await engine?.stop().catch(() => {});
    engine = undefined;
    if (created) sh('ip', 'netns', 'del', N);
    throw e;
  }
});

afterAll(async () => {
  try {
    await engine?.stop();
  } finally {
    if (created) { try { sh('ip', 'netns', 'del', N); } catch { /* gone */ } }
  }
});

/** CPU of the engine's threads over `ms`, as a fraction of one core. */
async function engineLoad(ms: number): Promise<number> {
  const t0 = performance.now();
  const w0 = engineTids.map(threadTicks);
  await sleep(ms);
  const w1 = engineTids.map(threadTicks);
  return (w1.reduce((s, v, i) => s + v - w0[i], 0) * 1000 / CLK_TCK) / (performance.now() - t0);
}

describe('idle engine', () => {
  it('busy-polls under steady traffic and stops when it stops', async () => {
    // A datagram into the node's TUN every millisecond: the engine encapsulates
    // them toward a node that does not answer, which is traffic enough.
    const sender = `const s = require('dgram').createSocket('udp4'); setInterval(() => s.send('x', 9, '10.244.2.9'), 1); setTimeout(() => process.exit(0), 3000);`;
    const traffic = spawn('ip', ['netns', 'exec', N, process.execPath, '-e', sender], { stdio: 'ignore' });
    try {
      const spin0 = engine!.counters().spin_us;
      await sleep(300);
      const busy = await engineLoad(600);
      const spun = (engine!.counters().spin_us - spin0) / 1000;
      console.log(`engine threads under a datagram every 1 ms: ${(busy * 100).toFixed(0)}% of one core, ${spun.toFixed(0)} ms of it busy polling (${engine!.counters().rx_tun} received)`);
      // The worker that gets the datagrams polls instead of sleeping. (On a machine busy with other work it
      // stops after its first spin is cut short, so only the spinning, not its share of the core, is certain.)
      expect(spun).toBeGreaterThan(0);
    } finally {
      traffic.kill('SIGKILL');
    }
    await sleep(100); // a spin that catches nothing ends within busyPollUs (3 ms)
    expect(await engineLoad(1000)).toBeLessThan(LIMIT + (1000 / CLK_TCK) * engineTids.length / 1000);
  });

  it(`uses < ${LIMIT * 100}% of one core with no traffic`, async () => {
    await sleep(500); // let start-up work (JIT, piscina bookkeeping) settle
    const t0 = performance.now();
    const p0 = cpuMs();
    const w0 = engineTids.map(threadTicks);
    await sleep(WINDOW_MS);
    const p1 = cpuMs();
    const w1 = engineTids.map(threadTicks);
    const wall = performance.now() - t0;
    const proc = (p1 - p0) / wall;
    const engineMs = w1.reduce((s, v, i) => s + v - w0[i], 0) * 1000 / CLK_TCK;
    console.log(
      `idle over ${wall.toFixed(0)} ms: whole process ${(p1 - p0).toFixed(1)} ms CPU = ${(proc * 100).toFixed(2)}% of one core; ` +
      `engine threads (${engineTids.length} new since start) ${engineMs.toFixed(0)} ms CPU = ${(engineMs / wall * 100).toFixed(2)}% ` +
      `(resolution ${1000 / CLK_TCK} ms per tick)`,
    );
    expect(engineTids.length).toBeGreaterThanOrEqual(2); // the two workers
    expect(proc).toBeLessThan(LIMIT);
    expect(engineMs / wall).toBeLessThan(LIMIT + (1000 / CLK_TCK) * engineTids.length / wall); // within tick resolution
  });
});
