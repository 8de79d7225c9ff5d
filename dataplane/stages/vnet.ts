// The virtio_net_hdr in front of what pods' veths (PACKET_VNET_HDR) and the TUN
// device (IFF_VNET_HDR) hand over: its facts go to bt.vflags/gso/csumStart/
// csumOff and the entry moves past it. csum_start counts from the packet's
// first byte, whatever that is (Ethernet for a veth, IP for TUN), so csumStart
// comes out absolute either way. Super-packets other than TCPv4 and UDP
// (GSO_UDP_L4) are dropped; so is a partial checksum whose offsets fall outside
// the packet (checked when used, stages/segment.ts).
import * as virtio from '../packet/virtio.js';
import { C } from './counters.js';
import type { Batch } from './batch.js';

// Module-level consts V8 folds (imported bindings are module-cell loads).
const { VNET_HLEN, VNET_GSO_TCPV4: GSO_TCPV4, VNET_GSO_TCPV6: GSO_TCPV6, VNET_GSO_UDP_L4: GSO_UDP_L4, VNET_GSO_ECN: GSO_ECN } = virtio;

/** Takes entry i's header; false (counted) when the entry is to be dropped. `gsoCounter` counts super-packets. */
export function takeVnet(bt: Batch, i: number, c: Float64Array, gsoCounter: number): boolean {
  const b = bt.arena, v = bt.offs[i];
  const flags = b[v] & 1, type = b[v + 1] & ~GSO_ECN;
  let gso = 0;
  if (type !== 0) {
    if (type !== GSO_TCPV4 && type !== GSO_TCPV6 && type !== GSO_UDP_L4) { c[C.drop_gso_unsupported]++; return false; }
    gso = b[v + 4] | (b[v + 5] << 8);
    if (gso === 0) { c[C.drop_malformed]++; return false; }
    c[gsoCounter]++;
  }
  bt.gso[i] = gso;
  bt.vflags[i] = flags | (type << 8);
  const pkt = v + VNET_HLEN;
  bt.csumStart[i] = pkt + (b[v + 6] | (b[v + 7] << 8));
  bt.csumOff[i] = b[v + 8] | (b[v + 9] << 8);
  bt.offs[i] = pkt;
  bt.lens[i] -= VNET_HLEN;
  return true;
}
