// IPv4 addresses and CIDRs as text, for configs, manifests and logs: the one
// parser of each (the packet codec's parseIPv4 reads a header, not text).
// Addresses are unsigned 32-bit numbers.

/** Dotted quad → uint32. Throws on anything but four decimal octets 0..255. */
export function parseIPv4Address(s: string): number {
  const parts = s.split('.');
  if (parts.length !== 4) throw new Error(`invalid IPv4 address "${s}": expected 4 dotted octets`);
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) throw new Error(`invalid IPv4 address "${s}": bad octet "${p}"`);
    n = n * 256 + Number(p);
  }
  return n;
}

export function formatIPv4Address(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** `prefix` with the host bits of a /len cleared, unsigned. */
export function maskPrefix(prefix: number, len: number): number {
  return len === 0 ? 0 : (prefix & (-1 << (32 - len))) >>> 0;
}

/** "a.b.c.d/len" → prefix (host bits cleared) and length. */
export function parseIPv4Cidr(s: string): { prefix: number; len: number } {
  const slash = s.indexOf('/');
  if (slash < 0) throw new Error(`invalid IPv4 CIDR "${s}": missing "/len"`);
  const lenText = s.slice(slash + 1);
  if (!/^\d{1,2}$/.test(lenText) || Number(lenText) > 32) throw new Error(`invalid IPv4 CIDR "${s}": bad prefix length "${lenText}"`);
  const len = Number(lenText);
  return { prefix: maskPrefix(parseIPv4Address(s.slice(0, slash)), len), len };
}
