// IPAM from the node's pod CIDR, kept on disk, with no lock at all.
//
// Layout of <dataDir>/<network>/:
//   <ip>/                     the address is taken while this directory is NOT empty
//   <ip>/<containerId>:<ifname>   its owner (':' is in neither a container id nor an ifname)
//   .tmp-<pid>-<random>/      an allocation being prepared by process <pid>
//   last_reserved_ip          a hint only: where the next search starts (as host-local)
//
// Allocation prepares .tmp-…/<owner> and then rename()s the directory to <ip>.
// rename(2) of a directory onto a name that does not exist, or onto an EMPTY
// directory, succeeds atomically; onto a non-empty one it fails (ENOTEMPTY or
// EEXIST). So of any number of concurrent processes exactly one gets an address,
// and an owner is never half-written: the address appears with its owner inside.
// Release unlinks <ip>/<owner> (which can only remove THAT owner's claim, so a
// release can never free someone else's address, however it races) and then
// rmdir()s <ip>, which only succeeds if it is empty. A process killed -9 at any
// point leaves one of: nothing; a .tmp dir (removed once its pid is dead, or by a
// DEL/GC of its owner); an address with its owner (found again by a retried ADD,
// freed by DEL/GC); or an empty <ip> dir, which counts as free.
import { mkdirSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, unlinkSync, writeFileSync, existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { formatIPv4Address, parseIPv4Address, parseIPv4Cidr } from '../lib/ipv4.js';


export interface Owner { containerId: string; ifname: string }

export interface IpamRange {
  subnet: string; // a.b.c.d/len, the node's pod CIDR
  gateway: string; // never handed out
  rangeStart?: string; // default: network + 2 (network + 1 is the gateway by convention)
  rangeEnd?: string; // default: broadcast - 1
}

export class IpamExhausted extends Error {}

export function ownerKey(o: Owner): string { return `${o.containerId}:${o.ifname}`; }


export class Ipam {
  readonly first: number = 0;
  readonly last: number = -1;
  readonly prefixLen: number = 32;
  private readonly gw: number = -1;

  /** Without a range the store can find, list and release, but not allocate (DEL, CHECK, GC need no subnet). */
  constructor(readonly dir: string, readonly range?: IpamRange) {
    if (!range) return;
    const c = parseIPv4Cidr(range.subnet);
    if (c.len > 30) throw new Error(`subnet ${range.subnet} is too small for pods`);
    this.prefixLen = c.len;
    const bcast = (c.prefix + 2 ** (32 - c.len) - 1) >>> 0;
    this.first = range.rangeStart ? parseIPv4Address(range.rangeStart) : c.prefix + 2;
    this.last = range.rangeEnd ? parseIPv4Address(range.rangeEnd) : bcast - 1;
    this.gw = parseIPv4Address(range.gateway);
    if (this.first <= c.prefix || this.last >= bcast || this.first > this.last) {
      throw new Error(`range ${formatIPv4Address(this.first)}-${formatIPv4Address(this.last)} is not inside ${range.subnet}`);
    }
  }

  /** The address already held by this owner, if any (a retried ADD finds it). */
  find(o: Owner): string | undefined {
    const key = ownerKey(o);
    for (const name of listDir(this.dir)) if (isIP(name) && existsSync(path.join(this.dir, name, key))) return name;
    return undefined;
  }

  /** Gives the owner an address: the one it already has, or a free one. */
  allocate(o: Owner, extra: Record<string, unknown> = {}): { ip: string; existing: boolean } {
    const had = this.find(o);
    if (had) return { ip: had, existing: true };
    if (!this.range) throw new Error('this IPAM store was opened without a range: it cannot allocate');
    mkdirSync(this.dir, { recursive: true });
    const names = listDir(this.dir);
    this.sweepTmp(names);
    const tmp = path.join(this.dir, `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
    mkdirSync(tmp);
    try {
      writeFileSync(path.join(tmp, ownerKey(o)), JSON.stringify({ ...o, ...extra, pid: process.pid, time: new Date().toISOString() }));
      const taken = new Set(names.filter(isIP));
      const size = this.last - this.first + 1;
      let start = this.first;
      try {
        const hint = parseIPv4Address(readFileSync(path.join(this.dir, 'last_reserved_ip'), 'utf8').trim());
        if (hint >= this.first && hint <= this.last) start = hint + 1;
      } catch { /* no hint yet */ }
      const order: string[] = [];
      for (let i = 0; i < size; i++) {
        const n = this.first + ((start - this.first + i) % size);
        if (n !== this.gw) order.push(formatIPv4Address(n));
      }
      // Names not on disk first; then those on disk, which may be empty (= free) dirs.
      for (const ip of [...order.filter((x) => !taken.has(x)), ...order.filter((x) => taken.has(x))]) {
        try {
          renameSync(tmp, path.join(this.dir, ip));
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOTDIR') continue;
          throw e;
        }
        try { writeFileSync(path.join(this.dir, 'last_reserved_ip'), ip); } catch { /* a hint */ }
        return { ip, existing: false };
      }
      throw new IpamExhausted(`no free address in ${this.range!.subnet} (${formatIPv4Address(this.first)}-${formatIPv4Address(this.last)}): all ${order.length} are in use`);
    } finally {
      rmSync(tmp, { recursive: true, force: true }); // gone already when the rename succeeded
    }
  }

  /** Frees every address (and unfinished allocation) of this owner; returns the addresses freed. Idempotent. */
  release(o: Owner): string[] {
    const key = ownerKey(o);
    const freed: string[] = [];
    for (const name of listDir(this.dir)) {
      if (isIP(name)) {
        try { unlinkSync(path.join(this.dir, name, key)); } catch { continue; }
        freed.push(name);
        rmdirQuiet(path.join(this.dir, name));
      } else if (name.startsWith('.tmp-') && tmpOwnerDead(name)) {
        // A dead process's unfinished allocation, ours or not: it can never be renamed into
        // place now. (It may be empty: the kill can land between mkdir and the owner file.)
        rmSync(path.join(this.dir, name), { recursive: true, force: true });
      }
    }
    return freed;
  }

  /** Every held address and its owner(s). */
  list(): { ip: string; owner: Owner }[] {
    const out: { ip: string; owner: Owner }[] = [];
    for (const name of listDir(this.dir)) {
      if (!isIP(name)) continue;
      for (const k of listDir(path.join(this.dir, name))) {
        const i = k.lastIndexOf(':');
        if (i > 0) out.push({ ip: name, owner: { containerId: k.slice(0, i), ifname: k.slice(i + 1) } });
      }
    }
    return out;
  }

  /** How many addresses are free (empty dirs count as free). */
  free(): number {
    const held = new Set(this.list().map((x) => x.ip));
    let n = 0;
    for (let a = this.first; a <= this.last; a++) if (a !== this.gw && !held.has(formatIPv4Address(a))) n++;
    return n;
  }

  /** Removes leftovers of processes that died: unfinished allocations and empty address dirs. */
  sweep(): void {
    const names = listDir(this.dir);
    this.sweepTmp(names);
    for (const n of names) if (isIP(n)) rmdirQuiet(path.join(this.dir, n));
  }

  private sweepTmp(names: string[]): void {
    for (const n of names) if (n.startsWith('.tmp-') && tmpOwnerDead(n)) rmSync(path.join(this.dir, n), { recursive: true, force: true });
  }
}

function isIP(name: string): boolean { return /^\d+\.\d+\.\d+\.\d+$/.test(name); }

function listDir(dir: string): string[] {
  try { return readdirSync(dir); } catch (e) { if ((e as NodeJS.ErrnoException).code === 'ENOENT') return []; throw e; }
}

function rmdirQuiet(dir: string): void {
  try { rmdirSync(dir); } catch { /* not empty (someone else's now) or gone: both fine */ }
}

function tmpOwnerDead(name: string): boolean {
  const pid = Number(name.split('-')[1]);
  if (!Number.isInteger(pid) || pid <= 0) return true;
  if (pid === process.pid) return false;
  try { process.kill(pid, 0); return false; } catch (e) { return (e as NodeJS.ErrnoException).code === 'ESRCH'; }
}
