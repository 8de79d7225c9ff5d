// twill-cni under a real runtime: containerd 1.6 (Debian) running inside a lab
// node's network namespace, `ctr run --cni` starting a busybox container whose
// network is set up by twill-cni, reaching a pod on the other node, and removal
// releasing the address.
//
// How it is wired, without touching the host:
//  - containerd: `nsenter --net=<node netns> containerd --config <tmp>/config.toml`,
//    its root, state, sockets and "opt" dir in a temp dir (ip netns exec would
//    remount /sys and runc then finds no cgroup mount).
//  - The CNI calls are made by ctr itself (go-cni inside ctr, not containerd), with
//    go-cni's fixed dirs: conf /etc/cni/net.d, plugins /opt/cni/bin (Debian adds
//    /usr/lib/cni). ctr has no flag or variable for them, so ctr runs in the node's
//    netns AND in a private mount namespace (unshare --mount --propagation private)
//    where read-only overlays put <tmp>/etcadd/cni/net.d -> the lab node's conf dir
//    over /etc and <tmp>/optadd/cni/bin -> the node's bin dir over /opt. The host's
//    /etc/cni and /opt/cni are never created.
//  - ctr --runc-root, --fifo-dir and --cgroup /twt-rt-<id> keep runc's state, the
//    FIFOs and the cgroup ours. The shim's socket dir /run/containerd/s is fixed in
//    containerd 1.6: created if missing, removed afterwards if we created it.
//  - The image: Debian's busybox-static and its applet links as one layer of an OCI
//    image layout, imported with `ctr images import`.
//
// Only `ctr run` without --detach removes the network (ctr 1.6 has no CNI DEL on
// task/container delete), so the container waits for a file on a bind mount while
// the test looks at IPAM and the agent, then exits and ctr runs DEL.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, rmdirSync,
  rmSync, statSync, symlinkSync, writeFileSync, closeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { labUp, labDown, nodeCni } from '../../lab/lab.js';
import type { LabNode, LabPod, LabState } from '../../lab/state.js';
import { hostIfName } from '../../cni/plugin.js';
import { installNodeCni, invokeCni } from '../../cni/runtime.js';
import { alive, stopPid } from '../../lab/proc.js';
import { ensureBinary } from '../cni/helpers.js';
import { agentPods, hex, inCidr24, ipamHeld, labName, linkExists, ping, sh, waitForEcho, PATH_ENV, sweepContainerd } from './helpers.js';

const LAB = labName();
const IMAGE = 'docker.io/twill/busybox:rt';
const RUN_CTD = '/run/containerd';
const RUN_CTD_S = '/run/containerd/s';

let s: LabState;
let n1: LabNode;
let peer: LabPod; // the lab's pod on node2
let T = ''; // temp dir: containerd root/state/sockets, image, ctr wrapper
let sock = '';
let ctdPid = 0;
let ipamDir = '', network = '';
let hadRunCtd = true, hadRunCtdS = true;
const containers = new Set<string>(); // ids we ran
const ctrPids = new Set<number>();

// ---------------------------------------------------------------- setup helpers

function must(cmd: string, args: string[], o: { input?: string; timeout?: number } = {}): string {
  const r = sh(cmd, args, o);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.code}: ${r.err.trim()}${ctdLogTail()}`);
  return r.out;
}

function ctdLogTail(): string {
  try { return `\ncontainerd.log (tail):\n${readFileSync(path.join(T, 'containerd.log'), 'utf8').split('\n').slice(-15).join('\n')}`; } catch { return ''; }
}

const ctr = (...args: string[]) => sh('ctr', ['-a', sock, ...args]);

/** An OCI image layout tar with one layer: busybox-static and a link per applet. */
function buildImage(dir: string): string {
  const rootfs = path.join(dir, 'rootfs');
  for (const d of ['bin', 'tmp', 'proc', 'sys', 'dev', 'etc', 'x']) mkdirSync(path.join(rootfs, d), { recursive: true });
  copyFileSync('/bin/busybox', path.join(rootfs, 'bin/busybox'));
  chmodSync(path.join(rootfs, 'bin/busybox'), 0o755);
  for (const a of must('/bin/busybox', ['--list']).split('\n').map((x) => x.trim()).filter((x) => x && x !== 'busybox')) {
    symlinkSync('busybox', path.join(rootfs, 'bin', a));
  }
  const layerTar = path.join(dir, 'layer.tar');
  must('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', rootfs, '-cf', layerTar, '.']);
  const layout = path.join(dir, 'layout');
  const blobs = path.join(layout, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const put = (b: Buffer) => { const h = sha(b); writeFileSync(path.join(blobs, h), b); return { digest: `sha256:${h}`, size: b.length }; };
  const layer = readFileSync(layerTar);
  const L = put(layer);
  const C = put(Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux',
    config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'], WorkingDir: '/' },
    rootfs: { type: 'layers', diff_ids: [`sha256:${sha(layer)}`] }, // uncompressed layer: diff id = digest
  })));
  const M = put(Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...C },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...L }],
  })));
  writeFileSync(path.join(layout, 'index.json'), JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{
      mediaType: 'application/vnd.oci.image.manifest.v1+json', ...M, platform: { architecture: 'amd64', os: 'linux' },
      annotations: { 'io.containerd.image.name': IMAGE, 'org.opencontainers.image.ref.name': 'rt' },
    }],
  }));
  writeFileSync(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const image = path.join(dir, 'image.tar');
  must('tar', ['-C', layout, '-cf', image, 'oci-layout', 'index.json', 'blobs']);
  rmSync(rootfs, { recursive: true, force: true });
  return image;
}

async function startContainerd(node: LabNode): Promise<void> {
  sock = path.join(T, 'containerd.sock');
  const cfg = path.join(T, 'config.toml');
  writeFileSync(cfg, [
    'version = 2',
    `root = "${T}/root"`,
    `state = "${T}/state"`,
    // Only what ctr run needs: no CRI (it would want its own CNI setup), no snapshotters we cannot use.
    'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",',
    '  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp",',
    '  "io.containerd.internal.v1.tracing"]',
    '[grpc]', `  address = "${sock}"`,
    '[ttrpc]', `  address = "${sock}.ttrpc"`,
    '[debug]', '  address = ""',
    '[metrics]', '  address = ""',
    '[plugins."io.containerd.internal.v1.opt"]', `  path = "${T}/opt"`, // default /opt/containerd
    '',
  ].join('\n'));
  const log = openSync(path.join(T, 'containerd.log'), 'a');
  const child = spawn('nsenter', [`--net=/var/run/netns/${node.netns}`, 'containerd', '--config', cfg], {
    detached: true, stdio: ['ignore', log, log], env: { PATH: PATH_ENV },
  });
  closeSync(log);
  child.unref();
  ctdPid = child.pid!;
  const deadline = Date.now() + 20_000;
  while (ctr('version').code !== 0) {
    if (!alive(ctdPid)) throw new Error(`containerd exited${ctdLogTail()}`);
    if (Date.now() > deadline) throw new Error(`containerd did not answer on ${sock} within 20 s${ctdLogTail()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * ctr run --cni in the node's netns and a private mount namespace that shows the lab's CNI dirs at go-cni's
 * paths; --rm (attached) or --detach, with <tmp>/x bind-mounted at /x.
 */
function ctrRun(node: LabNode, id: string, cmd: string[], o: { detach?: boolean } = {}): { output: () => string; done: Promise<number> } {
  containers.add(id);
  const child = spawn('nsenter', [
    `--net=/var/run/netns/${node.netns}`, 'unshare', '--mount', '--propagation', 'private', 'sh', path.join(T, 'ctr.sh'), T,
    'run', '--cni', o.detach ? '--detach' : '--rm', '--fifo-dir', path.join(T, 'fifo'), '--runc-root', path.join(T, 'runc'),
    '--cgroup', `/twt-rt-${id}`, '--mount', `type=bind,src=${path.join(T, 'x')},dst=/x,options=rbind:rw`, IMAGE, id, ...cmd,
  ], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: PATH_ENV } });
  if (child.pid) ctrPids.add(child.pid);
  let out = '';
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { out += d; });
  const done = new Promise<number>((resolve) => child.on('close', (code) => { if (child.pid) ctrPids.delete(child.pid); resolve(code ?? -1); }));
  return { output: () => out, done };
}

async function waitFor(what: string, cond: () => boolean, ms: number, detail: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${detail()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Removes a container ctr left behind (a failed `ctr run` leaves a CREATED task). */
function removeContainer(id: string): void {
  ctr('tasks', 'kill', '-s', 'SIGKILL', id);
  ctr('tasks', 'delete', '-f', id);
  ctr('containers', 'delete', id);
}

// ---------------------------------------------------------------- lifecycle

beforeAll(async () => {
  ensureBinary();
  hadRunCtd = existsSync(RUN_CTD);
  hadRunCtdS = existsSync(RUN_CTD_S);
  T = mkdtempSync(path.join(tmpdir(), 'twt-rt-ctd-'));
  s = await labUp({ name: LAB, nodes: 2, podsPerNode: 1 });
  // The lab writes 1.0.0 conflists; these tests also show what a 1.1.0 one meets in libcni 1.1 / containerd 1.6.
  for (const n of s.nodes) installNodeCni(n.stateDir, n.socket, { cniVersion: '1.1.0' });
  n1 = s.nodes[0];
  peer = s.pods.find((p) => p.node === 'node2')!;
  const cni = nodeCni(n1);
  const list = JSON.parse(readFileSync(cni.confFile, 'utf8')) as { name: string; plugins: { ipam: { dataDir: string } }[] };
  ipamDir = list.plugins[0].ipam.dataDir;
  network = list.name;
  // go-cni's paths, seen only by ctr's private mount namespace.
  mkdirSync(path.join(T, 'etcadd', 'cni'), { recursive: true });
  mkdirSync(path.join(T, 'optadd', 'cni'), { recursive: true });
  symlinkSync(path.dirname(cni.confFile), path.join(T, 'etcadd', 'cni', 'net.d'));
  symlinkSync(cni.binDir, path.join(T, 'optadd', 'cni', 'bin'));
  for (const d of ['x', 'fifo', 'runc']) mkdirSync(path.join(T, d));
  writeFileSync(path.join(T, 'ctr.sh'), [
    'set -e',
    'T=$1; shift',
    'mount -t overlay twt-rt-etc -o "lowerdir=$T/etcadd:/etc" /etc',
    'mount -t overlay twt-rt-opt -o "lowerdir=$T/optadd:/opt" /opt',
    'exec ctr -a "$T/containerd.sock" "$@"',
    '',
  ].join('\n'));
  const image = buildImage(T);
  await startContainerd(n1);
  must('ctr', ['-a', sock, 'images', 'import', image], { timeout: 60_000 });
  await waitForEcho(peer.netns, peer.ip);
}, 180_000);

afterAll(async () => {
  // An attached `ctr run` still waiting (a test failed half-way): let its container exit so ctr runs DEL.
  if (T && ctrPids.size) {
    try { writeFileSync(path.join(T, 'x', 'go'), ''); } catch { /* no dir */ }
    const deadline = Date.now() + 5000;
    while (ctrPids.size && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  }
  for (const pid of ctrPids) await stopPid(pid);
  if (sock && ctdPid && alive(ctdPid)) for (const id of containers) removeContainer(id);
  if (ctdPid) await stopPid(ctdPid, 5000);
  if (T) {
    await sweepContainerd(T, sock); // shims and container mounts, should any be left
    rmSync(T, { recursive: true, force: true });
  }
  for (const id of containers) {
    for (const ctl of existsSync('/sys/fs/cgroup') ? readdirSync('/sys/fs/cgroup') : []) {
      const d = path.join('/sys/fs/cgroup', ctl, `twt-rt-${id}`);
      if (existsSync(d)) try { rmdirSync(d); } catch { /* busy or gone */ }
    }
  }
  if (!hadRunCtdS) try { rmdirSync(RUN_CTD_S); } catch { /* not empty (someone else's containerd) or gone */ }
  if (!hadRunCtd) try { rmdirSync(RUN_CTD); } catch { /* idem */ }
  await labDown(LAB);
}, 120_000);

// ---------------------------------------------------------------- tests

describe('containerd 1.6 + ctr run --cni, inside node1\'s namespace', () => {
  test('containerd runs in the node\'s network namespace and has the busybox image', () => {
    expect(statSync(`/proc/${ctdPid}/ns/net`).ino).toBe(statSync(`/var/run/netns/${n1.netns}`).ino);
    expect(readlinkSync(`/proc/${ctdPid}/exe`)).toBe('/usr/bin/containerd');
    expect(ctr('images', 'ls', '-q').out.split('\n')).toContain(IMAGE);
  });

  test('with the lab\'s 1.1.0 conflist, ctr (libcni 1.1) rejects the 1.1.0 result; ctr then runs DEL, which releases everything', async () => {
    const id = `v11-${hex(3)}`;
    const fullId = `default-${id}`;
    const run = ctrRun(n1, id, ['true']);
    const code = await run.done;
    expect(code).not.toBe(0);
    expect(run.output()).toMatch(/plugin type="twill-cni" failed \(add\): unsupported CNI result version "1\.1\.0"/);
    expect(ipamHeld(ipamDir, network).filter((h) => h.owner.startsWith(`${fullId}:`))).toEqual([]);
    expect((await agentPods(n1.socket)).some((p) => p.containerId === fullId)).toBe(false);
    expect(linkExists(n1.netns, hostIfName(fullId, 'eth0'))).toBe(false);
    // ctr 1.6 leaves the never-started task and its container behind after a failed setup: remove them.
    removeContainer(id);
    expect(ctr('containers', 'ls', '-q').out.split('\n')).not.toContain(id);
  });

  test('with a 1.0.0 conflist: the container gets a twill address, reaches the pod on node2, and removal releases it', async () => {
    // Next to the lab's, sorted first (go-cni takes the first file); same network name, so the same IPAM store.
    const list = JSON.parse(readFileSync(nodeCni(n1).confFile, 'utf8')) as Record<string, unknown>;
    writeFileSync(path.join(path.dirname(nodeCni(n1).confFile), '05-twill-1.0.0.conflist'), JSON.stringify({ ...list, cniVersion: '1.0.0' }, null, 1));
    const id = `c-${hex(3)}`;
    const fullId = `default-${id}`; // go-cni's container id: <namespace>-<id>
    const script = [
      'ip -4 -o addr show dev eth0',
      `ping -c 1 -W 3 ${peer.ip} >/dev/null && echo PING-OK`,
      `echo hello-from-${id} | nc -w 3 ${peer.ip} 8080`,
      'echo READY',
      'i=0; while [ ! -e /x/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done',
      'echo BYE',
    ].join('; ');
    const run = ctrRun(n1, id, ['sh', '-c', script]);
    let exited: number | undefined;
    void run.done.then((c) => { exited = c; });
    await waitFor('READY from the container', () => run.output().includes('READY') || exited !== undefined, 30_000, run.output);
    const out = run.output();
    expect(out, out).toContain('READY');
    const ip = /inet (\d+\.\d+\.\d+\.\d+)\/24/.exec(out)?.[1] ?? '';
    expect(inCidr24(ip, n1.podCIDR), out).toBe(true);
    expect(out).toContain('PING-OK');
    expect(out).toContain(`hello-from-${id}`);

    // While it runs: IPAM holds the address for go-cni's id, the agent serves it, the node has the veth,
    // and the pod on node2 reaches the container.
    expect(ipamHeld(ipamDir, network)).toContainEqual({ ip, owner: `${fullId}:eth0` });
    const served = (await agentPods(n1.socket)).find((p) => p.containerId === fullId);
    expect(served?.ip).toBe(ip);
    expect(served?.netns).toMatch(/^\/proc\/\d+\/ns\/net$/);
    expect(linkExists(n1.netns, hostIfName(fullId, 'eth0'))).toBe(true);
    expect(ping(peer.netns, ip)).toBe(true);

    // Let it exit: ctr runs CNI DEL (with the cached prevResult), deletes the task and the container.
    writeFileSync(path.join(T, 'x', 'go'), '');
    const code = await run.done;
    expect(code, run.output()).toBe(0);
    expect(run.output()).toContain('BYE');
    expect(ipamHeld(ipamDir, network).filter((h) => h.owner.startsWith(`${fullId}:`))).toEqual([]);
    expect(ipamHeld(ipamDir, network).some((h) => h.ip === ip)).toBe(false);
    expect((await agentPods(n1.socket)).some((p) => p.containerId === fullId)).toBe(false);
    expect(linkExists(n1.netns, hostIfName(fullId, 'eth0'))).toBe(false);
    expect(ctr('containers', 'ls', '-q').out.split('\n')).not.toContain(id);
    expect(ctr('tasks', 'ls', '-q').out.split('\n')).not.toContain(id);
    containers.delete(id);
  });
  test('ctr run -d: ctr 1.6 never runs DEL for a detached container, so its address outlives it; twill-cni GC frees it', async () => {
    const id = `d-${hex(3)}`;
    const fullId = `default-${id}`;
    const run = ctrRun(n1, id, ['sleep', '600'], { detach: true });
    const code = await run.done;
    expect(code, run.output()).toBe(0);
    const held = ipamHeld(ipamDir, network).find((h) => h.owner === `${fullId}:eth0`);
    expect(held, JSON.stringify(ipamHeld(ipamDir, network))).toBeDefined();
    expect(ping(peer.netns, held!.ip)).toBe(true);
    // Kill and delete task and container the ctr way: no CNI call is made.
    removeContainer(id);
    expect(ctr('containers', 'ls', '-q').out.split('\n')).not.toContain(id);
    expect(ipamHeld(ipamDir, network).some((h) => h.owner === `${fullId}:eth0`)).toBe(true); // leaked, as ctr 1.6 does
    // The netns went with the task, and the veth with it; GC (spec 1.1) with the attachments still valid frees the rest.
    const keep = s.pods.filter((p) => p.node === n1.name).map((p) => ({ containerID: p.containerId, ifname: 'eth0' }));
    invokeCni(n1.netns, nodeCni(n1), 'GC', { containerId: 'gc', netns: '' }, { 'cni.dev/valid-attachments': keep });
    expect(ipamHeld(ipamDir, network).some((h) => h.owner === `${fullId}:eth0`)).toBe(false);
    expect((await agentPods(n1.socket)).some((p) => p.containerId === `${fullId}`)).toBe(false);
    // The lab's own pod on node1 kept its address and still answers.
    const mine = s.pods.find((p) => p.node === n1.name)!;
    expect(ipamHeld(ipamDir, network)).toContainEqual({ ip: mine.ip, owner: `${mine.containerId}:eth0` });
    expect(ping(peer.netns, mine.ip)).toBe(true);
    containers.delete(id);
  });
});
