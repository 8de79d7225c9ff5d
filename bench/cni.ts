// CNI latency: how long twill-cni takes per ADD and DEL as a runtime sees it,
// process start included. Each call is timed around the spawn of
// `ip netns exec <node netns> <plugin dir>/twill-cni` with the CNI_* variables
// and the network configuration on stdin, exactly as cni/runtime.ts (and
// containerd, from inside the node's namespace) runs it, against a real agent
// in a one-node lab:
//   add_p50_ms, add_p99_ms       sequential ADDs (50; 15 with quick), each into a fresh pod netns
//   add20_p50_ms, add20_p99_ms   ADDs 20 at a time (3 rounds; 1 with quick), each timed from
//                                its own spawn to its own exit
//   del_p50_ms, del_p99_ms       sequential DELs of the sequential ADDs' pods
// Target: p50 ADD <= 100 ms. Pod namespaces are the lab's (tw<lab>-pod-b<n>), so
// `labDown` removes whatever a failed run leaves.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { labUp, labDown, nodeCni } from '../lab/lab.js';
import { ipn, netnsDel } from '../lib/sh.js';

export interface CniBenchOptions { quick?: boolean; json?: boolean }
export interface CniBenchResult {
  add_p50_ms: number; add_p99_ms: number;
  add20_p50_ms: number; add20_p99_ms: number;
  del_p50_ms: number; del_p99_ms: number;
}

const ADD_TARGET_P50_MS = 100;
const CONCURRENCY = 20;
const PATH_ENV = process.env.PATH || '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Nearest-rank percentile. */
export function percentile(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

interface Call { command: 'ADD' | 'DEL' | 'VERSION'; id: string; netns: string }

export async function runCniBench(opts: CniBenchOptions = {}): Promise<CniBenchResult> {
  const quick = opts.quick ?? false;
  const say = (msg: string) => { if (!opts.json) process.stderr.write(`${msg}\n`); };
  const seqN = quick ? 15 : 50;
  const rounds = quick ? 1 : 3;
  const lab = `b${randomBytes(2).toString('hex')}`;
  const load = os.loadavg()[0];
  say(`cni bench: one-node lab ${lab}`);
  const s = await labUp({ name: lab, nodes: 1, podsPerNode: 0 });
  try {
    const node = s.nodes[0];
    const cni = nodeCni(node);
    const list = JSON.parse(readFileSync(cni.confFile, 'utf8')) as { cniVersion: string; name: string; plugins: Record<string, unknown>[] };
    const stdin = JSON.stringify({ ...list.plugins[0], cniVersion: list.cniVersion, name: list.name });
    const bin = path.join(cni.binDir, String(list.plugins[0].type));
    const binSize = statSync(bin).size; // follows the link to dist/cni/twill-cni
    let pods = 0;
    const newPod = () => { const ns = `${s.prefix}pod-b${pods++}`; ipn('', 'netns', 'add', ns); return ns; };
    const env = (c: Call): Record<string, string> => ({
      PATH: PATH_ENV, CNI_COMMAND: c.command, CNI_CONTAINERID: c.id, CNI_NETNS: `/var/run/netns/${c.netns}`,
      CNI_IFNAME: 'eth0', CNI_PATH: cni.binDir, CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=${c.id}`,
    });
    const args = ['netns', 'exec', node.netns, bin];
    const fail = (c: Call, code: number | null, out: string) => new Error(`twill-cni ${c.command} ${c.id} exited ${code}: ${out.trim()}`);

    const callSync = (c: Call): number => {
      const t = performance.now();
      const r = spawnSync('ip', args, { input: stdin, env: env(c), encoding: 'utf8', timeout: 60_000 });
      const ms = performance.now() - t;
      if (r.status !== 0) throw fail(c, r.status, `${r.stdout}${r.stderr}`);
      return ms;
    };
    const callAsync = (c: Call): Promise<number> => new Promise((resolve, reject) => {
      const t = performance.now();
      const ch = spawn('ip', args, { env: env(c), stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      ch.stdout.on('data', (d) => { out += d; });
      ch.stderr.on('data', (d) => { out += d; });
      ch.stdin.on('error', () => undefined);
      ch.stdin.end(stdin);
      ch.on('error', reject);
      ch.on('close', (code) => {
        const ms = performance.now() - t;
        if (code !== 0) reject(fail(c, code, out)); else resolve(ms);
      });
    });

    // Warm-up (page cache for the ~100 MB executable, the agent's first requests): not counted.
    say('warm-up...');
    const versionMs: number[] = [];
    for (let i = 0; i < 5; i++) versionMs.push(callSync({ command: 'VERSION', id: 'v', netns: node.netns }));
    for (let i = 0; i < 2; i++) {
      const c = { id: `warm${i}`, netns: newPod() };
      callSync({ command: 'ADD', ...c });
      callSync({ command: 'DEL', ...c });
      netnsDel(c.netns);
    }

    say(`ADD x ${seqN}, sequential...`);
    const seq: { id: string; netns: string }[] = [];
    const add: number[] = [];
    for (let i = 0; i < seqN; i++) {
      const c = { id: `seq${i}`, netns: newPod() };
      seq.push(c);
      add.push(callSync({ command: 'ADD', ...c }));
    }
    say(`DEL x ${seqN}, sequential...`);
    const del: number[] = [];
    for (const c of seq) { del.push(callSync({ command: 'DEL', ...c })); netnsDel(c.netns); }

    const add20: number[] = [];
    for (let r = 0; r < rounds; r++) {
      say(`ADD x ${CONCURRENCY}, concurrent (round ${r + 1}/${rounds})...`);
      const batch = Array.from({ length: CONCURRENCY }, (_, i) => ({ id: `par${r}-${i}`, netns: newPod() }));
      add20.push(...(await Promise.all(batch.map((c) => callAsync({ command: 'ADD', ...c })))));
      for (const c of batch) { callSync({ command: 'DEL', ...c }); netnsDel(c.netns); }
    }

    const result: CniBenchResult = {
      add_p50_ms: percentile(add, 50), add_p99_ms: percentile(add, 99),
      add20_p50_ms: percentile(add20, 50), add20_p99_ms: percentile(add20, 99),
      del_p50_ms: percentile(del, 50), del_p99_ms: percentile(del, 99),
    };
    if (opts.json) {
      process.stdout.write(JSON.stringify(result) + '\n');
    } else {
      process.stdout.write(table(result, {
        seqN, add20N: add20.length, versionP50: percentile(versionMs, 50), binSize, quick, load,
      }));
    }
    return result;
  } finally {
    await labDown(lab);
  }
}

function table(r: CniBenchResult, x: { seqN: number; add20N: number; versionP50: number; binSize: number; quick: boolean; load: number }): string {
  const f = (v: number) => v.toFixed(1).padStart(8);
  const rows: [string, number, number, number, string][] = [
    ['ADD, sequential', r.add_p50_ms, r.add_p99_ms, x.seqN, `p50 <= ${ADD_TARGET_P50_MS} ms: ${r.add_p50_ms <= ADD_TARGET_P50_MS ? 'ok' : 'MISSED'}`],
    [`ADD, ${CONCURRENCY} concurrent`, r.add20_p50_ms, r.add20_p99_ms, x.add20N, ''],
    ['DEL, sequential', r.del_p50_ms, r.del_p99_ms, x.seqN, ''],
  ];
  const kind = x.binSize > 1_000_000 ? `single executable, ${(x.binSize / 1048576).toFixed(0)} MiB` : 'shell wrapper: node + bundle (the single-executable build failed)';
  return [
    `twill-cni latency${x.quick ? ' (quick)' : ''}: one-node lab, timed around \`ip netns exec <node> twill-cni\` (process start included)`,
    `binary: dist/cni/twill-cni (${kind}); ${os.availableParallelism()} cores, load average ${x.load.toFixed(1)} at start`,
    '',
    `${'operation'.padEnd(22)}${'p50 ms'.padStart(8)}${'p99 ms'.padStart(8)}${'n'.padStart(6)}  target`,
    ...rows.map(([name, p50, p99, n, t]) => `${name.padEnd(22)}${f(p50)}${f(p99)}${String(n).padStart(6)}  ${t}`),
    '',
    `for reference: VERSION (process start only, no work) p50 ${x.versionP50.toFixed(1)} ms`,
    '',
  ].join('\n');
}
