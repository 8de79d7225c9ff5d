// Stage: IPv4 and IPv6 packets the node's own stack routed into the TUN device (host to
// pod, and replies of the host to pods). With ctx.tunTso each starts with a
// virtio_net_hdr: the stack hands over TSO super-packets with partial checksums
// (stages/vnet.ts); without it, the kernel has finished checksums.
import { parseIPv4 } from '../packet/ipv4.js';
import { parseIPv6 } from '../packet/ipv6.js';
import { C } from './counters.js';
import { countParseDrop, takeIPv4, takeIPv6 } from './parse.js';
import { takeVnet } from './vnet.js';
import * as virtio from '../packet/virtio.js';
import type { Batch } from './batch.js';
import type { StageContext } from './context.js';

const { VNET_HLEN } = virtio; // a module-level const V8 folds

export function ingressTun(ctx: StageContext, bt: Batch): void {
  const b = bt.arena, f = ctx.f, c = ctx.counters, vnet = ctx.tunTso;
  for (let i = 0; i < bt.n; i++) {
    bt.l3len[i] = 0;
    if (vnet) {
      if (bt.lens[i] < VNET_HLEN) { c[C.drop_truncated]++; continue; }
      if (!takeVnet(bt, i, c, C.rx_tun_gso)) continue;
    } else {
      bt.vflags[i] = 0; bt.gso[i] = 0;
    }
    const off = bt.offs[i], len = bt.lens[i];
    const version = len < 1 ? 0 : b[off] >> 4;
    if (version === 4) {
      const r = parseIPv4(b, off, len, f, false);
      if (r !== 0) { countParseDrop(c, r); continue; }
      takeIPv4(bt, i, f);
    } else if (version === 6) {
      const r = parseIPv6(b, off, len, f);
      if (r !== 0) { countParseDrop(c, r); continue; }
      if (b[off + 24] === 0xff || (b[off + 8] === 0xfe && (b[off + 9] & 0xc0) === 0x80)) { c[C.nd_ignored]++; continue; } // the stack's multicast and link-local chatter (MLD, solicitations) on TUN
      takeIPv6(bt, i, f);
    } else c[C.drop_not_ip]++;
  }
}
