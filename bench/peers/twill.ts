// twill in the benchmark: a two-node lab, pods node1-p1, node2-p1, node1-p2.
import { labUp, labDown } from '../../lab/lab.js';
import type { PeerTopology } from './topology.js';

export async function twillPair(name: string): Promise<PeerTopology> {
  const s = await labUp({ name, nodes: 2, podsPerNode: 2 });
  const pod = (n: string) => s.pods.find((p) => p.name === n)!;
  return {
    pods: [pod('node1-p1'), pod('node2-p1'), pod('node1-p2')].map((p) => ({ netns: p.netns, ip: p.ip })),
    pids: s.nodes.map((n) => n.pid),
    teardown: async () => { await labDown(name); },
  };
}
