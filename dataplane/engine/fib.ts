// The forwarding information base: an IPv4 LPM table whose values index a
// next-hop array, plus an ifindex → pod map for anti-spoofing. Compiled on the
// main thread into fresh SharedArrayBuffers; workers only read it.
import { Lpm4Builder, parseIPv4, parseCidr4 } from '../tables/lpm4.js';
import { parseMac } from '../packet/ethernet.js';

export const NH_HOST = 1; // hand to the node's stack through TUN
export const NH_DROP = 2; // inside a pod range but no such pod / subnet
export const NH_LOCAL = 3; // a pod on this node: frame out of its veth
export const NH_REMOTE = 4; // another node: VXLAN to its underlay address
// The Service range: to the node's stack as NH_HOST, where kube-proxy translates
// it; a pod's egress policy is judged after that (stages/translated.ts, policy.ts).
export const NH_SERVICE = 5;

// Next-hop record layout (Int32 words).
export const NH_KIND = 0, NH_IFINDEX = 1, NH_IP = 2, NH_MAC_HI = 3, NH_MAC_LO = 4;
export const NH_STRIDE = 8;
const ID_HOST = 1, ID_DROP = 2, ID_SERVICE = 3;

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
}

export function macHi(mac: Uint8Array): number { return (mac[0] << 8) | mac[1]; }
export function macLo(mac: Uint8Array): number { return ((mac[2] << 24) | (mac[3] << 16) | (mac[4] << 8) | mac[5]) | 0; }

export function compileFib(input: FibInput): FibTables {
  const records: number[][] = [[], [NH_HOST], [NH_DROP], [NH_SERVICE]]; // id 0 unused: LPM value 0 means "no match"
  const lpm = new Lpm4Builder();
  const add = (cidr: string, id: number) => { const c = parseCidr4(cidr); lpm.set(c.prefix, c.len, id); };
  add('0.0.0.0/0', ID_HOST);
  if (input.serviceCIDR) add(input.serviceCIDR, ID_SERVICE);
  add(input.clusterCIDR, ID_DROP);
  add(input.podCIDR, ID_DROP);
  for (const r of input.remotes) {
    const mac = parseMac(r.vtepMAC);
    records.push([NH_REMOTE, 0, parseIPv4(r.underlayIP), macHi(mac), macLo(mac)]);
    add(r.podCIDR, records.length - 1);
  }
  let maxIf = 0;
  for (const p of input.pods) maxIf = Math.max(maxIf, p.ifindex);
  const ifmap = new Int32Array(new SharedArrayBuffer(4 * (maxIf + 1)));
  for (const p of input.pods) {
    const mac = parseMac(p.mac);
    records.push([NH_LOCAL, p.ifindex, parseIPv4(p.ip), macHi(mac), macLo(mac)]);
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
  };
}
