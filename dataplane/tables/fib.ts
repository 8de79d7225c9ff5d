// The forwarding information base: an IPv4 LPM table whose values index a
// next-hop array, an ifindex → pod map for anti-spoofing, and the peers table
// (the other nodes' VTEPs: who may send us VXLAN, and which inner sources each
// may carry). Compiled on the main thread into fresh SharedArrayBuffers;
// workers only read it.
import { Lpm4Builder } from './lpm4.js';
import { parseIPv4Address, parseIPv4Cidr } from '../../lib/ipv4.js';
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

// Next-hop record layout (Int32 words).
export const NH_KIND = 0, NH_IFINDEX = 1, NH_IP = 2, NH_MAC_HI = 3, NH_MAC_LO = 4;
export const NH_STRIDE = 8;
const ID_HOST = 1, ID_DROP = 2, ID_SERVICE = 3, ID_OUTSIDE = 4;

export interface LocalPod { ip: string; mac: string; ifname: string; ifindex: number }
export interface RemoteNode { name: string; podCIDR: string; underlayIP: string; vtepMAC: string }
export interface FibInput {
  clusterCIDR: string;
  podCIDR: string; // this node's
  hostIPs: string[]; // addresses of this node's own stack (gateway address on TUN, underlay)
  serviceCIDR?: string; // ClusterIPs (kube-proxy's --service-cluster-ip-range)
  pods: LocalPod[];
  remotes: RemoteNode[];
}

export interface FibTables {
  route4: SharedArrayBuffer;
  nexthops: SharedArrayBuffer;
  ifmap: SharedArrayBuffer; // Int32Array: ifindex → next-hop id of the pod behind it
  ports: { ifname: string; ifindex: number }[]; // veths the workers should read
  peers: SharedArrayBuffer; // Int32Array: count, then (underlay IP, pod prefix, pod mask) per peer, by underlay IP as unsigned
  podPrefix: number; // this node's pod CIDR as (address & podMask) === podPrefix, int32
  podMask: number;
}

export const PEER_STRIDE = 3;

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

export function macHi(mac: Uint8Array): number { return (mac[0] << 8) | mac[1]; }
export function macLo(mac: Uint8Array): number { return ((mac[2] << 24) | (mac[3] << 16) | (mac[4] << 8) | mac[5]) | 0; }

export function compileFib(input: FibInput): FibTables {
  const records: number[][] = [[], [NH_HOST], [NH_DROP], [NH_SERVICE], [NH_OUTSIDE]]; // id 0 unused: LPM value 0 means "no match"
  const lpm = new Lpm4Builder();
  const add = (cidr: string, id: number) => { const c = parseIPv4Cidr(cidr); lpm.set(c.prefix, c.len, id); };
  add('0.0.0.0/0', ID_OUTSIDE);
  if (input.serviceCIDR) add(input.serviceCIDR, ID_SERVICE);
  add(input.clusterCIDR, ID_DROP);
  add(input.podCIDR, ID_DROP);
  for (const r of input.remotes) {
    const mac = parseMac(r.vtepMAC);
    records.push([NH_REMOTE, 0, parseIPv4Address(r.underlayIP), macHi(mac), macLo(mac)]);
    add(r.podCIDR, records.length - 1);
  }
  let maxIf = 0;
  for (const p of input.pods) maxIf = Math.max(maxIf, p.ifindex);
  const ifmap = new Int32Array(new SharedArrayBuffer(4 * (maxIf + 1)));
  for (const p of input.pods) {
    const mac = parseMac(p.mac);
    records.push([NH_LOCAL, p.ifindex, parseIPv4Address(p.ip), macHi(mac), macLo(mac)]);
    add(`${p.ip}/32`, records.length - 1);
    ifmap[p.ifindex] = records.length - 1;
  }
  for (const ip of input.hostIPs) add(`${ip}/32`, ID_HOST);

  const nh = new Int32Array(new SharedArrayBuffer(4 * NH_STRIDE * records.length));
  records.forEach((r, id) => r.forEach((v, k) => { nh[id * NH_STRIDE + k] = v; }));
  return {
    route4: lpm.build().buffer,
    nexthops: nh.buffer as SharedArrayBuffer,
    ifmap: ifmap.buffer as SharedArrayBuffer,
    ports: input.pods.map((p) => ({ ifname: p.ifname, ifindex: p.ifindex })),
    peers: compilePeers(input.remotes),
    ...podRange(input.podCIDR),
  };
}

/** A CIDR as int32 prefix and mask: (address & mask) === prefix. */
function range(cidr: string): { prefix: number; mask: number } {
  const c = parseIPv4Cidr(cidr), mask = c.len === 0 ? 0 : (~0 << (32 - c.len)) | 0;
  return { prefix: (c.prefix & mask) | 0, mask };
}

function podRange(cidr: string): { podPrefix: number; podMask: number } {
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
