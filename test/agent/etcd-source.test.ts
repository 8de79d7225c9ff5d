// The etcd source and subnet leases against a real etcd (Debian's etcd-server) on
// loopback: leases taken at once never share a subnet, a restart keeps its subnet,
// and a watch whose revision was compacted away reads everything again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EtcdClient } from '../../agent/sources/etcd/client.js';
import { EtcdSource, FLANNEL_PREFIX, MODEL_PREFIX, leaseSubnet } from '../../agent/sources/etcd/source.js';
import type { ClusterView } from '../../agent/sources/file.js';
import { stopPid } from '../../lab/proc.js';

const PORT = 23000 + (process.pid % 500) * 2; // client; the peer port is the next one
const endpoint = `http://127.0.0.1:${PORT}`;
let dir: string, etcd: ChildProcess, client: EtcdClient;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'twt-etcd-'));
  etcd = spawn('etcd', ['--name', 't', '--data-dir', path.join(dir, 'data'), '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint,
    '--listen-peer-urls', `http://127.0.0.1:${PORT + 1}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${PORT + 1}`, '--initial-cluster', `t=http://127.0.0.1:${PORT + 1}`], { stdio: 'ignore' });
  client = new EtcdClient([endpoint]);
  for (const deadline = Date.now() + 15_000; ;) {
    try { await client.range('/'); break; } catch (e) {
      if (Date.now() > deadline || etcd.exitCode !== null) throw new Error(`etcd did not start: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  await client.put(`${FLANNEL_PREFIX}/config`, JSON.stringify({ Network: '10.244.0.0/16', SubnetLen: 24, Backend: { Type: 'vxlan' } }));
});
afterAll(async () => {
  client?.close();
  if (etcd?.pid) await stopPid(etcd.pid);
  rmSync(dir, { recursive: true, force: true });
});

describe('etcd subnet leases and source', () => {
  it('eight nodes leasing at once get eight different subnets; a node that comes back keeps its own', async () => {
    const lease = (i: number) => leaseSubnet(client, { node: `n${i}`, publicIP: `192.0.2.${i}`, vni: 1, vtepMAC: `02:00:00:00:00:0${i}` });
    const got = await Promise.all(Array.from({ length: 8 }, (_, i) => lease(i + 1)));
    got.forEach((g) => g.stop());
    expect(new Set(got.map((g) => g.podCIDR)).size).toBe(8);
    for (const g of got) expect(g.podCIDR).toMatch(/^10\.244\.\d+\.0\/24$/);
    expect(got.map((g) => g.podCIDR)).not.toContain('10.244.0.0/24'); // flannel leaves the network's first subnet alone
    const again = await lease(3);
    again.stop();
    expect(again.podCIDR).toBe(got[2].podCIDR);
    expect(again.clusterCIDR).toBe('10.244.0.0/16');
    const src = new EtcdSource(client, '10.244.0.0/16', { key: again.key, node: 'n3' });
    const v = await src.read();
    expect(v.nodes).toHaveLength(8);
    expect(v.nodes.find((n) => n.podCIDR === again.podCIDR)).toMatchObject({ name: 'n3', underlayIP: '192.0.2.3', vtepMAC: '02:00:00:00:00:03', backend: 'twill' });
  });

  it('a watch from a compacted revision reads everything again, and sees what changed meanwhile', async () => {
    await client.put(`${MODEL_PREFIX}pods/default/a`, JSON.stringify({ metadata: { namespace: 'default', name: 'a', labels: {} }, status: { podIP: '10.244.1.5' } }));
    const src = new EtcdSource(client, '10.244.0.0/16');
    expect((await src.read()).model!.pods.map((p) => p.name)).toEqual(['a']);
    // While nobody watches: a goes, b comes, and etcd compacts its history past both.
    await client.delete(`${MODEL_PREFIX}pods/default/a`);
    await client.put(`${MODEL_PREFIX}pods/default/b`, JSON.stringify({ metadata: { namespace: 'default', name: 'b', labels: {} }, status: { podIP: '10.244.1.6' } }));
    const { revision } = await client.range('/nothing/');
    await client.call('/v3/kv/compaction', { revision: String(revision), physical: true });
    const call = client.call.bind(client);
    const paths: string[] = [];
    client.call = (<T>(p: string, body: unknown) => { paths.push(p); return call<T>(p, body); }) as typeof client.call;
    const v = await new Promise<ClusterView>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no view after the compaction')), 5000);
      const stop = src.watch((view) => { if (view.model!.pods.some((p) => p.name === 'b')) { clearTimeout(t); stop(); resolve(view); } });
    });
    expect(v.model!.pods.map((p) => p.name)).toEqual(['b']);
    expect(paths.filter((p) => p === '/v3/kv/range')).toHaveLength(2); // the watch found its revision compacted and read both prefixes again
  });
});
