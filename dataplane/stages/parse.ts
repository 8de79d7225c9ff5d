// Shared by the ingress stages: count a parser's reason code, and copy the
// parsed IP fields the later stages need into the batch.
import * as reasons from '../packet/reasons.js';
import * as fields from '../packet/fields.js';
import { C } from './counters.js';
import type { Batch } from './batch.js';

// V8 does not constant-fold imported bindings (every use in a hot loop is a
// module-cell load); module-level consts it does fold.
const { F_SRC4, F_DST4, F_SRC6, F_DST6, F_L3LEN, F_L3OFF, F_DF, F_PROTO, F_SPORT, F_DPORT, F_TCP_FLAGS } = fields;
const DF_V6 = 1 | 4; // batch.ts DF | V6 (a module-level const V8 folds)

// Each reason a parser returns, its own counter; the rest are malformed.
const REASON_COUNTER = new Int32Array(reasons.R_COUNT).fill(C.drop_malformed);
REASON_COUNTER[reasons.R_TRUNCATED] = C.drop_truncated;
REASON_COUNTER[reasons.R_BAD_VERSION] = C.drop_bad_version;
REASON_COUNTER[reasons.R_BAD_IHL] = C.drop_bad_header_length;
REASON_COUNTER[reasons.R_BAD_TOTAL_LENGTH] = C.drop_bad_total_length;
REASON_COUNTER[reasons.R_BAD_CHECKSUM] = C.drop_bad_checksum;
REASON_COUNTER[reasons.R_BAD_VXLAN_FLAGS] = C.drop_bad_vxlan_flags;
REASON_COUNTER[reasons.R_BAD_ARP] = C.drop_bad_arp;
REASON_COUNTER[reasons.R_BAD_L4] = C.drop_bad_l4;

export function countParseDrop(c: Float64Array, reason: number): void {
  c[reason > 0 && reason < REASON_COUNTER.length ? REASON_COUNTER[reason] : C.drop_malformed]++;
}

export function takeIPv4(bt: Batch, i: number, f: Int32Array): void {
  bt.l3[i] = f[F_L3OFF];
  bt.src[i] = f[F_SRC4];
  bt.dst[i] = f[F_DST4];
  bt.l3len[i] = f[F_L3LEN];
  bt.flags[i] = f[F_DF];
  bt.proto[i] = f[F_PROTO];
  bt.sport[i] = f[F_SPORT];
  bt.dport[i] = f[F_DPORT];
  bt.tcpFlags[i] = f[F_TCP_FLAGS];
}

export function takeIPv6(bt: Batch, i: number, f: Int32Array): void {
  const o = 4 * i, s6 = bt.src6, d6 = bt.dst6;
  s6[o] = f[F_SRC6]; s6[o + 1] = f[F_SRC6 + 1]; s6[o + 2] = f[F_SRC6 + 2]; s6[o + 3] = f[F_SRC6 + 3];
  d6[o] = f[F_DST6]; d6[o + 1] = f[F_DST6 + 1]; d6[o + 2] = f[F_DST6 + 2]; d6[o + 3] = f[F_DST6 + 3];
  bt.l3[i] = f[F_L3OFF];
  bt.src[i] = s6[o] ^ s6[o + 1] ^ s6[o + 2] ^ s6[o + 3];
  bt.dst[i] = d6[o] ^ d6[o + 1] ^ d6[o + 2] ^ d6[o + 3];
  bt.l3len[i] = f[F_L3LEN];
  bt.flags[i] = DF_V6;
  bt.proto[i] = f[F_PROTO];
  bt.sport[i] = f[F_SPORT];
  bt.dport[i] = f[F_DPORT];
  bt.tcpFlags[i] = f[F_TCP_FLAGS];
}
