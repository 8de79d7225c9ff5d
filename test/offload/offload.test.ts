// Pod, TUN and overlay offloads (engine/config.ts podTso, podGso, tunTso, udpGso, udpGro) end to end, each on and off:
// TCP streams pod → pod across nodes (TSO super-frames cut into VXLAN
// segments, overlay TCP coalesced into GSO frames), pod → pod on one node
// (super-frames passed on with their virtio_net_hdr), pod ↔ host (TUN: the
// host's TSO super-packets read, pods' super-frames and coalesced overlay TCP
// written whole), on one node and across the overlay, arrive
// byte-identical (sha256) with loss and duplication on the underlay; and a
// capture of the underlay shows only valid VXLAN within the MTU with valid
// inner TCP checksums.
//
// Impairment: this kernel has no sch_netem (no qdiscs at all but the
// defaults), so loss and duplication come from nftables in the lab's underlay
// namespace (netdev family, ingress of the nodes' bridge ports: numgen random drop and dup). nftables
// cannot delay, so reordering is only what loss and retransmission cause.
// Everything happens inside the lab's namespaces ('o' + 4 hex) and is torn
// down with the lab, also on failure.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { labUp, labDown } from '../../lab/lab.js';
import type { LabState } from '../../lab/state.js';
import { counters, sh, underlayCapture } from '../helpers/lab.js';

const STREAM = path.join(path.dirname(fileURLToPath(import.meta.url)), 'stream.mjs');
const NODE = process.execPath;

function run(ns: string, args: string[], timeoutMs: number): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const p = spawn('ip', ['netns', 'exec', ns, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => { out += String(d); });
    p.stderr.on('data', (d) => { out += String(d); });
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (code) => { clearTimeout(t); resolve({ code: code ?? -1, out }); });
  });
}

/** Streams `mb` MB from fromNs to toIp:port (a server in toNs); returns both ends' "<sha256> <bytes>". */
async function transfer(fromNs: string, toNs: string, toIp: string, mb: number, port: number): Promise<{ sent: string; got: string }> {
  const srv = spawn('ip', ['netns', 'exec', toNs, NODE, STREAM, 'serve', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let sout = '';
  srv.stdout.on('data', (d) => { sout += String(d); });
  srv.stderr.on('data', (d) => { sout += String(d); });
  const done = new Promise<void>((r) => srv.on('close', () => r()));
  try {
    const deadline = Date.now() + 5000;
    while (!sout.includes('ready')) {
      if (Date.now() > deadline) throw new Error(`server did not start: ${sout}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const c = await run(fromNs, [NODE, STREAM, 'send', toIp, String(port), String(mb)], 120_000);
    const t = setTimeout(() => srv.kill('SIGKILL'), 10_000);
    await done;
    clearTimeout(t);
    const line = (s: string) => s.split('\n').map((l) => l.trim()).find((l) => /^[0-9a-f]{64} \d+$/.test(l)) ?? `none: ${s}`;
    return { sent: line(c.out), got: line(sout) };
  } finally {
    if (srv.exitCode === null) srv.kill('SIGKILL');
  }
}

const CONFIGS = [
  { podTso: true, podGso: true, tunTso: true },
  { podTso: false, podGso: true, tunTso: true },
  { podTso: true, podGso: false, tunTso: true },
  { podTso: false, podGso: false, tunTso: true },
  { podTso: true, podGso: true, tunTso: false },
  { podTso: true, podGso: true, tunTso: true, udpGso: false, udpGro: false },
] as { podTso: boolean; podGso: boolean; tunTso: boolean; udpGso?: boolean; udpGro?: boolean }[];

describe.each(CONFIGS)('offloads podTso=$podTso podGso=$podGso tunTso=$tunTso udpGso=$udpGso udpGro=$udpGro', (off) => {
  const name = `o${randomBytes(2).toString('hex')}`;
  let s: LabState;
  const pod = (n: string) => s.pods.find((p) => p.name === n)!;
  const node = (n: string) => s.nodes.find((x) => x.name === n)!;

  beforeAll(async () => {
    s = await labUp({ name, nodes: 2, podsPerNode: 2, engine: off });
  });
  afterAll(async () => {
    await labDown(name);
  });

  test('the pods\' TX offload follows the setting', () => {
    const r = sh(pod('node1-p1').netns, ['ethtool', '-k', 'eth0']);
    expect(r.out).toMatch(off.podTso ? /tx-checksumming: on/ : /tx-checksumming: off/);
  });

  test('200 MB pod → pod across nodes, 0.5% loss and 0.3% duplication on the underlay: byte-identical', async () => {
    const u = s.underlayNs;
    const rules = `table netdev twtimpair {
  chain from1 {
    type filter hook ingress device "u-node1" priority 0; policy accept;
    udp dport 8472 numgen random mod 1000 < 5 counter drop
    udp dport 8472 numgen random mod 1000 < 3 counter dup to "u-node2"
  }
  chain from2 {
    type filter hook ingress device "u-node2" priority 0; policy accept;
    udp dport 8472 numgen random mod 1000 < 5 counter drop
  }
}`;
    const add = spawnSync('ip', ['netns', 'exec', u, 'nft', '-f', '-'], { input: rules, encoding: 'utf8' });
    expect(add.status, add.stderr).toBe(0);
    try {
      const before = await counters(node('node2'));
      const r = await transfer(pod('node1-p1').netns, pod('node2-p1').netns, pod('node2-p1').ip, 200, 7001);
      expect(r.got).toBe(r.sent);
      expect(r.sent).toMatch(/ 209715200$/);
      const after = await counters(node('node2'));
      const n1 = await counters(node('node1'));
      if (off.podGso) expect(after.coalesced_segments - before.coalesced_segments).toBeGreaterThan(0);
      if (off.podTso) expect(n1.tx_segments).toBeGreaterThan(0);
      const list = sh(u, ['nft', 'list', 'table', 'netdev', 'twtimpair']).out;
      const drops = /counter packets (\d+) bytes \d+ drop/.exec(list);
      expect(Number(drops?.[1] ?? 0), list).toBeGreaterThan(0); // the underlay did lose packets
    } finally {
      sh(u, ['nft', 'delete', 'table', 'netdev', 'twtimpair']);
    }
  }, 120_000);

  test('100 MB pod → pod on one node: byte-identical', async () => {
    const r = await transfer(pod('node1-p1').netns, pod('node1-p2').netns, pod('node1-p2').ip, 100, 7002);
    expect(r.got).toBe(r.sent);
    expect(r.sent).toMatch(/ 104857600$/);
  }, 60_000);

  test('50 MB pod → its node\'s host and host → pod (TUN): byte-identical', async () => {
    const n1 = node('node1');
    const up = await transfer(pod('node1-p1').netns, n1.netns, n1.underlayIP, 50, 7003);
    expect(up.got).toBe(up.sent);
    expect(up.sent).toMatch(/ 52428800$/);
    const down = await transfer(n1.netns, pod('node1-p2').netns, pod('node1-p2').ip, 50, 7004);
    expect(down.got).toBe(down.sent);
  }, 60_000);

  test('50 MB host → pod and pod → host across the overlay (TUN at the far end): byte-identical; TUN offloads used when on', async () => {
    const n1 = node('node1'), n2 = node('node2');
    const b1 = await counters(n1), b2 = await counters(n2);
    const down = await transfer(n1.netns, pod('node2-p1').netns, pod('node2-p1').ip, 50, 7006);
    expect(down.got).toBe(down.sent);
    expect(down.sent).toMatch(/ 52428800$/);
    const up = await transfer(pod('node1-p1').netns, n2.netns, n2.podCIDR.replace(/0\/24$/, '1'), 50, 7007); // node2's gateway address, on its TUN
    expect(up.got).toBe(up.sent);
    expect(up.sent).toMatch(/ 52428800$/);
    const a1 = await counters(n1), a2 = await counters(n2);
    if (off.tunTso) {
      expect(a1.rx_tun_gso - b1.rx_tun_gso).toBeGreaterThan(0); // node1's stack handed over TSO super-packets
      expect(a2.tx_tun_gso - b2.tx_tun_gso).toBeGreaterThan(0); // node2 wrote coalesced overlay TCP to its stack whole
    } else {
      expect(a1.rx_tun_gso + a2.tx_tun_gso).toBe(0);
    }
  }, 60_000);

    test('the underlay carries only valid VXLAN within the MTU, inner TCP checksums valid', async () => {
    // veth hands UDP_SEGMENT sends on unsplit; with UDP segmentation off on
    // node1's eth0 the kernel cuts them before the wire, so what u-node1
    // receives is what a NIC would put on the wire.
    const n1 = node('node1');
    expect(sh(n1.netns, ['ethtool', '-K', 'eth0', 'tx-udp-segmentation', 'off']).code).toBe(0);
    const cap = underlayCapture(s.underlayNs, 'u-node1', 'udp port 8472', 3000);
    try {
      await cap.started();
      const r = await transfer(pod('node1-p1').netns, pod('node2-p1').netns, pod('node2-p1').ip, 30, 7005);
      expect(r.got).toBe(r.sent);
      await cap.stop(3000);
      const fields = spawnSync('tshark', ['-r', cap.file, '-o', 'tcp.check_checksum:TRUE', '-d', 'udp.port==8472,vxlan', '-T', 'fields', '-E', 'separator=|', '-E', 'aggregator=;',
        '-e', 'frame.len', '-e', 'ip.len', '-e', 'vxlan.vni', '-e', 'tcp.checksum.status', '-e', '_ws.malformed', '-e', '_ws.expert.severity'], { encoding: 'utf8', maxBuffer: 64 << 20 });
      expect(fields.status, fields.stderr).toBe(0);
      const rows = fields.stdout.trim().split('\n').filter(Boolean).map((l) => l.split('|'));
      expect(rows.length).toBeGreaterThan(1000);
      let tcp = 0;
      for (const row of rows) {
        const [flen, iplens, vni, ck, malformed] = row;
        expect(Number(flen), row.join('|')).toBeLessThanOrEqual(1514);
        expect(Number(iplens.split(';')[0]), row.join('|')).toBeLessThanOrEqual(1500);
        expect(vni, row.join('|')).toBe('1');
        expect(malformed ?? '', row.join('|')).toBe('');
        if (ck) { expect(ck, row.join('|')).toBe('1'); tcp++; } // 1 = good (0 bad, 2 unverified)
      }
      expect(tcp).toBeGreaterThan(1000);
    } finally {
      cap.cleanup();
      sh(n1.netns, ['ethtool', '-K', 'eth0', 'tx-udp-segmentation', 'on']);
    }
  }, 60_000);
});
