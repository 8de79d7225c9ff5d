// What every benchmarked dataplane sets up: pods on two nodes (and a second pod
// on the first node, for the same-node path), the dataplane's own processes
// (for CPU and memory), and a teardown that always runs.
export interface PeerTopology {
  pods: { netns: string; ip: string }[]; // [node1 pod, node2 pod, node1 second pod]
  pids: number[]; // the dataplane's processes; none for the kernel
  teardown(): Promise<void>;
}
