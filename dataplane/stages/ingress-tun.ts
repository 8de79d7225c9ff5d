// Stage: IP packets the node's own stack routed into the TUN device (host to
// pod, and replies of the host to pods). The kernel has finished checksums.
import { parseIPv4 } from '../packet/ipv4.js';
import { C } from '../engine/counters.js';
import { countParseDrop, takeIPv4 } from './parse.js';
import type { Batch } from './batch.js';
import type { StageContext } from './context.js';

export function ingressTun(ctx: StageContext, bt: Batch): void {
  const b = bt.arena, f = ctx.f, c = ctx.counters;
  for (let i = 0; i < bt.n; i++) {
    bt.l3len[i] = 0;
    const off = bt.offs[i], len = bt.lens[i];
    if (len < 1 || b[off] >> 4 !== 4) { c[C.drop_not_ipv4]++; continue; }
    const r = parseIPv4(b, off, len, f, false);
    if (r !== 0) { countParseDrop(c, r); continue; }
    takeIPv4(bt, i, f);
  }
}
