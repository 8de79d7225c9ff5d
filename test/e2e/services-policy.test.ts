// NetworkPolicy through Services: policy judges the backend pod, as Kubernetes
// defines it, not the ClusterIP. A client whose egress allows only pods labelled
// app=db reaches db through its Service (endpoint on its own node and on the
// other node) and nothing else through any Service; a backend whose ingress
// admits only app=client sees the client pod's own address (kube-proxy does not
// masquerade inside the cluster CIDR), so the client gets in and another pod,
// through the same Service, does not. Both proxy modes.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { defineService, labDown, labPolicies, labUp } from '../../lab/lab.js';
import type { LabState } from '../../lab/state.js';
import type { ServiceSpec } from '../../lab/services.js';
import { connectedEcho, testLabName } from '../helpers/lab.js';

const pod = (name: string, app: string) => `apiVersion: v1
kind: Pod
metadata: { namespace: default, name: ${name}, labels: { app: ${app} } }
spec: { containers: [ { name: echo, image: agnhost } ] }
`;
// Manifest pods go to nodes in turn: client and db-local on node1, db and web on node2.
const PODS = [pod('client', 'client'), pod('db', 'db'), pod('db-local', 'db'), pod('web', 'web')].join('---\n');
const CLIENT_EGRESS_DB_ONLY = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { namespace: default, name: client-egress-db }
spec:
  podSelector: { matchLabels: { app: client } }
  policyTypes: [Egress]
  egress:
  - to: [ { podSelector: { matchLabels: { app: db } } } ]
`;
const WEB_INGRESS_CLIENT_ONLY = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { namespace: default, name: web-ingress-client }
spec:
  podSelector: { matchLabels: { app: web } }
  policyTypes: [Ingress]
  ingress:
  - from: [ { podSelector: { matchLabels: { app: client } } } ]
`;

const ports = [{ name: 'tcp', protocol: 'TCP' as const, port: 8080 }, { name: 'udp', protocol: 'UDP' as const, port: 8081 }];
const svc = (name: string, clusterIP: string, endpoint: string): ServiceSpec => ({ namespace: 'default', name, clusterIP, ports, endpoints: [endpoint] });
const SVC_DB = svc('db', '10.96.2.1', 'db'); // endpoint on node2
const SVC_DB_LOCAL = svc('db-local', '10.96.2.2', 'db-local'); // endpoint on node1, the client's node
const SVC_WEB = svc('web', '10.96.2.3', 'web'); // endpoint on node2

describe.each(['iptables', 'nftables'] as const)('NetworkPolicy through Services, kube-proxy in %s mode', (mode) => {
  const name = testLabName();
  const dir = mkdtempSync(path.join(tmpdir(), 'twill-svcpol-'));
  const file = (n: string, text: string) => { const f = path.join(dir, n); writeFileSync(f, text); return f; };
  let s: LabState;
  const ns = (n: string) => s.pods.find((p) => p.name === n)!.netns;
  const ip = (n: string) => s.pods.find((p) => p.name === n)!.ip;
  const reaches = (from: string, to: string) => {
    const r = connectedEcho(ns(from), to);
    return { tcp: r.tcp.ok && r.tcp.from === to, udp: r.udp.ok && r.udp.from === to };
  };
  const both = (ok: boolean) => ({ tcp: ok, udp: ok });

  beforeAll(async () => {
    s = await labUp({ name, nodes: 2, manifests: [file('pods.yaml', PODS)], proxyMode: mode });
    for (const spec of [SVC_DB, SVC_DB_LOCAL, SVC_WEB]) await defineService(s, spec);
  });
  afterAll(async () => {
    await labDown(name);
    rmSync(dir, { recursive: true, force: true });
  });

  test('without policies the client reaches every backend through its Service, replies from the ClusterIP', () => {
    for (const v of [SVC_DB, SVC_DB_LOCAL, SVC_WEB]) expect([v.name, reaches('client', v.clusterIP)]).toEqual([v.name, both(true)]);
  });

  test('egress allowing only app=db: db through its Service on either node, nothing else through any Service', async () => {
    await labPolicies(name, [file('egress.yaml', CLIENT_EGRESS_DB_ONLY)]);
    expect(reaches('client', SVC_DB.clusterIP)).toEqual(both(true));
    expect(reaches('client', SVC_DB_LOCAL.clusterIP)).toEqual(both(true));
    expect(reaches('client', SVC_WEB.clusterIP)).toEqual(both(false));
    expect(reaches('client', ip('web'))).toEqual(both(false)); // as directly
    expect(reaches('client', ip('db'))).toEqual(both(true));
    await labPolicies(name, [file('egress.yaml', CLIENT_EGRESS_DB_ONLY)], true);
  });

  test('ingress admitting only app=client sees the client pod through the Service: client in, another pod out', async () => {
    await labPolicies(name, [file('ingress.yaml', WEB_INGRESS_CLIENT_ONLY)]);
    expect(reaches('client', SVC_WEB.clusterIP)).toEqual(both(true));
    expect(reaches('db-local', SVC_WEB.clusterIP)).toEqual(both(false)); // same node as the client, same Service
    expect(reaches('db-local', ip('web'))).toEqual(both(false));
    await labPolicies(name, [file('ingress.yaml', WEB_INGRESS_CLIENT_ONLY)], true);
    expect(reaches('db-local', SVC_WEB.clusterIP)).toEqual(both(true));
  });
});
