// What every benchmarked dataplane sets up: pods on two nodes (and a second pod
// on the first node, for the same-node path), the dataplane's own processes
// (for CPU and memory), where it has Services a ClusterIP in front of the
// node 2 pod, and a teardown that always runs.
import type { ServiceSpec } from '../../lab/services.js';

export interface PeerTopology {
  pods: { netns: string; ip: string; ip6?: string }[]; // [node1 pod, node2 pod, node1 second pod]; ip6: dual-stack, IPv6 over the IPv6 underlay
  pids: number[]; // the dataplane's processes; none for the kernel
  // A ClusterIP (benchService's ports, through kube-proxy's rules) whose one endpoint is pods[1]; absent: the dataplane has no Services.
  service?: string;
  teardown(): Promise<void>;
}

/** The bench's Service ports: iperf3 and the pods' TCP echo server, each to the same port on the endpoint. */
export const SERVICE_IPERF_PORT = 5201;
export const SERVICE_ECHO_PORT = 8080;

/** The bench's Service, one endpoint (the pod named `endpoint`), as kube-proxy would be given it. */
export function benchService(clusterIP: string, endpoint: string): ServiceSpec {
  return {
    namespace: 'default', name: 'bench', clusterIP, endpoints: [endpoint],
    ports: [{ name: 'iperf3', protocol: 'TCP', port: SERVICE_IPERF_PORT }, { name: 'tcp-echo', protocol: 'TCP', port: SERVICE_ECHO_PORT }],
  };
}
