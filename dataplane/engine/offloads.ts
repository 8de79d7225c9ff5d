// The offloads in force: what the config asks for (engine/config.ts), less
// what this kernel refuses. Decided once, here, by the engine before its workers
// start; the workers and stages take the result as it is (stages/context.ts
// Offloads). Each is probed the way it is used: a packet socket with
// PACKET_VNET_HDR, the TUN device's IFF_VNET_HDR and TUNSETOFFLOAD (the
// device's, not a queue's, so every worker must agree), UDP_SEGMENT/UDP_GRO on
// an overlay socket.
import type { Logger } from 'pino';
import { native, opener } from '../native/index.js';
import type { Offloads } from '../stages/context.js';
import type { EngineConfig } from './config.js';

export const TUN_OFFLOADS = 1 | 2 | 4; // TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6: what the node's stack may hand the TUN device

export function probeOffloads(cfg: EngineConfig, log: Logger): Offloads {
  const open = opener(cfg.netns);
  const refused = (offload: string, err: unknown) => { log.warn({ offload, err: String(err) }, 'kernel refused an offload; continuing without it'); return false; };
  const tryIt = (offload: string, f: () => void): boolean => { try { f(); return true; } catch (e) { return refused(offload, e); } };
  const wantVnet = cfg.podTso || cfg.podGso || cfg.tunTso;
  const vnetSend = wantVnet && tryIt('packet-vnet-hdr', () => native.close(open.packet('', { vnetHdr: true })));
  const tunTso = cfg.tunTso && tryIt('tun-tso', () => {
    const fd = open.tun(cfg.tunName, { multiQueue: true, vnetHdr: true });
    try { native.tunSetOffload(fd, TUN_OFFLOADS); } finally { native.close(fd); }
  });
  let udp = { gso: false, gro: false };
  if (cfg.udpGso || cfg.udpGro) {
    tryIt('udp-gso-gro', () => {
      const fd = open.udp(cfg.underlayIp, 0, {});
      try { udp = native.udpOffloads(fd); } finally { native.close(fd); }
    });
    if (cfg.udpGso && !udp.gso) refused('udp-gso', 'UDP_SEGMENT not supported');
    if (cfg.udpGro && !udp.gro) refused('udp-gro', 'UDP_GRO not supported');
  }
  return {
    podTso: cfg.podTso && vnetSend, podGso: cfg.podGso && vnetSend, tunTso, vnetSend: vnetSend && (cfg.podTso || cfg.podGso || tunTso),
    udpGso: cfg.udpGso && udp.gso, udpGro: cfg.udpGro && udp.gro,
  };
}
