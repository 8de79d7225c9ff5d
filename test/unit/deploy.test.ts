// deploy/ cannot be applied here (no Kubernetes, no Docker engine), so this keeps
// its parts consistent with the code they configure: the agent's config and the
// conflist parse as the agent and twill-cni parse them, both name the same agent
// socket, the DaemonSet mounts what it points at, the RBAC grants what the
// Kubernetes source and the VTEP announcement do, and the pod network matches kind's.
// Every object validates offline against the Kubernetes API's schemas
// (kubernetes-models), and against its types, which also catch a misspelt or
// unknown field (the API server's strict field validation refuses those).
// test/deploy/daemonset.test.ts runs the DaemonSet's containers under containerd.
import { describe, expect, it } from 'vitest';
import { readFileSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { loadAgentConfig } from '../../agent/main.js';
import { parseConf } from '../../cni/plugin.js';
import { copyArgs, dockerignore, execForm, nodeMajor, readDockerfile } from '../helpers/rootfs.js';

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
    const dual = docs('kind-config-dual.yaml')[0], agent = JSON.parse(cm.data['agent.json']);
    expect(dual.networking).toMatchObject({ ipFamily: 'dual', disableDefaultCNI: true });
    expect(dual.networking.podSubnet.split(',')).toEqual([agent.clusterCIDR, agent.clusterCIDR6]);
  });

  // ------------------------------------------------------------------ schemas

  // kind -> [apiVersion, module of kubernetes-models, its type]
  const MODELS: Record<string, [string, string, string]> = {
    Namespace: ['v1', 'kubernetes-models/v1', 'INamespace'],
    ServiceAccount: ['v1', 'kubernetes-models/v1', 'IServiceAccount'],
    ConfigMap: ['v1', 'kubernetes-models/v1', 'IConfigMap'],
    ClusterRole: ['rbac.authorization.k8s.io/v1', 'kubernetes-models/rbac.authorization.k8s.io/v1', 'IClusterRole'],
    ClusterRoleBinding: ['rbac.authorization.k8s.io/v1', 'kubernetes-models/rbac.authorization.k8s.io/v1', 'IClusterRoleBinding'],
    DaemonSet: ['apps/v1', 'kubernetes-models/apps/v1', 'IDaemonSet'],
  };

  it('every object validates against the Kubernetes API schemas', async () => {
    expect(all.map((d) => d.kind).sort()).toEqual(Object.keys(MODELS).sort());
    for (const d of all) {
      const [apiVersion, mod, type] = MODELS[d.kind];
      expect(d.apiVersion, d.kind).toBe(apiVersion);
      const Model = (await import(mod))[type.slice(1)] as new (o: Obj) => { validate(): void };
      expect(() => new Model(d).validate(), `${d.kind} ${d.metadata?.name}`).not.toThrow();
    }
    // The validator does see mistakes: a port given as a name where a number is due.
    const { DaemonSet } = await import('kubernetes-models/apps/v1');
    const bad = structuredClone(ds);
    bad.spec.template.spec.containers[0].livenessProbe.httpGet.port = { p: 1 };
    expect(() => new DaemonSet(bad).validate()).toThrow(/port/);
  });

  it('no object has a field the API does not know (type-checked against kubernetes-models)', () => {
    const dir = mkdtempSync(path.join(root, '.twt-deploy-types-'));
    try {
      const check = (docs: Obj[]) => {
        const lines = docs.map((d, k) => `const o${k}: ${MODELS[d.kind][2]} = ${JSON.stringify(d)};`);
        const imports = [...new Set(docs.map((d) => MODELS[d.kind][1]))].map((m) => `import type { ${docs.filter((d) => MODELS[d.kind][1] === m).map((d) => MODELS[d.kind][2]).filter((t, i, a) => a.indexOf(t) === i).join(', ')} } from '${m}';`);
        writeFileSync(path.join(dir, 'check.ts'), [...imports, ...lines, `export const all = [${docs.map((_, k) => `o${k}`).join(', ')}];`, ''].join('\n'));
        writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { strict: true, noEmit: true, module: 'NodeNext', moduleResolution: 'NodeNext', skipLibCheck: true, types: [] }, files: ['check.ts'] }));
        return spawnSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', path.join(dir, 'tsconfig.json')], { encoding: 'utf8' });
      };
      const ok = check(all);
      expect(ok.status, ok.stdout + ok.stderr).toBe(0);
      // ...and a misspelt field fails it.
      const typo = structuredClone(ds);
      typo.spec.template.spec.containers[0].volumeMounts[0].readonly = true;
      const bad = check([typo]);
      expect(bad.status, bad.stdout).not.toBe(0);
      expect(bad.stdout).toMatch(/readonly/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // ------------------------------------------------------------------ the DaemonSet, as kube-flannel.yml has it

  it('runs on every Linux node, before the node is Ready, as a node-critical pod', () => {
    const pod = ds.spec.template.spec;
    expect(pod.nodeSelector).toEqual({ 'kubernetes.io/os': 'linux' });
    expect(pod.tolerations).toContainEqual({ operator: 'Exists', effect: 'NoSchedule' });
    expect(pod.priorityClassName).toBe('system-node-critical');
    expect(pod.hostNetwork).toBe(true);
  });

  it('the agent is not privileged: NET_ADMIN, NET_RAW and SYS_NICE, and the TUN device mounted from the node', () => {
    const pod = ds.spec.template.spec;
    const agent = pod.containers[0];
    expect(agent.securityContext.privileged).toBe(false);
    expect(agent.securityContext.capabilities.add.sort()).toEqual(['NET_ADMIN', 'NET_RAW', 'SYS_NICE']);
    const tun = agent.volumeMounts.find((m: Obj) => m.mountPath === '/dev/net/tun');
    expect(pod.volumes.find((v: Obj) => v.name === tun.name).hostPath).toEqual({ path: '/dev/net/tun', type: 'CharDevice' });
    for (const c of pod.initContainers) expect(c.securityContext?.privileged ?? false).toBe(false);
  });

  it('liveness and readiness probe the agent\'s health endpoints on its metrics address', () => {
    const agent = ds.spec.template.spec.containers[0];
    const port = Number(JSON.parse(cm.data['agent.json']).metrics.split(':').pop());
    expect(agent.livenessProbe.httpGet).toEqual({ path: '/healthz', port });
    expect(agent.readinessProbe.httpGet).toEqual({ path: '/readyz', port });
    expect(agent.ports).toContainEqual({ name: 'metrics', containerPort: port, protocol: 'TCP' });
    expect(agent.resources.requests.cpu).toBeDefined();
    expect(agent.resources.requests.memory).toBeDefined();
  });

  it('the config sets the worker count; the MTU is the underlay\'s unless underlayMTU overrides it', () => {
    const cfg = JSON.parse(cm.data['agent.json']) as Obj;
    expect(Number.isInteger(cfg.workers) && cfg.workers > 0).toBe(true);
    expect(cfg.underlayMTU === undefined || Number.isInteger(cfg.underlayMTU)).toBe(true);
  });

  it('the init container writes each file beside its final name and renames it over (what runtimes read is never half written)', () => {
    const script = ds.spec.template.spec.initContainers[0].args.join(' ') as string;
    const steps = script.split('&&').map((x) => x.trim().split(/\s+/));
    const moves = steps.filter((w) => w[0] === 'mv');
    expect(moves.map((w) => w[w.length - 1]).sort()).toEqual(['/etc/cni/net.d/10-twill.conflist', '/opt/cni/bin/twill-cni']);
    for (const mv of moves) {
      const [tmp, dst] = mv.slice(-2);
      expect(path.dirname(tmp), 'a rename within one directory').toBe(path.dirname(dst));
      expect(steps.findIndex((w) => w[0] === 'cp' && w[w.length - 1] === tmp)).toBeLessThan(steps.indexOf(mv));
      expect(path.basename(tmp), 'a name libcni never loads').not.toMatch(/\.(conf|conflist|json)$/);
    }
    // The plugin first: a conflist that names a plugin not yet there fails every pod.
    expect(moves[0][moves[0].length - 1]).toBe('/opt/cni/bin/twill-cni');
  });

  // ------------------------------------------------------------------ the image

  const dockerfile = readDockerfile();
  const runtime = dockerfile.stages[dockerfile.stages.length - 1];

  it('the image is built on a maintained Node LTS, slim at run time, and the addon is built inside it', () => {
    expect(dockerfile.stages.map((s) => s.from)).toEqual([dockerfile.args.NODE_IMAGE, dockerfile.args.NODE_IMAGE]);
    const major = nodeMajor(runtime.from);
    expect(major % 2, 'an even major: LTS').toBe(0);
    expect(major).toBeGreaterThanOrEqual(22); // 20 left maintenance in April 2026
    expect(runtime.from).toMatch(/-slim$/);
    const build = dockerfile.stages[0];
    expect(build.instrs.some((i) => i.op === 'RUN' && /\bnpm run install\b/.test(i.args))).toBe(true);
    expect(runtime.instrs.some((i) => i.op === 'RUN' && /\b(npm|node-gyp|g\+\+)\b/.test(i.args))).toBe(false); // no toolchain at run time
  });

  it('the image carries what the agent runs, with the node\'s iptables backend picked at the first call', () => {
    const apt = runtime.instrs.find((i) => i.op === 'RUN' && i.args.includes('apt-get install'))!.args;
    for (const p of ['iproute2', 'iptables', 'nftables']) expect(apt).toContain(` ${p}`);
    const wrapper = runtime.instrs.find((i) => i.op === 'COPY' && i.args.startsWith('deploy/iptables-wrapper'))!;
    expect(copyArgs(wrapper).dst).toBe('/usr/sbin/iptables-wrapper');
    expect(runtime.instrs.some((i) => i.op === 'RUN' && i.args.includes('/usr/sbin/iptables-wrapper --install'))).toBe(true);
    const sh = spawnSync('sh', ['-n', path.join(root, 'deploy/iptables-wrapper')], { encoding: 'utf8' });
    expect(sh.status, sh.stderr).toBe(0);
  });

  it('the containers run what the image holds: the entrypoint with the agent\'s args, twill-cni where the init container copies it from', () => {
    const entry = execForm(runtime.instrs.find((i) => i.op === 'ENTRYPOINT')!);
    expect(entry).toEqual(['node', '/opt/twill/dist/cli/twill.js']);
    const workdir = runtime.instrs.filter((i) => i.op === 'WORKDIR').pop()!.args.trim();
    const dist = runtime.instrs.find((i) => i.op === 'COPY' && copyArgs(i).srcs[0].endsWith('/dist'))!;
    expect(path.posix.resolve(workdir, copyArgs(dist).dst)).toBe('/opt/twill/dist');
    const install = ds.spec.template.spec.initContainers[0];
    expect(install.args.join(' ')).toContain('cp /opt/twill/dist/cni/twill-cni ');
    expect(install.image).toBe(ds.spec.template.spec.containers[0].image);
  });

  it('.dockerignore keeps host builds, dependencies, git and tests out of the build context', () => {
    const ignored = dockerignore(readFileSync(path.join(root, '.dockerignore'), 'utf8'));
    for (const p of ['node_modules/pino/package.json', 'dist/cli/twill.js', 'dataplane/native/build/Release/twill_native.node', '.git/HEAD', 'test/unit/deploy.test.ts', 'x/node_modules/y', 'agent.log']) expect(ignored(p), p).toBe(true);
    for (const p of ['package.json', 'package-lock.json', 'tsconfig.json', 'dataplane/native/src/tun.c', 'agent/main.ts', 'deploy/iptables-wrapper']) expect(ignored(p), p).toBe(false);
  });
});
