// Which worker gets a packet. Both ways of a flow must land on the same worker
// of a node: the one that sent a request is the one still polling (busy poll)
// when the reply comes, and a flow's conntrack entry stays in one core's cache.
// The kernel's own choices do not agree with each other: PACKET_FANOUT_HASH
// hashes the pod's frame, reuseport hashes the outer UDP header (one fixed
// tuple per peer node). So both get the same classic BPF program, a symmetric
// hash of the inner IP addresses and ports (IPv4 or IPv6, by the version
// nibble), run where each hook sees the inner IP header: at offset 0 on a pod's
// veth, after VXLAN and the inner Ethernet header in an overlay datagram (IPv4
// or IPv6 underlay alike). Classic BPF is the socket filter every kernel has;
// it needs neither the bpf() syscall nor CAP_BPF.
import { ETH_HLEN } from '../packet/ethernet.js';
import { VXLAN_HLEN } from '../packet/vxlan.js';

export const POD_IP_AT = 0; // PACKET_FANOUT_CBPF sees the frame from the network header
export const OVERLAY_IP_AT = VXLAN_HLEN + ETH_HLEN; // SO_ATTACH_REUSEPORT_CBPF sees the UDP payload

// Classic BPF opcodes (linux/filter.h).
const LD = 0x00, LDX = 0x01, ST = 0x02, ALU = 0x04, JMP = 0x05, RET = 0x06, MISC = 0x07;
const W = 0x00, H = 0x08, B = 0x10;
const IMM = 0x00, ABS = 0x20, IND = 0x40, MEM = 0x60, MSH = 0xa0;
const MUL = 0x20, AND = 0x50, RSH = 0x70, MOD = 0x90, XOR = 0xa0, K = 0x00, X = 0x08;
const JA = 0x00, JEQ = 0x10, JSET = 0x40, TAX = 0x00, RET_A = 0x10;

/** BPF_MAXINSNS (linux/bpf_common.h): the kernel refuses a longer classic program. */
export const BPF_MAXINSNS = 4096;

/**
 * An instruction; a jump names its targets by label (jt/jf for conditional
 * jumps, k for JA), a string alone is a label for the next instruction.
 */
type Insn = [code: number, jt: number | string, jf: number | string, k: number | string];

/** Resolves labels into relative offsets and packs the program as sock_filter pairs. */
function assemble(src: (Insn | string)[]): Int32Array {
  const at = new Map<string, number>();
  const prog: Insn[] = [];
  for (const x of src) {
    if (typeof x === 'string') { if (at.has(x)) throw new Error(`label ${x} twice`); at.set(x, prog.length); } else prog.push(x);
  }
  if (prog.length > BPF_MAXINSNS) throw new RangeError(`steering program of ${prog.length} instructions`);
  const rel = (i: number, t: number | string, max: number): number => {
    if (typeof t === 'number') return t;
    const to = at.get(t);
    if (to === undefined || to <= i || to - i - 1 > max) throw new Error(`bad jump to ${t} at ${i}`); // forward only
    return to - i - 1;
  };
  const out = new Int32Array(prog.length * 2);
  prog.forEach(([code, jt, jf, k], i) => {
    out[2 * i] = code | (rel(i, jt, 255) << 16) | (rel(i, jf, 255) << 24);
    out[2 * i + 1] = rel(i, k, 0x7fffffff) | 0;
  });
  return out;
}

/**
 * The program: (src ^ dst ^ (sport ^ dport)) folded to 16 bits, mixed (times an
 * odd constant, the high 16 bits: every input bit moves the result), mod `workers`.
 * Without the mix, the remainder by a small worker count read the low bits only,
 * and Linux's connect() picks even source ports: every connection between two
 * pods landed on one worker.
 * IPv4 (first nibble not 6): the 2 address words; ports count for TCP, UDP and
 * SCTP first fragments only, after the header's IHL; ICMP and fragments hash on
 * the addresses. Whatever is neither (ARP) takes the IPv4 path and still gets
 * some worker. IPv6 (first nibble 6): all 8 address words; ports at +40/+42
 * when the next header (+6) is TCP, UDP or SCTP, so a packet with extension
 * headers (a fragment header among them) hashes on the addresses only.
 * XOR makes both ways of a flow (addresses and ports swapped) one value.
 * A load past the packet's end ends the program with 0, the first worker.
 */
const MIX = 0x7feb352d; // odd, under 2^31 (a classic BPF constant is one signed word)

export function flowSteering(ipAt: number, workers: number): Int32Array {
  if (!Number.isInteger(workers) || workers < 1) throw new RangeError('workers must be >= 1');
  const v6Addresses: Insn[] = [];
  for (let w = 0; w < 8; w++) // A ^= each word of source and destination
    v6Addresses.push([MISC | TAX, 0, 0, 0], [LD | W | ABS, 0, 0, ipAt + 8 + 4 * w], [ALU | XOR | X, 0, 0, 0]);
  return assemble([
    [LD | B | ABS, 0, 0, ipAt], // A = version, IHL
    [ALU | AND | K, 0, 0, 0xf0],
    [JMP | JEQ | K, 'v6', 0, 0x60],
    // IPv4 (and whatever is not IPv6), as before IPv6 came.
    [LD | B | ABS, 0, 0, ipAt + 9], // A = protocol
    [JMP | JEQ | K, 'v4ports', 0, 6], // TCP
    [JMP | JEQ | K, 'v4ports', 0, 17], // UDP
    [JMP | JEQ | K, 'v4ports', 0, 132], // SCTP
    [JMP | JA, 0, 0, 'v4none'],
    'v4ports',
    [LD | H | ABS, 0, 0, ipAt + 6], // A = flags + fragment offset
    [JMP | JSET | K, 'v4none', 0, 0x3fff], // a fragment: no ports
    [LDX | B | MSH, 0, 0, ipAt], // X = IP header length
    [LD | H | IND, 0, 0, ipAt], // A = source port
    [ST, 0, 0, 0], // M[0] = A
    [LD | H | IND, 0, 0, ipAt + 2], // A = destination port
    [LDX | W | MEM, 0, 0, 0], // X = M[0]
    [ALU | XOR | X, 0, 0, 0], // A = sport ^ dport
    [ST, 0, 0, 0], // M[0] = A
    [JMP | JA, 0, 0, 'v4addr'],
    'v4none',
    [LD | W | IMM, 0, 0, 0],
    [ST, 0, 0, 0], // M[0] = 0
    'v4addr',
    [LD | W | ABS, 0, 0, ipAt + 12], // A = source address
    [ST, 0, 0, 1], // M[1] = A
    [LD | W | ABS, 0, 0, ipAt + 16], // A = destination address
    [LDX | W | MEM, 0, 0, 1], // X = M[1]
    [ALU | XOR | X, 0, 0, 0], // A ^= source
    [LDX | W | MEM, 0, 0, 0], // X = M[0]
    [ALU | XOR | X, 0, 0, 0], // A ^= ports
    [JMP | JA, 0, 0, 'fold'], // (classic BPF jumps forward only: IPv6's block, then the fold both share)
    'v6',
    [LD | B | ABS, 0, 0, ipAt + 6], // A = next header
    [JMP | JEQ | K, 'v6ports', 0, 6], // TCP
    [JMP | JEQ | K, 'v6ports', 0, 17], // UDP
    [JMP | JEQ | K, 'v6ports', 0, 132], // SCTP
    [LD | W | IMM, 0, 0, 0], // anything else (ICMPv6, extension headers): no ports
    [JMP | JA, 0, 0, 'v6addr'],
    'v6ports',
    [LD | H | ABS, 0, 0, ipAt + 40], // A = source port
    [MISC | TAX, 0, 0, 0], // X = A
    [LD | H | ABS, 0, 0, ipAt + 42], // A = destination port
    [ALU | XOR | X, 0, 0, 0], // A = sport ^ dport
    'v6addr',
    ...v6Addresses, // A ^= the 8 words at +8 .. +39
    'fold',
    [MISC | TAX, 0, 0, 0], // X = A
    [ALU | RSH | K, 0, 0, 16], // A >>= 16
    [ALU | XOR | X, 0, 0, 0], // A ^= X
    [ALU | AND | K, 0, 0, 0xffff],
    [ALU | MUL | K, 0, 0, MIX], // A = A * MIX (mod 2^32)
    [ALU | RSH | K, 0, 0, 16], // A >>= 16
    [ALU | MOD | K, 0, 0, workers],
    [RET | RET_A, 0, 0, 0], // the worker's index
  ]);
}

/**
 * The same hash in TypeScript (tests check the program against it): the
 * worker's index for the IP packet at `ipAt` in `b` (b ends where the packet
 * does: a read past the end gives 0, as the program's load does).
 */
export function flowWorker(b: Uint8Array, ipAt: number, workers: number): number {
  let short = false;
  const rd8 = (o: number) => { if (o + 1 > b.length) { short = true; return 0; } return b[o]; };
  const rd16 = (o: number) => { if (o + 2 > b.length) { short = true; return 0; } return (b[o] << 8) | b[o + 1]; };
  const rd32 = (o: number) => { if (o + 4 > b.length) { short = true; return 0; } return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0; };
  let a: number;
  if ((rd8(ipAt) & 0xf0) === 0x60) {
    const next = rd8(ipAt + 6);
    a = next === 6 || next === 17 || next === 132 ? rd16(ipAt + 40) ^ rd16(ipAt + 42) : 0;
    for (let w = 0; w < 8; w++) a ^= rd32(ipAt + 8 + 4 * w);
  } else {
    const proto = rd8(ipAt + 9);
    let ports = 0;
    if ((proto === 6 || proto === 17 || proto === 132) && (rd16(ipAt + 6) & 0x3fff) === 0) {
      const l4 = ipAt + ((rd8(ipAt) & 15) << 2);
      ports = rd16(l4) ^ rd16(l4 + 2);
    }
    a = rd32(ipAt + 12) ^ rd32(ipAt + 16) ^ ports;
  }
  if (short) return 0;
  a >>>= 0;
  return (Math.imul((a ^ (a >>> 16)) & 0xffff, MIX) >>> 16) % workers;
}
