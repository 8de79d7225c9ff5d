// twill in the benchmark: a two-node dual-stack lab, pods node1-p1, node2-p1, node1-p2,
// and a ClusterIP Service (the lab's kube-proxy rules, iptables mode as in
// kind) whose one endpoint is node2-p1.
import { labUp, labDown, defineService } from '../../lab/lab.js';
import { benchService, type PeerTopology } from './topology.js';

const CLUSTER_IP = '10.96.0.200';

export async function twillPair(name: string): Promise<PeerTopology> {
  const s = await labUp({ name, nodes: 2, podsPerNode: 2, ipFamily: 'dual' });
  const teardown = async () => { await labDown(name); };
  try {
    await defineService(s, benchService(CLUSTER_IP, 'node2-p1'));
  } catch (e) {
    await teardown();
    throw e;
  }
  const pod = (n: string) => s.pods.find((p) => p.name === n)!;
  return {
    pods: [pod('node1-p1'), pod('node2-p1'), pod('node1-p2')].map((p) => ({ netns: p.netns, ip: p.ip, ip6: p.ip6 })),
    pids: s.nodes.map((n) => n.pid),
    service: CLUSTER_IP,
    teardown,
  };
}
