// The stages in memory, without root, a kernel or an engine (Snabb's selftest):
// one node's tables (two local pods, a remote node, the Service range), a batch,
// and packet builders for each source as its receive call leaves them. `pass`
// runs one source's ingress stage and the forward stage and returns what was
// queued on each output, chains joined, as the egress stage would send it.
import { createHash } from 'node:crypto';
import { defaultEngineConfig, type EngineConfig } from '../../dataplane/engine/config.js';
import { compileFib } from '../../dataplane/tables/fib.js';
import { NCOUNTERS, COUNTER_NAMES } from '../../dataplane/stages/counters.js';
import { Conntrack } from '../../dataplane/tables/conntrack.js';
import { StageContext } from '../../dataplane/stages/context.js';
import { Batch } from '../../dataplane/stages/batch.js';
import { ingressVxlan } from '../../dataplane/stages/ingress-vxlan.js';
import { ingressTun } from '../../dataplane/stages/ingress-tun.js';
import { ingressPod } from '../../dataplane/stages/ingress-pod.js';
import { forward } from '../../dataplane/stages/forward.js';
import { FROM_POD, FROM_TUN, FROM_VXLAN } from '../../dataplane/stages/graph.js';
import { ETH_HLEN, ETH_P_IP, IPPROTO_TCP, IPPROTO_UDP, VXLAN_HLEN, parseMac, writeEthernet, writeIPv4Header, writeVxlan } from '../../dataplane/packet/index.js';
import { VNET_HLEN, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, writeVnet, zeroVnet } from '../../dataplane/packet/virtio.js';
import { csumFold, l4Checksum4, pseudoHeaderSum4 } from '../../dataplane/packet/checksum.js';

export const ip = (s: string) => s.split('.').reduce((a, b) => ((a << 8) | Number(b)) >>> 0, 0) | 0;
export const GW = '10.244.1.1', UNDERLAY = '172.30.0.11', PEER = '172.30.0.12';
export const POD_A = { ip: '10.244.1.5', mac: '02:00:00:aa:00:05', ifname: 'veth5', ifindex: 5 };
export const POD_B = { ip: '10.244.1.6', mac: '02:00:00:aa:00:06', ifname: 'veth6', ifindex: 6 };
export const REMOTE_POD = '10.244.2.7';
export const VTEP = '02:00:00:00:01:01', PEER_VTEP = '02:00:00:00:02:01';

export type Source = 'pod' | 'tun' | 'vxlan';
export type Offload = 'plain' | 'partial' | 'gso'; // what the packet carries: finished checksums, a partial one, or a TCP super-packet
export type Dest = 'local pod' | 'remote pod' | 'host' | 'service' | 'outside' | 'no such pod';
/** The packets' lengths by offload state (a 'gso' one is a super-packet). */
export const LEN: Record<Offload, number> = { plain: 600, partial: 1000, gso: 20_000 };

/**
 * The rules, as the README states them: where a packet from `source` (`overlay`: the
 * overlay's source of the family) to `dest` goes, the overlay output being `udp`, or
 * which counter its drop charges.
 */
export function where(source: string, overlay: string, dest: Dest, udp: 'udp' | 'udp6'): string {
  if (dest === 'no such pod') return 'drop_no_route';
  if (dest === 'local pod') return 'pod';
  if (source === overlay) return dest === 'remote pod' ? 'drop_hairpin' : dest === 'host' ? 'tun' : 'drop_overlay_dst';
  if (dest === 'remote pod') return udp;
  return source === 'tun' ? 'drop_hairpin' : 'tun'; // the host's own packets never go back to it
}

/** Every source × destination × offload state, with offloads on and off; without them pods and the host hand over finished packets only. */
export function graphCases<S extends string>(sources: readonly S[], overlay: S, dests: readonly Dest[]): [S, Dest, Offload, boolean][] {
  const cases: [S, Dest, Offload, boolean][] = [];
  for (const offloads of [true, false]) for (const source of sources) for (const dest of dests) {
    for (const offload of ['plain', 'partial', 'gso'] as Offload[]) {
      if (!offloads && source !== overlay && offload !== 'plain') continue;
      cases.push([source, dest, offload, offloads]);
    }
  }
  return cases;
}
export interface Sent { out: 'tun' | 'pod' | 'udp' | 'udp6'; to: number | string; bytes: Uint8Array }

export interface Rig { cfg: EngineConfig; ctx: StageContext; bt: Batch; counters(): Record<string, number> }

/** A node's stages. `offloads` false: no vnet header on pod or TUN queues, no vnet send socket. */
export function rig(offloads = true): Rig {
  const cfg = defaultEngineConfig({ node: 't', underlayIp: UNDERLAY, vtepMac: VTEP, workers: 1, podTso: offloads, podGso: offloads, tunTso: offloads });
  const stats = new SharedArrayBuffer(8 * NCOUNTERS);
  const ctx = new StageContext(cfg, { podTso: offloads, podGso: offloads, tunTso: offloads, udpGso: offloads, udpGro: offloads, vnetSend: offloads }, stats, 0);
  const fib = compileFib({
    clusterCIDR: '10.244.0.0/16', podCIDR: '10.244.1.0/24', hostIPs: [GW, UNDERLAY], serviceCIDR: '10.96.0.0/12',
    pods: [POD_A, POD_B], remotes: [{ name: 'n2', podCIDR: '10.244.2.0/24', underlayIP: PEER, vtepMAC: PEER_VTEP }],
  });
  ctx.setTables({ ...fib, gatewayIP: GW, translated: Conntrack.create(1024).buffer });
  ctx.now = 1000;
  const bt = new Batch(cfg.batch, 2048, 2, 4096, { bigSlots: cfg.batch, outBytes: 1 << 20 });
  const c = new Float64Array(stats);
  return { cfg, ctx, bt, counters: () => Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, c[i]]).filter(([, v]) => v !== 0)) };
}

/** An IPv4 TCP or UDP packet of `len` bytes at l3, payload a pattern; its L4 checksum partial or finished. */
function packet(b: Uint8Array, l3: number, len: number, proto: number, src: string, dst: string, partial: boolean, ttl = 64): void {
  for (let k = 0; k < len; k++) b[l3 + k] = (k * 7 + 3) & 0xff;
  writeIPv4Header(b, l3, len, 0x1234, ttl, proto, ip(src), ip(dst), true);
  const l4 = l3 + 20, l4len = len - 20;
  b[l4] = 0x9c; b[l4 + 1] = 0x40; b[l4 + 2] = 0x1f; b[l4 + 3] = 0x90; // ports 40000 → 8080
  const field = proto === IPPROTO_TCP ? 16 : 6;
  if (proto === IPPROTO_TCP) { b[l4 + 12] = 5 << 4; b[l4 + 13] = 0x18; } // ACK|PSH
  else { b[l4 + 4] = l4len >> 8; b[l4 + 5] = l4len & 0xff; }
  b[l4 + field] = 0; b[l4 + field + 1] = 0;
  const v = partial ? ~csumFold(pseudoHeaderSum4(ip(src), ip(dst), proto, l4len)) & 0xffff : l4Checksum4(b, l4, l4len, ip(src), ip(dst), proto);
  b[l4 + field] = v >> 8; b[l4 + field + 1] = v & 0xff;
}

/**
 * Entry 0 of the batch as `source`'s receive call leaves it: a TCP packet (UDP for
 * 'plain') from src to dst, of `len` bytes (a super-packet when offload is 'gso').
 */
export function receive(r: Rig, source: Source, offload: Offload, src: string, dst: string, len: number): void {
  const { bt, cfg } = r, b = bt.arena;
  const proto = offload === 'plain' ? IPPROTO_UDP : IPPROTO_TCP, partial = offload !== 'plain';
  const mss = cfg.podMtu - 40;
  if (source === 'vxlan') {
    bt.aimGro();
    const off = bt.offs[0];
    writeVxlan(b, off, 1);
    writeEthernet(b, off + VXLAN_HLEN, parseMac(VTEP), parseMac(PEER_VTEP), ETH_P_IP);
    packet(b, off + VXLAN_HLEN + ETH_HLEN, len, proto, src, dst, partial, 63);
    bt.lens[0] = VXLAN_HLEN + ETH_HLEN + len; bt.meta[0] = ip(PEER); bt.aux[0] = 0;
  } else if (source === 'tun') {
    const lead = cfg.tunTso ? VNET_HLEN : 0;
    if (len > 1500) bt.aimBig(lead); else bt.aim(lead);
    const off = bt.offs[0];
    if (lead) {
      if (partial) writeVnet(b, off, VNET_F_NEEDS_CSUM, offload === 'gso' ? VNET_GSO_TCPV4 : 0, offload === 'gso' ? 40 : 0, offload === 'gso' ? mss : 0, 20, 16);
      else zeroVnet(b, off);
    }
    packet(b, off + lead, len, proto, src, dst, partial && lead > 0);
    bt.lens[0] = lead + len;
  } else {
    const lead = cfg.podTso ? VNET_HLEN : 0;
    if (len > 1500) bt.aimBig(ETH_HLEN + lead); else bt.aim(ETH_HLEN + lead);
    const off = bt.offs[0], pod = src === POD_B.ip ? POD_B : POD_A;
    if (lead) {
      if (partial) writeVnet(b, off, VNET_F_NEEDS_CSUM, offload === 'gso' ? VNET_GSO_TCPV4 : 0, offload === 'gso' ? 54 : 0, offload === 'gso' ? mss : 0, 34, 16);
      else zeroVnet(b, off);
    }
    writeEthernet(b, off + lead, parseMac('ee:ee:ee:ee:ee:ee'), parseMac(pod.mac), ETH_P_IP);
    packet(b, off + lead + ETH_HLEN, len, proto, src, dst, partial && lead > 0);
    bt.lens[0] = lead + ETH_HLEN + len; bt.meta[0] = pod.ifindex;
  }
  bt.n = 1;
}

/** Runs `source`'s ingress stage and the forward stage on the batch; what each output got, chains joined. */
export function pass(r: Rig, source: Source): Sent[] {
  const { ctx, bt } = r;
  bt.clearOutputs();
  if (source === 'pod') { ingressPod(ctx, bt); forward(ctx, bt, FROM_POD); }
  else if (source === 'tun') { ingressTun(ctx, bt); forward(ctx, bt, FROM_TUN); }
  else { ingressVxlan(ctx, bt); forward(ctx, bt, FROM_VXLAN); }
  return sent(bt);
}

/** What each output of the batch holds, chains joined, as the egress stage would send it (udp6: the IPv6 overlay, to its address as dotted hex words). */
export function sent(bt: Batch): Sent[] {
  const out: Sent[] = [];
  const take = (name: Sent['out'], idx: Int32Array, n: number, to: (e: number) => number | string) => {
    let parts: Uint8Array[] = [];
    for (let k = 0; k < n; k++) {
      const e = idx[k];
      parts.push(bt.arena.slice(bt.offs[e], bt.offs[e] + bt.lens[e]));
      if (bt.more[e] === 0) {
        const bytes = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
        let o = 0;
        for (const p of parts) { bytes.set(p, o); o += p.length; }
        out.push({ out: name, to: to(e), bytes });
        parts = [];
      }
    }
  };
  take('tun', bt.tunIdx, bt.nTun, () => 0);
  take('pod', bt.podIdx, bt.nPod, (e) => bt.outIf[e] * (bt.podVnet[e] ? -1 : 1)); // negative: with a virtio_net_hdr
  take('udp', bt.udpIdx, bt.nUdp, (e) => bt.outDst[e]);
  take('udp6', bt.udp6Idx, bt.nUdp6, (e) => [...bt.outDst6.subarray(4 * e, 4 * e + 4)].map((w) => (w >>> 0).toString(16)).join('.'));
  return out;
}

/** A short, stable summary of what was sent, for comparing runs. */
export function digest(sent: Sent[]): string {
  const h = createHash('sha256');
  for (const s of sent) { h.update(`${s.out}:${s.to}:${s.bytes.length};`); h.update(s.bytes); }
  return `${sent.length}:${h.digest('hex').slice(0, 16)}`;
}
