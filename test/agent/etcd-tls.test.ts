// The etcd client over TLS with client certificates and auth (flanneld's
// -etcd-cafile/-etcd-certfile/-etcd-keyfile, -etcd-username/-etcd-password)
// against a real etcd (Debian's etcd-server) on loopback, started with
// certificates this test makes with openssl: a CA, a server certificate for
// 127.0.0.1, a client certificate; --client-cert-auth, and auth enabled with a
// root user. A subnet is leased and read back (and watched); a wrong CA, a
// wrong password, no client certificate, no credentials and unreadable files
// each fail with an error that names the endpoint or the file; an expired token
// is renewed. And an agent in a network namespace of this test's own, with etcd
// on that namespace's loopback, configured only with endpoint, files and
// credentials, leases its subnet for its interface's address.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EtcdClient, type EtcdConfig } from '../../agent/sources/etcd/client.js';
import { EtcdSource, FLANNEL_PREFIX, MODEL_PREFIX, leaseSubnet } from '../../agent/sources/etcd/source.js';
import type { ClusterView } from '../../agent/sources/file.js';
import { ipn, netnsDel } from '../../lib/sh.js';
import { stopPid } from '../../lab/proc.js';
import { request } from '../../agent/socket.js';
import { distFile } from '../../lib/paths.js';

let dir: string, etcd: ChildProcess | undefined, endpoint: string;
const f = (name: string) => path.join(dir, name);
const TOKEN_TTL_S = 2; // etcd's --auth-token-ttl: short, so the test sees a token expire

function openssl(...args: string[]): void {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}
/** A key and a certificate signed by `ca` (or self-signed when ca is undefined). */
function cert(name: string, subject: string, ca?: string, ext?: string): void {
  if (!ca) return openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '1', '-subj', subject);
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject);
  writeFileSync(f(`${name}.ext`), ext ?? '');
  openssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${name}.crt`, '-days', '1', '-extfile', `${name}.ext`);
}
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => resolve(p)); });
    s.on('error', reject);
  });
}
const etcdctl = (...args: string[]) => execFileSync('etcdctl', [`--endpoints=${endpoint}`, `--cacert=${f('ca.crt')}`, `--cert=${f('client.crt')}`, `--key=${f('client.key')}`, ...args], { encoding: 'utf8', env: { ...process.env, ETCDCTL_API: '3' }, stdio: ['ignore', 'pipe', 'pipe'] });
const good = (): Omit<EtcdConfig, 'endpoints'> => ({ caFile: f('ca.crt'), certFile: f('client.crt'), keyFile: f('client.key'), username: 'root', password: 'sesame' });

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'twt-etcd-tls-'));
  cert('ca', '/CN=twill-test-ca');
  cert('other-ca', '/CN=some-other-ca');
  // The gateway dials etcd's own gRPC port with the server certificate: it needs clientAuth too.
  cert('server', '/CN=etcd-server', 'ca', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n');
  // No Common Name: with auth on, etcd's JSON gateway refuses client certificates that carry one.
  cert('client', '/O=twill', 'ca', 'extendedKeyUsage=clientAuth\n');
  cert('client-cn', '/O=twill/CN=node1', 'ca', 'extendedKeyUsage=clientAuth\n');
  const [client, peer] = [await freePort(), await freePort()];
  endpoint = `https://127.0.0.1:${client}`;
  etcd = spawn('etcd', ['--name', 't', '--data-dir', f('data'), '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint,
    '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`, '--initial-cluster', `t=http://127.0.0.1:${peer}`,
    '--cert-file', f('server.crt'), '--key-file', f('server.key'), '--client-cert-auth', '--trusted-ca-file', f('ca.crt'), '--auth-token-ttl', String(TOKEN_TTL_S)], { stdio: 'ignore' });
  for (const deadline = Date.now() + 15_000; ;) {
    try { etcdctl('endpoint', 'health'); break; } catch (e) {
      if (Date.now() > deadline || etcd.exitCode !== null) throw new Error(`etcd did not start: ${String((e as { stderr?: string }).stderr ?? e)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  etcdctl('user', 'add', 'root:sesame');
  etcdctl('auth', 'enable');
  etcdctl('--user=root:sesame', 'put', `${FLANNEL_PREFIX}/config`, JSON.stringify({ Network: '10.244.0.0/16', SubnetLen: 24, Backend: { Type: 'vxlan' } }));
}, 30_000);
afterAll(async () => {
  if (etcd?.pid) await stopPid(etcd.pid);
  rmSync(dir, { recursive: true, force: true });
});

describe('etcd over TLS with client certificates and auth', () => {
  it('a subnet is leased and read back, and a watch sees what changes', async () => {
    const client = new EtcdClient([endpoint], good());
    try {
      const lease = await leaseSubnet(client, { node: 'n1', publicIP: '192.0.2.1', vni: 1, vtepMAC: '02:00:00:00:00:01' });
      lease.stop();
      expect(lease.podCIDR).toBe('10.244.1.0/24');
      // etcdctl, as root over the same TLS, reads the lease as flanneld would
      const out = etcdctl('--user=root:sesame', 'get', lease.key).trim().split('\n');
      expect(JSON.parse(out[1])).toEqual({ PublicIP: '192.0.2.1', BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '02:00:00:00:00:01' }, NodeName: 'n1' });
      const src = new EtcdSource(client, lease.clusterCIDR, { key: lease.key, node: 'n1' });
      expect((await src.read()).nodes).toEqual([{ name: 'n1', underlayIP: '192.0.2.1', podCIDR: '10.244.1.0/24', vtepMAC: '02:00:00:00:00:01', backend: 'twill' }]);
      const seen = new Promise<ClusterView>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('the watch never saw the pod')), 5000);
        const stop = src.watch((v) => { if (v.model!.pods.length) { clearTimeout(t); stop(); resolve(v); } });
      });
      await new Promise((r) => setTimeout(r, 300)); // the watch is open
      etcdctl('--user=root:sesame', 'put', `${MODEL_PREFIX}pods/default/a`, JSON.stringify({ metadata: { namespace: 'default', name: 'a', labels: {} }, status: { podIP: '10.244.1.5' } }));
      expect((await seen).model!.pods.map((p) => p.ip)).toEqual(['10.244.1.5']);
    } finally {
      client.close();
    }
  });

  it('an expired token is renewed: the next call authenticates again and succeeds', async () => {
    const client = new EtcdClient([endpoint], good());
    const token = () => (client as unknown as { token?: Promise<string> }).token;
    try {
      await client.range(`${FLANNEL_PREFIX}/subnets/`);
      const first = await token();
      expect(first).toBeTruthy();
      await new Promise((r) => setTimeout(r, (TOKEN_TTL_S + 1.5) * 1000)); // etcd forgets it
      expect((await client.range(`${FLANNEL_PREFIX}/subnets/`)).kvs).toHaveLength(1);
      expect(await token()).not.toBe(first);
    } finally {
      client.close();
    }
  });

  it('a server whose certificate is not signed by caFile is refused, naming the endpoint and the CA file', async () => {
    const client = new EtcdClient([endpoint], { ...good(), caFile: f('other-ca.crt') });
    try {
      const err = await client.range('/').then(() => undefined, (e: Error) => e);
      expect(err?.message).toMatch(new RegExp(`^etcd ${endpoint.replace(/\./g, '\\.')}: refused the server: its certificate .*caFile ${f('other-ca.crt').replace(/\./g, '\\.')}`));
    } finally {
      client.close();
    }
  });

  it('a wrong password is refused clearly, naming the user and the endpoint', async () => {
    const client = new EtcdClient([endpoint], { ...good(), password: 'wrong' });
    try {
      await expect(client.range('/')).rejects.toThrow(`etcd ${endpoint}: authenticating as "root" failed: HTTP 400: etcdserver: authentication failed, invalid user ID or password`);
    } finally {
      client.close();
    }
  });

  it('no client certificate, no credentials, a certificate with a Common Name: each refused with what to do', async () => {
    const noCert = new EtcdClient([endpoint], { caFile: f('ca.crt'), username: 'root', password: 'sesame' });
    const noAuth = new EtcdClient([endpoint], { caFile: f('ca.crt'), certFile: f('client.crt'), keyFile: f('client.key') });
    const withCN = new EtcdClient([endpoint], { ...good(), certFile: f('client-cn.crt'), keyFile: f('client-cn.key') });
    try {
      await expect(noCert.range('/')).rejects.toThrow(new RegExp(`^etcd ${endpoint.replace(/\./g, '\\.')}: .*no client certificate given: set certFile and keyFile`));
      await expect(noAuth.range('/')).rejects.toThrow(/HTTP 40[03]: etcdserver: (user name is empty|permission denied) \(no username given: if etcd has auth enabled, set username and password\)/);
      await expect(withCN.range('/')).rejects.toThrow(/refuses client certificates that carry a Common Name: issue .*client-cn\.crt without one/);
    } finally {
      for (const c of [noCert, noAuth, withCN]) c.close();
    }
  });

  it('configuration mistakes are caught at once, naming the file or the key', () => {
    expect(() => new EtcdClient([endpoint], { caFile: f('nope.crt') })).toThrow(`etcd caFile ${f('nope.crt')}: ENOENT`);
    expect(() => new EtcdClient([endpoint], { certFile: f('client.crt') })).toThrow('etcd: certFile and keyFile go together');
    expect(() => new EtcdClient([endpoint], { certFile: f('client.crt'), keyFile: f('other-ca.key') })).toThrow(/etcd TLS files \(certFile .*client\.crt, keyFile .*other-ca\.key\): .*key values mismatch/);
    expect(() => new EtcdClient(['http://127.0.0.1:2379'], { caFile: f('ca.crt') })).toThrow('etcd: caFile given, but no endpoint is https:// (http://127.0.0.1:2379)');
    expect(() => new EtcdClient([endpoint], { username: 'root' })).toThrow('etcd: username "root" without password or passwordFile');
    expect(() => new EtcdClient(['ftp://x:1'])).toThrow('etcd endpoint ftp://x:1: want http://host:port or https://host:port');
  });

  it('passwordFile (a mounted Secret) stands for password', async () => {
    writeFileSync(f('password'), 'sesame\n');
    const client = new EtcdClient([endpoint], { ...good(), password: undefined, passwordFile: f('password') });
    try {
      expect((await client.range(`${FLANNEL_PREFIX}/config`)).kvs).toHaveLength(1);
    } finally {
      client.close();
    }
  });
});

describe('an agent whose etcd speaks TLS with auth', () => {
  const ns = `twe${randomBytes(2).toString('hex')}`; // this test's own namespace; etcd on its loopback
  const pids: number[] = [];
  afterAll(async () => {
    for (const p of pids.reverse()) await stopPid(p);
    netnsDel(ns);
  });
  const inNs = (cmd: string, ...args: string[]) => execFileSync('ip', ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8', env: { ...process.env, ETCDCTL_API: '3' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const nsEtcdctl = (...args: string[]) => inNs('etcdctl', '--endpoints=https://127.0.0.1:2379', `--cacert=${f('ca.crt')}`, `--cert=${f('client.crt')}`, `--key=${f('client.key')}`, ...args);

  it('leases its subnet with its interface\'s address (no publicIP set) and runs', async () => {
    ipn('', 'netns', 'add', ns);
    ipn(ns, 'link', 'set', 'lo', 'up');
    ipn(ns, 'link', 'add', 'eth0', 'mtu', '1460', 'type', 'veth', 'peer', 'name', 'p-eth0', 'mtu', '1460');
    ipn(ns, 'addr', 'add', '192.0.2.30/24', 'dev', 'eth0');
    ipn(ns, 'link', 'set', 'eth0', 'up');
    ipn(ns, 'link', 'set', 'p-eth0', 'up');
    ipn(ns, 'route', 'add', 'default', 'via', '192.0.2.1');
    const url = 'https://127.0.0.1:2379';
    const e = spawn('ip', ['netns', 'exec', ns, 'etcd', '--name', 'a', '--data-dir', f('data-ns'), '--listen-client-urls', url, '--advertise-client-urls', url,
      '--listen-peer-urls', 'http://127.0.0.1:2380', '--initial-advertise-peer-urls', 'http://127.0.0.1:2380', '--initial-cluster', 'a=http://127.0.0.1:2380',
      '--cert-file', f('server.crt'), '--key-file', f('server.key'), '--client-cert-auth', '--trusted-ca-file', f('ca.crt')], { stdio: 'ignore' });
    pids.push(e.pid!); // ip netns exec execs etcd
    for (const deadline = Date.now() + 15_000; ;) {
      try { nsEtcdctl('endpoint', 'health'); break; } catch (err) {
        if (Date.now() > deadline || e.exitCode !== null) throw new Error(`etcd did not start in ${ns}: ${String((err as { stderr?: string }).stderr ?? err)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    nsEtcdctl('user', 'add', 'root:sesame');
    nsEtcdctl('auth', 'enable');
    nsEtcdctl('--user=root:sesame', 'put', `${FLANNEL_PREFIX}/config`, JSON.stringify({ Network: '10.244.0.0/16', SubnetLen: 24, Backend: { Type: 'vxlan' } }));
    writeFileSync(f('agent-password'), 'sesame\n');
    const stateDir = f('agent'), socket = path.join(stateDir, 'agent.sock'), logFile = f('agent.log');
    writeFileSync(f('agent.json'), JSON.stringify({ node: 'e1', stateDir, socket, workers: 1,
      etcd: { endpoints: [url], caFile: f('ca.crt'), certFile: f('client.crt'), keyFile: f('client.key'), username: 'root', passwordFile: f('agent-password') } }));
    const out = openSync(logFile, 'a');
    const agent = spawn('ip', ['netns', 'exec', ns, process.execPath, distFile('cli/twill.js'), 'agent', '--config', f('agent.json')], { stdio: ['ignore', out, out] });
    closeSync(out);
    pids.push(agent.pid!);
    let status: Record<string, unknown> | undefined;
    for (const deadline = Date.now() + 15_000; !status;) {
      try { status = (await request(socket, { op: 'status' }, 1000)) as Record<string, unknown>; } catch (err) {
        if (agent.exitCode !== null || Date.now() > deadline) throw new Error(`the agent did not come up (${(err as Error).message}): ${readFileSync(logFile, 'utf8').slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    expect(status).toMatchObject({ node: 'e1', podCIDR: '10.244.1.0/24', mtu: 1410 });
    const lease = nsEtcdctl('--user=root:sesame', 'get', `${FLANNEL_PREFIX}/subnets/10.244.1.0-24`).trim().split('\n');
    expect(JSON.parse(lease[1])).toMatchObject({ PublicIP: '192.0.2.30', BackendType: 'vxlan', NodeName: 'e1' });
  }, 40_000);
});
