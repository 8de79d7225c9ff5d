// deploy/ cannot be applied here (no Kubernetes, no Docker engine), so this keeps
// its parts consistent with the code they configure: the agent's config and the
// conflist parse as the agent and twill-cni parse them, both name the same agent
// socket, the DaemonSet mounts what it points at, the RBAC grants what the
// Kubernetes source and the VTEP announcement do, and the pod network matches kind's.
import { describe, expect, it } from 'vitest';
import { readFileSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { loadAgentConfig } from '../../dataplane/agent/main.js';
import { parseConf } from '../../cni/plugin.js';

const root = path.resolve(import.meta.dirname, '../..');
type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const docs = (f: string): Obj[] => parseAllDocuments(readFileSync(path.join(root, 'deploy', f), 'utf8')).map((d) => d.toJS() as Obj).filter(Boolean);

describe('deploy/', () => {
  const all = docs('twill.yaml');
  const of = (kind: string) => all.filter((d) => d.kind === kind);
  const cm = of('ConfigMap')[0], ds = of('DaemonSet')[0];

  it('the agent config and the conflist parse as the agent and twill-cni parse them, and meet at one socket', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'twt-deploy-'));
    try {
      writeFileSync(path.join(dir, 'agent.json'), cm.data['agent.json']);
      process.env.NODE_NAME = 'kind-worker';
      const agent = loadAgentConfig(path.join(dir, 'agent.json'));
      expect(agent.node).toBe('kind-worker'); // from the downward API's NODE_NAME
      expect(agent.kubernetes).toEqual({}); // the pod's service account
      expect(agent.datastore).toBeUndefined();
      const list = JSON.parse(cm.data['10-twill.conflist']) as Obj;
      const first = parseConf(JSON.stringify({ cniVersion: list.cniVersion, name: list.name, ...list.plugins[0] }));
      expect(first.type).toBe('twill-cni');
      expect(list.plugins[0].agentSocket).toBe(agent.socket);
      const agentMounts = ds.spec.template.spec.containers[0].volumeMounts as Obj[];
      expect(agentMounts.some((m) => agent.socket.startsWith(`${m.mountPath}/`))).toBe(true);
      expect(agentMounts.some((m) => agent.stateDir === m.mountPath)).toBe(true);
    } finally {
      delete process.env.NODE_NAME;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the DaemonSet runs the agent with the mounted config, in the host network, and installs the CNI files', () => {
    const pod = ds.spec.template.spec;
    expect(pod.hostNetwork).toBe(true);
    const agent = pod.containers[0];
    const cfgMount = agent.volumeMounts.find((m: Obj) => m.name === 'config');
    expect(agent.args).toEqual(['agent', '--config', `${cfgMount.mountPath}/agent.json`]);
    expect(agent.env.find((e: Obj) => e.name === 'NODE_NAME').valueFrom.fieldRef.fieldPath).toBe('spec.nodeName');
    expect(pod.volumes.find((v: Obj) => v.name === 'config').configMap.name).toBe(cm.metadata.name);
    const install = pod.initContainers[0].args.join(' ');
    expect(install).toContain('/opt/cni/bin/twill-cni');
    expect(install).toContain('/etc/cni/net.d/10-twill.conflist');
    expect(pod.serviceAccountName).toBe(of('ServiceAccount')[0].metadata.name);
  });

  it('RBAC grants list and watch on what the agent reads, and patch on nodes (its VTEP annotations)', () => {
    const rules = of('ClusterRole')[0].rules as Obj[];
    const can = (group: string, resource: string, verb: string) => rules.some((r) => r.apiGroups.includes(group) && r.resources.includes(resource) && r.verbs.includes(verb));
    for (const [g, r] of [['', 'nodes'], ['', 'namespaces'], ['', 'pods'], ['networking.k8s.io', 'networkpolicies']]) {
      expect(can(g, r, 'list') && can(g, r, 'watch'), `${r}`).toBe(true);
    }
    expect(can('', 'nodes', 'patch')).toBe(true);
    const binding = of('ClusterRoleBinding')[0];
    expect(binding.roleRef.name).toBe(of('ClusterRole')[0].metadata.name);
  });

  it('the agent\'s pod network is the kind cluster\'s', () => {
    const kind = docs('kind-config.yaml')[0];
    expect(kind.networking.disableDefaultCNI).toBe(true);
    expect(JSON.parse(cm.data['agent.json']).clusterCIDR).toBe(kind.networking.podSubnet);
  });
});
