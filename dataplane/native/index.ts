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
  fanoutGroup?: number; // PACKET_FANOUT (hash) group id; 0 = no fanout
  vnetHdr?: boolean; // PACKET_VNET_HDR, set before binding
  qdiscBypass?: boolean; // PACKET_QDISC_BYPASS for sends
  ignoreOutgoing?: boolean; // PACKET_IGNORE_OUTGOING: do not see our own sends
}
export interface UdpOptions {
  reusePort?: boolean; // SO_REUSEPORT: one socket per worker on the same port
  gro?: boolean; // UDP_GRO: receives may be coalesced; meta[i] then holds the segment size
}

export interface Native {
  /** Open (or attach a queue of) TUN device `name`; returns a non-blocking fd. */
  tunOpen(name: string, opts: TunOptions): number;
  /** TUNSETOFFLOAD with TUN_F_* flags (CSUM=1, TSO4=2, TSO6=4, TSO_ECN=8, UFO=16, USO4=32, USO6=64). */
  tunSetOffload(fd: number, flags: number): void;
  /** read() until EAGAIN or `max` entries. */
  tunRead(fd: number, arena: Uint8Array, offs: Int32Array, lens: Int32Array, max: number, cap: number): number;
  /** write() each selected entry; returns how many were written (stops at EAGAIN). */
  tunWrite(fd: number, arena: Uint8Array, offs: Int32Array, lens: Int32Array, idx: Int32Array, count: number): number;

  /** AF_PACKET SOCK_RAW ETH_P_ALL; bound to `ifname`, or unbound when ifname is "" (send-only). */
  packetOpen(ifname: string, opts: PacketOptions): number;
  /** recvmmsg(MSG_DONTWAIT); meta[i] = ingress ifindex. Outgoing frames are never returned. */
  packetRecv(fd: number, arena: Uint8Array, offs: Int32Array, lens: Int32Array, meta: Int32Array, max: number, cap: number): number;
  /** sendmmsg; entry idx[k] goes out of interface ifindex[idx[k]]. Returns the number sent. */
  packetSend(fd: number, arena: Uint8Array, offs: Int32Array, lens: Int32Array, idx: Int32Array, count: number, ifindex: Int32Array): number;

  /** UDP/IPv4 socket bound to addr:port ("0.0.0.0" for any); non-blocking. */
  udpOpen(addr: string, port: number, opts: UdpOptions): number;
  /** recvmmsg(MSG_DONTWAIT); src[i] = source IPv4 as a host-order int32; meta[i] = GRO segment size (0 if none). */
  udpRecv(fd: number, arena: Uint8Array, offs: Int32Array, lens: Int32Array, src: Int32Array, meta: Int32Array, max: number, cap: number): number;
  /** sendmmsg; entry idx[k] goes to dst[idx[k]] (host-order IPv4) : dport[idx[k]]. Returns the number sent. */
  udpSend(fd: number, arena: Uint8Array, offs: Int32Array, lens: Int32Array, idx: Int32Array, count: number, dst: Int32Array, dport: Int32Array): number;
  /** One sendmsg with UDP_SEGMENT=segSize: the kernel cuts arena[off, off+len) into datagrams of segSize. */
  udpSendGso(fd: number, arena: Uint8Array, off: number, len: number, segSize: number, dst: number, dport: number): void;
  /**
   * sendmmsg of runs: idx[0..count) splits into nruns consecutive runs of runs[r] entries (1..256 each).
   * A run of one is a plain datagram; a longer run is one UDP_SEGMENT message whose segments are its
   * entries (same destination, each the first entry's length but the last, which may be shorter).
   * Returns the number of entries sent (whole runs only).
   */
  udpSendRuns(fd: number, arena: Uint8Array, offs: Int32Array, lens: Int32Array, idx: Int32Array, count: number, dst: Int32Array, dport: Int32Array, runs: Int32Array, nruns: number): number;
  /** Whether this kernel accepts UDP_SEGMENT / UDP_GRO on this socket. */
  udpOffloads(fd: number): { gso: boolean; gro: boolean };

  /** poll() on fds[0..n-1] for POLLIN; ready[i] = 1 if readable. Blocks up to timeoutMs (-1 = forever). Returns the number ready. */
  poll(fds: Int32Array, n: number, ready: Int32Array, timeoutMs: number): number;
  /** A non-blocking eventfd used as a doorbell to wake workers blocked in poll. */
  eventfd(): number;
  eventfdSignal(fd: number): void;
  eventfdDrain(fd: number): void;
  close(fd: number): void;
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
