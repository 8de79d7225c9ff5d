// The receive calls, one per source: each aims the batch's slots so the IP
// header lands where the stages write headers in front of it (stages/batch.ts),
// and hands the slots to the kernel in one call. Returns how many entries.
import { native } from '../native/index.js';
import * as ethernet from '../packet/ethernet.js';
import * as virtio from '../packet/virtio.js';
import { GRO_SLOT, splitGro, type Batch } from './batch.js';
import type { StageContext } from './context.js';

const { ETH_HLEN } = ethernet; // module-level consts V8 folds
const { VNET_HLEN } = virtio;

/** A pod's veth (AF_PACKET fanout member): frames, with a virtio_net_hdr first when pods keep their offloads. */
export function receivePod(ctx: StageContext, bt: Batch, fd: number): number {
  if (ctx.podTso) {
    bt.aimBig(ETH_HLEN + VNET_HLEN);
    return native.packetRecv(fd, bt.arena, bt.offs, bt.lens, bt.meta, bt.bigSlots, bt.bigCapacity(ETH_HLEN + VNET_HLEN));
  }
  bt.aim(ETH_HLEN);
  return native.packetRecv(fd, bt.arena, bt.offs, bt.lens, bt.meta, bt.slots, bt.capacity(ETH_HLEN));
}

/** The node's TUN queue: IP packets, with a virtio_net_hdr first when the device has one (tunTso). */
export function receiveTun(ctx: StageContext, bt: Batch, fd: number): number {
  if (ctx.tunTso) {
    bt.aimBig(VNET_HLEN);
    return native.tunRead(fd, bt.arena, bt.offs, bt.lens, bt.bigSlots, bt.bigCapacity(VNET_HLEN));
  }
  bt.aim(0);
  return native.tunRead(fd, bt.arena, bt.offs, bt.lens, bt.slots, bt.capacity(0));
}

/** The overlay socket: VXLAN datagrams (UDP_GRO receives split into one entry each), their source address in bt.meta. */
export function receiveOverlay(_ctx: StageContext, bt: Batch, fd: number): number {
  bt.aimGro();
  return splitGro(bt, native.udpRecv(fd, bt.arena, bt.offs, bt.lens, bt.meta, bt.aux, bt.groSlots, GRO_SLOT));
}

/** The overlay socket over IPv6: as receiveOverlay, each receive's source address in bt.from6 and its index in bt.meta. */
export function receiveOverlay6(_ctx: StageContext, bt: Batch, fd: number): number {
  bt.aimGro();
  const n = native.udpRecv(fd, bt.arena, bt.offs, bt.lens, bt.from6, bt.aux, bt.groSlots, GRO_SLOT);
  for (let k = 0; k < n; k++) bt.meta[k] = k;
  return splitGro(bt, n);
}
