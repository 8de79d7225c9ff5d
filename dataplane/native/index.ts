// Typed face of the C addon. The addon only moves bytes between the kernel and
// slots of an arena (a Uint8Array over a SharedArrayBuffer) that JavaScript owns;
// every parse, decision and header write happens in TypeScript.
//
// Batch calls share one shape: `offs[i]` is where entry i starts in `arena`,
// `lens[i]` its length. Receive calls fill entries 0..n-1 (writing at offs[i], at
// most `cap` bytes) and return n (0 when nothing is ready: every fd is
// non-blocking). Send calls take `idx[0..count-1]`, the batch entries to send, so
// a stage can route one batch to several outputs without copying descriptors.
// A failing system call throws Error("<CALL>: <ERRNO NAME>") with .code = errno name.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export interface TunOptions {
  multiQueue?: boolean; // IFF_MULTI_QUEUE: call tunOpen once per worker with the same name
  vnetHdr?: boolean; // IFF_VNET_HDR: every read/write starts with a 10-byte virtio_net_hdr
}
export interface PacketOptions {
  fanoutGroup?: number; // PACKET_FANOUT group id; 0 = no fanout
  fanoutCpu?: boolean; // fan out by receiving CPU (PACKET_FANOUT_CPU) instead of by flow hash
  fanoutCbpf?: boolean; // fan out by a classic BPF program (PACKET_FANOUT_CBPF; see packetSteer)
  vnetHdr?: boolean; // PACKET_VNET_HDR, set before binding
  qdiscBypass?: boolean; // PACKET_QDISC_BYPASS for sends
  ignoreOutgoing?: boolean; // PACKET_IGNORE_OUTGOING: do not see our own sends
}
export interface UdpOptions {
  reusePort?: boolean; // SO_REUSEPORT: one socket per worker on the same port
  gro?: boolean; // UDP_GRO: receives may be coalesced; meta[i] then holds the segment size
  incomingCpu?: number; // SO_INCOMING_CPU: in a reuseport group, datagrams received on this CPU come here
}

export interface Native {
  /** Open (or attach a queue of) TUN device `name`; returns a non-blocking fd. */
  tunOpen(name: string, opts: TunOptions): number;
  /** TUNSETOFFLOAD with TUN_F_* flags (CSUM=1, TSO4=2, TSO6=4, TSO_ECN=8, UFO=16, USO4=32, USO6=64). */
  tunSetOffload(fd: number, flags: number): void;
  /** read() until EAGAIN or `max` entries. */
  tunRead(fd: number, arena: Uint8Array, offs: Int32Array, lens: Int32Array, max: number, cap: number): number;
  /**
   * One write per packet; returns how many entries were written (stops at EAGAIN).
   * more (every send takes it): more[j] = 1 says entry j's packet continues in the entry idx lists next,
   * a chain of at most 1024 entries that the kernel takes as one iovec list; absent, each entry is a packet.
   * Sends count entries, whole packets only.
   */
  tunWrite(fd: number, arena: Uint8Array, offs: Int32Array, lens: Int32Array, idx: Int32Array, count: number, more?: Uint8Array): number;

  /** AF_PACKET SOCK_RAW ETH_P_ALL; bound to `ifname`, or unbound when ifname is "" (send-only). */
  packetOpen(ifname: string, opts: PacketOptions): number;
  /** recvmmsg(MSG_DONTWAIT); meta[i] = ingress ifindex. Outgoing frames are never returned. */
  packetRecv(fd: number, arena: Uint8Array, offs: Int32Array, lens: Int32Array, meta: Int32Array, max: number, cap: number): number;
  /** sendmmsg; a frame goes out of interface ifindex[j] of its first entry j. Returns the number of entries sent. */
  packetSend(fd: number, arena: Uint8Array, offs: Int32Array, lens: Int32Array, idx: Int32Array, count: number, ifindex: Int32Array, more?: Uint8Array): number;

  /**
   * UDP socket bound to addr:port; non-blocking. IPv4 text ("0.0.0.0" for any) opens an AF_INET socket;
   * text with a ':' ("::" for any, "fc00::11") an AF_INET6 one with IPV6_V6ONLY=1 (no zone ids: "fe80::1%eth0"
   * is refused). Every option works on both. The other udp* calls take the socket's family from the fd
   * (recorded here, forgotten by close(); an fd not made by udpOpen/udpOpenIn costs a getsockopt per call):
   * on an IPv6 socket each address is 4 int32 words, the address's 32-bit words most significant first, in
   * host order (word k as unsigned hex is groups 2k and 2k+1), where an IPv4 socket has one host-order int32.
   * Close these fds with close() below, so a later socket that reuses the number is not taken for this one.
   */
  udpOpen(addr: string, port: number, opts: UdpOptions): number;
  /**
   * recvmmsg(MSG_DONTWAIT); meta[i] = GRO segment size (0 if none). Source address: IPv4 socket, src[i] =
   * host-order int32; IPv6 socket, src[4i..4i+3] = its 4 words (src must then hold at least 4 * max, else TypeError).
   */
  udpRecv(fd: number, arena: Uint8Array, offs: Int32Array, lens: Int32Array, src: Int32Array, meta: Int32Array, max: number, cap: number): number;
  /**
   * sendmmsg; a datagram goes to the destination of its first entry j: dst[j] (host-order IPv4) : dport[j];
   * on an IPv6 socket dst[4j..4j+3] (4 words) : dport[j], and dst must hold at least 4 * (largest idx + 1)
   * (else TypeError). Returns the number of entries sent.
   */
  udpSend(fd: number, arena: Uint8Array, offs: Int32Array, lens: Int32Array, idx: Int32Array, count: number, dst: Int32Array, dport: Int32Array, more?: Uint8Array): number;
  /**
   * One sendmsg with UDP_SEGMENT=segSize: the kernel cuts arena[off, off+len) into datagrams of segSize.
   * dst: a host-order IPv4 number on an IPv4 socket; an Int32Array of (at least) 4 words on an IPv6 one (else TypeError).
   */
  udpSendGso(fd: number, arena: Uint8Array, off: number, len: number, segSize: number, dst: number | Int32Array, dport: number): void;
  /**
   * sendmmsg of runs: idx[0..count) splits into nruns consecutive runs of runs[r] entries (1..1024 each,
   * whole packets). A run of one packet is a plain datagram; a longer run is one UDP_SEGMENT message whose
   * segments are its packets (same destination, each the first one's length but the last, which may be
   * shorter; a packet's length is the sum of its chain's). Returns the number of entries sent (whole runs only).
   * dst as udpSend: a run goes to its first entry's destination (4 words per entry on an IPv6 socket).
   */
  udpSendRuns(fd: number, arena: Uint8Array, offs: Int32Array, lens: Int32Array, idx: Int32Array, count: number, dst: Int32Array, dport: Int32Array, runs: Int32Array, nruns: number, more?: Uint8Array): number;
  /** Whether this kernel accepts UDP_SEGMENT / UDP_GRO on this socket (IPv4 or IPv6). */
  udpOffloads(fd: number): { gso: boolean; gro: boolean };

  /**
   * poll() on fds[0..n-1] for POLLIN; ready[i] = 1 if readable. Blocks up to timeoutMs (-1 = forever). Returns the number ready.
   * spinUs > 0: polls without blocking for up to that long first (see waitPolicy). wait, when given, gets [0] how the spin
   * ended (0 no spin, 1 caught something, 2 ran out, 3 cut short: the thread was descheduled longer than gapUs), [1] the
   * monotonic clock in ms at entry, [2] at return, [3] the CPU time the spin used in µs.
   */
  poll(fds: Int32Array, n: number, ready: Int32Array, timeoutMs: number, spinUs?: number, wait?: Float64Array): number;
  /**
   * Attaches the classic BPF program (engine/steering.ts) that picks a reuseport group's socket. IPv4 or IPv6
   * group alike: the program sees the UDP payload (the VXLAN header) from offset 0.
   */
  udpSteer(fd: number, prog: Int32Array): void;
  /** Attaches the classic BPF program that picks a PACKET_FANOUT_CBPF group's member. */
  packetSteer(fd: number, prog: Int32Array): void;
  /** The CPUs this thread may run on, ascending. */
  cpus(): number[];
  /** Pins the calling thread to one CPU; -1 lets it run anywhere again. */
  pinThread(cpu: number): void;
  /**
   * How the calling thread waits in poll(). It spins as a normal thread, yielding between polls; gapUs > 0 ends
   * a spin once the thread finds it was off the CPU longer than that (in the spin, or while it handled the last
   * batch). blockPriority 1..99 makes it SCHED_FIFO while blocked in poll() and while handling what woke it;
   * 0 keeps it SCHED_OTHER. sliceUs > 0: its own EEVDF slice while SCHED_OTHER. Applies the class at once;
   * throws when the kernel refuses it (no CAP_SYS_NICE), leaving the thread a normal one.
   */
  waitPolicy(gapUs: number, blockPriority: number, sliceUs: number): void;
  /** Tasks running or waiting for a CPU on the whole machine right now, the caller included (/proc/loadavg); -1 if unreadable. */
  runnable(): number;
  /** Names the calling thread (at most 15 bytes), as ps -L, perf and ftrace show it. */
  threadName(name: string): void;
  /** A non-blocking eventfd used as a doorbell to wake workers blocked in poll. */
  eventfd(): number;
  eventfdSignal(fd: number): void;
  eventfdDrain(fd: number): void;
  close(fd: number): void; // also forgets the family udpOpen recorded for fd
  ifIndex(name: string): number; // if_nametoindex; throws ENODEV when missing

  /** Run one open call inside the network namespace at nsPath (setns on a thread of its own); the fd stays bound to that netns. */
  tunOpenIn(nsPath: string, name: string, opts: TunOptions): number;
  packetOpenIn(nsPath: string, ifname: string, opts: PacketOptions): number;
  udpOpenIn(nsPath: string, addr: string, port: number, opts: UdpOptions): number;
}

const here = path.dirname(fileURLToPath(import.meta.url));
// Both the TypeScript source (vitest) and dist/ resolve to the one build dir.
const candidates = [
  path.resolve(here, 'build/Release/twill_native.node'),
  path.resolve(here, '../../../dataplane/native/build/Release/twill_native.node'),
];

function load(): Native {
  const require = createRequire(import.meta.url);
  let lastErr: unknown;
  for (const p of candidates) {
    try {
      return require(p) as Native;
    } catch (e) {
      lastErr = e;
    }
  }
  throw new Error(`twill native addon not built (run npm install): ${String(lastErr)}`);
}

export const native: Native = load();

/** The open calls, made inside the network namespace at nsPath when one is given, else in the caller's. */
export function opener(nsPath?: string) {
  return {
    tun: (name: string, o: TunOptions) => (nsPath ? native.tunOpenIn(nsPath, name, o) : native.tunOpen(name, o)),
    packet: (ifname: string, o: PacketOptions) => (nsPath ? native.packetOpenIn(nsPath, ifname, o) : native.packetOpen(ifname, o)),
    udp: (addr: string, port: number, o: UdpOptions) => (nsPath ? native.udpOpenIn(nsPath, addr, port, o) : native.udpOpen(addr, port, o)),
  };
}
