// The AF_PACKET sockets on pods' veths, one fanout member per worker. The main
// thread opens them, in worker order, so that member k of every fanout group is
// worker k's socket: the steering program (steering.ts) then names the worker
// of a flow, or with pinned workers PACKET_FANOUT_CPU sends a frame that
// arrived on CPU k to worker k, pinned on CPU k. Workers only read and write them;
// a removed pod's sockets are closed once every worker has moved past the
// tables that listed them, so no worker ever reads a reused fd number.
import type { Logger } from 'pino';
import { native, opener, type PacketOptions } from '../native/index.js';
import type { EngineConfig } from './config.js';
import { flowSteering, POD_IP_AT } from './steering.js';

export type PodFds = [ifindex: number, fd: number][]; // one worker's share

export class PodQueues {
  private readonly open = new Map<number, number[]>(); // ifindex → fd per worker
  private retiring: { gen: number; fds: number[] }[] = [];

  private readonly steer: Int32Array;

  constructor(private readonly cfg: EngineConfig, private readonly vnetHdr: boolean, private readonly fanoutCpu: boolean, private readonly log: Logger) {
    this.steer = flowSteering(POD_IP_AT, cfg.workers);
  }

  /** Opens sockets for new ports, retires those of ports gone; returns each worker's share. */
  sync(ports: { ifname: string; ifindex: number }[], gen: number): PodFds[] {
    const want = new Set(ports.map((p) => p.ifindex));
    const gone: number[] = [];
    for (const [ifx, fds] of this.open) if (!want.has(ifx)) { gone.push(...fds); this.open.delete(ifx); }
    if (gone.length) this.retiring.push({ gen, fds: gone });
    for (const p of ports) if (!this.open.has(p.ifindex)) this.openPort(p.ifname, p.ifindex);
    const shares: PodFds[] = Array.from({ length: this.cfg.workers }, () => []);
    for (const [ifx, fds] of this.open) fds.forEach((fd, w) => shares[w].push([ifx, fd]));
    return shares;
  }

  /** Closes what was retired before generation `acked`, which every worker now runs. */
  release(acked: number): void {
    const keep: typeof this.retiring = [];
    for (const r of this.retiring) {
      if (r.gen <= acked) for (const fd of r.fds) native.close(fd);
      else keep.push(r);
    }
    this.retiring = keep;
  }

  /** After the workers have stopped. */
  closeAll(): void {
    for (const fds of this.open.values()) for (const fd of fds) native.close(fd);
    for (const r of this.retiring) for (const fd of r.fds) native.close(fd);
    this.open.clear();
    this.retiring = [];
  }

  private openPort(ifname: string, ifindex: number): void {
    const { cfg } = this;
    // Always a fanout group, even of one, named by the veth: an agent that takes
    // over from another (agent/handover.ts) joins its groups, so each frame
    // still reaches one socket, never both agents'. The group's program steers
    // to its first members, the old agent's, until they leave.
    const fanout = true;
    const o: PacketOptions = { ignoreOutgoing: true, vnetHdr: this.vnetHdr, fanoutGroup: fanout ? ifindex & 0xffff : 0, fanoutCpu: fanout && this.fanoutCpu, fanoutCbpf: fanout && !this.fanoutCpu };
    const open = opener(cfg.netns), fds: number[] = [];
    try {
      for (let w = 0; w < cfg.workers; w++) fds.push(open.packet(ifname, o));
      if (o.fanoutCbpf) native.packetSteer(fds[0], this.steer);
      this.open.set(ifindex, fds);
    } catch (e) {
      for (const fd of fds) native.close(fd);
      this.log.warn({ ifname, err: e }, 'cannot open a pod veth; not serving it'); // it went away between publication and now
    }
  }
}
