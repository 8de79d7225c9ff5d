// The forwarding information base: an IPv4 and an IPv6 LPM table whose values
// index one next-hop array, an ifindex → pod map for anti-spoofing, and the
// peers tables (the other nodes' VTEPs, one per underlay family: who may send us
// VXLAN, and which inner sources each may carry). Compiled on the main thread
// into fresh SharedArrayBuffers; workers only read it.
//
// IPv6 follows flannel's dual-stack vxlan backend: a node's IPv6 pod range is
// reached by VXLAN over the IPv6 underlay, at its IPv6 VTEP (its own MAC), so a
// remote node has one next-hop record per family. A local pod has one record
// for both: NH_IP holds its IPv4 address, NH_IP6 its IPv6 one (anti-spoofing).
import { Lpm4Builder } from './lpm4.js';
import { Lpm6Builder } from './lpm6.js';
import { parseIPv4Address, parseIPv4Cidr } from '../../lib/ipv4.js';
import { maskWords, parseIPv6Address, parseIPv6Cidr } from '../../lib/ipv6.js';
import { parseMac } from '../packet/ethernet.js';

export const NH_HOST = 1; // this node's own addresses: hand to the node's stack through TUN
export const NH_DROP = 2; // inside a pod range but no such pod / subnet
export const NH_LOCAL = 3; // a pod on this node: frame out of its veth
export const NH_REMOTE = 4; // another node: VXLAN to its underlay address
// The Service range: to the node's stack as NH_HOST, where kube-proxy translates
// it; a pod's egress policy is judged after that (stages/translated.ts, policy.ts).
export const NH_SERVICE = 5;
// Everything outside the cluster: to the node's stack (masqueraded there), as
// NH_HOST for pods and the host, but never from the overlay.
export const NH_OUTSIDE = 6;

// Next-hop record layout (Int32 words). NH_IP: a pod's IPv4 address, or a remote
// node's IPv4 underlay address; NH_IP6..+3: a pod's IPv6 address, or a remote
// node's IPv6 underlay address (its IPv6 record).
export const NH_KIND = 0, NH_IFINDEX = 1, NH_IP = 2, NH_MAC_HI = 3, NH_MAC_LO = 4, NH_IP6 = 8;
export const NH_STRIDE = 16;
const ID_HOST = 1, ID_DROP = 2, ID_SERVICE = 3, ID_OUTSIDE = 4;

export interface LocalPod { ip: string; ip6?: string; mac: string; ifname: string; ifindex: number }
/** Another node; its IPv6 fields (all three) make it an IPv6 peer (agent/sources/file.ts NodeRecord). */
export interface RemoteNode { name: string; podCIDR: string; underlayIP: string; vtepMAC: string; podCIDR6?: string; underlayIP6?: string; vtepMAC6?: string }
export interface FibInput {
  clusterCIDR: string; // '' in an IPv6-only cluster
  podCIDR: string; // this node's; '' when it has no IPv4 pods (IPv6-only)
  hostIPs: string[]; // addresses of this node's own stack (gateway addresses on TUN, underlay), either family
  serviceCIDR?: string; // ClusterIPs (kube-proxy's --service-cluster-ip-range)
  // IPv6, when the cluster has it: the same, for the other family
  clusterCIDR6?: string;
  podCIDR6?: string;
  serviceCIDR6?: string;
  pods: LocalPod[];
  remotes: RemoteNode[];
}

export interface FibTables {
  route4: SharedArrayBuffer;
  route6: SharedArrayBuffer;
  nexthops: SharedArrayBuffer;
  ifmap: SharedArrayBuffer; // Int32Array: ifindex → next-hop id of the pod behind it
  ports: { ifname: string; ifindex: number }[]; // veths the workers should read
  peers: SharedArrayBuffer; // Int32Array: count, then (underlay IP, pod prefix, pod mask) per peer, by underlay IP as unsigned
  podPrefix: number; // this node's pod CIDR as (address & podMask) === podPrefix, int32
  podMask: number;
  peers6: SharedArrayBuffer; // Int32Array: count, then (underlay IPv6, pod prefix, pod mask: 4 words each) per peer, by underlay address
  podPrefix6: number[]; // this node's IPv6 pod CIDR, 4 words each (mask all 0: none)
  podMask6: number[];
}

export const PEER_STRIDE = 3;
export const PEER6_STRIDE = 12;

/** The peer record index (0..count-1) whose underlay address is `ip`, or -1: a binary search. */
export function findPeer(peers: Int32Array, ip: number): number {
  const u = ip >>> 0;
  let lo = 0, hi = peers[0] - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1, v = peers[1 + mid * PEER_STRIDE] >>> 0;
    if (v === u) return mid;
    if (v < u) lo = mid + 1; else hi = mid - 1;
  }
  return -1;
}

/** Whether peer k may send an inner packet from `src`: one of its pods' addresses, or the node itself. */
export function peerOwns(peers: Int32Array, k: number, src: number): boolean {
  const at = 1 + k * PEER_STRIDE;
  return (src & peers[at + 2]) === peers[at + 1] || src === peers[at];
}

/** The IPv6 peer record index whose underlay address is a[at..at+3], or -1: a binary search over unsigned words. */
export function findPeer6(peers: Int32Array, a: Int32Array, at: number): number {
  let lo = 0, hi = peers[0] - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1, r = 1 + mid * PEER6_STRIDE;
    let c = 0;
    for (let k = 0; k < 4; k++) {
      const v = peers[r + k] >>> 0, u = a[at + k] >>> 0;
      if (v !== u) { c = v < u ? -1 : 1; break; }
    }
    if (c === 0) return mid;
    if (c < 0) lo = mid + 1; else hi = mid - 1;
  }
  return -1;
}

/** Whether IPv6 peer k may send an inner packet from s[at..at+3]: an address of its pod range, or its own underlay address. */
export function peerOwns6(peers: Int32Array, k: number, s: Int32Array, at: number): boolean {
  const r = 1 + k * PEER6_STRIDE;
  if ((s[at] & peers[r + 8]) === peers[r + 4] && (s[at + 1] & peers[r + 9]) === peers[r + 5] &&
    (s[at + 2] & peers[r + 10]) === peers[r + 6] && (s[at + 3] & peers[r + 11]) === peers[r + 7]) return true;
  return s[at] === peers[r] && s[at + 1] === peers[r + 1] && s[at + 2] === peers[r + 2] && s[at + 3] === peers[r + 3];
}

/** Whether a[at..at+3] lies in the range prefix/mask (4 words each). */
export function inRange6(a: Int32Array, at: number, prefix: Int32Array, mask: Int32Array): boolean {
  return (a[at] & mask[0]) === prefix[0] && (a[at + 1] & mask[1]) === prefix[1] && (a[at + 2] & mask[2]) === prefix[2] && (a[at + 3] & mask[3]) === prefix[3];
}

export function macHi(mac: Uint8Array): number { return (mac[0] << 8) | mac[1]; }
export function macLo(mac: Uint8Array): number { return ((mac[2] << 24) | (mac[3] << 16) | (mac[4] << 8) | mac[5]) | 0; }

export function compileFib(input: FibInput): FibTables {
  const records: number[][] = [[], [NH_HOST], [NH_DROP], [NH_SERVICE], [NH_OUTSIDE]]; // id 0 unused: LPM value 0 means "no match"
  const lpm = new Lpm4Builder();
  const add = (cidr: string, id: number) => { const c = parseIPv4Cidr(cidr); lpm.set(c.prefix, c.len, id); };
  add('0.0.0.0/0', ID_OUTSIDE);
  if (input.serviceCIDR) add(input.serviceCIDR, ID_SERVICE);
  if (input.clusterCIDR) add(input.clusterCIDR, ID_DROP);
  if (input.podCIDR) add(input.podCIDR, ID_DROP);
  const lpm6 = new Lpm6Builder();
  const add6 = (cidr: string, id: number) => { const c = parseIPv6Cidr(cidr); lpm6.set(c.addr, c.len, id); };
  add6('::/0', ID_OUTSIDE);
  if (input.serviceCIDR6) add6(input.serviceCIDR6, ID_SERVICE);
  if (input.clusterCIDR6) add6(input.clusterCIDR6, ID_DROP);
  if (input.podCIDR6) add6(input.podCIDR6, ID_DROP);
  for (const r of input.remotes) {
    if (r.podCIDR) {
      const mac = parseMac(r.vtepMAC);
      records.push([NH_REMOTE, 0, parseIPv4Address(r.underlayIP), macHi(mac), macLo(mac)]);
      add(r.podCIDR, records.length - 1);
    }
    if (isPeer6(r)) {
      const mac6 = parseMac(r.vtepMAC6!);
      records.push(withIp6([NH_REMOTE, 0, 0, macHi(mac6), macLo(mac6)], r.underlayIP6!));
      add6(r.podCIDR6!, records.length - 1);
    }
  }
  let maxIf = 0;
  for (const p of input.pods) maxIf = Math.max(maxIf, p.ifindex);
  const ifmap = new Int32Array(new SharedArrayBuffer(4 * (maxIf + 1)));
  for (const p of input.pods) {
    const mac = parseMac(p.mac);
    const rec = [NH_LOCAL, p.ifindex, p.ip ? parseIPv4Address(p.ip) : 0, macHi(mac), macLo(mac)];
    records.push(p.ip6 ? withIp6(rec, p.ip6) : rec);
    if (p.ip) add(`${p.ip}/32`, records.length - 1);
    if (p.ip6) add6(`${p.ip6}/128`, records.length - 1);
    ifmap[p.ifindex] = records.length - 1;
  }
  for (const ip of input.hostIPs) if (ip.includes(':')) add6(`${ip}/128`, ID_HOST); else add(`${ip}/32`, ID_HOST);

  const nh = new Int32Array(new SharedArrayBuffer(4 * NH_STRIDE * records.length));
  records.forEach((r, id) => r.forEach((v, k) => { nh[id * NH_STRIDE + k] = v; }));
  return {
    route4: lpm.build().buffer,
    route6: lpm6.build().buffer,
    nexthops: nh.buffer as SharedArrayBuffer,
    ifmap: ifmap.buffer as SharedArrayBuffer,
    ports: input.pods.map((p) => ({ ifname: p.ifname, ifindex: p.ifindex })),
    peers: compilePeers(input.remotes.filter((r) => r.podCIDR)),
    ...podRange(input.podCIDR),
    peers6: compilePeers6(input.remotes.filter(isPeer6)),
    ...podRange6(input.podCIDR6),
  };
}

function isPeer6(r: RemoteNode): boolean { return !!(r.podCIDR6 && r.underlayIP6 && r.vtepMAC6); }

/** A record with an IPv6 address at NH_IP6. */
function withIp6(rec: number[], ip6: string): number[] {
  const out = rec.concat(new Array<number>(NH_IP6 - rec.length).fill(0));
  for (const w of parseIPv6Address(ip6)) out.push(w | 0);
  return out;
}

/** A CIDR as 4 int32 prefix and mask words: (address & mask) === prefix, word by word. */
function range6(cidr: string): { prefix: number[]; mask: number[] } {
  const c = parseIPv6Cidr(cidr);
  return { prefix: [...c.addr].map((w) => w | 0), mask: [...maskWords([-1, -1, -1, -1], c.len)].map((w) => w | 0) };
}

function podRange6(cidr?: string): { podPrefix6: number[]; podMask6: number[] } {
  if (!cidr) return { podPrefix6: [0, 0, 0, 0], podMask6: [-1, -1, -1, -1] }; // matches only ::, which no pod has
  const r = range6(cidr);
  return { podPrefix6: r.prefix, podMask6: r.mask };
}

function compilePeers6(remotes: RemoteNode[]): SharedArrayBuffer {
  const rows = remotes.map((r) => {
    const pods = range6(r.podCIDR6!);
    return [...[...parseIPv6Address(r.underlayIP6!)].map((w) => w | 0), ...pods.prefix, ...pods.mask];
  }).sort((a, b) => {
    for (let k = 0; k < 4; k++) if (a[k] !== b[k]) return (a[k] >>> 0) - (b[k] >>> 0);
    return 0;
  });
  const t = new Int32Array(new SharedArrayBuffer(4 * (1 + rows.length * PEER6_STRIDE)));
  t[0] = rows.length;
  rows.forEach((r, k) => t.set(r, 1 + k * PEER6_STRIDE));
  return t.buffer as SharedArrayBuffer;
}

/** A CIDR as int32 prefix and mask: (address & mask) === prefix. */
function range(cidr: string): { prefix: number; mask: number } {
  const c = parseIPv4Cidr(cidr), mask = c.len === 0 ? 0 : (~0 << (32 - c.len)) | 0;
  return { prefix: (c.prefix & mask) | 0, mask };
}

function podRange(cidr: string): { podPrefix: number; podMask: number } {
  if (!cidr) return { podPrefix: 0, podMask: -1 }; // matches only 0.0.0.0, which no pod has
  const r = range(cidr);
  return { podPrefix: r.prefix, podMask: r.mask };
}

function compilePeers(remotes: RemoteNode[]): SharedArrayBuffer {
  const rows = remotes.map((r) => {
    const pods = range(r.podCIDR);
    return [parseIPv4Address(r.underlayIP) | 0, pods.prefix, pods.mask];
  }).sort((a, b) => (a[0] >>> 0) - (b[0] >>> 0));
  const t = new Int32Array(new SharedArrayBuffer(4 * (1 + rows.length * PEER_STRIDE)));
  t[0] = rows.length;
  rows.forEach((r, k) => t.set(r, 1 + k * PEER_STRIDE));
  return t.buffer as SharedArrayBuffer;
}
