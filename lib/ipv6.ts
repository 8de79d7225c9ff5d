// IPv6 addresses and CIDRs as text, for configs, manifests and logs: the one
// parser of each (the packet codec reads headers, not text). An address is 4
// host-order 32-bit words, most significant first.
import { formatIPv4Address, parseIPv4Address } from './ipv4.js';

/** Words with bits [0, n) set, for n in 0..32. */
export function highBits(n: number): number {
  return n === 0 ? 0 : -1 << (32 - n);
}

export function maskWords(addr: ArrayLike<number>, len: number): Uint32Array {
  if (addr.length !== 4) throw new RangeError(`lpm6: address must be 4 uint32 words, got ${addr.length}`);
  const w = new Uint32Array(4);
  for (let i = 0; i < 4; i++) {
    const keep = Math.max(0, Math.min(32, len - 32 * i));
    w[i] = addr[i] & highBits(keep);
  }
  return w;
}

/** RFC 4291 text (with "::" and a trailing dotted IPv4) → 4 host-order words. */
export function parseIPv6Address(s: string): Uint32Array {
  const fail = (why: string): never => {
    throw new Error(`invalid IPv6 address "${s}": ${why}`);
  };
  let text = s;
  let v4: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (lastColon < 0) fail('no ":"');
  if (text.indexOf('.', lastColon) >= 0) {
    // a trailing dotted quad stands for the last two groups
    const quad = text.slice(lastColon + 1);
    let n = 0;
    try {
      n = parseIPv4Address(quad);
    } catch {
      fail(`bad embedded IPv4 "${quad}"`);
    }
    v4 = [n >>> 16, n & 0xffff];
    text = text.endsWith('::' + quad) ? text.slice(0, lastColon + 1) : text.slice(0, lastColon);
  }
  const halves = text.split('::');
  if (halves.length > 2) fail('more than one "::"');
  const parse = (part: string): number[] =>
    part === ''
      ? []
      : part.split(':').map((g) => (/^[0-9a-fA-F]{1,4}$/.test(g) ? parseInt(g, 16) : fail(`bad group "${g}"`)));
  const head = parse(halves[0]);
  let groups: number[];
  if (halves.length === 1) {
    groups = [...head, ...v4];
    if (groups.length !== 8) fail(`expected 8 groups, got ${groups.length}`);
  } else {
    const tail = [...parse(halves[1]), ...v4];
    if (head.length + tail.length > 7) fail('"::" must stand for at least one group');
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  }
  const w = new Uint32Array(4);
  for (let i = 0; i < 4; i++) w[i] = groups[2 * i] * 0x10000 + groups[2 * i + 1];
  return w;
}

/** RFC 5952 canonical text; IPv4-mapped addresses as ::ffff:a.b.c.d. */
export function formatIPv6Address(words: ArrayLike<number>): string {
  const g: number[] = [];
  for (let i = 0; i < 4; i++) g.push(words[i] >>> 16, words[i] & 0xffff);
  if (words[0] === 0 && words[1] === 0 && words[2] >>> 0 === 0xffff) return `::ffff:${formatIPv4Address(words[3])}`;
  let best = -1;
  let bestLen = 1; // RFC 5952: never compress a single zero group
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number[]): string => a.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** "addr/len" → masked prefix words and length. */
export function parseIPv6Cidr(s: string): { addr: Uint32Array; len: number } {
  const slash = s.indexOf('/');
  if (slash < 0) throw new Error(`invalid IPv6 CIDR "${s}": missing "/len"`);
  const lenText = s.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > 128) throw new Error(`invalid IPv6 CIDR "${s}": bad prefix length "${lenText}"`);
  const len = Number(lenText);
  return { addr: maskWords(parseIPv6Address(s.slice(0, slash)), len), len };
}


/** Whether `s` is IPv6 text (has a colon); IPv4 otherwise. Says nothing of validity. */
export function isIPv6(s: string): boolean { return s.includes(':'); }

/** Address `words` + n (n small, non-negative), as a new 4-word address. */
export function addToIPv6(words: ArrayLike<number>, n: number): Uint32Array {
  const w = Uint32Array.from(words);
  let carry = n;
  for (let i = 3; i >= 0 && carry > 0; i--) {
    const v = w[i] + carry;
    w[i] = v >>> 0;
    carry = Math.floor(v / 0x100000000);
  }
  return w;
}

/** Whether `addr` (4 words) lies in the CIDR given as masked prefix words and length. */
export function inIPv6Cidr(addr: ArrayLike<number>, prefix: ArrayLike<number>, len: number): boolean {
  const m = maskWords(addr, len);
  return m[0] === prefix[0] >>> 0 && m[1] === prefix[1] >>> 0 && m[2] === prefix[2] >>> 0 && m[3] === prefix[3] >>> 0;
}
