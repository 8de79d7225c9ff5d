// wireguard-go, the userspace TUN peer: two nodes whose pods reach each other
// through wireguard-go tunnels over a veth underlay. Encrypts, so it is the
// "userspace engine" row, not a like-for-like overlay.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { ipn, netnsDel, nsExec, sysctl } from '../../lib/sh.js';
import { stopPid } from '../../lab/proc.js';
import { addKernelPod } from './kernel-vxlan.js';
import type { PeerTopology } from './topology.js';


export async function wireguardPair(prefix: string): Promise<PeerTopology> {
  const ns = (s: string) => `${prefix}${s}`;
  const names = [ns('p1'), ns('p2'), ns('p3'), ns('n1'), ns('n2')];
  const ifs = [`${prefix}wg1`.slice(0, 15), `${prefix}wg2`.slice(0, 15)]; // unique: wireguard-go's socket dir is shared by all namespaces
  const pids: number[] = [];
  const keyDir = mkdtempSync(path.join(os.tmpdir(), 'twill-wg-'));
  const teardown = async () => {
    for (const pid of pids) await stopPid(pid);
    names.forEach(netnsDel);
    for (const i of ifs) rmSync(`/var/run/wireguard/${i}.sock`, { force: true });
    rmSync(keyDir, { recursive: true, force: true });
  };
  names.forEach(netnsDel);
  try {
    for (const n of [ns('n1'), ns('n2')]) { ipn('', 'netns', 'add', n); ipn(n, 'link', 'set', 'lo', 'up'); sysctl(n, 'net.ipv4.ip_forward', '1'); }
    ipn(ns('n1'), 'link', 'add', 'ul0', 'type', 'veth', 'peer', 'name', 'ul0', 'netns', ns('n2'));
    const keys = [0, 1].map((i) => {
      const priv = execFileSync('wg', ['genkey'], { encoding: 'utf8' }).trim();
      const pub = execFileSync('wg', ['pubkey'], { input: priv, encoding: 'utf8' }).trim();
      const file = path.join(keyDir, `k${i}`);
      writeFileSync(file, priv, { mode: 0o600 });
      return { file, pub };
    });
    for (let i = 0; i < 2; i++) {
      const n = ns(`n${i + 1}`), peer = 1 - i;
      ipn(n, 'addr', 'add', `172.31.251.${i + 1}/24`, 'dev', 'ul0');
      ipn(n, 'link', 'set', 'ul0', 'up');
      const child = spawn('ip', ['netns', 'exec', n, 'wireguard-go', '-f', ifs[i]], { detached: true, stdio: 'ignore', env: { ...process.env, LOG_LEVEL: 'error' } });
      child.unref();
      pids.push(child.pid!);
      const deadline = Date.now() + 5000;
      while (!existsSync(`/var/run/wireguard/${ifs[i]}.sock`)) {
        if (Date.now() > deadline) throw new Error(`wireguard-go did not create ${ifs[i]}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      nsExec(n, 'wg', 'set', ifs[i], 'private-key', keys[i].file, 'listen-port', '51820',
        'peer', keys[peer].pub, 'allowed-ips', `10.251.${peer + 1}.0/24`, 'endpoint', `172.31.251.${peer + 1}:51820`);
      ipn(n, 'addr', 'add', `10.251.${i + 1}.0/32`, 'dev', ifs[i]);
      ipn(n, 'link', 'set', ifs[i], 'mtu', '1420', 'up');
      ipn(n, 'route', 'add', `10.251.${peer + 1}.0/24`, 'dev', ifs[i]);
    }
    const pods = [
      { netns: ns('p1'), ip: addKernelPod(ns('n1'), ns('p1'), 'veth0', '10.251.1.0/24', 2, 1420) },
      { netns: ns('p2'), ip: addKernelPod(ns('n2'), ns('p2'), 'veth0', '10.251.2.0/24', 2, 1420) },
      { netns: ns('p3'), ip: addKernelPod(ns('n1'), ns('p3'), 'veth1', '10.251.1.0/24', 3, 1420) },
    ];
    return { pods, pids, teardown };
  } catch (e) {
    await teardown();
    throw e;
  }
}
