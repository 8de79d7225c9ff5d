// The on-disk IPAM: unit behaviour (IPv4, IPv6, both in one store), then the
// properties that matter under a real runtime, for IPv4, IPv6 and dual-stack
// (IPv4 then IPv6 in one process, as ADD does): 100 concurrent processes never
// get the same address, a full range gives exactly as many addresses as it has,
// and processes killed -9 at random moments leave nothing that a release and a
// sweep do not clean.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { build } from 'esbuild';
import { Ipam, IpamExhausted, familyOf } from '../../cni/ipam.js';
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

type WorkerOut = { ok: boolean; ip?: string; ips?: string[]; error?: string; exhausted?: boolean };
/** One process: subnet is one CIDR or several comma-separated (allocated in that order), rangeEnd likewise. */
function worker(dir: string, subnet: string, op: string, id: string, rangeEnd = ''): { done: Promise<WorkerOut>; pid: number } {
  const ch = spawn(process.execPath, [WORKER, mod, dir, subnet, op, id, rangeEnd], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  ch.stdout.on('data', (d) => { out += d; });
  const done = new Promise<WorkerOut>((resolve) => ch.on('close', () => {
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
    else if (familyOf(n)) owners.set(n, readdirSync(path.join(dir, n)));
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

describe('IPAM, IPv6 and dual-stack, in one process', () => {
  const V6 = { subnet: 'fd00:10:244:1::/64', gateway: 'fd00:10:244:1::1' };

  test('IPv6: ::2 up, never the gateway, an owner finds its address again, canonical names, idempotent release', () => {
    const dir = freshDir();
    const ipam = new Ipam(dir, V6);
    expect(ipam.family).toBe(6);
    expect(ipam.prefixLen).toBe(64);
    expect(ipam.allocate(o('a'))).toEqual({ ip: 'fd00:10:244:1::2', existing: false });
    expect(ipam.allocate(o('b')).ip).toBe('fd00:10:244:1::3');
    expect(ipam.allocate(o('a'))).toEqual({ ip: 'fd00:10:244:1::2', existing: true });
    expect(readdirSync(dir).sort()).toEqual(['fd00:10:244:1::2', 'fd00:10:244:1::3', 'last_reserved_ip6']);
    expect(ipam.release(o('a'))).toEqual(['fd00:10:244:1::2']);
    expect(ipam.release(o('a'))).toEqual([]);
    expect(ipam.allocate(o('c')).ip).toBe('fd00:10:244:1::4'); // after the last reserved, as host-local
    // The text of the config need not be canonical: the store's names are.
    const loose = new Ipam(freshDir(), { subnet: 'FD00:0010:0244:0001:0:0:0:0/64', gateway: 'fd00:10:244:1:0::1' });
    expect(loose.allocate(o('x')).ip).toBe('fd00:10:244:1::2');
    // A /64 has 2^64 - 2 addresses to hand out; free() says so (approximately).
    expect(ipam.free()).toBeGreaterThan(1.8e19);
  });

  test('the gateway is skipped wherever it is in the range; a full IPv6 range throws IpamExhausted; empty dirs count as free', () => {
    const dir = freshDir();
    const ipam = new Ipam(dir, { ...V6, rangeStart: 'fd00:10:244:1::1', rangeEnd: 'fd00:10:244:1::3' });
    expect(ipam.free()).toBe(2);
    expect([ipam.allocate(o('a')).ip, ipam.allocate(o('b')).ip]).toEqual(['fd00:10:244:1::2', 'fd00:10:244:1::3']);
    expect(() => ipam.allocate(o('c'))).toThrow(IpamExhausted);
    expect(() => ipam.allocate(o('c'))).toThrow(/no free address in fd00:10:244:1::\/64 \(fd00:10:244:1::1-fd00:10:244:1::3\): all 2 are in use/);
    rmSync(path.join(dir, 'fd00:10:244:1::2', 'a:eth0'));
    expect(ipam.free()).toBe(1);
    expect(ipam.allocate(o('c')).ip).toBe('fd00:10:244:1::2');
    // The top of the /64 is an address like any other (no broadcast in IPv6), as host-local.
    const top = new Ipam(freshDir(), { ...V6, rangeStart: 'fd00:10:244:1:ffff:ffff:ffff:ffff' });
    expect(top.allocate(o('t')).ip).toBe('fd00:10:244:1:ffff:ffff:ffff:ffff');
    expect(() => top.allocate(o('u'))).toThrow(IpamExhausted);
  });

  test('the search wraps from the hint to the start of the range', () => {
    const dir = freshDir();
    const ipam = new Ipam(dir, { ...V6, rangeEnd: 'fd00:10:244:1::4' });
    for (const id of ['a', 'b', 'c']) ipam.allocate(o(id)); // ::2 ::3 ::4
    ipam.release(o('a'));
    expect(ipam.allocate(o('d')).ip).toBe('fd00:10:244:1::2');
  });

  test('IPv4 and IPv6 in one store: one address per family per owner, found per family, released together', () => {
    const dir = freshDir();
    const v4 = new Ipam(dir, { subnet: '10.244.1.0/24', gateway: '10.244.1.1' });
    const v6 = new Ipam(dir, V6);
    expect(v6.allocate(o('a')).ip).toBe('fd00:10:244:1::2');
    expect(v4.allocate(o('a')).ip).toBe('10.244.1.2'); // v6's address does not count as v4's
    expect(v6.allocate(o('a'))).toEqual({ ip: 'fd00:10:244:1::2', existing: true });
    expect(v4.allocate(o('b')).ip).toBe('10.244.1.3');
    expect(v6.allocate(o('b')).ip).toBe('fd00:10:244:1::3');
    expect(v4.find(o('a'))).toBe('10.244.1.2');
    expect(v6.find(o('a'))).toBe('fd00:10:244:1::2');
    const any = new Ipam(dir); // as DEL, CHECK and GC open it
    expect(any.findAll(o('a'))).toEqual(['10.244.1.2', 'fd00:10:244:1::2']);
    expect(any.find(o('a'))).toBe('10.244.1.2');
    expect(any.list().length).toBe(4);
    expect(readdirSync(dir).filter((n) => n.startsWith('last_')).sort()).toEqual(['last_reserved_ip', 'last_reserved_ip6']);
    expect(any.release(o('a')).sort()).toEqual(['10.244.1.2', 'fd00:10:244:1::2']);
    expect(any.findAll(o('a'))).toEqual([]);
    expect(v4.free()).toBe(253 - 1);
  });

  test('ranges that do not fit, a family mix-up, and too small a prefix are refused', () => {
    expect(() => new Ipam(freshDir(), { ...V6, rangeEnd: 'fd00:10:244:2::5' })).toThrow(/not inside/);
    expect(() => new Ipam(freshDir(), { ...V6, rangeStart: 'fd00:10:244:1::' })).toThrow(/not inside/);
    expect(() => new Ipam(freshDir(), { ...V6, rangeEnd: '10.244.1.5' })).toThrow(/not an IPv6 address/);
    expect(() => new Ipam(freshDir(), { subnet: '10.244.1.0/24', gateway: 'fd00:10:244:1::1' })).toThrow(/not an IPv4 address/);
    expect(() => new Ipam(freshDir(), { subnet: 'fd00:10:244:1::/127', gateway: 'fd00:10:244:1::1' })).toThrow(/too small/);
    expect(() => new Ipam(freshDir(), { subnet: 'fd00:10:244:1::/126', gateway: 'fd00:10:244:1::1' })).not.toThrow();
  });
});

// Each across-process property, for each family and for dual-stack (IPv4 then IPv6 in one process).
const FAMILIES = [
  { name: 'IPv4', subnets: '10.244.1.0/24', end50: '10.244.1.51' },
  { name: 'IPv6', subnets: 'fd00:10:244:1::/64', end50: 'fd00:10:244:1::33' },
  { name: 'dual-stack', subnets: '10.244.1.0/24,fd00:10:244:1::/64', end50: '10.244.1.51,fd00:10:244:1::33' },
];
const gatewayOf = (subnet: string) => (subnet.includes(':') ? subnet.replace(/::\/\d+$/, '::1') : subnet.replace(/\.0\/\d+$/, '.1'));

describe.each(FAMILIES)('IPAM across processes: $name', ({ subnets, end50 }) => {
  const nf = subnets.split(',').length;
  const stores = (dir: string) => subnets.split(',').map((subnet) => new Ipam(dir, { subnet, gateway: gatewayOf(subnet) }));

  test('100 concurrent processes get 100 distinct addresses (per family); 100 concurrent releases leave nothing', async () => {
    const dir = freshDir();
    const rs = await Promise.all(Array.from({ length: 100 }, (_, i) => worker(dir, subnets, 'alloc', `c${i}`).done));
    expect(rs.filter((r) => !r.ok)).toEqual([]);
    for (let f = 0; f < nf; f++) expect(new Set(rs.map((r) => r.ips![f])).size).toBe(100);
    expect(rs.every((r) => r.ips!.every((ip) => !ip.endsWith('::1') && !ip.endsWith('.1')))).toBe(true);
    const snap = snapshot(dir);
    expect([...snap.owners.values()].every((ow) => ow.length === 1)).toBe(true);
    expect(snap.owners.size).toBe(100 * nf);
    const del = await Promise.all(Array.from({ length: 100 }, (_, i) => worker(dir, subnets, 'release', `c${i}`).done));
    expect(del.every((r) => r.ok)).toBe(true);
    const after = snapshot(dir);
    expect(after.owners.size + after.tmp.length).toBe(0);
  });

  test('100 processes racing for a 50-address range: exactly 50 win, 50 get "exhausted", no address twice', async () => {
    const dir = freshDir();
    const rs = await Promise.all(Array.from({ length: 100 }, (_, i) => worker(dir, subnets, 'alloc', `r${i}`, end50).done));
    const won = rs.filter((r) => r.ok);
    expect(won.length).toBe(50);
    for (let f = 0; f < nf; f++) expect(new Set(won.map((r) => r.ips![f])).size).toBe(50);
    expect(rs.filter((r) => !r.ok).every((r) => r.exhausted)).toBe(true);
  });

  test('processes killed -9 at random moments of allocate/release cycles leave no address with two owners, and release + sweep clean everything', async () => {
    const dir = freshDir();
    const ids = Array.from({ length: 40 }, (_, i) => `k${i}`);
    const ws = ids.map((id) => worker(dir, subnets, 'cycle', id));
    // Let them run, then kill each at its own random moment.
    await Promise.all(ws.map(async (w) => {
      await new Promise((r) => setTimeout(r, 150 + Math.random() * 600));
      try { process.kill(w.pid, 'SIGKILL'); } catch { /* gone */ }
      await w.done;
    }));
    const snap = snapshot(dir);
    for (const [ip, ow] of snap.owners) expect(ow.length, `${ip}: ${ow.join(',')}`).toBeLessThanOrEqual(1);
    // No owner holds two addresses of one family.
    const perOwner = new Map<string, string[]>();
    for (const [ip, ow] of snap.owners) for (const k of ow) perOwner.set(`${k}/${familyOf(ip)}`, [...(perOwner.get(`${k}/${familyOf(ip)}`) ?? []), ip]);
    for (const [k, ips] of perOwner) expect(ips.length, `${k}: ${ips.join(',')}`).toBe(1);
    // A retried ADD (allocate, each family) finds the address it already holds, or takes one; then DEL releases.
    const ss = stores(dir);
    for (const ipam of ss) {
      const again = ids.map((id) => ipam.allocate(o(id)).ip);
      expect(new Set(again).size).toBe(ids.length);
    }
    for (const id of ids) ss[0].release(o(id));
    ss[0].sweep();
    const after = snapshot(dir);
    expect([...after.owners.values()].flat()).toEqual([]);
    expect(after.tmp).toEqual([]);
    expect(after.owners.size).toBe(0);
  });
});
