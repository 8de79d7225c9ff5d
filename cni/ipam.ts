// IPAM from the node's pod CIDRs (IPv4, IPv6 or both), kept on disk, with no lock at all.
//
// Layout of <dataDir>/<network>/ (both families share it, as host-local's store does):
//   <ip>/                     the address is taken while this directory is NOT empty; an IPv4
//                             address in dotted quad, an IPv6 one in RFC 5952 text (fd00:10:244:1::2)
//   <ip>/<containerId>:<ifname>   its owner (the LAST ':' splits it: there is none in a container id or an ifname)
//   .tmp-<pid>-<random>/      an allocation being prepared by process <pid>
//   last_reserved_ip          a hint only: where the next IPv4 search starts (as host-local)
//   last_reserved_ip6         the same for IPv6
//
// An Ipam opened with a range allocates in that range's family only; an owner
// holds at most one address per family. release() and list() see both families,
// so one DEL or GC frees a dual-stack attachment's two addresses together.
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
import { formatIPv6Address, parseIPv6Address, parseIPv6Cidr } from '../lib/ipv6.js';


export interface Owner { containerId: string; ifname: string }

export interface IpamRange {
  subnet: string; // the node's pod CIDR: a.b.c.d/len, or an IPv6 prefix (fd00:10:244:1::/64); its family is the store's
  gateway: string; // never handed out
  rangeStart?: string; // default: network + 2 (network + 1 is the gateway by convention)
  rangeEnd?: string; // default: IPv4 broadcast - 1; IPv6: the prefix's last address
}

export type Family = 4 | 6;

export class IpamExhausted extends Error {}

export function ownerKey(o: Owner): string { return `${o.containerId}:${o.ifname}`; }

/** 4 or 6 for a name that is an address in its canonical text, else undefined. */
export function familyOf(name: string): Family | undefined {
  if (/^\d+\.\d+\.\d+\.\d+$/.test(name)) return 4;
  if (name.includes(':') && /^[0-9a-f:]+$/.test(name)) return 6;
  return undefined;
}

/** An address as a number, either family. */
function toBig(family: Family, ip: string): bigint {
  if (family === 4) return BigInt(parseIPv4Address(ip) >>> 0);
  const w = parseIPv6Address(ip);
  return (BigInt(w[0]) << 96n) | (BigInt(w[1]) << 64n) | (BigInt(w[2]) << 32n) | BigInt(w[3]);
}

function fromBig(family: Family, n: bigint): string {
  if (family === 4) return formatIPv4Address(Number(n));
  const w = new Uint32Array(4);
  for (let i = 0; i < 4; i++) w[i] = Number((n >> BigInt(96 - 32 * i)) & 0xffffffffn);
  return formatIPv6Address(w);
}

/** The canonical text of an address (IPv6 in RFC 5952 form, as the store names it). */
export function canonicalIP(ip: string): string {
  const f: Family = ip.includes(':') ? 6 : 4;
  return fromBig(f, toBig(f, ip));
}


export class Ipam {
  /** The family this store allocates in (undefined without a range). */
  readonly family: Family | undefined;
  readonly prefixLen: number = 32;
  private readonly first: bigint = 0n;
  private readonly last: bigint = -1n;
  private readonly gw: bigint = -1n;

  /** Without a range the store can find, list and release (both families), but not allocate (DEL, CHECK, GC need no subnet). */
  constructor(readonly dir: string, readonly range?: IpamRange) {
    if (!range) return;
    const f: Family = range.subnet.includes(':') ? 6 : 4;
    this.family = f;
    const bits = f === 4 ? 32 : 128;
    let net: bigint;
    if (f === 4) {
      const c = parseIPv4Cidr(range.subnet);
      net = BigInt(c.prefix >>> 0);
      this.prefixLen = c.len;
    } else {
      const c = parseIPv6Cidr(range.subnet);
      net = toBig(6, formatIPv6Address(c.addr));
      this.prefixLen = c.len;
    }
    if (this.prefixLen > bits - 2) throw new Error(`subnet ${range.subnet} is too small for pods`);
    const top = net + (1n << BigInt(bits - this.prefixLen)) - 1n; // IPv4: the broadcast address
    const parse = (what: string, s: string): bigint => {
      if (s.includes(':') !== (f === 6)) throw new Error(`${what} ${s} is not an IPv${f} address like the subnet ${range.subnet}`);
      return toBig(f, s);
    };
    this.first = range.rangeStart ? parse('rangeStart', range.rangeStart) : net + 2n;
    this.last = range.rangeEnd ? parse('rangeEnd', range.rangeEnd) : f === 4 ? top - 1n : top;
    this.gw = parse('gateway', range.gateway);
    if (this.first <= net || this.last > (f === 4 ? top - 1n : top) || this.first > this.last) {
      throw new Error(`range ${fromBig(f, this.first)}-${fromBig(f, this.last)} is not inside ${range.subnet}`);
    }
  }

  /** This owner's address of the store's family (of any family, IPv4 first, without a range), if any (a retried ADD finds it). */
  find(o: Owner): string | undefined {
    return this.findAll(o).find((ip) => this.family === undefined || familyOf(ip) === this.family);
  }

  /** Every address this owner holds, IPv4 first. */
  findAll(o: Owner): string[] {
    const key = ownerKey(o);
    const out: string[] = [];
    for (const name of listDir(this.dir)) if (familyOf(name) && existsSync(path.join(this.dir, name, key))) out.push(name);
    return out.sort((a, b) => familyOf(a)! - familyOf(b)!);
  }

  /** Gives the owner an address of the store's family: the one it already has, or a free one. */
  allocate(o: Owner, extra: Record<string, unknown> = {}): { ip: string; existing: boolean } {
    const had = this.find(o);
    if (had) return { ip: had, existing: true };
    if (!this.range || !this.family) throw new Error('this IPAM store was opened without a range: it cannot allocate');
    const f = this.family;
    mkdirSync(this.dir, { recursive: true });
    const names = listDir(this.dir);
    this.sweepTmp(names);
    const tmp = path.join(this.dir, `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
    mkdirSync(tmp);
    try {
      writeFileSync(path.join(tmp, ownerKey(o)), JSON.stringify({ ...o, ...extra, pid: process.pid, time: new Date().toISOString() }));
      const taken = new Set(names.filter((n) => familyOf(n) === f));
      const size = this.last - this.first + 1n;
      const hintFile = path.join(this.dir, f === 4 ? 'last_reserved_ip' : 'last_reserved_ip6');
      let start = this.first;
      try {
        const hint = toBig(f, readFileSync(hintFile, 'utf8').trim());
        if (hint >= this.first && hint <= this.last) start = hint + 1n;
      } catch { /* no hint yet */ }
      const at = (i: bigint): bigint => this.first + ((start - this.first + i) % size);
      const claim = (ip: string): boolean => {
        try {
          renameSync(tmp, path.join(this.dir, ip));
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOTDIR') return false;
          throw e;
        }
        try { writeFileSync(hintFile, ip); } catch { /* a hint */ }
        return true;
      };
      // Names not on disk first, in order from the hint (lazily: an IPv6 range has 2^64 of them,
      // and a free one comes within taken.size + 1 steps); then those on disk, which may be
      // empty (= free) dirs.
      for (let i = 0n; i < size; i++) {
        const n = at(i);
        if (n === this.gw) continue;
        const ip = fromBig(f, n);
        if (!taken.has(ip) && claim(ip)) return { ip, existing: false };
      }
      const onDisk = [...taken].map((ip) => ({ ip, n: toBig(f, ip) }))
        .filter((x) => x.n >= this.first && x.n <= this.last && x.n !== this.gw)
        .sort((a, b) => { const d = ((a.n - start + size) % size) - ((b.n - start + size) % size); return d < 0n ? -1 : d > 0n ? 1 : 0; });
      for (const { ip } of onDisk) if (claim(ip)) return { ip, existing: false };
      throw new IpamExhausted(`no free address in ${this.range.subnet} (${fromBig(f, this.first)}-${fromBig(f, this.last)}): all ${this.size()} are in use`);
    } finally {
      rmSync(tmp, { recursive: true, force: true }); // gone already when the rename succeeded
    }
  }

  /** Frees every address of this owner, both families (and its unfinished allocations); returns the addresses freed. Idempotent. */
  release(o: Owner): string[] {
    const key = ownerKey(o);
    const freed: string[] = [];
    for (const name of listDir(this.dir)) {
      if (familyOf(name)) {
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

  /** Every held address (both families) and its owner(s). */
  list(): { ip: string; owner: Owner }[] {
    const out: { ip: string; owner: Owner }[] = [];
    for (const name of listDir(this.dir)) {
      if (!familyOf(name)) continue;
      for (const k of listDir(path.join(this.dir, name))) {
        const i = k.lastIndexOf(':');
        if (i > 0) out.push({ ip: name, owner: { containerId: k.slice(0, i), ifname: k.slice(i + 1) } });
      }
    }
    return out;
  }

  /** How many addresses of the range are free (empty dirs count as free); 0 without a range. Approximate above 2^53. */
  free(): number {
    if (!this.family) return 0;
    const f = this.family;
    const held = new Set(this.list().map((x) => x.ip).filter((ip) => familyOf(ip) === f));
    let n = this.size();
    for (const ip of held) { const a = toBig(f, ip); if (a >= this.first && a <= this.last && a !== this.gw) n--; }
    return Number(n);
  }

  /** Removes leftovers of processes that died: unfinished allocations and empty address dirs. */
  sweep(): void {
    const names = listDir(this.dir);
    this.sweepTmp(names);
    for (const n of names) if (familyOf(n)) rmdirQuiet(path.join(this.dir, n));
  }

  /** How many addresses the range hands out (the gateway excluded). */
  private size(): bigint {
    return this.last - this.first + 1n - (this.gw >= this.first && this.gw <= this.last ? 1n : 0n);
  }

  private sweepTmp(names: string[]): void {
    for (const n of names) if (n.startsWith('.tmp-') && tmpOwnerDead(n)) rmSync(path.join(this.dir, n), { recursive: true, force: true });
  }
}

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
