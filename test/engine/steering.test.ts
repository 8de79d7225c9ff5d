// The flow-steering program (engine/steering.ts) without a kernel: a classic BPF
// interpreter (the kernel's semantics: unsigned 32-bit A and X, 16 words of M,
// a load past the packet's end or a division by zero returns 0) runs the
// program on thousands of seeded random IPv4 and IPv6 packets and must agree
// with the TypeScript twin, flowWorker. Both must be symmetric (a flow and its
// reply: one worker), spread flows over the workers, connections from even
// source ports (Linux's connect() picks them) included, and hash IPv4 as they
// hash a reference written out below. The kernel runs
// the same program in test/native/steering.test.ts.
import { describe, expect, it } from 'vitest';
import { BPF_MAXINSNS, flowSteering, flowWorker, OVERLAY_IP_AT, POD_IP_AT } from '../../dataplane/engine/steering.js';
import { parseIPv6Address } from '../../lib/ipv6.js';

/** Runs a classic BPF program (sock_filter pairs as flowSteering packs them) on `pkt`. */
function runCbpf(prog: Int32Array, pkt: Uint8Array): number {
  let A = 0, X = 0;
  const M = new Uint32Array(16);
  const n = prog.length / 2;
  const load = (off: number, size: number): number | undefined => {
    if (off < 0 || off + size > pkt.length) return undefined;
    let v = 0;
    for (let i = 0; i < size; i++) v = (v * 256) + pkt[off + i];
    return v >>> 0;
  };
  for (let pc = 0; pc < n; pc++) {
    const code = prog[2 * pc] & 0xffff, jt = (prog[2 * pc] >>> 16) & 0xff, jf = prog[2 * pc] >>> 24, k = prog[2 * pc + 1] >>> 0;
    const size = [4, 2, 1, 0][(code >> 3) & 3], mode = code & 0xe0;
    switch (code & 7) {
      case 0x00: case 0x01: { // LD, LDX
        let v: number | undefined;
        if (mode === 0x00) v = k; // IMM
        else if (mode === 0x60) v = M[k]; // MEM
        else if (mode === 0x80) v = pkt.length; // LEN
        else if (mode === 0x20) v = load(k, size); // ABS
        else if (mode === 0x40) v = load((X + k) >>> 0, size); // IND
        else if (mode === 0xa0) { const b = load(k, 1); v = b === undefined ? undefined : (b & 15) << 2; } // MSH
        else throw new Error(`mode ${mode.toString(16)}`);
        if (v === undefined) return 0;
        if ((code & 7) === 0) A = v; else X = v;
        break;
      }
      case 0x02: M[k] = A; break; // ST
      case 0x03: M[k] = X; break; // STX
      case 0x04: { // ALU
        const s = code & 0x08 ? X : k;
        switch (code & 0xf0) {
          case 0x00: A = (A + s) >>> 0; break;
          case 0x10: A = (A - s) >>> 0; break;
          case 0x20: A = Math.imul(A, s) >>> 0; break;
          case 0x30: if (s === 0) return 0; A = Math.floor(A / s) >>> 0; break;
          case 0x40: A = (A | s) >>> 0; break;
          case 0x50: A = (A & s) >>> 0; break;
          case 0x60: A = s >= 32 ? 0 : (A << s) >>> 0; break;
          case 0x70: A = s >= 32 ? 0 : A >>> s; break;
          case 0x80: A = -A >>> 0; break;
          case 0x90: if (s === 0) return 0; A = (A % s) >>> 0; break;
          case 0xa0: A = (A ^ s) >>> 0; break;
          default: throw new Error(`alu ${code.toString(16)}`);
        }
        break;
      }
      case 0x05: { // JMP
        const s = code & 0x08 ? X : k;
        const op = code & 0xf0;
        if (op === 0x00) { pc += k; break; }
        const c = op === 0x10 ? A === s : op === 0x20 ? A > s : op === 0x30 ? A >= s : op === 0x40 ? (A & s) !== 0 : undefined;
        if (c === undefined) throw new Error(`jmp ${code.toString(16)}`);
        pc += c ? jt : jf;
        break;
      }
      case 0x06: return (code & 0x18) === 0x10 ? A : k; // RET A / RET K
      case 0x07: if (code & 0x80) A = X; else X = A; break; // TXA / TAX
    }
  }
  throw new Error('fell off the end');
}

/** The IPv4 hash written out on its own (the fold, then the mix): the program and the twin must agree with it. */
function frozenV4Worker(b: Uint8Array, ipAt: number, workers: number): number {
  const rd16 = (o: number) => (b[o] << 8) | b[o + 1];
  const rd32 = (o: number) => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
  const proto = b[ipAt + 9];
  let ports = 0;
  if ((proto === 6 || proto === 17 || proto === 132) && (rd16(ipAt + 6) & 0x3fff) === 0) {
    const l4 = ipAt + ((b[ipAt] & 15) << 2);
    ports = rd16(l4) ^ rd16(l4 + 2);
  }
  const a = (rd32(ipAt + 12) ^ rd32(ipAt + 16) ^ ports) >>> 0;
  return (Math.imul((a ^ (a >>> 16)) & 0xffff, 0x7feb352d) >>> 16) % workers;
}

/** mulberry32: seeded, so a failure can be replayed. */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const SEED = 0x7417;

interface Flow6 { src: Uint32Array; dst: Uint32Array; next: number; sport: number; dport: number }

/** An IPv6 packet at `at` in a buffer of `at + len` bytes; the first 4 bytes after the fixed header are the ports (for TCP/UDP/SCTP). */
function ipv6(f: Flow6, at = 0, len = 64): Uint8Array {
  const b = new Uint8Array(at + len);
  const v = new DataView(b.buffer, at);
  v.setUint32(0, 0x60000000 | 0x12345); // version 6, a flow label
  v.setUint16(4, len - 40); v.setUint8(6, f.next); v.setUint8(7, 64);
  for (let w = 0; w < 4; w++) { v.setUint32(8 + 4 * w, f.src[w]); v.setUint32(24 + 4 * w, f.dst[w]); }
  if (len >= 44) { v.setUint16(40, f.sport); v.setUint16(42, f.dport); }
  return b;
}
const reply = (f: Flow6): Flow6 => ({ src: f.dst, dst: f.src, next: f.next, sport: f.dport, dport: f.sport });

const NEXT = [6, 17, 132, 58, 44, 0, 43]; // TCP, UDP, SCTP; ICMPv6, fragment, hop-by-hop, routing headers: no ports
function randomFlows6(n: number, r = rng(SEED)): Flow6[] {
  const u32 = () => (r() * 2 ** 32) >>> 0;
  const pod = (node: number, host: number) => Uint32Array.of(0xfd000010, 0x02440000 | node, 0, host);
  return Array.from({ length: n }, (_, i) => {
    const kind = i % 3; // pod to pod across nodes; pod to a random address; random to random
    const src = kind === 2 ? Uint32Array.of(u32(), u32(), u32(), u32()) : pod(1 + (i % 7), 2 + (u32() % 250));
    const dst = kind === 0 ? pod(8 + (i % 5), 2 + (u32() % 250)) : Uint32Array.of(u32(), u32(), u32(), u32());
    return { src, dst, next: NEXT[i % NEXT.length], sport: u32() & 0xffff, dport: [80, 443, 53, 8080][i % 4] };
  });
}

/** An IPv4 packet: IHL words of header (options zero), fragment field, ports right after the header. */
function ipv4(src: number, dst: number, proto: number, sport: number, dport: number, frag = 0, ihl = 5, at = 0, len = 64): Uint8Array {
  const b = new Uint8Array(at + len);
  const v = new DataView(b.buffer, at);
  v.setUint8(0, 0x40 | ihl); v.setUint16(2, len); v.setUint16(6, frag); v.setUint8(8, 64); v.setUint8(9, proto);
  v.setUint32(12, src); v.setUint32(16, dst);
  if (ihl * 4 + 4 <= len) { v.setUint16(ihl * 4, sport); v.setUint16(ihl * 4 + 2, dport); }
  return b;
}

/** Workers per flow, for `flows`: how many each got. */
function counts(workers: number, picks: number[]): number[] {
  const c = new Array<number>(workers).fill(0);
  for (const p of picks) c[p]++;
  return c;
}

describe('flow steering program', () => {
  it('is a valid classic program: ends in RET, every jump lands inside, far under BPF_MAXINSNS', () => {
    for (const ipAt of [POD_IP_AT, OVERLAY_IP_AT])
      for (const workers of [1, 2, 3, 8, 64]) {
        const p = flowSteering(ipAt, workers), n = p.length / 2;
        expect(n).toBeLessThan(BPF_MAXINSNS / 32);
        expect(p[2 * (n - 1)] & 7).toBe(0x06);
        for (let i = 0; i < n; i++) {
          const code = p[2 * i] & 0xffff;
          if ((code & 7) !== 0x05) continue;
          if ((code & 0xf0) === 0) expect(i + 1 + p[2 * i + 1]).toBeLessThan(n);
          else for (const off of [(p[2 * i] >>> 16) & 0xff, p[2 * i] >>> 24]) expect(i + 1 + off).toBeLessThan(n);
        }
      }
    expect(() => flowSteering(0, 0)).toThrow(RangeError);
    expect(() => flowSteering(0, 1.5)).toThrow(RangeError);
  });

  it('IPv4: the program, the twin and the reference agree on 20,000 random packets and frames that are not IP', () => {
    const r = rng(SEED + 4);
    const u32 = () => (r() * 2 ** 32) >>> 0;
    let checked = 0;
    for (let i = 0; i < 20_000; i++) {
      const workers = 1 + (i % 9), ipAt = i & 1 ? OVERLAY_IP_AT : POD_IP_AT;
      const proto = [6, 17, 132, 1, 47][i % 5];
      const frag = i % 7 === 0 ? u32() & 0xffff : i % 7 === 1 ? 0x4000 : 0; // fragments (some only MF or DF)
      const ihl = i % 11 === 0 ? 5 + (u32() % 11) : 5;
      const pkt = ipv4(u32(), u32(), proto, u32() & 0xffff, u32() & 0xffff, frag, ihl, ipAt);
      const want = frozenV4Worker(pkt, ipAt, workers);
      expect(flowWorker(pkt, ipAt, workers)).toBe(want);
      expect(runCbpf(flowSteering(ipAt, workers), pkt)).toBe(want);
      checked++;
    }
    // ARP (first byte 0x00) and random bytes whose first nibble is not 6: the IPv4 path.
    for (let i = 0; i < 2000; i++) {
      const pkt = Uint8Array.from({ length: 64 }, () => (r() * 256) | 0);
      if (i % 2 === 0) pkt.set([0x00, 0x01, 0x08, 0x00, 6, 4, 0, 1]);
      if ((pkt[0] & 0xf0) === 0x60) pkt[0] ^= 0x80;
      expect(runCbpf(flowSteering(0, 4), pkt)).toBe(frozenV4Worker(pkt, 0, 4));
      expect(flowWorker(pkt, 0, 4)).toBe(frozenV4Worker(pkt, 0, 4));
      checked++;
    }
    expect(checked).toBe(22_000);
  });

  it('IPv6: the program agrees with the twin on 12,000 random flows and their replies, at both offsets', () => {
    const flows = randomFlows6(3000);
    for (const [i, f] of flows.entries())
      for (const ipAt of [POD_IP_AT, OVERLAY_IP_AT])
        for (const g of [f, reply(f)]) {
          const workers = 1 + (i % 8), pkt = ipv6(g, ipAt);
          expect(runCbpf(flowSteering(ipAt, workers), pkt)).toBe(flowWorker(pkt, ipAt, workers));
        }
  });

  it('IPv6: a flow and its reply name one worker; flows spread evenly over 2..8 workers', () => {
    const flows = randomFlows6(4000);
    for (let workers = 2; workers <= 8; workers++) {
      const prog = flowSteering(POD_IP_AT, workers);
      const picks = flows.map((f) => {
        const w = runCbpf(prog, ipv6(f));
        expect(runCbpf(prog, ipv6(reply(f)))).toBe(w);
        expect(flowWorker(ipv6(reply(f)), 0, workers)).toBe(w);
        return w;
      });
      const mean = flows.length / workers;
      for (const c of counts(workers, picks)) { expect(c).toBeGreaterThan(0.8 * mean); expect(c).toBeLessThan(1.2 * mean); }
    }
  });

  it('IPv6 from one pod: connections to one service port, and pings to many pods, spread over the workers', () => {
    const r = rng(SEED + 6);
    const client = parseIPv6Address('fd00:10:244:1::5'), server = parseIPv6Address('fd00:10:244:2::7');
    // 2000 TCP connections from one pod to one pod's port 443, each from its own source port.
    const tcp = Array.from({ length: 2000 }, (_, i): Flow6 => ({ src: client, dst: server, next: 6, sport: 32768 + i, dport: 443 }));
    // ICMPv6 from one pod to 500 pods on other nodes (addresses only).
    const icmp = Array.from({ length: 500 }, (_, i): Flow6 => ({ src: client, dst: parseIPv6Address(`fd00:10:244:${(2 + (i % 20)).toString(16)}::${(2 + ((r() * 4000) | 0)).toString(16)}`), next: 58, sport: 0, dport: 0 }));
    for (const workers of [2, 3, 4, 8]) {
      const prog = flowSteering(OVERLAY_IP_AT, workers);
      for (const set of [tcp, icmp]) {
        const mean = set.length / workers;
        const c = counts(workers, set.map((f) => runCbpf(prog, ipv6(f, OVERLAY_IP_AT))));
        for (const x of c) { expect(x).toBeGreaterThan(0.7 * mean); expect(x).toBeLessThan(1.3 * mean); }
      }
    }
  });

  it('connections between two pods from even source ports (as Linux\'s connect() picks them) spread over 2 and 4 workers, IPv4 and IPv6', () => {
    const client = parseIPv6Address('fd00:10:244:1::2'), server = parseIPv6Address('fd00:10:244:2::2');
    for (const workers of [2, 4]) {
      const prog = flowSteering(POD_IP_AT, workers);
      const six = Array.from({ length: 400 }, (_, i) => runCbpf(prog, ipv6({ src: client, dst: server, next: 6, sport: 40000 + 2 * i, dport: 5201 })));
      const four = Array.from({ length: 400 }, (_, i) => runCbpf(prog, ipv4(0x0af40102, 0x0af40202, 6, 40000 + 2 * i, 5201, 0, 5, POD_IP_AT)));
      for (const picks of [six, four]) for (const c of counts(workers, picks)) expect(c).toBeGreaterThan(0.7 * (400 / workers));
    }
  });

  it('IPv6 ports count for TCP, UDP and SCTP only: after ICMPv6 or an extension header the bytes at +40 are not ports', () => {
    const [f] = randomFlows6(1);
    const W = 64; // many workers: a change in the hash shows
    for (const next of [6, 17, 132, 58, 44, 0, 43, 60]) {
      const same = (a: Flow6, b: Flow6) => runCbpf(flowSteering(0, W), ipv6(a)) === runCbpf(flowSteering(0, W), ipv6(b));
      const base = { ...f, next, sport: 1000, dport: 80 };
      const ports = next === 6 || next === 17 || next === 132;
      // Different source ports: two flows (spread) when they are ports, one hash when they are not.
      const moved = [1001, 1002, 1003, 1004, 1005].filter((sport) => !same(base, { ...base, sport }));
      expect(moved.length > 0).toBe(ports);
      // Swapped ports alone never move a flow (XOR), nor do the payload's bytes beyond +44.
      expect(same(base, { ...base, sport: 80, dport: 1000 })).toBe(true);
    }
  });

  it('a short packet: the program stops at the load past its end and says 0, as the twin does', () => {
    const [f] = randomFlows6(1);
    for (const len of [40, 41, 43]) { // TCP with its ports cut off
      const pkt = ipv6({ ...f, next: 6 }, 0, len);
      expect(runCbpf(flowSteering(0, 5), pkt)).toBe(0);
      expect(flowWorker(pkt, 0, 5)).toBe(0);
    }
    const icmp = ipv6({ ...f, next: 58 }, 0, 40); // ICMPv6 needs only the fixed header
    expect(runCbpf(flowSteering(0, 5), icmp)).toBe(flowWorker(icmp, 0, 5));
    for (const len of [7, 20, 39]) {
      const pkt = ipv6({ ...f, next: 58 }, 0, 64).subarray(0, len);
      expect(runCbpf(flowSteering(0, 5), pkt)).toBe(0);
      expect(flowWorker(pkt, 0, 5)).toBe(0);
    }
  });
});
