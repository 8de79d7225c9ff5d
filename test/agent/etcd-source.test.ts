// The etcd source and subnet leases against a real etcd (Debian's etcd-server) on
// loopback: leases taken at once never share a subnet, a restart keeps its subnet,
// and a watch whose revision was compacted away reads everything again. Dual stack
// as flannel's: "EnableIPv6" networks, keys naming both subnets, leases of both
// families taken at once without collision, flanneld's dual-stack leases read.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EtcdClient } from '../../agent/sources/etcd/client.js';
import { EtcdSource, FLANNEL_PREFIX, MODEL_PREFIX, V6_CLAIMS, leaseSubnet, parseSubnetKey, readNetworkConfig, subnetKeyOf } from '../../agent/sources/etcd/source.js';
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

describe('etcd, dual stack (flannel\'s EnableIPv6 leases)', () => {
  const prefix = '/dual.example/network'; // a network of its own beside the IPv4 one above
  const dir = `${prefix}/subnets/`;
  // flanneld's own dual-stack lease: MakeSubnetKey's key, json.Marshal(LeaseAttrs) as value
  const flannelKey = `${dir}10.245.9.0-24&fd00:10:244:9::-64`;
  const flannelValue = '{"PublicIP":"192.0.2.99","PublicIPv6":"fc00:f853:ccd:e793::99","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:99"},"BackendV6Data":{"VNI":1,"VtepMAC":"0a:00:00:00:06:99"}}';
  const flannelRegex = /(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$/; // pkg/subnet ParseSubnetKey
  const lease6 = (i: number, six = true) => leaseSubnet(client, {
    node: `d${i}`, publicIP: `192.0.2.${i}`, vni: 1, vtepMAC: `02:00:00:00:00:${i.toString(16).padStart(2, '0')}`, prefix,
    ...(six ? { publicIP6: `fc00:f853:ccd:e793::${i}`, vtepMAC6: `02:00:00:00:06:${i.toString(16).padStart(2, '0')}` } : {}),
  });

  beforeAll(async () => {
    await client.put(`${prefix}/config`, JSON.stringify({ Network: '10.245.0.0/16', SubnetLen: 24, EnableIPv6: true, IPv6Network: 'fd00:10:244::/56', Backend: { Type: 'vxlan' } }));
    await client.put(flannelKey, flannelValue); // a flannel node took .9 and :9 before any twill node came
  });

  it('keys as flannel writes and parses them', () => {
    expect(subnetKeyOf('10.244.1.0/24', 'fd00:10:244:1::/64')).toBe('10.244.1.0-24&fd00:10:244:1::-64');
    expect(subnetKeyOf('10.244.1.0/24', 'fd00:10:244:0001:0::/64')).toBe('10.244.1.0-24&fd00:10:244:1::-64'); // the address as Go prints it
    expect(subnetKeyOf('10.244.1.0/24')).toBe('10.244.1.0-24');
    expect(parseSubnetKey(flannelKey)).toEqual({ cidr: '10.245.9.0/24', cidr6: 'fd00:10:244:9::/64' });
    expect(parseSubnetKey(`${dir}10.245.9.0-24`)).toEqual({ cidr: '10.245.9.0/24' });
    expect(parseSubnetKey(`${dir}nonsense`)).toBeUndefined();
  });

  it('eight nodes leasing at once get eight IPv4 and eight IPv6 subnets, none shared, none the flannel node\'s', async () => {
    const got = await Promise.all(Array.from({ length: 8 }, (_, i) => lease6(i + 1)));
    got.forEach((g) => g.stop());
    expect(new Set(got.map((g) => g.podCIDR)).size).toBe(8);
    expect(new Set(got.map((g) => g.podCIDR6)).size).toBe(8);
    for (const g of got) {
      expect(g.podCIDR).toMatch(/^10\.245\.\d+\.0\/24$/);
      expect(g.podCIDR6).toMatch(/^fd00:10:244:[0-9a-f]{1,2}::\/64$/);
      expect(g.key).toBe(`${dir}${subnetKeyOf(g.podCIDR, g.podCIDR6)}`);
      expect([g.clusterCIDR, g.clusterCIDR6]).toEqual(['10.245.0.0/16', 'fd00:10:244::/56']);
      // the IPv6 subnet of the same index as the IPv4 one: 10.245.3.0/24 with fd00:10:244:3::/64
      expect(Number.parseInt(g.podCIDR6!.split(':')[3], 16)).toBe(Number(g.podCIDR.split('.')[2]));
    }
    const all = [...got.map((g) => g.podCIDR), ...got.map((g) => g.podCIDR6)];
    for (const taken of ['10.245.0.0/24', 'fd00:10:244::/64', '10.245.9.0/24', 'fd00:10:244:9::/64']) expect(all).not.toContain(taken); // the networks' first, and flannel's
    // each twill lease claims its IPv6 subnet beside it, under the same etcd lease
    const claims = (await client.range(`${prefix}/${V6_CLAIMS}/`)).kvs;
    expect(claims.map((kv) => kv.value).sort()).toEqual(got.map((g) => g.key).sort());
    const leases = (await client.range(dir)).kvs;
    for (const g of got) expect(claims.find((c) => c.value === g.key)!.lease).toBe(leases.find((kv) => kv.key === g.key)!.lease);

    // what a flannel node reads of a twill lease: its key by ParseSubnetKey, its value as LeaseAttrs
    const d3 = got[2];
    const m = flannelRegex.exec(d3.key)!;
    expect(`${m[1]}/${m[2]}`).toBe(d3.podCIDR);
    expect(`${m[3]}/${m[4]}`).toBe(d3.podCIDR6);
    const v = JSON.parse(leases.find((kv) => kv.key === d3.key)!.value) as Record<string, unknown>;
    expect(v).toEqual({ PublicIP: '192.0.2.3', PublicIPv6: 'fc00:f853:ccd:e793::3', BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '02:00:00:00:00:03' }, BackendV6Data: { VNI: 1, VtepMAC: '02:00:00:00:06:03' }, NodeName: 'd3' });

    // a restart keeps both
    const again = await lease6(3);
    again.stop();
    expect([again.key, again.podCIDR, again.podCIDR6]).toEqual([d3.key, d3.podCIDR, d3.podCIDR6]);

    // and twill reads the flannel node's lease, and its own, with both families
    const src = new EtcdSource(client, { clusterCIDR: again.clusterCIDR, clusterCIDR6: again.clusterCIDR6 }, { key: again.key, node: 'd3' }, prefix);
    const view = await src.read();
    expect(view.clusterCIDR6).toBe('fd00:10:244::/56');
    expect(view.nodes).toHaveLength(9);
    expect(view.nodes.find((n) => n.name === '10.245.9.0/24')).toEqual({ name: '10.245.9.0/24', underlayIP: '192.0.2.99', podCIDR: '10.245.9.0/24', vtepMAC: '0a:00:00:00:00:99', backend: 'flannel-vxlan', podCIDR6: 'fd00:10:244:9::/64', underlayIP6: 'fc00:f853:ccd:e793::99', vtepMAC6: '0a:00:00:00:06:99' });
    expect(view.nodes.find((n) => n.name === 'd3')).toEqual({ name: 'd3', underlayIP: '192.0.2.3', podCIDR: d3.podCIDR, vtepMAC: '02:00:00:00:00:03', backend: 'twill', podCIDR6: d3.podCIDR6, underlayIP6: 'fc00:f853:ccd:e793::3', vtepMAC6: '02:00:00:00:06:03' });

    // watched: another flannel node joins with both families, then leaves
    const seen: ClusterView[] = [];
    const stop = src.watch((x) => seen.push(x));
    try {
      const key2 = `${dir}10.245.20.0-24&fd00:10:244:20::-64`;
      await client.put(key2, flannelValue.replace(/99/g, '98'));
      await waitFor(() => seen.some((x) => x.nodes.some((n) => n.name === '10.245.20.0/24' && n.vtepMAC6 === '0a:00:00:00:06:98')));
      await client.delete(key2);
      await waitFor(() => !seen[seen.length - 1].nodes.some((n) => n.name === '10.245.20.0/24'));
    } finally {
      stop();
    }
  });

  it('a node without an IPv6 underlay address leases IPv4 only; once it has one, its lease is replaced by a dual one keeping its IPv4 subnet', async () => {
    const v4 = await lease6(7 + 40, false);
    v4.stop();
    expect(v4.podCIDR6).toBeUndefined();
    expect(v4.key).toBe(`${dir}${subnetKeyOf(v4.podCIDR)}`);
    expect(v4.clusterCIDR6).toBe('fd00:10:244::/56'); // the network has IPv6 all the same
    expect(JSON.parse((await client.get(v4.key))!.value)).not.toHaveProperty('PublicIPv6');
    // and a flanneld lease without IPv6, as json.Marshal writes one ("PublicIPv6": null)
    await client.put(`${dir}10.245.200.0-24`, '{"PublicIP":"192.0.2.200","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:c8"}}');
    const src = new EtcdSource(client, { clusterCIDR: '10.245.0.0/16', clusterCIDR6: v4.clusterCIDR6 }, undefined, prefix);
    const read = await src.read();
    expect(read.nodes.find((n) => n.name === 'd47')).not.toHaveProperty('podCIDR6');
    expect(read.nodes.find((n) => n.name === '10.245.200.0/24')).toEqual({ name: '10.245.200.0/24', underlayIP: '192.0.2.200', podCIDR: '10.245.200.0/24', vtepMAC: '0a:00:00:00:00:c8', backend: 'flannel-vxlan' });
    await client.delete(`${dir}10.245.200.0-24`);
    const dual = await leaseSubnet(client, { node: 'd47', publicIP: '192.0.2.47', vni: 1, vtepMAC: '02:00:00:00:00:47', publicIP6: 'fc00:f853:ccd:e793::47', vtepMAC6: '02:00:00:00:06:47', prefix });
    dual.stop();
    expect(dual.podCIDR).toBe(v4.podCIDR);
    expect(dual.podCIDR6).toMatch(/^fd00:10:244:[0-9a-f]+::\/64$/);
    expect(await client.get(v4.key)).toBeUndefined(); // flanneld deletes a lease that no longer fits the config, and so does twill
    expect(JSON.parse((await client.get(dual.key))!.value)).toMatchObject({ PublicIPv6: 'fc00:f853:ccd:e793::47' });
  });

  it('an IPv6 subnet another twill node claimed is not leased again: the transaction is refused, and the IPv4 subnet taken with the next free IPv6 one', async () => {
    const p = '/claim.example/network';
    await client.put(`${p}/config`, JSON.stringify({ Network: '10.247.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:20::/56', Backend: { Type: 'vxlan' } }));
    // a claim without its lease: as another node's between reading the leases and this node's transaction
    await client.put(`${p}/${V6_CLAIMS}/fd00:20:0:1::-64`, 'another node');
    const call = client.call.bind(client); let txns = 0;
    client.call = (<T>(path: string, body: unknown) => { if (path === '/v3/kv/txn') txns++; return call<T>(path, body); }) as typeof client.call;
    try {
      const l = await leaseSubnet(client, { node: 'c1', publicIP: '192.0.2.1', vni: 1, vtepMAC: '02:00:00:00:00:01', publicIP6: '2001:db8::1', vtepMAC6: '02:00:00:00:06:01', prefix: p });
      l.stop();
      expect([l.podCIDR, l.podCIDR6]).toEqual(['10.247.1.0/24', 'fd00:20:0:2::/64']);
      expect(txns).toBe(2); // 10.247.1.0/24 with :1, refused; with :2
    } finally {
      client.call = call as typeof client.call;
    }
  });

  it('flannel\'s IPv6 config rules: IPv6SubnetLen defaults to 64 (or the network plus two), a missing IPv6Network or a network too small is refused', async () => {
    const cfg = async (c: Record<string, unknown>) => { await client.put('/cfg.example/network/config', JSON.stringify({ Network: '10.246.0.0/16', Backend: { Type: 'vxlan' }, ...c })); return readNetworkConfig(client, '/cfg.example/network'); };
    await expect(cfg({ EnableIPv6: true })).rejects.toThrow(/"EnableIPv6" needs "IPv6Network", an IPv6 CIDR/);
    await expect(cfg({ EnableIPv6: true, IPv6Network: '10.0.0.0/8' })).rejects.toThrow(/"IPv6Network", an IPv6 CIDR/);
    await expect(cfg({ EnableIPv6: true, IPv6Network: 'fd00::/125' })).rejects.toThrow(/too small/);
    await expect(cfg({ EnableIPv6: true, IPv6Network: 'fd00::/64', IPv6SubnetLen: 65 })).rejects.toThrow(/at least four \/65 subnets/);
    await expect(cfg({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00::/56' })).rejects.toThrow(/twill needs IPv4/);
    await cfg({ EnableIPv6: true, IPv6Network: 'fd00:0:0:ff00::/120' }); // /122s, as flannel's network plus two
    const l = await leaseSubnet(client, { node: 'x', publicIP: '192.0.2.200', vni: 1, vtepMAC: '02:00:00:00:00:c8', publicIP6: '2001:db8::c8', vtepMAC6: '02:00:00:00:06:c8', prefix: '/cfg.example/network' });
    l.stop();
    expect([l.podCIDR, l.podCIDR6, l.clusterCIDR6]).toEqual(['10.246.1.0/24', 'fd00:0:0:ff00::40/122', 'fd00:0:0:ff00::/120']);
  });
});

async function waitFor(ok: () => boolean, timeoutMs = 5000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !ok();) {
    if (Date.now() > deadline) throw new Error('not within 5 s');
    await new Promise((r) => setTimeout(r, 20));
  }
}
