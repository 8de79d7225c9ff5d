// deploy/ run as a cluster would run it, without Docker or a cluster: the image
// of deploy/Dockerfile, assembled from Debian's packages (test/helpers/rootfs.ts),
// imported into containerd, and deploy/twill.yaml's DaemonSet run on two nodes the
// way the kubelet would run it, containers made from the manifest itself:
//  - the nodes are network namespaces on a bridge (172.18.0.0/16, as Docker's kind
//    network), each with its own CNI dirs, /run/twill and /var/lib/twill (the
//    DaemonSet's hostPaths), its own "kubelet" iptables marker chains (node 1 in
//    the legacy backend, node 2 in nft) and "kube-proxy" rule sending the API's
//    ClusterIP 10.96.0.1:443 to the API server;
//  - the API server is the stand-in of test/helpers/fake-kube.ts over HTTPS with a
//    CA made here, reached through 172.18.0.1:6443 (a byte pipe from the underlay
//    namespace to it on loopback), with a service account's token, CA and namespace
//    mounted where a pod has them;
//  - each node's init container runs first (attached); then the agent container runs
//    detached with exactly the manifest's mounts, env, capabilities (the runtime's
//    defaults plus what securityContext adds; not privileged), in the node's network
//    namespace (hostNetwork) and a PID namespace of its own;
//  - pods are `ctr run --cni` busybox containers started in the node's namespaces,
//    where go-cni finds the conflist and twill-cni that the init container installed.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync, closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, rmSync, rmdirSync,
  statSync, symlinkSync, writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { FakeKube, nodeObject } from '../helpers/fake-kube.js';
import { sweepContainerd } from '../cni-runtime/helpers.js';
import { ROOT, assembleImage, busyboxImage, productionNodeModules, type Assembled } from '../helpers/rootfs.js';
import { request } from '../../agent/socket.js';
import { alive, stopPid } from '../../lab/proc.js';
import { FLANNEL } from '../../agent/sources/kube/source.js';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const PATH_ENV = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const ID = randomBytes(2).toString('hex');
const NS = `twt-ds${ID}`; // namespaces: twt-ds<id>-u (underlay), -n1, -n2
const IMAGE = 'docker.io/library/twill:dev';
const PODIMG = 'docker.io/twill/busybox:ds';
const API_IP = '172.18.0.1', API_PORT = 6443, SVC_IP = '10.96.0.1';
const TOKEN = `sa-token-${ID}`;
const RUN_CTD = '/run/containerd', RUN_CTD_S = '/run/containerd/s';

interface Node { name: string; netns: string; ip: string; podCIDR: string; dir: string; backend: 'legacy' | 'nft'; agentId: string; agentPid: number }
const docs = parseAllDocuments(readFileSync(path.join(ROOT, 'deploy/twill.yaml'), 'utf8')).map((d) => d.toJS() as Obj).filter(Boolean);
const ds = docs.find((d) => d.kind === 'DaemonSet')!;
const cm = docs.find((d) => d.kind === 'ConfigMap')!;
const podSpec = ds.spec.template.spec as Obj;
const agentSpec = podSpec.containers[0] as Obj;

let T = '';
let sock = '';
let ctdPid = 0, pipePid = 0;
let api: FakeKube | undefined;
let apiUnix: net.Server | undefined;
let image: Assembled;
let hadRunCtd = true, hadRunCtdS = true;
const nodes: Node[] = [];
const made: string[] = []; // namespaces we added
const containers = new Set<string>();
const timings: Record<string, number> = {};

// ---------------------------------------------------------------- helpers

function sh(cmd: string, args: string[], o: { input?: string; timeout?: number } = {}): { code: number; out: string; err: string } {
  const r = spawnSync(cmd, args, { input: o.input, encoding: 'utf8', timeout: o.timeout ?? 60_000, env: { PATH: PATH_ENV } });
  return { code: r.status ?? -1, out: r.stdout ?? '', err: `${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}
function must(cmd: string, args: string[], o: { input?: string; timeout?: number } = {}): string {
  const r = sh(cmd, args, o);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.code}: ${(r.err || r.out).trim()}`);
  return r.out;
}
const inNode = (n: Node, cmd: string[], o: { input?: string; timeout?: number } = {}) => sh('nsenter', [`--net=/var/run/netns/${n.netns}`, ...cmd], o);
const ctr = (...args: string[]) => sh('ctr', ['-a', sock, ...args], { timeout: 120_000 });
const ctrMust = (...args: string[]) => must('ctr', ['-a', sock, ...args], { timeout: 120_000 });
const timed = async <T>(k: string, fn: () => T | Promise<T>): Promise<T> => { const t = performance.now(); try { return await fn(); } finally { timings[k] = Math.round(performance.now() - t); } };

async function until(what: string, ok: () => boolean | Promise<boolean>, ms: number, detail: () => string = () => ''): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}${detail() ? `: ${detail()}` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const tail = (f: string, n = 30) => { try { return readFileSync(f, 'utf8').split('\n').slice(-n).join('\n'); } catch { return `(no ${f})`; } };

/** A node's directory for one of the DaemonSet's hostPaths (each lab node has its own /run/twill, /etc/cni/net.d...). */
function hostPath(n: Node, p: string): string { return path.join(n.dir, 'host', p); }

/**
 * What the kubelet and the runtime make of one of the DaemonSet's containers:
 * ctr run arguments (mounts, env, capabilities, namespaces) and the argv.
 */
function containerArgs(n: Node, c: Obj): string[] {
  const sc = (c.securityContext ?? {}) as Obj;
  const args: string[] = [];
  if (sc.privileged) args.push('--privileged');
  for (const cap of sc.capabilities?.add ?? []) args.push('--cap-add', `CAP_${cap}`);
  for (const cap of sc.capabilities?.drop ?? []) args.push('--cap-drop', `CAP_${cap}`);
  if (podSpec.hostNetwork) args.push('--with-ns', `network:/var/run/netns/${n.netns}`);
  for (const m of c.volumeMounts ?? []) {
    const v = (podSpec.volumes as Obj[]).find((x) => x.name === m.name)!;
    let src: string;
    if (v.hostPath) {
      src = v.hostPath.path === '/dev/net/tun' ? '/dev/net/tun' : hostPath(n, v.hostPath.path); // the device is the machine's, as every node's is
      const type = v.hostPath.type ?? '';
      if (type === 'DirectoryOrCreate') mkdirSync(src, { recursive: true });
      else if (type === 'FileOrCreate' && !existsSync(src)) { mkdirSync(path.dirname(src), { recursive: true }); writeFileSync(src, ''); }
      else if (type === 'CharDevice' && !statSync(src).isCharacterDevice()) throw new Error(`${src} is not a character device`);
      else if (!existsSync(src)) throw new Error(`hostPath ${v.hostPath.path} (${src}) does not exist`);
    } else if (v.configMap) {
      src = path.join(n.dir, 'configmap', v.configMap.name);
    } else throw new Error(`volume ${v.name}: only hostPath and configMap are handled here`);
    args.push('--mount', `type=bind,src=${src},dst=${m.mountPath},options=rbind:${m.readOnly ? 'ro' : 'rw'}`);
  }
  // The service account's projected volume, as the kubelet mounts it in every pod that has one.
  if (podSpec.serviceAccountName) args.push('--mount', `type=bind,src=${path.join(n.dir, 'serviceaccount')},dst=/var/run/secrets/kubernetes.io/serviceaccount,options=rbind:ro`);
  for (const e of c.env ?? []) {
    const v = e.valueFrom?.fieldRef?.fieldPath === 'spec.nodeName' ? n.name : e.valueFrom?.fieldRef?.fieldPath === 'metadata.namespace' ? ds.metadata.namespace : e.value;
    if (v === undefined) throw new Error(`env ${e.name}: not handled here`);
    args.push('--env', `${e.name}=${v}`);
  }
  // The kubelet's service environment: the API's ClusterIP.
  args.push('--env', `KUBERNETES_SERVICE_HOST=${SVC_IP}`, '--env', 'KUBERNETES_SERVICE_PORT=443');
  args.push('--cgroup', `/twt-ds${ID}-${n.name}-${c.name}`);
  const argv = [...(c.command ?? image.config.Entrypoint ?? []), ...(c.args ?? (c.command ? [] : image.config.Cmd ?? []))];
  return [...args, IMAGE, `${n.name}-${c.name}`, ...argv];
}

/** ctr run --cni for a pod, from the node's network namespace and a mount namespace showing the node's CNI dirs at their usual paths. */
function podRun(n: Node, id: string, extra: string[], cmd: string[]): { code: number; out: string; err: string } {
  containers.add(id);
  return sh('nsenter', [`--net=/var/run/netns/${n.netns}`, 'unshare', '--mount', '--propagation', 'private', 'sh', path.join(T, 'node-ctr.sh'), n.dir, T,
    'run', '--cni', ...extra, '--cgroup', `/twt-ds${ID}-${id}`, PODIMG, id, ...cmd], { timeout: 60_000 });
}

function removeContainer(id: string): void {
  ctr('tasks', 'kill', '-s', 'SIGKILL', id);
  for (let k = 0; k < 20 && ctr('tasks', 'delete', '-f', id).code !== 0 && ctr('tasks', 'ls', '-q').out.split('\n').includes(id); k++) spawnSync('sleep', ['0.1']);
  ctr('containers', 'delete', id);
}

function taskPid(id: string): number {
  const f = ctr('tasks', 'ls').out.split('\n').map((l) => l.trim().split(/\s+/)).find((w) => w[0] === id);
  return f && f[2] === 'RUNNING' ? Number(f[1]) : 0;
}

const capNames = (hex: string) => {
  const names = ['CHOWN', 'DAC_OVERRIDE', 'DAC_READ_SEARCH', 'FOWNER', 'FSETID', 'KILL', 'SETGID', 'SETUID', 'SETPCAP', 'LINUX_IMMUTABLE', 'NET_BIND_SERVICE', 'NET_BROADCAST', 'NET_ADMIN', 'NET_RAW',
    'IPC_LOCK', 'IPC_OWNER', 'SYS_MODULE', 'SYS_RAWIO', 'SYS_CHROOT', 'SYS_PTRACE', 'SYS_PACCT', 'SYS_ADMIN', 'SYS_BOOT', 'SYS_NICE', 'SYS_RESOURCE', 'SYS_TIME', 'SYS_TTY_CONFIG', 'MKNOD', 'LEASE',
    'AUDIT_WRITE', 'AUDIT_CONTROL', 'SETFCAP', 'MAC_OVERRIDE', 'MAC_ADMIN', 'SYSLOG', 'WAKE_ALARM', 'BLOCK_SUSPEND', 'AUDIT_READ', 'PERFMON', 'BPF', 'CHECKPOINT_RESTORE'];
  const v = BigInt(`0x${hex}`);
  return names.filter((_, i) => (v >> BigInt(i)) & 1n);
};
const procField = (pid: number, key: string) => /^\S+:\s*(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith(`${key}:`)) ?? '')?.[1] ?? '';

// ---------------------------------------------------------------- setup

async function startApi(): Promise<void> {
  const ssl = (...args: string[]) => must('openssl', args.map((a) => a.replace('@', T + '/')));
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', '@ca.key', '-out', '@ca.crt', '-days', '1', '-subj', '/CN=twt-ds-ca');
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', '@api.key', '-out', '@api.csr', '-subj', '/CN=kube-apiserver');
  writeFileSync(path.join(T, 'san.ext'), `subjectAltName=IP:${SVC_IP},IP:${API_IP},DNS:kubernetes.default.svc\n`);
  ssl('x509', '-req', '-in', '@api.csr', '-CA', '@ca.crt', '-CAkey', '@ca.key', '-CAcreateserial', '-out', '@api.crt', '-days', '1', '-extfile', '@san.ext');
  api = new FakeKube(TOKEN);
  const port = await api.listenTls(readFileSync(path.join(T, 'api.key')), readFileSync(path.join(T, 'api.crt')));
  // 172.18.0.1:6443 in the underlay namespace -> a unix socket -> the API on loopback: bytes only, TLS end to end.
  const unix = path.join(T, 'api.sock');
  apiUnix = net.createServer((c) => { const u = net.connect(port, '127.0.0.1'); c.pipe(u).pipe(c); c.on('error', () => u.destroy()); u.on('error', () => c.destroy()); });
  await new Promise<void>((r) => apiUnix!.listen(unix, r));
  const pipe = `const net=require('net');net.createServer(c=>{const u=net.connect(${JSON.stringify(unix)});c.pipe(u).pipe(c);c.on('error',()=>u.destroy());u.on('error',()=>c.destroy())}).listen(${API_PORT},'${API_IP}',()=>console.log('up'))`;
  const child = spawn('nsenter', [`--net=/var/run/netns/${NS}-u`, process.execPath, '-e', pipe], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  pipePid = child.pid!;
  child.unref();
  await new Promise<void>((resolve, reject) => { child.stdout!.once('data', () => resolve()); child.once('exit', (c) => reject(new Error(`api pipe exited ${c}`))); });
}

function addNode(k: number): Node {
  const name = `kind-worker${k === 1 ? '' : k}`;
  const n: Node = { name, netns: `${NS}-n${k}`, ip: `172.18.0.${k + 1}`, podCIDR: `10.244.${k}.0/24`, dir: path.join(T, 'nodes', name), backend: k === 1 ? 'legacy' : 'nft', agentId: '', agentPid: 0 };
  must('ip', ['netns', 'add', n.netns]);
  made.push(n.netns);
  const ip = (...a: string[]) => must('ip', ['-n', n.netns, ...a]);
  ip('link', 'set', 'lo', 'up');
  must('ip', ['-n', `${NS}-u`, 'link', 'add', `u${k}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', n.netns]);
  must('ip', ['-n', `${NS}-u`, 'link', 'set', `u${k}`, 'master', 'br0', 'up']);
  ip('addr', 'add', `${n.ip}/16`, 'dev', 'eth0');
  ip('link', 'set', 'eth0', 'up');
  ip('route', 'add', 'default', 'via', API_IP);
  for (const [key, v] of [['net.ipv4.ip_forward', '1'], ['net.ipv4.conf.all.rp_filter', '1'], ['net.ipv4.conf.default.rp_filter', '1'], ['net.ipv4.conf.all.route_localnet', '1']]) must('ip', ['netns', 'exec', n.netns, 'sysctl', '-qw', `${key}=${v}`]);
  // The kubelet's marker chains and kube-proxy's ClusterIP rule for the API, in this node's backend.
  const ipt = `iptables-${n.backend}`;
  for (const chain of ['KUBE-IPTABLES-HINT', 'KUBE-KUBELET-CANARY']) must('nsenter', [`--net=/var/run/netns/${n.netns}`, ipt, '-w', '5', '-t', 'mangle', '-N', chain]);
  must('nsenter', [`--net=/var/run/netns/${n.netns}`, ipt, '-w', '5', '-t', 'nat', '-A', 'OUTPUT', '-d', `${SVC_IP}/32`, '-p', 'tcp', '--dport', '443', '-j', 'DNAT', '--to-destination', `${API_IP}:${API_PORT}`]);
  // The node's files: the ConfigMap as the kubelet projects it, the service account, the CNI plugins a kind node ships.
  const cmDir = path.join(n.dir, 'configmap', cm.metadata.name);
  mkdirSync(cmDir, { recursive: true });
  for (const [f, v] of Object.entries(cm.data as Record<string, string>)) writeFileSync(path.join(cmDir, f), v);
  const sa = path.join(n.dir, 'serviceaccount');
  mkdirSync(sa, { recursive: true });
  writeFileSync(path.join(sa, 'token'), TOKEN);
  copyFileSync(path.join(T, 'ca.crt'), path.join(sa, 'ca.crt'));
  writeFileSync(path.join(sa, 'namespace'), ds.metadata.namespace);
  const bin = hostPath(n, '/opt/cni/bin');
  mkdirSync(bin, { recursive: true });
  for (const p of ['loopback', 'portmap', 'host-local', 'ptp']) copyFileSync(`/usr/lib/cni/${p}`, path.join(bin, p));
  for (const p of ['/etc/cni/net.d', '/run/twill', '/var/lib/cni']) mkdirSync(hostPath(n, p), { recursive: true });
  // What ctr (go-cni) and twill-cni see as /etc/cni, /opt/cni, /var/lib/cni and /run/twill when run "on" this node.
  for (const top of ['etc', 'opt', 'varlib']) mkdirSync(path.join(n.dir, 'view', top), { recursive: true });
  symlinkSync(hostPath(n, '/etc/cni'), path.join(n.dir, 'view', 'etc', 'cni'));
  symlinkSync(hostPath(n, '/opt/cni'), path.join(n.dir, 'view', 'opt', 'cni'));
  symlinkSync(hostPath(n, '/var/lib/cni'), path.join(n.dir, 'view', 'varlib', 'cni'));
  nodes.push(n);
  return n;
}

async function startContainerd(n: Node): Promise<void> {
  sock = path.join(T, 'containerd.sock');
  const cfg = path.join(T, 'containerd.toml');
  writeFileSync(cfg, [
    'version = 2', `root = "${T}/ctd/root"`, `state = "${T}/ctd/state"`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",',
    '  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp",',
    '  "io.containerd.internal.v1.tracing"]',
    '[grpc]', `  address = "${sock}"`, '[ttrpc]', `  address = "${sock}.ttrpc"`, '[debug]', '  address = ""', '[metrics]', '  address = ""',
    '[plugins."io.containerd.internal.v1.opt"]', `  path = "${T}/ctd/opt"`, '',
  ].join('\n'));
  const log = openSync(path.join(T, 'containerd.log'), 'a');
  const child = spawn('nsenter', [`--net=/var/run/netns/${n.netns}`, 'containerd', '--config', cfg], { detached: true, stdio: ['ignore', log, log], env: { PATH: PATH_ENV } });
  closeSync(log);
  child.unref();
  ctdPid = child.pid!;
  await until('containerd', () => { if (!alive(ctdPid)) throw new Error(`containerd exited: ${tail(path.join(T, 'containerd.log'))}`); return ctr('version').code === 0; }, 20_000);
}

/** Runs the DaemonSet's pod on a node: init containers to completion, then the agent, detached. */
async function runDaemonSetPod(n: Node): Promise<void> {
  for (const c of podSpec.initContainers as Obj[]) {
    const id = `${n.name}-${c.name}`;
    containers.add(id);
    const r = ctr('run', '--rm', ...containerArgs(n, c));
    if (r.code !== 0) throw new Error(`init container ${c.name} on ${n.name}: exit ${r.code}: ${r.out}${r.err}`);
    containers.delete(id);
  }
  n.agentId = `${n.name}-${agentSpec.name}`;
  containers.add(n.agentId);
  ctrMust('run', '--detach', '--log-uri', `file://${path.join(n.dir, 'agent.log')}`, ...containerArgs(n, agentSpec));
  n.agentPid = taskPid(n.agentId);
}

beforeAll(async () => {
  for (const f of ['dist/cli/twill.js', 'dist/cni/twill-cni', 'dataplane/native/build/Release/twill_native.node']) {
    if (!existsSync(path.join(ROOT, f))) throw new Error(`${f} is missing: build first (bash scripts/ensure-deps.sh)`);
  }
  hadRunCtd = existsSync(RUN_CTD);
  hadRunCtdS = existsSync(RUN_CTD_S);
  T = mkdtempSync(path.join(tmpdir(), 'twt-ds-'));
  chmodSync(T, 0o755);
  // The image: the runtime stage, its COPY --from=build taken from this checkout's build (node_modules pruned to production).
  const build = path.join(T, 'build');
  mkdirSync(build);
  image = await timed('image', () => assembleImage({
    work: T, name: IMAGE, progress: (m) => process.stderr.write(`  ${m}\n`),
    fromStage: (stage, src) => {
      if (stage !== 'build' || !src.startsWith('/src/')) throw new Error(`COPY --from=${stage} ${src}: not known here`);
      const rel = src.slice('/src/'.length);
      return rel === 'node_modules' ? (existsSync(path.join(build, 'node_modules')) ? path.join(build, 'node_modules') : productionNodeModules(build)) : path.join(ROOT, rel);
    },
  }));
  process.stderr.write(`  image: ${image.cached ? 'system layer cached' : 'system layer built'}; Node ${image.node}; steps ${JSON.stringify(image.timings)} ms\n`);
  const pods = await timed('podImage', () => busyboxImage(T, PODIMG));
  // The network.
  must('ip', ['netns', 'add', `${NS}-u`]);
  made.push(`${NS}-u`);
  must('ip', ['-n', `${NS}-u`, 'link', 'set', 'lo', 'up']);
  must('ip', ['-n', `${NS}-u`, 'link', 'add', 'br0', 'type', 'bridge']);
  must('ip', ['-n', `${NS}-u`, 'addr', 'add', `${API_IP}/16`, 'dev', 'br0']);
  must('ip', ['-n', `${NS}-u`, 'link', 'set', 'br0', 'up']);
  await startApi();
  for (const k of [1, 2]) {
    const n = addNode(k);
    api!.put('nodes', nodeObject(n.name, n.podCIDR, n.ip)); // as the kubelet registers it and node IPAM gives it a CIDR
  }
  api!.put('namespaces', { metadata: { name: 'default' } });
  writeFileSync(path.join(T, 'node-ctr.sh'), [
    'set -e', 'N=$1; T=$2; shift 2',
    'mount -t overlay twt-ds-etc -o "lowerdir=$N/view/etc:/etc" /etc',
    'mount -t overlay twt-ds-opt -o "lowerdir=$N/view/opt:/opt" /opt',
    'mount -t overlay twt-ds-varlib -o "lowerdir=$N/view/varlib:/var/lib" /var/lib',
    'mkdir -p /run/twill && mount --bind "$N/host/run/twill" /run/twill',
    'exec ctr -a "$T/containerd.sock" "$@"', '',
  ].join('\n'));
  await startContainerd(nodes[0]);
  await timed('import', () => { ctrMust('images', 'import', image.archive); ctrMust('images', 'import', pods); });
  rmSync(image.archive, { force: true });
  await timed('daemonset', async () => {
    for (const n of nodes) await runDaemonSetPod(n);
    for (const n of nodes) {
      await until(`the agent on ${n.name}`, async () => {
        if (!taskPid(n.agentId)) throw new Error(`the agent on ${n.name} exited:\n${tail(path.join(n.dir, 'agent.log'))}`);
        try { await request(path.join(hostPath(n, '/run/twill'), 'agent.sock'), { op: 'status' }, 1000); return true; } catch { return false; }
      }, 60_000, () => tail(path.join(n.dir, 'agent.log')));
    }
  });
}, 20 * 60_000);

afterAll(async () => {
  if (sock && ctdPid && alive(ctdPid)) for (const id of containers) removeContainer(id);
  if (ctdPid) await stopPid(ctdPid, 5000);
  if (pipePid) await stopPid(pipePid);
  apiUnix?.close();
  await api?.close();
  if (T) {
    await sweepContainerd(T, sock);
  }
  for (const ns of made.reverse()) sh('ip', ['netns', 'del', ns]);
  for (const ctl of existsSync('/sys/fs/cgroup') ? readdirSync('/sys/fs/cgroup') : []) {
    const base = path.join('/sys/fs/cgroup', ctl);
    let entries: string[] = [];
    try { entries = readdirSync(base); } catch { continue; }
    for (const e of entries) if (e.startsWith(`twt-ds${ID}-`)) try { rmdirSync(path.join(base, e)); } catch { /* busy or gone */ }
  }
  if (T) rmSync(T, { recursive: true, force: true });
  if (!hadRunCtdS) try { rmdirSync(RUN_CTD_S); } catch { /* someone else's */ }
  if (!hadRunCtd) try { rmdirSync(RUN_CTD); } catch { /* idem */ }
  process.stderr.write(`  timings (ms): ${JSON.stringify(timings)}\n`);
}, 120_000);

// ---------------------------------------------------------------- tests

describe('deploy/twill.yaml\'s DaemonSet under containerd, on two nodes, with deploy/Dockerfile\'s image', () => {
  test('the init container installed twill-cni and the conflist on each node, and left no temp file', () => {
    for (const n of nodes) {
      const bin = path.join(hostPath(n, '/opt/cni/bin'), 'twill-cni');
      const v = spawnSync(bin, [], { env: { CNI_COMMAND: 'VERSION' }, encoding: 'utf8' });
      expect(v.stdout).toContain('supportedVersions');
      expect(readFileSync(path.join(hostPath(n, '/etc/cni/net.d'), '10-twill.conflist'), 'utf8')).toBe(cm.data['10-twill.conflist']);
      expect(readdirSync(hostPath(n, '/etc/cni/net.d'))).toEqual(['10-twill.conflist']);
      expect(readdirSync(hostPath(n, '/opt/cni/bin')).filter((f) => f.includes('tmp'))).toEqual([]);
    }
  });

  test('the agent runs unprivileged: the runtime\'s default capabilities plus NET_ADMIN, NET_RAW and SYS_NICE, in the node\'s network namespace and its own PID namespace', () => {
    for (const n of nodes) {
      const pid = taskPid(n.agentId);
      expect(pid).toBeGreaterThan(0);
      const caps = capNames(procField(pid, 'CapEff'));
      expect(caps).toContain('NET_ADMIN');
      expect(caps).toContain('NET_RAW');
      expect(caps).toContain('SYS_NICE'); // the workers' SCHED_FIFO wait
      for (const c of ['SYS_ADMIN', 'SYS_MODULE', 'SYS_PTRACE', 'BPF', 'PERFMON', 'IPC_LOCK', 'SYS_RESOURCE']) expect(caps, c).not.toContain(c);
      expect(statSync(`/proc/${pid}/ns/net`).ino).toBe(statSync(`/var/run/netns/${n.netns}`).ino);
      expect(readlinkSync(`/proc/${pid}/ns/pid`)).not.toBe(readlinkSync('/proc/self/ns/pid'));
      expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean)).toEqual([...image.config.Entrypoint!, ...agentSpec.args]);
      expect(inNode(n, ['ip', 'link', 'show', 'dev', 'twill0']).code, 'the TUN device').toBe(0);
    }
  });

  test('each agent learned the cluster from the API over HTTPS (service account token and CA, through kube-proxy\'s ClusterIP rule) and announced its VTEP', async () => {
    for (const n of nodes) {
      const ann = (api!.get('nodes', n.name)!.metadata as Obj).annotations as Record<string, string>;
      expect(ann[FLANNEL.backendType]).toBe('vxlan');
      expect(ann[FLANNEL.publicIP]).toBe(n.ip);
      expect(JSON.parse(ann[FLANNEL.backendData]).VtepMAC).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
      const st = (await request(path.join(hostPath(n, '/run/twill'), 'agent.sock'), { op: 'status' })) as Obj;
      expect(st.node).toBe(n.name);
      expect(st.podCIDR).toBe(n.podCIDR);
    }
    expect(api!.requests.filter((r) => r.startsWith('PATCH /api/v1/nodes/')).length).toBeGreaterThanOrEqual(2);
  });

  test('iptables: each agent wrote its rules with its node\'s backend (node 1 legacy, node 2 nft), as the wrapper picked it', () => {
    for (const n of nodes) {
      const other = n.backend === 'legacy' ? 'nft' : 'legacy';
      const mine = inNode(n, [`iptables-${n.backend}-save`, '-t', 'nat']).out;
      expect(mine, `${n.name} ${n.backend}`).toContain(':TWILL-POSTROUTING');
      expect(inNode(n, [`iptables-${other}-save`]).out, `${n.name} ${other}`).not.toContain('TWILL-');
    }
  });

  test('pods started with ctr run --cni through the installed conflist reach each other across the nodes', async () => {
    const [n1, n2] = nodes;
    const server = `srv-${ID}`, client = `cli-${ID}`;
    // busybox httpd serving a page that names the pod; fetched with nc (busybox's static wget crashes here).
    const web = (id: string) => `mkdir -p /www && echo hello-from-${id} > /www/index.html && exec httpd -f -p 8080 -h /www`;
    for (const [n, id] of [[n2, server], [n1, client]] as const) {
      const r = podRun(n, id, ['--detach'], ['sh', '-c', web(id)]);
      expect(r.code, r.out + r.err).toBe(0);
    }
    const exec = (id: string, ...cmd: string[]) => ctr('tasks', 'exec', '--exec-id', `x${randomBytes(3).toString('hex')}`, id, ...cmd);
    const ipOf = (id: string) => /inet (10\.244\.\d+\.\d+)\//.exec(exec(id, 'ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0').out)?.[1] ?? '';
    const get = (from: string, ip: string) => exec(from, 'sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${ip} 8080`).out;
    const sIP = ipOf(server), cIP = ipOf(client);
    expect(sIP.startsWith('10.244.2.'), sIP).toBe(true);
    expect(cIP.startsWith('10.244.1.'), cIP).toBe(true);
    await until('a page across the nodes', () => get(client, sIP).includes(`hello-from-${server}`), 20_000, () => get(client, sIP));
    expect(get(server, cIP)).toContain(`hello-from-${client}`);
    expect(exec(client, 'ping', '-c', '2', '-W', '3', sIP).code).toBe(0);
    expect(exec(server, 'ping', '-c', '2', '-W', '3', cIP).code).toBe(0);
    // Both agents registered their pod from the plugin's call.
    for (const [n, ip] of [[n1, cIP], [n2, sIP]] as const) {
      const pods = (await request(path.join(hostPath(n, '/run/twill'), 'agent.sock'), { op: 'pods' })) as Obj[];
      expect(pods.map((p) => p.ip)).toContain(ip);
    }
    // Figures for the DaemonSet's requests: the agents' memory and CPU, idle, then under a bulk transfer across the nodes.
    const ticks = (pid: number) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return Number(f[11]) + Number(f[12]); };
    const mb = (pid: number, k: string) => Math.round(Number(procField(pid, k).split(' ')[0]) / 1024);
    const cpuOver = async (ms: number, during?: Promise<unknown>) => {
      const pids = nodes.map((n) => taskPid(n.agentId));
      const t0 = pids.map(ticks), w0 = Date.now();
      await Promise.all([new Promise((r) => setTimeout(r, ms)), during]);
      return pids.map((p, k) => Math.round((ticks(p) - t0[k]) * 10 / ((Date.now() - w0) / 1000))); // millicores (100 ticks/s)
    };
    const idle = await cpuOver(5000);
    exec(server, 'dd', 'if=/dev/zero', 'of=/www/big', 'bs=1M', 'count=64');
    const load = exec.bind(null, client, 'sh', '-c', `end=$(($(date +%s)+8)); n=0; while [ $(date +%s) -lt $end ]; do printf 'GET /big HTTP/1.0\\r\\n\\r\\n' | nc -w 5 ${sIP} 8080 | wc -c; n=$((n+1)); done`);
    let moved = '';
    const busy = await cpuOver(8000, new Promise<void>((r) => setImmediate(() => { moved = load().out; r(); })));
    const mbMoved = moved.split('\n').filter(Boolean).reduce((a, x) => a + Number(x), 0) / 1e6;
    nodes.forEach((n, k) => {
      const pid = taskPid(n.agentId);
      process.stderr.write(`  ${n.name} agent (${agentSpec.name}, ${JSON.parse(cm.data['agent.json']).workers} workers): RSS ${mb(pid, 'VmRSS')} MB, peak ${mb(pid, 'VmHWM')} MB; CPU idle ${idle[k]}m, moving ${Math.round(mbMoved)} MB across the nodes in 8 s (one TCP stream at a time) ${busy[k]}m; threads ${procField(pid, 'Threads')}\n`);
    });
    expect(mbMoved).toBeGreaterThan(64);
  });

  test('the health endpoints the probes use answer on the node\'s address', () => {
    for (const n of nodes) {
      for (const probe of [agentSpec.livenessProbe, agentSpec.readinessProbe]) {
        const url = `http://${n.ip}:${probe.httpGet.port}${probe.httpGet.path}`;
        const r = inNode(n, ['curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', String(probe.timeoutSeconds ?? 1), url]);
        expect(r.out, `${url}: ${r.err}`).toBe('200');
      }
    }
  });
});
