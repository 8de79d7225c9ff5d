// The on-disk IPAM: unit behaviour, then the properties that matter under a
// real runtime: 100 concurrent processes never get the same address, a full
// range gives exactly as many addresses as it has, and processes killed -9 at
// random moments leave nothing that a release and a sweep do not clean.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { build } from 'esbuild';
import { Ipam, IpamExhausted } from '../../cni/ipam.js';
import { ROOT } from './helpers.js';

let work: string;
let mod: string;
const WORKER = path.join(ROOT, 'test/cni/ipam-worker.mjs');

beforeAll(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'twill-ipam-'));
  mod = path.join(work, 'ipam.mjs');
  await build({ entryPoints: [path.join(ROOT, 'cni/ipam.ts')], bundle: true, platform: 'node', format: 'esm', outfile: mod, logLevel: 'silent' });
});
afterAll(() => { rmSync(work, { recursive: true, force: true }); });

let k = 0;
const freshDir = () => { const d = path.join(work, `net${k++}`); mkdirSync(d); return d; };
const o = (id: string) => ({ containerId: id, ifname: 'eth0' });

function worker(dir: string, subnet: string, op: string, id: string, rangeEnd = ''): { done: Promise<{ ok: boolean; ip?: string; error?: string; exhausted?: boolean }>; pid: number } {
  const ch = spawn(process.execPath, [WORKER, mod, dir, subnet, op, id, rangeEnd], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  ch.stdout.on('data', (d) => { out += d; });
  const done = new Promise<{ ok: boolean; ip?: string; error?: string }>((resolve) => ch.on('close', () => {
    try { resolve(JSON.parse(out)); } catch { resolve({ ok: false, error: `no output (killed?) ${out}` }); }
  }));
  return { done, pid: ch.pid! };
}

/** Every address dir and its owners, tmp dirs included. */
function snapshot(dir: string): { owners: Map<string, string[]>; tmp: string[] } {
  const owners = new Map<string, string[]>();
  const tmp: string[] = [];
  for (const n of readdirSync(dir)) {
    if (n.startsWith('.tmp-')) tmp.push(n);
    else if (/^\d+\.\d+\.\d+\.\d+$/.test(n)) owners.set(n, readdirSync(path.join(dir, n)));
  }
  return { owners, tmp };
}

describe('IPAM in one process', () => {
  test('allocates distinct addresses, skips the gateway, finds an owner\'s address again, releases idempotently', () => {
    const ipam = new Ipam(freshDir(), { subnet: '10.244.1.0/24', gateway: '10.244.1.1' });
    const a = ipam.allocate(o('a')), b = ipam.allocate(o('b'));
    expect(a).toEqual({ ip: '10.244.1.2', existing: false });
    expect(b.ip).toBe('10.244.1.3');
    expect(ipam.allocate(o('a'))).toEqual({ ip: '10.244.1.2', existing: true });
    expect(ipam.find(o('b'))).toBe('10.244.1.3');
    expect(ipam.release(o('a'))).toEqual(['10.244.1.2']);
    expect(ipam.release(o('a'))).toEqual([]);
    expect(ipam.find(o('a'))).toBeUndefined();
    // Next search starts after the last reserved address, as host-local does.
    expect(ipam.allocate(o('c')).ip).toBe('10.244.1.4');
    expect(ipam.list().map((x) => x.owner.containerId).sort()).toEqual(['b', 'c']);
  });

  test('an exhausted range throws IpamExhausted; an empty address dir (a release killed half-way) counts as free', () => {
    const dir = freshDir();
    const ipam = new Ipam(dir, { subnet: '10.244.1.0/24', gateway: '10.244.1.1', rangeStart: '10.244.1.10', rangeEnd: '10.244.1.11' });
    ipam.allocate(o('a'));
    ipam.allocate(o('b'));
    expect(() => ipam.allocate(o('c'))).toThrow(IpamExhausted);
    expect(() => ipam.allocate(o('c'))).toThrow(/no free address in 10\.244\.1\.0\/24/);
    rmSync(path.join(dir, '10.244.1.10', 'a:eth0')); // the owner file gone, the dir left behind
    expect(ipam.free()).toBe(1);
    expect(ipam.allocate(o('c')).ip).toBe('10.244.1.10');
  });

  test('leftovers of a dead process (its .tmp dir) are swept; a live process\'s are not', () => {
    const dir = freshDir();
    const ipam = new Ipam(dir, { subnet: '10.244.1.0/24', gateway: '10.244.1.1' });
    mkdirSync(path.join(dir, '.tmp-999999999-dead'));
    mkdirSync(path.join(dir, `.tmp-${process.pid}-live`));
    ipam.sweep();
    expect(existsSync(path.join(dir, '.tmp-999999999-dead'))).toBe(false);
    expect(existsSync(path.join(dir, `.tmp-${process.pid}-live`))).toBe(true);
  });

  test('a range that does not fit the subnet is refused', () => {
    expect(() => new Ipam(freshDir(), { subnet: '10.244.1.0/24', gateway: '10.244.1.1', rangeEnd: '10.244.2.5' })).toThrow(/not inside/);
  });
});

describe('IPAM across processes', () => {
  test('100 concurrent processes get 100 distinct addresses; 100 concurrent releases leave nothing', async () => {
    const dir = freshDir();
    const rs = await Promise.all(Array.from({ length: 100 }, (_, i) => worker(dir, '10.244.1.0/24', 'alloc', `c${i}`).done));
    expect(rs.filter((r) => !r.ok)).toEqual([]);
    const ips = rs.map((r) => r.ip!);
    expect(new Set(ips).size).toBe(100);
    const snap = snapshot(dir);
    expect([...snap.owners.values()].every((ow) => ow.length === 1)).toBe(true);
    expect(snap.owners.size).toBe(100);
    const del = await Promise.all(Array.from({ length: 100 }, (_, i) => worker(dir, '10.244.1.0/24', 'release', `c${i}`).done));
    expect(del.every((r) => r.ok)).toBe(true);
    const after = snapshot(dir);
    expect(after.owners.size + after.tmp.length).toBe(0);
  });

  test('100 processes racing for a 50-address range: exactly 50 win, 50 get "exhausted", no address twice', async () => {
    const dir = freshDir();
    const rs = await Promise.all(Array.from({ length: 100 }, (_, i) => worker(dir, '10.244.1.0/24', 'alloc', `r${i}`, '10.244.1.51').done));
    const won = rs.filter((r) => r.ok).map((r) => r.ip!);
    expect(won.length).toBe(50);
    expect(new Set(won).size).toBe(50);
    expect(rs.filter((r) => !r.ok).every((r) => r.exhausted)).toBe(true);
  });

  test('processes killed -9 at random moments of allocate/release cycles leave no address with two owners, and release + sweep clean everything', async () => {
    const dir = freshDir();
    const ids = Array.from({ length: 40 }, (_, i) => `k${i}`);
    const ws = ids.map((id) => worker(dir, '10.244.1.0/24', 'cycle', id));
    // Let them run, then kill each at its own random moment.
    await Promise.all(ws.map(async (w) => {
      await new Promise((r) => setTimeout(r, 150 + Math.random() * 600));
      try { process.kill(w.pid, 'SIGKILL'); } catch { /* gone */ }
      await w.done;
    }));
    const snap = snapshot(dir);
    for (const [ip, ow] of snap.owners) expect(ow.length, `${ip}: ${ow.join(',')}`).toBeLessThanOrEqual(1);
    // A retried ADD (allocate) finds the address it already holds, or takes one; then DEL releases.
    const ipam = new Ipam(dir, { subnet: '10.244.1.0/24', gateway: '10.244.1.1' });
    const again = ids.map((id) => ipam.allocate(o(id)).ip);
    expect(new Set(again).size).toBe(ids.length);
    for (const id of ids) ipam.release(o(id));
    ipam.sweep();
    const after = snapshot(dir);
    expect([...after.owners.values()].flat()).toEqual([]);
    expect(after.tmp).toEqual([]);
    expect(after.owners.size).toBe(0);
  });
});
