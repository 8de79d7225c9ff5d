// Every source × next hop × offload state through the stages, in memory (no
// root): where each packet goes, in how many pieces, and (by a digest of every
// byte sent, kept in the snapshot) that a restructuring changes nothing.
import { describe, expect, test } from 'vitest';
import { rig, receive, pass, digest, graphCases, where, LEN, POD_A, POD_B, REMOTE_POD, GW, PEER, ip, type Dest, type Source } from './rig.js';

const DESTS: Record<Dest, string> = { 'local pod': POD_B.ip, 'remote pod': REMOTE_POD, host: GW, service: '10.96.0.10', outside: '8.8.8.8', 'no such pod': '10.244.1.99' };
const SRC: Record<Source, string> = { pod: POD_A.ip, tun: GW, vxlan: REMOTE_POD };
const cases = graphCases(['pod', 'tun', 'vxlan'] as const, 'vxlan', Object.keys(DESTS) as Dest[]);

describe('the packet graph, in memory', () => {
  test.each(cases)('%s → %s, %s, offloads %s', (source, dest, offload, offloads) => {
    const r = rig(offloads);
    receive(r, source, offload, SRC[source], DESTS[dest], LEN[offload]);
    const sent = pass(r, source);
    const want = where(source, 'vxlan', dest, 'udp');
    if (want.startsWith('drop_')) {
      expect(sent).toEqual([]);
      expect(r.counters()[want]).toBe(1);
      return;
    }
    expect(new Set(sent.map((s) => s.out))).toEqual(new Set([want]));
    // A super-packet leaves whole where the receiver takes a virtio_net_hdr (a local pod's vnet socket, TUN with
    // tunTso), and cut into MSS pieces elsewhere (the overlay, or no vnet); everything else is one packet.
    const mss = r.cfg.podMtu - 40, pieces = Math.ceil((LEN.gso - 40) / mss);
    const whole = want === 'pod' ? offloads : want === 'tun' ? offloads : false;
    expect(sent.length).toBe(offload === 'gso' && !whole ? pieces : 1);
    if (want === 'udp') for (const s of sent) expect(s.to).toBe(ip(PEER));
    if (want === 'pod') for (const s of sent) expect(Math.abs(s.to as number)).toBe(POD_B.ifindex);
    expect(digest(sent)).toMatchSnapshot();
  });
});
