// The engine's worker pipeline end to end, inside two throwaway network
// namespaces (twt-eng-<random>, always deleted): N is the node (TUN twill0 with
// the pod gateway address, underlay 172.30.99.1), U a peer node's underlay
// (172.30.99.2) joined to N by a veth. An in-process Engine with 2 workers opens
// its queues inside N.
//   (i)  N's stack → twill0 → workers → VXLAN to 172.30.99.2:8472, read in U
//   (ii) VXLAN from U → workers → twill0 → a socket of N's stack
// Workers run the compiled JavaScript: `npx tsc -p tsconfig.json` first.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { native } from '../../dataplane/native/index.js';
import { Engine } from '../../dataplane/engine/engine.js';
import { defaultEngineConfig } from '../../dataplane/engine/config.js';
import { compileFib } from '../../dataplane/tables/fib.js';
import {
  ETH_HLEN, ETH_P_IP, F_DPORT, F_ETHTYPE, F_L4LEN, F_L4OFF, F_PROTO, F_SPORT, F_SRC4, F_DST4,
  IPPROTO_UDP, IPV4_HLEN, R_OK, UDP_HLEN, VXLAN_HLEN,
  formatMac, l4Checksum4, l4ChecksumVerify4, newFields, parseEthernet, parseIPv4, parseMac, parseVxlan,
  writeEthernet, writeIPv4Header, writeUdpHeader, writeVxlan,
} from '../../dataplane/packet/index.js';

const sh = (cmd: string, ...args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const ip4 = (s: string) => s.split('.').reduce((a, b) => ((a << 8) | Number(b)) >>> 0, 0) | 0;

const tag = randomBytes(3).toString('hex');
const N = `twt-eng-${tag}n`;
const U = `twt-eng-${tag}u`;
const nsPath = (n: string) => `/var/run/netns/${n}`;
const ipn = (n: string, ...args: string[]) => sh('ip', '-n', n, ...args);

const OUR_VTEP = '02:00:00:99:01:01';
const PEER_VTEP = '02:00:00:99:02:01';
const GW = '10.244.1.1';
const UL_N = '172.30.99.1', UL_U = '172.30.99.2';
const POD_U = '10.244.2.7';
const TOTAL = 2000;
const BATCH = 50;
const MIN_DELIVERED = Math.floor(TOTAL * 0.99); // paced, so loss should be 0; allow 1% for a busy machine

const created: string[] = [];
const fds: number[] = [];
let engine: Engine | undefined;

function cleanup(): void {
  for (const fd of fds.splice(0)) { try { native.close(fd); } catch { /* closed */ } }
  for (const n of created.splice(0)) { try { sh('ip', 'netns', 'del', n); } catch { /* gone */ } }
}

beforeAll(async () => {
  try {
    for (const n of [N, U]) {
      sh('ip', 'netns', 'add', n);
      created.push(n);
      ipn(n, 'link', 'set', 'lo', 'up');
      sh('ip', 'netns', 'exec', n, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
    }
    ipn(N, 'link', 'add', 'ul0', 'type', 'veth', 'peer', 'name', 'ul0', 'netns', U);
    ipn(N, 'addr', 'add', `${UL_N}/24`, 'dev', 'ul0');
    ipn(U, 'addr', 'add', `${UL_U}/24`, 'dev', 'ul0');
    ipn(N, 'link', 'set', 'ul0', 'up');
    ipn(U, 'link', 'set', 'ul0', 'up');
    ipn(N, 'tuntap', 'add', 'dev', 'twill0', 'mode', 'tun', 'multi_queue');
    ipn(N, 'link', 'set', 'twill0', 'mtu', '1450');
    ipn(N, 'addr', 'add', `${GW}/32`, 'dev', 'twill0');
    ipn(N, 'link', 'set', 'twill0', 'up'); // up before the route: the kernel refuses routes via a down device
    ipn(N, 'route', 'add', '10.244.0.0/16', 'dev', 'twill0', 'src', GW);

    engine = new Engine(
      defaultEngineConfig({ node: 'n', underlayIp: UL_N, vtepMac: OUR_VTEP, netns: nsPath(N), workers: 2 }),
      pino({ level: 'silent' }),
    );
    const fib = compileFib({
      clusterCIDR: '10.244.0.0/16', podCIDR: '10.244.1.0/24', hostIPs: [GW, UL_N], pods: [],
      remotes: [{ name: 'u', podCIDR: '10.244.2.0/24', underlayIP: UL_U, vtepMAC: PEER_VTEP }],
    });
    await engine.start({ ...fib, gatewayIP: GW });
  } catch (e) {
    await engine?.stop().catch(() => {});
    engine = undefined;
    cleanup();
    throw e;
  }
});

afterAll(async () => {
  try {
    await engine?.stop();
  } finally {
    cleanup();
  }
});

const SLOT = 2048;
function arena(nslots: number) {
  const a = new Uint8Array(new SharedArrayBuffer(nslots * SLOT));
  const offs = Int32Array.from({ length: nslots }, (_, i) => i * SLOT);
  return { a, offs, lens: new Int32Array(nslots), meta: new Int32Array(nslots), src: new Int32Array(nslots), idx: Int32Array.from({ length: nslots }, (_, i) => i) };
}
function open(fd: number): number { fds.push(fd); return fd; }

/** Payload of datagram `seq`: its number, then bytes derived from it; length varies. */
function payloadLen(seq: number): number { return 16 + ((seq * 37) % 900); }
function writePayload(b: Uint8Array, off: number, seq: number): number {
  const n = payloadLen(seq);
  b[off] = seq >>> 24; b[off + 1] = (seq >>> 16) & 0xff; b[off + 2] = (seq >>> 8) & 0xff; b[off + 3] = seq & 0xff;
  for (let j = 4; j < n; j++) b[off + j] = (seq * 7 + j * 13) & 0xff;
  return n;
}
/** The seq number if b[off, off+len) is exactly payload `seq`, else -1. */
function checkPayload(b: Uint8Array, off: number, len: number): number {
  const seq = ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
  if (seq >= TOTAL || len !== payloadLen(seq)) return -1;
  for (let j = 4; j < len; j++) if (b[off + j] !== ((seq * 7 + j * 13) & 0xff)) return -1;
  return seq;
}

/**
 * Sends TOTAL datagrams in batches of BATCH with `send`, and after each batch
 * reads `rx` (with `onDatagram` for each one) until it has caught up or 300 ms
 * pass without progress. Pacing keeps the TUN and socket queues from overflowing.
 */
function pump(send: (first: number, count: number) => number, rx: number, onDatagram: (b: Uint8Array, off: number, len: number, src: number) => void): { sent: number; received: number } {
  const r = arena(256);
  const ready = new Int32Array(1);
  let sent = 0, received = 0;
  const drain = (untilCount: number, quietMs: number) => {
    let last = Date.now();
    while (received < untilCount && Date.now() - last < quietMs) {
      if (native.poll(Int32Array.of(rx), 1, ready, 20) === 0) continue;
      const n = native.udpRecv(rx, r.a, r.offs, r.lens, r.src, r.meta, 256, SLOT);
      for (let k = 0; k < n; k++) onDatagram(r.a, r.offs[k], r.lens[k], r.src[k]);
      received += n;
      if (n > 0) last = Date.now();
    }
  };
  for (let first = 0; first < TOTAL; first += BATCH) {
    const count = Math.min(BATCH, TOTAL - first);
    let done = 0;
    for (let tries = 0; done < count && tries < 100; tries++) {
      const k = send(first + done, count - done);
      done += k;
      if (done < count) drain(received + 1, 5); // socket buffer full: let the other side move
    }
    sent += done;
    drain(sent, 300);
  }
  drain(sent, 500);
  return { sent, received };
}

describe('engine worker pipeline in a network namespace', () => {
  it('(i) TUN → workers → VXLAN: N\'s datagrams to a remote pod arrive in U encapsulated', () => {
    const rx = open(native.udpOpenIn(nsPath(U), UL_U, 8472, {}));
    const tx = open(native.udpOpenIn(nsPath(N), GW, 0, {}));
    const s = arena(BATCH);
    const dst = new Int32Array(BATCH).fill(ip4(POD_U));
    const dport = new Int32Array(BATCH).fill(9000);
    const f = newFields();
    const seen = new Uint8Array(TOTAL);
    let bad = 0, dup = 0, firstBad = '';
    const ourMac = parseMac(OUR_VTEP);

    const { sent, received } = pump(
      (first, count) => {
        for (let k = 0; k < count; k++) s.lens[k] = writePayload(s.a, s.offs[k], first + k);
        return native.udpSend(tx, s.a, s.offs, s.lens, s.idx, count, dst, dport);
      },
      rx,
      (b, off, len, src) => {
        const why = ((): string => {
          if (src !== ip4(UL_N)) return 'outer source';
          if (parseVxlan(b, off, len) !== 1) return 'VNI';
          const eth = off + VXLAN_HLEN;
          if (parseEthernet(b, eth, len - VXLAN_HLEN, f) !== R_OK || f[F_ETHTYPE] !== ETH_P_IP) return 'inner Ethernet';
          if (formatMac(b, eth) !== PEER_VTEP) return `inner dst MAC ${formatMac(b, eth)}`;
          if (formatMac(b, eth + 6) !== formatMac(ourMac, 0)) return `inner src MAC ${formatMac(b, eth + 6)}`;
          const l3 = eth + ETH_HLEN;
          if (parseIPv4(b, l3, off + len - l3, f, true) !== R_OK) return 'inner IPv4';
          if (f[F_SRC4] !== ip4(GW) || f[F_DST4] !== ip4(POD_U) || f[F_PROTO] !== IPPROTO_UDP || f[F_DPORT] !== 9000) return 'inner addresses/ports';
          const l4 = f[F_L4OFF], l4len = f[F_L4LEN];
          if (!l4ChecksumVerify4(b, l4, l4len, f[F_SRC4], f[F_DST4], IPPROTO_UDP)) return 'inner UDP checksum';
          const seq = checkPayload(b, l4 + UDP_HLEN, l4len - UDP_HLEN);
          if (seq < 0) return 'payload';
          if (seen[seq]++) dup++;
          return '';
        })();
        if (why) { bad++; firstBad ||= why; }
      },
    );
    const distinct = seen.reduce((n, v) => n + (v ? 1 : 0), 0);
    console.log(`(i) TUN → VXLAN: sent ${sent}, received ${received} (${distinct} distinct, ${bad} bad, ${dup} duplicates)`);
    expect(sent).toBe(TOTAL);
    expect(bad, `first bad datagram: ${firstBad}`).toBe(0);
    expect(dup).toBe(0);
    expect(distinct).toBeGreaterThanOrEqual(MIN_DELIVERED);
  });

  it('(ii) VXLAN → workers → TUN: frames from U reach a socket of N\'s stack', () => {
    const port = 20000 + Math.floor(Math.random() * 9000);
    const rx = open(native.udpOpenIn(nsPath(N), GW, port, {}));
    const tx = open(native.udpOpenIn(nsPath(U), UL_U, 0, {}));
    const s = arena(BATCH);
    const dst = new Int32Array(BATCH).fill(ip4(UL_N));
    const dport = new Int32Array(BATCH).fill(8472);
    const src = ip4('10.244.2.9'), gw = ip4(GW);
    const ourMac = parseMac(OUR_VTEP), peerMac = parseMac(PEER_VTEP);
    const seen = new Uint8Array(TOTAL);
    let bad = 0, dup = 0;

    const { sent, received } = pump(
      (first, count) => {
        for (let k = 0; k < count; k++) {
          const o = s.offs[k];
          writeVxlan(s.a, o, 1);
          writeEthernet(s.a, o + VXLAN_HLEN, ourMac, peerMac, ETH_P_IP);
          const l3 = o + VXLAN_HLEN + ETH_HLEN, l4 = l3 + IPV4_HLEN;
          const plen = writePayload(s.a, l4 + UDP_HLEN, first + k);
          const ulen = UDP_HLEN + plen;
          writeIPv4Header(s.a, l3, IPV4_HLEN + ulen, (first + k) & 0xffff, 63, IPPROTO_UDP, src, gw, true);
          writeUdpHeader(s.a, l4, 9000, port, ulen, 0);
          writeUdpHeader(s.a, l4, 9000, port, ulen, l4Checksum4(s.a, l4, ulen, src, gw, IPPROTO_UDP));
          s.lens[k] = VXLAN_HLEN + ETH_HLEN + IPV4_HLEN + ulen;
        }
        return native.udpSend(tx, s.a, s.offs, s.lens, s.idx, count, dst, dport);
      },
      rx,
      (b, off, len, from) => {
        const seq = from === src ? checkPayload(b, off, len) : -1;
        if (seq < 0) bad++;
        else if (seen[seq]++) dup++;
      },
    );
    const distinct = seen.reduce((n, v) => n + (v ? 1 : 0), 0);
    console.log(`(ii) VXLAN → TUN: sent ${sent}, received ${received} (${distinct} distinct, ${bad} bad, ${dup} duplicates)`);
    expect(sent).toBe(TOTAL);
    expect(bad).toBe(0);
    expect(dup).toBe(0);
    expect(distinct).toBeGreaterThanOrEqual(MIN_DELIVERED);
  });

  it('counters moved accordingly', async () => {
    await new Promise((r) => setTimeout(r, 100)); // a worker adds its tx counts after the send returns
    const c = engine!.counters();
    console.log('engine counters:', JSON.stringify(Object.fromEntries(Object.entries(c).filter(([, v]) => v !== 0))));
    // (i): every datagram N's stack sent into twill0 was read, encapsulated and sent.
    expect(c.rx_tun).toBeGreaterThanOrEqual(MIN_DELIVERED);
    expect(c.tx_vxlan).toBeGreaterThanOrEqual(MIN_DELIVERED);
    expect(c.tx_vxlan).toBeLessThanOrEqual(c.rx_tun);
    // (ii): every frame from U was received, decapsulated and written to twill0.
    expect(c.rx_vxlan).toBeGreaterThanOrEqual(MIN_DELIVERED);
    expect(c.rx_vxlan).toBeLessThanOrEqual(TOTAL);
    expect(c.tx_tun).toBeGreaterThanOrEqual(MIN_DELIVERED);
    expect(c.tx_tun).toBeLessThanOrEqual(c.rx_vxlan);
    expect(c.rx_pod + c.tx_pod).toBe(0);
    expect(c.drop_malformed + c.drop_truncated + c.drop_bad_vni + c.drop_no_route + c.drop_hairpin + c.tx_errors).toBe(0);
  });
});
