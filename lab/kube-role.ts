// When a lab's agents learn the cluster from a Kubernetes API (UpOptions.kubernetes),
// the lab writes what a cluster's own parts would: the Node objects with their pod
// CIDRs and addresses (the kubelet and the node IPAM controller), the Namespaces,
// and each Pod with its IP once the CNI plugin has wired it (the kubelet). The
// agents then announce their VTEPs on their Nodes themselves, as flanneld does.
import { KubeClient, KubeError, type KubeConfig } from '../dataplane/agent/kube-client.js';
import type { ContainerPort } from '../policy/model.js';
import type { LabNode } from './state.js';

export class LabKube {
  private readonly client: KubeClient;
  constructor(cfg: KubeConfig) { this.client = new KubeClient(cfg); }

  private async create(path: string, obj: unknown): Promise<void> {
    try {
      await this.client.request('POST', path, obj);
    } catch (e) {
      if (!(e instanceof KubeError && e.status === 409)) throw e; // already there: a restarted lab, or made by someone else
    }
  }

  node(n: LabNode): Promise<void> {
    return this.create('/api/v1/nodes', {
      apiVersion: 'v1', kind: 'Node', metadata: { name: n.name },
      spec: { podCIDR: n.podCIDR, podCIDRs: [n.podCIDR] },
      status: { addresses: [{ type: 'InternalIP', address: n.underlayIP }, { type: 'Hostname', address: n.name }] },
    });
  }

  namespace(name: string, labels: Record<string, string> = {}): Promise<void> {
    return this.create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
  }

  pod(namespace: string, name: string, node: string, ip: string, labels: Record<string, string>, ports: ContainerPort[]): Promise<void> {
    return this.create(`/api/v1/namespaces/${namespace}/pods`, {
      apiVersion: 'v1', kind: 'Pod', metadata: { namespace, name, labels },
      spec: { nodeName: node, containers: [{ name: 'workload', image: 'twill-lab-workload', ports }] },
      status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] },
    });
  }

  close(): void { this.client.close(); }
}
