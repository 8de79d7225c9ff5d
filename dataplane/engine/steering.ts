// Which worker gets a packet. Both ways of a flow must land on the same worker
// of a node: the one that sent a request is the one still polling (busy poll)
// when the reply comes, and a flow's conntrack entry stays in one core's cache.
// The kernel's own choices do not agree with each other: PACKET_FANOUT_HASH
// hashes the pod's frame, reuseport hashes the outer UDP header (one fixed
// tuple per peer node). So both get the same classic BPF program, a symmetric
// hash of the inner IPv4 addresses and ports, run where each hook sees the
// inner IP header: at offset 0 on a pod's veth, after VXLAN and the inner
// Ethernet header in an overlay datagram. Classic BPF is the socket filter
// every kernel has; it needs neither the bpf() syscall nor CAP_BPF.
import { ETH_HLEN } from '../packet/ethernet.js';
import { VXLAN_HLEN } from '../packet/vxlan.js';

export const POD_IP_AT = 0; // PACKET_FANOUT_CBPF sees the frame from the network header
export const OVERLAY_IP_AT = VXLAN_HLEN + ETH_HLEN; // SO_ATTACH_REUSEPORT_CBPF sees the UDP payload

// Classic BPF opcodes (linux/filter.h).
const LD = 0x00, LDX = 0x01, ST = 0x02, ALU = 0x04, JMP = 0x05, RET = 0x06, MISC = 0x07;
const W = 0x00, H = 0x08, B = 0x10;
const IMM = 0x00, ABS = 0x20, IND = 0x40, MEM = 0x60, MSH = 0xa0;
const AND = 0x50, RSH = 0x70, MOD = 0x90, XOR = 0xa0, K = 0x00, X = 0x08;
const JA = 0x00, JEQ = 0x10, JSET = 0x40, TAX = 0x00, RET_A = 0x10;

type Insn = [code: number, jt: number, jf: number, k: number];

/**
 * The program: (src ^ dst ^ (sport ^ dport)) folded to 16 bits, mod `workers`.
 * Ports count for TCP, UDP and SCTP first fragments only; ICMP and fragments
 * hash on the addresses. Whatever is not IPv4 (ARP) still gets some worker.
 */
export function flowSteering(ipAt: number, workers: number): Int32Array {
  if (!Number.isInteger(workers) || workers < 1) throw new RangeError('workers must be >= 1');
  const p: Insn[] = [
    [LD | B | ABS, 0, 0, ipAt + 9], // 0: A = protocol
    [JMP | JEQ | K, 3, 0, 6], // 1: TCP → 5
    [JMP | JEQ | K, 2, 0, 17], // 2: UDP → 5
    [JMP | JEQ | K, 1, 0, 132], // 3: SCTP → 5
    [JMP | JA, 0, 0, 10], // 4: → 15 (no ports)
    [LD | H | ABS, 0, 0, ipAt + 6], // 5: A = flags + fragment offset
    [JMP | JSET | K, 8, 0, 0x3fff], // 6: a fragment → 15
    [LDX | B | MSH, 0, 0, ipAt], // 7: X = IP header length
    [LD | H | IND, 0, 0, ipAt], // 8: A = source port
    [ST, 0, 0, 0], // 9: M[0] = A
    [LD | H | IND, 0, 0, ipAt + 2], // 10: A = destination port
    [LDX | W | MEM, 0, 0, 0], // 11: X = M[0]
    [ALU | XOR | X, 0, 0, 0], // 12: A = sport ^ dport
    [ST, 0, 0, 0], // 13: M[0] = A
    [JMP | JA, 0, 0, 2], // 14: → 17
    [LD | W | IMM, 0, 0, 0], // 15: A = 0
    [ST, 0, 0, 0], // 16: M[0] = 0
    [LD | W | ABS, 0, 0, ipAt + 12], // 17: A = source address
    [ST, 0, 0, 1], // 18: M[1] = A
    [LD | W | ABS, 0, 0, ipAt + 16], // 19: A = destination address
    [LDX | W | MEM, 0, 0, 1], // 20: X = M[1]
    [ALU | XOR | X, 0, 0, 0], // 21: A ^= source
    [LDX | W | MEM, 0, 0, 0], // 22: X = M[0]
    [ALU | XOR | X, 0, 0, 0], // 23: A ^= ports
    [MISC | TAX, 0, 0, 0], // 24: X = A
    [ALU | RSH | K, 0, 0, 16], // 25: A >>= 16
    [ALU | XOR | X, 0, 0, 0], // 26: A ^= X
    [ALU | AND | K, 0, 0, 0xffff], // 27
    [ALU | MOD | K, 0, 0, workers], // 28
    [RET | RET_A, 0, 0, 0], // 29: the worker's index
  ];
  const out = new Int32Array(p.length * 2);
  p.forEach(([code, jt, jf, k], i) => { out[2 * i] = code | (jt << 16) | (jf << 24); out[2 * i + 1] = k | 0; });
  return out;
}

/** The same hash in TypeScript (tests check the program against it). */
export function flowWorker(b: Uint8Array, ipAt: number, workers: number): number {
  const rd16 = (o: number) => (b[o] << 8) | b[o + 1];
  const rd32 = (o: number) => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
  const proto = b[ipAt + 9];
  let ports = 0;
  if ((proto === 6 || proto === 17 || proto === 132) && (rd16(ipAt + 6) & 0x3fff) === 0) {
    const l4 = ipAt + ((b[ipAt] & 15) << 2);
    ports = rd16(l4) ^ rd16(l4 + 2);
  }
  const a = (rd32(ipAt + 12) ^ rd32(ipAt + 16) ^ ports) >>> 0;
  return (((a ^ (a >>> 16)) & 0xffff) >>> 0) % workers;
}
