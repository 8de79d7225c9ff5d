// The stages on their own (no kernel), fed what a real cluster sends them:
// packets of translated flows (Services through kube-proxy,
// stages/translated.ts), a kernel VXLAN peer's tunnel super-packets, and
// VXLAN the overlay must not trust (stages/ingress-vxlan.ts, forward.ts).
import { describe, expect, it } from 'vitest';
import { C } from '../../dataplane/stages/counters.js';
import { HEADROOM, type Batch } from '../../dataplane/stages/batch.js';
import { ingressVxlan } from '../../dataplane/stages/ingress-vxlan.js';
import { ingressTun } from '../../dataplane/stages/ingress-tun.js';
import { ingressPod } from '../../dataplane/stages/ingress-pod.js';
import { forward } from '../../dataplane/stages/forward.js';
import { FROM_POD, FROM_TUN, FROM_VXLAN } from '../../dataplane/stages/graph.js';
import { ETH_HLEN, ETH_P_IP, IPPROTO_TCP, VXLAN_HLEN, parseMac, writeEthernet, writeIPv4Header, writeVxlan } from '../../dataplane/packet/index.js';
import { VNET_HLEN, VNET_GSO_TCPV4, VNET_F_NEEDS_CSUM, zeroVnet } from '../../dataplane/packet/virtio.js';
import { csumFold, pseudoHeaderSum4 } from '../../dataplane/packet/checksum.js';
import { ip, rig, POD_A, POD_B, REMOTE_POD } from '../stages/rig.js';

const LOCAL = POD_A.ip, LOCAL2 = POD_B.ip, REMOTE = REMOTE_POD, CLUSTER_IP = '10.96.0.10';
const POD_MAC = POD_A.mac, POD2_MAC = POD_B.mac;

/** One node's stages in memory (test/stages/rig.ts), with every offload on. */
const setup = () => rig(true);

/** A TCP packet of `len` bytes at l3 (payload zeros, checksum left as the pseudo-header sum: partial). */
function tcp(b: Uint8Array, l3: number, len: number, src: string, dst: string, sport: number, dport: number, flags = 0x10): void {
  b.fill(0, l3, l3 + len);
  writeIPv4Header(b, l3, len, 1, 64, IPPROTO_TCP, ip(src), ip(dst), true);
  const t = l3 + 20;
  b[t] = sport >> 8; b[t + 1] = sport & 0xff; b[t + 2] = dport >> 8; b[t + 3] = dport & 0xff;
  b[t + 12] = 5 << 4; b[t + 13] = flags;
  const ph = ~csumFold(pseudoHeaderSum4(ip(src), ip(dst), IPPROTO_TCP, len - 20)) & 0xffff;
  b[t + 16] = ph >> 8; b[t + 17] = ph & 0xff;
}

/** Entry 0 as a VXLAN datagram (from another node) carrying `len` bytes of inner TCP; in the first GRO slot, where udpRecv puts it. */
function vxlanIn(bt: Batch, len: number, src: string, dst: string, sport: number, dport: number): void {
  bt.aimGro();
  const off = bt.offs[0], b = bt.arena;
  writeVxlan(b, off, 1);
  writeEthernet(b, off + VXLAN_HLEN, parseMac('02:00:00:00:01:01'), parseMac('02:00:00:00:02:01'), ETH_P_IP);
  tcp(b, off + VXLAN_HLEN + ETH_HLEN, len, src, dst, sport, dport);
  bt.lens[0] = VXLAN_HLEN + ETH_HLEN + len;
  bt.meta[0] = ip('172.30.0.12');
  bt.n = 1;
}

/** Entry 0 as what the node's stack wrote into TUN (a virtio_net_hdr, then the IP packet). */
function tunIn(bt: Batch, src: string, dst: string, sport: number, dport: number, flags = 0x02): void {
  bt.aim(VNET_HLEN);
  const off = bt.offs[0];
  zeroVnet(bt.arena, off);
  tcp(bt.arena, off + VNET_HLEN, 60, src, dst, sport, dport, flags);
  bt.arena[off + VNET_HLEN + 20 + 16] = 0x12; // a finished checksum's worth of bytes: not partial (no flag)
  bt.lens[0] = VNET_HLEN + 60;
  bt.n = 1;
}

/** Entry 0 as a frame from the local pod LOCAL2 (virtio_net_hdr, Ethernet, IP) on its veth. */
function podIn(bt: Batch, src: string, dst: string, sport: number, dport: number): void {
  bt.aim(ETH_HLEN + VNET_HLEN);
  const off = bt.offs[0], b = bt.arena;
  zeroVnet(b, off);
  writeEthernet(b, off + VNET_HLEN, parseMac('ee:ee:ee:ee:ee:ee'), parseMac(POD2_MAC), ETH_P_IP);
  tcp(b, off + VNET_HLEN + ETH_HLEN, 60, src, dst, sport, dport);
  bt.lens[0] = VNET_HLEN + ETH_HLEN + 60;
  bt.meta[0] = 6;
  bt.n = 1;
}

describe('translated flows (Services through the node stack)', () => {
  it('a reply of a flow the stack translated goes back to the stack; other pod traffic goes straight to the pod', () => {
    const { ctx, bt } = setup();
    // The stack hands back a local pod's SYN to a remote endpoint (kube-proxy DNATed it): recorded, sent by VXLAN.
    tunIn(bt, LOCAL, REMOTE, 40000, 8080);
    ingressTun(ctx, bt); forward(ctx, bt, FROM_TUN);
    expect(bt.nUdp).toBe(1);
    expect(ctx.translated.count()).toBe(1);
    bt.clearOutputs();
    // The endpoint's reply over the overlay: to TUN, not the pod.
    vxlanIn(bt, 60, REMOTE, LOCAL, 8080, 40000);
    ingressVxlan(ctx, bt); forward(ctx, bt, FROM_VXLAN);
    expect([bt.nTun, bt.nPod]).toEqual([1, 0]);
    expect(ctx.counters[C.translated_replies]).toBe(1);
    bt.clearOutputs();
    // Another flow between the same pods (no Service): straight to the pod.
    vxlanIn(bt, 60, REMOTE, LOCAL, 8080, 40001);
    ingressVxlan(ctx, bt); forward(ctx, bt, FROM_VXLAN);
    expect([bt.nTun, bt.nPod]).toEqual([0, 1]);
    bt.clearOutputs();
    // A local endpoint's reply (pod LOCAL2 answering LOCAL through a Service) goes to TUN too.
    tunIn(bt, LOCAL, LOCAL2, 40002, 8080);
    ingressTun(ctx, bt); forward(ctx, bt, FROM_TUN);
    expect(bt.nPod).toBe(1);
    bt.clearOutputs();
    podIn(bt, LOCAL2, LOCAL, 8080, 40002);
    ingressPod(ctx, bt); forward(ctx, bt, FROM_POD);
    expect([bt.nTun, bt.nPod]).toEqual([1, 0]);
  });

  it('host traffic to pods (not a pod source) records nothing, and the Service range goes to the host', () => {
    const { ctx, bt } = setup();
    tunIn(bt, '10.244.1.1', REMOTE, 40000, 8080);
    ingressTun(ctx, bt); forward(ctx, bt, FROM_TUN);
    expect(bt.nUdp).toBe(1);
    expect(ctx.translated.count()).toBe(0);
    bt.clearOutputs();
    podIn(bt, LOCAL2, CLUSTER_IP, 40000, 53);
    ingressPod(ctx, bt); forward(ctx, bt, FROM_POD);
    expect([bt.nTun, bt.nPod, bt.nUdp]).toEqual([1, 0, 0]);
  });
});

describe('tunnel super-packets from a kernel VXLAN peer', () => {
  it('a 30 KB inner TCP packet reaches the local pod whole, as one GSO_TCPV4 frame with the MSS of the pod MTU', () => {
    const { cfg, ctx, bt } = setup();
    vxlanIn(bt, 30_000, REMOTE, LOCAL, 8080, 40000);
    ingressVxlan(ctx, bt); forward(ctx, bt, FROM_VXLAN);
    expect(ctx.counters[C.rx_vxlan_gso]).toBe(1);
    expect(bt.nPod).toBe(1);
    const e = bt.podIdx[0], b = bt.arena, v = bt.offs[e];
    expect(bt.podVnet[e]).toBe(1);
    expect(bt.lens[e]).toBe(VNET_HLEN + ETH_HLEN + 30_000);
    expect(b[v] & VNET_F_NEEDS_CSUM).toBe(VNET_F_NEEDS_CSUM);
    expect(b[v + 1]).toBe(VNET_GSO_TCPV4);
    expect(b[v + 4] | (b[v + 5] << 8)).toBe(cfg.podMtu - 40); // gso_size
    expect(b[v + 6] | (b[v + 7] << 8)).toBe(ETH_HLEN + 20); // csum_start
    // The frame behind it: gateway MAC → pod MAC, TTL decremented.
    expect([...b.subarray(v + VNET_HLEN, v + VNET_HLEN + 6)]).toEqual([...parseMac(POD_MAC)]);
    expect(b[v + VNET_HLEN + ETH_HLEN + 8]).toBe(63);
    // The GRO slot's headroom took the header: nothing before the slot was written.
    expect(v).toBeGreaterThanOrEqual(bt.groBase + HEADROOM - 64);
  });

  it('without a vnet send socket it is cut into MSS segments; a UDP one over the MTU is dropped as too big, with ICMP back', () => {
    const { cfg, ctx, bt } = setup();
    ctx.vnetSend = false;
    vxlanIn(bt, 10_000, REMOTE, LOCAL, 8080, 40000);
    ingressVxlan(ctx, bt); forward(ctx, bt, FROM_VXLAN);
    const mss = cfg.podMtu - 40, pieces = Math.ceil((10_000 - 40) / mss);
    let frames = 0;
    for (let k = 0; k < bt.nPod; k++) if (bt.more[bt.podIdx[k]] === 0) frames++;
    expect(frames).toBe(pieces);
    bt.clearOutputs();
    vxlanIn(bt, 10_000, REMOTE, LOCAL, 8080, 40000);
    const l3 = bt.offs[0] + VXLAN_HLEN + ETH_HLEN;
    bt.arena[l3 + 9] = 17; // UDP, with its length
    bt.arena[l3 + 24] = (10_000 - 20) >> 8; bt.arena[l3 + 25] = (10_000 - 20) & 0xff;
    ingressVxlan(ctx, bt); forward(ctx, bt, FROM_VXLAN);
    expect(ctx.counters[C.drop_too_big]).toBe(1);
    // DF was set: ICMP fragmentation-needed goes back to the sender's node through the overlay.
    expect(ctx.counters[C.icmp_frag_needed_sent]).toBe(1);
    expect([bt.nPod, bt.nUdp]).toEqual([0, 1]);
    const e = bt.udpIdx[0], icmp = bt.offs[e] + VXLAN_HLEN + ETH_HLEN;
    expect(bt.outDst[e]).toBe(ip('172.30.0.12'));
    expect(bt.arena[icmp + 9]).toBe(1); // ICMP
    expect(bt.arena[icmp + 20]).toBe(3); // destination unreachable
    expect(bt.arena[icmp + 21]).toBe(4); // fragmentation needed
    expect((bt.arena[icmp + 26] << 8) | bt.arena[icmp + 27]).toBe(cfg.podMtu); // next-hop MTU
    bt.clearOutputs();
    // The same to this node's host: the TUN device has the pods' MTU, so the same answer.
    vxlanIn(bt, 10_000, REMOTE, '10.244.1.1', 8080, 40000);
    bt.arena[l3 + 9] = 17; bt.arena[l3 + 24] = (10_000 - 20) >> 8; bt.arena[l3 + 25] = (10_000 - 20) & 0xff;
    ingressVxlan(ctx, bt); forward(ctx, bt, FROM_VXLAN);
    expect([bt.nTun, bt.nUdp]).toEqual([0, 1]);
    expect(ctx.counters[C.drop_too_big]).toBe(2);
  });
});

describe('overlay trust', () => {
  it('VXLAN from an address that is no node is dropped and counted', () => {
    const { ctx, bt } = setup();
    vxlanIn(bt, 60, REMOTE, LOCAL, 8080, 40000);
    bt.meta[0] = ip('172.30.0.50');
    ingressVxlan(ctx, bt); forward(ctx, bt, FROM_VXLAN);
    expect([bt.nPod, bt.nTun, bt.nUdp]).toEqual([0, 0, 0]);
    expect(ctx.counters[C.drop_unknown_vtep]).toBe(1);
  });

  it('a node\'s VXLAN whose inner source is not of that node is dropped; its own address and pods pass', () => {
    const { ctx, bt } = setup();
    for (const [src, ok] of [['10.244.3.9', false], ['10.244.1.9', false], ['8.8.8.8', false], ['10.244.2.1', true], ['172.30.0.12', true]] as const) {
      vxlanIn(bt, 60, src, LOCAL, 8080, 40000);
      ingressVxlan(ctx, bt); forward(ctx, bt, FROM_VXLAN);
      expect([src, bt.nPod]).toEqual([src, ok ? 1 : 0]);
      bt.clearOutputs();
    }
    expect(ctx.counters[C.drop_foreign_source]).toBe(3);
  });

  it('inner destinations outside the pod range (and multicast) from the overlay are dropped, not written to the host', () => {
    const { ctx, bt } = setup();
    for (const dst of ['1.1.1.1', '224.0.0.1', CLUSTER_IP]) {
      vxlanIn(bt, 60, REMOTE, dst, 8080, 40000);
      ingressVxlan(ctx, bt); forward(ctx, bt, FROM_VXLAN);
      expect(bt.nTun).toBe(0);
    }
    expect(ctx.counters[C.drop_overlay_dst]).toBe(3);
    vxlanIn(bt, 60, REMOTE, '10.244.1.1', 8080, 40000); // this node's gateway: the host, as before
    ingressVxlan(ctx, bt); forward(ctx, bt, FROM_VXLAN);
    expect(bt.nTun).toBe(1);
  });

  it('a pod\'s UDP to a node\'s VXLAN port is dropped, its own node\'s and another\'s; other ports pass', () => {
    const { ctx, bt } = setup();
    const udpFromPod = (dst: string, dport: number) => {
      podIn(bt, LOCAL2, dst, 40000, dport);
      const l3 = bt.offs[0] + VNET_HLEN + ETH_HLEN;
      bt.arena[l3 + 9] = 17; bt.arena[l3 + 24] = 0; bt.arena[l3 + 25] = 40; // UDP, length 40
      ingressPod(ctx, bt); forward(ctx, bt, FROM_POD);
      const n = bt.nTun; bt.clearOutputs(); return n;
    };
    expect(udpFromPod('172.30.0.12', 8472)).toBe(0);
    expect(udpFromPod('172.30.0.11', 8472)).toBe(0);
    expect(ctx.counters[C.drop_overlay_port]).toBe(2);
    expect(udpFromPod('172.30.0.12', 8473)).toBe(1);
    expect(udpFromPod('172.30.0.99', 8472)).toBe(1); // not a node
  });
});
