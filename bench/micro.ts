// Micro benchmarks of the dataplane's hot code, one core, no system calls:
//   lpm4_lookups_per_s            100k random IPv4 prefixes (Internet-like length mix), lookups of
//                                 random addresses inside random prefixes of the table
//   lpm6_lookups_per_s            the same with 100k IPv6 prefixes (/32../64 inside 2000::/3)
//   vxlan_encap_decap_pps         64-packet batches of 64-byte IPv4/UDP packets through the real
//                                 stages: ingressTun + forward to a remote node (encapsulation),
//                                 then ingressVxlan + forward to a local pod (decapsulation,
//                                 inner UDP checksum verified); one packet = one encap + one decap.
//                                 The egress system calls are NOT included.
//   conntrack_ops_per_s           100k live flows in a 256k-slot table; 7 lookups : 1 upsert (refresh)
//   checksum_gbytes_per_s         csumAdd32 over 1500-byte packets (4-byte aligned, as the stages see them)
//   lpm4_bytes_per_100k_prefixes  size of that IPv4 table
//   heap_bytes_per_packet         heapUsed growth (gc before and after) over 10 million encap/decap packets
//                                 (2 million with --quick)
// Timing by benchmark.js; each timed call does a fixed amount of work (thousands of
// lookups, a few batches) so the harness's per-call overhead does not count.
// The setup* functions are exported for profiling (a script that calls one and loops
// under node --cpu-prof), not as an API.
import Benchmark from 'benchmark';
import os from 'node:os';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Lpm4Builder } from '../dataplane/tables/lpm4.js';
import { Lpm6Builder } from '../dataplane/tables/lpm6.js';
import { Conntrack } from '../dataplane/tables/conntrack.js';
import { csumAdd32, wordsOf, l4Checksum4 } from '../dataplane/packet/checksum.js';
import { writeIPv4Header } from '../dataplane/packet/ipv4.js';
import { writeUdpHeader } from '../dataplane/packet/udp.js';
import { IPPROTO_UDP } from '../dataplane/packet/l4.js';
import { Batch, HEADROOM } from '../dataplane/stages/batch.js';
import { StageContext } from '../dataplane/stages/context.js';
import { zeroVnet, VNET_HLEN } from '../dataplane/packet/virtio.js';
import { ingressTun } from '../dataplane/stages/ingress-tun.js';
import { ingressVxlan } from '../dataplane/stages/ingress-vxlan.js';
import { forward } from '../dataplane/stages/forward.js';
import { FROM_TUN, FROM_VXLAN } from '../dataplane/stages/graph.js';
import { defaultEngineConfig } from '../dataplane/engine/config.js';
import { compileFib, type LocalPod, type RemoteNode } from '../dataplane/tables/fib.js';
import { NCOUNTERS } from '../dataplane/stages/counters.js';
import { mulberry32 } from './prng.js';

export interface MicroOptions { json: boolean; quick?: boolean }

type Key =
  | 'lpm4_lookups_per_s' | 'lpm6_lookups_per_s' | 'vxlan_encap_decap_pps' | 'conntrack_ops_per_s'
  | 'checksum_gbytes_per_s' | 'lpm4_bytes_per_100k_prefixes' | 'heap_bytes_per_packet';

interface Target { min?: number; max?: number; unit: string; scale: number; digits: number }
const TARGETS: Record<Key, Target> = {
  lpm4_lookups_per_s: { min: 20e6, unit: 'M/s', scale: 1e6, digits: 1 },
  lpm6_lookups_per_s: { min: 5e6, unit: 'M/s', scale: 1e6, digits: 1 },
  vxlan_encap_decap_pps: { min: 5e6, unit: 'Mpps', scale: 1e6, digits: 2 },
  conntrack_ops_per_s: { min: 5e6, unit: 'M/s', scale: 1e6, digits: 1 },
  checksum_gbytes_per_s: { min: 2, unit: 'GB/s', scale: 1, digits: 2 },
  lpm4_bytes_per_100k_prefixes: { unit: 'MiB', scale: 1024 * 1024, digits: 2 },
  // Noise in heapUsed after a full gc is a few KiB; a real per-packet allocation is >= 16 bytes.
  heap_bytes_per_packet: { max: 0.01, unit: 'B', scale: 1, digits: 4 },
};

const PREFIXES = 100_000;
const LOOKUPS = 1 << 20; // pre-generated lookup keys (4 MiB for IPv4): beyond L2, like real traffic
const HEAP_PACKETS = 10_000_000;
const HEAP_PACKETS_QUICK = 2_000_000;

// Results go to a module variable so no loop is optimized away.
let sink = 0;


const highBits = (n: number) => (n <= 0 ? 0 : n >= 32 ? -1 : -1 << (32 - n));

// ---- LPM4 ---------------------------------------------------------------------------

/** Roughly the IPv4 Internet table's shape: mostly /24, then /22-/23, /16-/21, some longer and shorter. */
function v4Len(r: number): number {
  const x = r % 100;
  if (x < 55) return 24;
  if (x < 70) return 22 + (r >>> 8) % 2;
  if (x < 85) return 16 + (r >>> 8) % 6;
  if (x < 95) return 25 + (r >>> 8) % 8;
  return 8 + (r >>> 8) % 8;
}

export function setupLpm4() {
  const rnd = mulberry32(4);
  const b = new Lpm4Builder();
  const pfx = new Int32Array(PREFIXES), plen = new Uint8Array(PREFIXES);
  let n = 0;
  while (n < PREFIXES) {
    const len = v4Len(rnd());
    const p = rnd() & highBits(len);
    if (b.has(p, len)) continue;
    b.set(p, len, n + 1);
    pfx[n] = p; plen[n] = len; n++;
  }
  const table = b.build();
  const addrs = new Int32Array(LOOKUPS);
  for (let i = 0; i < LOOKUPS; i++) {
    const k = rnd() % PREFIXES;
    addrs[i] = pfx[k] | (rnd() & ~highBits(plen[k]));
  }
  for (let i = 0; i < LOOKUPS; i++) if (table.lookup(addrs[i]) === 0) throw new Error('lpm4 bench: an address inside a prefix found no route');
  return { table, addrs };
}

// ---- LPM6 ---------------------------------------------------------------------------

function v6Len(r: number): number {
  const x = r % 100;
  if (x < 5) return 32;
  if (x < 10) return 36 + 4 * ((r >>> 8) % 3); // 36, 40, 44
  if (x < 65) return 48;
  if (x < 75) return 56;
  return 64;
}

export function setupLpm6() {
  const rnd = mulberry32(6);
  const allocs = Array.from({ length: 4000 }, () => (0x20000000 | (rnd() & 0x1fffffff)) | 0); // /32s in 2000::/3
  const b = new Lpm6Builder();
  const pfx = new Int32Array(4 * PREFIXES), plen = new Uint8Array(PREFIXES);
  const w = new Int32Array(4);
  let n = 0;
  while (n < PREFIXES) {
    const len = v6Len(rnd());
    w[0] = allocs[rnd() % allocs.length];
    for (let i = 1; i < 4; i++) w[i] = rnd() & highBits(len - 32 * i);
    if (b.has(w, len)) continue;
    b.set(w, len, n + 1);
    pfx.set(w, 4 * n); plen[n] = len; n++;
  }
  const table = b.build();
  const addrs = new Int32Array(4 * LOOKUPS);
  for (let j = 0; j < LOOKUPS; j++) {
    const k = rnd() % PREFIXES;
    for (let i = 0; i < 4; i++) {
      const m = highBits(plen[k] - 32 * i);
      addrs[4 * j + i] = (pfx[4 * k + i] & m) | (rnd() & ~m);
    }
  }
  for (let j = 0; j < LOOKUPS; j++) {
    if (table.lookup(addrs[4 * j], addrs[4 * j + 1], addrs[4 * j + 2], addrs[4 * j + 3]) === 0) throw new Error('lpm6 bench: an address inside a prefix found no route');
  }
  return { table, addrs };
}

// ---- conntrack ----------------------------------------------------------------------

const CT_FLOWS = 100_000;
const CT_NOW = 1000, CT_TTL = 1e9;
const CT_OPS = 1 << 18; // length of the (cyclic) op stream

export function setupConntrack() {
  const rnd = mulberry32(7);
  const ct = Conntrack.create(1 << 18);
  const key = new Int32Array(5 * CT_FLOWS); // proto, src, dst, sport, dport
  for (let i = 0; i < CT_FLOWS; i++) {
    const k = 5 * i;
    key[k] = rnd() & 1 ? 6 : 17; key[k + 1] = (0x0af40000 | (rnd() & 0xffff)) | 0; key[k + 2] = rnd() | 0;
    key[k + 3] = 1024 + (rnd() % 64000); key[k + 4] = rnd() & 1 ? 443 : 1 + (rnd() % 65535);
    if (ct.upsert(key[k], key[k + 1], key[k + 2], key[k + 3], key[k + 4], 1, i, CT_NOW, CT_TTL) < 0) throw new Error('conntrack bench: table full');
  }
  // The op stream: 5-tuples of random flows, read sequentially (in the dataplane the
  // tuple comes from the packet just parsed, which is in cache; the table is not).
  const ops = new Int32Array(5 * CT_OPS);
  for (let p = 0; p < CT_OPS; p++) {
    const k = 5 * (rnd() % CT_FLOWS);
    for (let j = 0; j < 5; j++) ops[5 * p + j] = key[k + j];
  }
  for (let p = 0; p < 1000; p++) {
    const j = 5 * p;
    if (ct.lookup(ops[j], ops[j + 1], ops[j + 2], ops[j + 3], ops[j + 4], CT_NOW) < 0) throw new Error('conntrack bench: a live flow was not found');
  }
  return { ct, ops };
}

// ---- encap/decap through the stages ---------------------------------------------------

const PKT_LEN = 64; // IPv4 20 + UDP 8 + 36 payload
const HDR_WORDS = 7; // IPv4 + UDP headers, restored from templates before each pass
const REMOTES = 100, LOCAL_PODS = 30;

/** Copies the HDR_WORDS (7) header words of template `t` back into the packet at word `at`. */
function restore(w: Uint32Array, at: number, tpl: Uint32Array, t: number): void {
  w[at] = tpl[t]; w[at + 1] = tpl[t + 1]; w[at + 2] = tpl[t + 2]; w[at + 3] = tpl[t + 3];
  w[at + 4] = tpl[t + 4]; w[at + 5] = tpl[t + 5]; w[at + 6] = tpl[t + 6];
}

export function setupStages() {
  const ip = (a: number, b: number, c: number, d: number) => ((a << 24) | (b << 16) | (c << 8) | d) | 0;
  const cfg = defaultEngineConfig({ node: 'bench', underlayIp: '172.30.0.1', vtepMac: '02:00:00:00:01:01', workers: 1 });
  const ctx = new StageContext(cfg, { podTso: cfg.podTso, podGso: cfg.podGso, tunTso: cfg.tunTso, udpGso: cfg.udpGso, udpGro: cfg.udpGro, vnetSend: false }, new SharedArrayBuffer(8 * NCOUNTERS), 0);
  const remotes: RemoteNode[] = Array.from({ length: REMOTES }, (_, r) => ({
    name: `n${r}`, podCIDR: `10.244.${r + 2}.0/24`, underlayIP: `172.30.${(r + 2) >> 8}.${(r + 2) & 255}`, vtepMAC: `02:00:00:00:${((r + 2) >> 8).toString(16)}:${((r + 2) & 255).toString(16)}`,
  }));
  const pods: LocalPod[] = Array.from({ length: LOCAL_PODS }, (_, p) => ({ ip: `10.244.1.${p + 5}`, mac: `02:00:00:aa:00:${(p + 5).toString(16)}`, ifname: `veth${p}`, ifindex: p + 10 }));
  const fib = compileFib({ clusterCIDR: '10.244.0.0/16', podCIDR: '10.244.1.0/24', hostIPs: ['10.244.1.1', '172.30.0.1'], pods, remotes });
  ctx.setTables({ ...fib, gatewayIP: '10.244.1.1' });

  const slot = Math.ceil((cfg.podMtu + 256) / 1024) * 1024; // as the worker sizes it
  const bt = new Batch(cfg.batch, slot, 0, cfg.batch); // no GRO slots: decap works on the slots in place
  const b = bt.arena, w32 = wordsOf(b);
  const size = bt.slots;
  const tplEnc = new Uint32Array(size * HDR_WORDS), tplDec = new Uint32Array(size * HDR_WORDS);
  const senders = Int32Array.from({ length: size }, (_, i) => ip(172, 30, (i % REMOTES + 2) >> 8, (i % REMOTES + 2) & 255));
  const host = ip(10, 244, 1, 1);
  for (let i = 0; i < size; i++) {
    const l3 = bt.base[i] + HEADROOM, l4 = l3 + 20;
    for (let j = 28; j < PKT_LEN; j++) b[l3 + j] = (i * 11 + j) & 0xff;
    const remotePod = ip(10, 244, 2 + (i % REMOTES), 7 + (i % 5));
    const localPod = ip(10, 244, 1, 5 + (i % LOCAL_PODS));
    const sp = 40000 + i, dp = 5000 + (i % 7);
    // Encap input: what the node's stack writes into TUN (host → remote pod).
    writeIPv4Header(b, l3, PKT_LEN, i, 64, IPPROTO_UDP, host, remotePod, true);
    writeUdpHeader(b, l4, sp, dp, PKT_LEN - 20, 0);
    writeUdpHeader(b, l4, sp, dp, PKT_LEN - 20, l4Checksum4(b, l4, PKT_LEN - 20, host, remotePod, IPPROTO_UDP));
    for (let k = 0; k < HDR_WORDS; k++) tplEnc[i * HDR_WORDS + k] = w32[(l3 >> 2) + k];
    // Decap input: a remote pod's packet to a local pod, as the remote node sent it.
    writeIPv4Header(b, l3, PKT_LEN, i, 63, IPPROTO_UDP, remotePod, localPod, true);
    writeUdpHeader(b, l4, dp, sp, PKT_LEN - 20, 0);
    writeUdpHeader(b, l4, dp, sp, PKT_LEN - 20, l4Checksum4(b, l4, PKT_LEN - 20, remotePod, localPod, IPPROTO_UDP));
    for (let k = 0; k < HDR_WORDS; k++) tplDec[i * HDR_WORDS + k] = w32[(l3 >> 2) + k];
  }

  /** One batch: encapsulate `size` packets, then decapsulate them (as received) to local pods. */
  const cycle = (): void => {
    const base = bt.base, offs = bt.offs, lens = bt.lens;
    for (let i = 0; i < size; i++) {
      const l3 = base[i] + HEADROOM;
      restore(w32, l3 >> 2, tplEnc, i * HDR_WORDS);
      zeroVnet(b, l3 - VNET_HLEN); // the TUN queue's virtio_net_hdr (cfg.tunTso): a plain packet
      offs[i] = l3 - VNET_HLEN; lens[i] = PKT_LEN + VNET_HLEN; // as tunRead leaves them
    }
    bt.n = size;
    ingressTun(ctx, bt);
    forward(ctx, bt, FROM_TUN);
    if (bt.nUdp !== size) throw new Error(`encap: ${bt.nUdp} of ${size} packets queued for VXLAN`);
    bt.clearOutputs();
    // offs/lens now frame VXLAN header + inner Ethernet + IP, exactly where udpRecv puts a datagram.
    for (let i = 0; i < size; i++) {
      restore(w32, (base[i] + HEADROOM) >> 2, tplDec, i * HDR_WORDS);
      bt.meta[i] = senders[i]; // as udpRecv leaves it: the datagram's source, the remote node's underlay address
    }
    ingressVxlan(ctx, bt);
    forward(ctx, bt, FROM_VXLAN);
    if (bt.nPod !== size) throw new Error(`decap: ${bt.nPod} of ${size} packets queued for pods`);
    bt.clearOutputs();
  };
  cycle();
  return { cycle, size, bt, ctx, tplEnc, tplDec };
}

// ---- checksum -----------------------------------------------------------------------

function setupChecksum() {
  const rnd = mulberry32(1);
  const n = 64, slot = 2048, len = 1500;
  const b = new Uint8Array(new SharedArrayBuffer(n * slot));
  for (let i = 0; i < b.length; i++) b[i] = rnd() & 0xff;
  return { b, w: wordsOf(b), n, slot, len };
}

// ---- harness ------------------------------------------------------------------------

function getGc(): () => void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === 'function') return g;
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

interface Timed { perSecond: number; rme: number; best: number }

/** Runs `fn` (doing `work` units per call) under benchmark.js; returns units per second. */
function time(name: string, fn: () => void, work: number, quick: boolean): Timed {
  const b = new Benchmark(name, fn, { maxTime: quick ? 0.6 : 4, minSamples: 5, initCount: 1 });
  b.run();
  if (b.error) throw b.error instanceof Error ? b.error : new Error(String(b.error));
  // The figure is the mean (benchmark.js hz); `best` (fastest sample) is shown beside it
  // in the table because the machine may be shared.
  return { perSecond: b.hz * work, rme: b.stats.rme, best: work / Math.min(...b.stats.sample) };
}

export async function runMicro(opts: MicroOptions): Promise<Record<string, number>> {
  const quick = opts.quick ?? false;
  const say = (s: string) => { if (!opts.json) process.stderr.write(s + '\n'); };
  const out = {} as Record<Key, number>;
  const rme: Partial<Record<Key, number>> = {};
  const best: Partial<Record<Key, number>> = {};
  const notes: string[] = [];
  const t0 = performance.now();

  say('building tables...');
  let t = performance.now();
  const l4 = setupLpm4();
  notes.push(`lpm4: ${PREFIXES / 1000}k prefixes built in ${((performance.now() - t) / 1000).toFixed(2)} s`);
  t = performance.now();
  const l6 = setupLpm6();
  notes.push(`lpm6: ${PREFIXES / 1000}k prefixes built in ${((performance.now() - t) / 1000).toFixed(2)} s, ${(l6.table.bytes / 1048576).toFixed(2)} MiB`);
  const ct = setupConntrack();
  const st = setupStages();
  const ck = setupChecksum();
  out.lpm4_bytes_per_100k_prefixes = l4.table.bytes;

  const MASK = LOOKUPS - 1;
  const K = 4096;
  let p4 = 0;
  say('lpm4 lookups...');
  const r4 = time('lpm4', () => {
    const tb = l4.table, a = l4.addrs;
    let s = 0, p = p4;
    for (let i = 0; i < K; i++) { s += tb.lookup(a[p]); p = (p + 1) & MASK; }
    p4 = p; sink += s;
  }, K, quick);
  out.lpm4_lookups_per_s = r4.perSecond; rme.lpm4_lookups_per_s = r4.rme; best.lpm4_lookups_per_s = r4.best;

  let p6 = 0;
  say('lpm6 lookups...');
  const r6 = time('lpm6', () => {
    const tb = l6.table, a = l6.addrs;
    let s = 0, p = p6;
    for (let i = 0; i < K; i++) { const j = p << 2; s += tb.lookup(a[j], a[j + 1], a[j + 2], a[j + 3]); p = (p + 1) & MASK; }
    p6 = p; sink += s;
  }, K, quick);
  out.lpm6_lookups_per_s = r6.perSecond; rme.lpm6_lookups_per_s = r6.rme; best.lpm6_lookups_per_s = r6.best;

  const BATCHES = 4;
  say('vxlan encap/decap through the stages...');
  const rv = time('encap/decap', () => { for (let i = 0; i < BATCHES; i++) st.cycle(); }, BATCHES * st.size, quick);
  out.vxlan_encap_decap_pps = rv.perSecond; rme.vxlan_encap_decap_pps = rv.rme; best.vxlan_encap_decap_pps = rv.best;

  let pc = 0;
  say('conntrack...');
  const CT_MASK = CT_OPS - 1;
  const rc = time('conntrack', () => {
    const c = ct.ct, o = ct.ops;
    let s = 0, p = pc;
    for (let i = 0; i < K; i++) {
      const j = 5 * p;
      s += (p & 7) === 0
        ? c.upsert(o[j], o[j + 1], o[j + 2], o[j + 3], o[j + 4], 2, p, CT_NOW, CT_TTL)
        : c.lookup(o[j], o[j + 1], o[j + 2], o[j + 3], o[j + 4], CT_NOW);
      p = (p + 1) & CT_MASK;
    }
    pc = p; sink += s;
  }, K, quick);
  out.conntrack_ops_per_s = rc.perSecond; rme.conntrack_ops_per_s = rc.rme; best.conntrack_ops_per_s = rc.best;

  say('checksum...');
  const rk = time('checksum', () => {
    let s = 0;
    for (let i = 0; i < ck.n; i++) s += csumAdd32(ck.b, ck.w, i * ck.slot + HEADROOM, ck.len, 0);
    sink += s;
  }, ck.n * ck.len, quick);
  out.checksum_gbytes_per_s = rk.perSecond / 1e9; rme.checksum_gbytes_per_s = rk.rme; best.checksum_gbytes_per_s = rk.best / 1e9;

  const heapPackets = quick ? HEAP_PACKETS_QUICK : HEAP_PACKETS;
  say(`heap over ${heapPackets / 1e6} M packets...`);
  const gc = getGc();
  const cycles = Math.ceil(heapPackets / st.size);
  const runCycles = (n: number) => { for (let i = 0; i < n; i++) st.cycle(); };
  runCycles(20_000); // warm: the optimized code of this loop is a one-off allocation, not a per-packet one
  gc(); gc();
  const h0 = process.memoryUsage().heapUsed;
  t = performance.now();
  runCycles(cycles);
  const heapWall = performance.now() - t;
  gc(); gc();
  const h1 = process.memoryUsage().heapUsed;
  const packets = cycles * st.size;
  out.heap_bytes_per_packet = Math.max(0, h1 - h0) / packets;
  notes.push(`heap: ${h1 - h0} bytes of heapUsed growth over ${packets} packets (${(packets / heapWall / 1000).toFixed(2)} Mpps untimed by benchmark.js)`);
  notes.push(`total ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const result: Record<string, number> = {
    lpm4_lookups_per_s: out.lpm4_lookups_per_s,
    lpm6_lookups_per_s: out.lpm6_lookups_per_s,
    vxlan_encap_decap_pps: out.vxlan_encap_decap_pps,
    conntrack_ops_per_s: out.conntrack_ops_per_s,
    checksum_gbytes_per_s: out.checksum_gbytes_per_s,
    lpm4_bytes_per_100k_prefixes: out.lpm4_bytes_per_100k_prefixes,
    heap_bytes_per_packet: out.heap_bytes_per_packet,
  };
  if (opts.json) process.stdout.write(JSON.stringify(result) + '\n');
  else process.stdout.write(table(result, rme, best, notes, quick));
  return result;
}

function table(r: Record<string, number>, rme: Partial<Record<Key, number>>, best: Partial<Record<Key, number>>, notes: string[], quick: boolean): string {
  const rows: string[][] = [['figure', 'measured', '± rme', 'best sample', 'target', '']];
  for (const key of Object.keys(TARGETS) as Key[]) {
    const tg = TARGETS[key], v = r[key];
    const fmt = (x: number) => `${(x / tg.scale).toFixed(tg.digits)} ${tg.unit}`;
    const target = tg.min !== undefined ? `>= ${fmt(tg.min)}` : tg.max !== undefined ? `<= ${fmt(tg.max)}` : '(info)';
    const ok = (tg.min === undefined || v >= tg.min) && (tg.max === undefined || v <= tg.max);
    const mark = tg.min === undefined && tg.max === undefined ? '' : ok ? 'pass' : 'FAIL';
    rows.push([key, fmt(v), rme[key] !== undefined ? `${rme[key]!.toFixed(1)}%` : '', best[key] !== undefined ? fmt(best[key]!) : '', target, mark]);
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  const line = (row: string[]) => row.map((cell, c) => (c >= 1 && c <= 3 ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join('  ').trimEnd();
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  return [
    `twill micro benchmarks${quick ? ' (quick)' : ''}: one core, ${cpu}, node ${process.version}`,
    '',
    line(rows[0]),
    ...rows.slice(1).map(line),
    '',
    'vxlan_encap_decap_pps: one packet = ingressTun+forward (encap) then ingressVxlan+forward (decap);',
    'egress system calls are not included.',
    ...notes,
    '',
  ].join('\n');
}
