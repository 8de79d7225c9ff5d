import { describe, expect, it } from 'vitest';
import { Worker } from 'node:worker_threads';
import { PolicyCompiler, compilePolicies } from '../../policy/compile.js';
import { makeBenchModel } from '../../bench/policy-model.js';
import type { ClusterModel } from '../../policy/model.js';
import { EGRESS, INGRESS, PolicyTables, RULE_NODE, RULE_SELF } from '../../dataplane/tables/policy.js';
import { parseIPv4Address } from '../../lib/ipv4.js';
import { e2eModel, ipOf, policy } from './fixture.js';
import { referenceVerdict } from './reference.js';

import { uniform } from '../../bench/prng.js';

const sign = (v: number) => (v > 0 ? 1 : v);


function sampleAgainstReference(model: ClusterModel, t: PolicyTables, n: number, seed: number): void {
  const r = uniform(seed);
  const ips = model.pods.filter((p) => p.ip).map((p) => parseIPv4Address(p.ip!));
  const externals = [parseIPv4Address('192.168.7.5'), parseIPv4Address('192.168.7.200'), parseIPv4Address('8.8.8.8'), ...model.nodeIps.map(parseIPv4Address)];
  const ports = [53, 80, 81, 8080, 8081, 8050, 8150, 9999, 443, 1, 1024];
  let mismatches = 0;
  const first: string[] = [];
  for (let i = 0; i < n; i++) {
    const pod = ips[Math.floor(r() * ips.length)];
    const peer = r() < 0.85 ? ips[Math.floor(r() * ips.length)] : externals[Math.floor(r() * externals.length)];
    const proto = [6, 17, 132][Math.floor(r() * 3)];
    const port = r() < 0.5 ? ports[Math.floor(r() * ports.length)] : 1 + Math.floor(r() * 1100);
    const ingress = r() < 0.5;
    const got = sign(t.verdict(ingress ? INGRESS : EGRESS, pod, peer, proto, port));
    const want = referenceVerdict(model, ingress, pod, peer, proto, port);
    if (got !== want) {
      mismatches++;
      if (first.length < 5) first.push(`${ingress ? 'in' : 'eg'} pod=${pod} peer=${peer} ${proto}/${port}: got ${got} want ${want}`);
    }
  }
  expect(first).toEqual([]);
  expect(mismatches).toBe(0);
}

describe('compiled tables', () => {
  it('10,000 policies over 1,000 pods: verdicts agree with a naive reference on a sample', () => {
    const model = makeBenchModel();
    expect(model.policies.length).toBe(10_000);
    expect(model.pods.length).toBe(1000);
    const t = compilePolicies(model);
    sampleAgainstReference(model, t, 1500, 7);
  });

  it('incremental recompiles agree with the reference after random changes', () => {
    const shape = { namespaces: 3, podsPerNamespace: 30, policies: 300, apps: 6 };
    let model = makeBenchModel(shape, 3);
    const c = new PolicyCompiler();
    sampleAgainstReference(model, c.compile(model), 600, 1);
    const r = uniform(99);
    const donor = makeBenchModel(shape, 4); // fresh policies to swap in
    for (let step = 0; step < 12; step++) {
      model = { ...model, pods: model.pods.slice(), policies: model.policies.slice(), namespaces: model.namespaces.slice() };
      const what = step % 6;
      const i = Math.floor(r() * model.policies.length);
      const j = Math.floor(r() * model.pods.length);
      if (what === 0) model.policies[i] = { ...donor.policies[i], name: model.policies[i].name, namespace: model.policies[i].namespace };
      else if (what === 1) model.policies.splice(i, 1);
      else if (what === 2) model.pods[j] = { ...model.pods[j], labels: { ...model.pods[j].labels, app: `app${Math.floor(r() * 6)}` } };
      else if (what === 3) model.namespaces[1] = { ...model.namespaces[1], labels: { ...model.namespaces[1].labels, team: `t${step % 3}` } };
      else if (what === 4) model.pods[j] = { ...model.pods[j], ip: `10.200.0.${step + 1}` };
      else {
        model.pods.splice(j, 1);
        model.policies.push({ ...donor.policies[i], name: `extra${step}` });
      }
      const inc = c.compile(model);
      sampleAgainstReference(model, inc, 500, step);
      // and the same verdicts as a from-scratch compile
      const fresh = compilePolicies(model);
      const ips = model.pods.map((p) => parseIPv4Address(p.ip!));
      for (const a of ips.slice(0, 30)) for (const b of ips) {
        for (const [proto, port] of [[6, 80], [6, 8080], [17, 53]]) {
          expect(sign(inc.verdict(INGRESS, a, b, proto, port))).toBe(sign(fresh.verdict(INGRESS, a, b, proto, port)));
          expect(sign(inc.verdict(EGRESS, a, b, proto, port))).toBe(sign(fresh.verdict(EGRESS, a, b, proto, port)));
        }
      }
    }
  });

  it('a changed policy rebuilds only the rule sets of the pods it selects', () => {
    const model = e2eModel([policy('x', 'a', { matchLabels: { pod: 'a' } }, { ingress: [] }), policy('y', 'b', {}, { ingress: [{}] })]);
    const c = new PolicyCompiler();
    c.compile(model);
    model.policies = [model.policies[0], policy('y', 'b', {}, { ingress: [{ ports: [{ port: 80 }] }] })];
    c.compile(model);
    expect(c.lastStats.changedPolicies).toBe(1);
    expect(c.lastStats.rulesetsBuilt).toBe(1); // y/a, y/b, y/c share one rule set
    expect(c.lastStats.rulesetsReused).toBe(3);
  });

  it('self traffic and node (kubelet) traffic are allowed to isolated pods; explain names policy and rule', () => {
    const model = e2eModel([
      policy('x', 'deny', {}, { ingress: [], egress: [] }),
      policy('x', 'allow-b', { matchLabels: { pod: 'a' } }, { ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'c' } } }] }, { from: [{ podSelector: { matchLabels: { pod: 'b' } } }], ports: [{ port: 80 }] }] }),
    ]);
    model.nodeIps = ['10.0.0.1'];
    const t = compilePolicies(model);
    const xa = parseIPv4Address(ipOf('x', 'a'));
    const xb = parseIPv4Address(ipOf('x', 'b'));
    expect(t.verdict(INGRESS, xa, xa, 6, 80)).toBe(RULE_SELF);
    expect(t.verdict(INGRESS, xa, parseIPv4Address('10.0.0.1'), 6, 10250)).toBe(RULE_NODE);
    expect(t.verdict(EGRESS, xa, parseIPv4Address('10.0.0.1'), 6, 10250)).toBe(-1); // egress to the node is not special
    expect(t.verdict(INGRESS, xa, xb, 17, 80)).toBe(-1);
    const e = t.explain(INGRESS, xa, xb, 6, 80);
    expect(e).toMatchObject({ allowed: true, policy: 'x/allow-b', rule: 'ingress[1]', pod: 'x/a' });
    const d = t.explain(INGRESS, xa, xb, 6, 81);
    expect(d.allowed).toBe(false);
    expect(d.isolatedBy).toEqual(['x/deny', 'x/allow-b']);
    expect(t.explain(INGRESS, parseIPv4Address(ipOf('y', 'a')), xb, 6, 81)).toMatchObject({ verdict: 0, allowed: true });
  });

  it('a worker wraps the posted buffers and answers the same verdicts', async () => {
    const model = e2eModel([policy('x', 'deny', {}, { ingress: [] }), policy('x', 'p', { matchLabels: { pod: 'a' } }, { ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }], ports: [{ port: 80 }] }] })]);
    const t = compilePolicies(model);
    const ips = model.pods.map((p) => parseIPv4Address(p.ip!));
    const queries: number[][] = [];
    for (const a of ips) for (const b of ips) queries.push([INGRESS, a, b, 6, 80], [INGRESS, a, b, 6, 81], [EGRESS, a, b, 17, 80]);
    const src = `
      const { parentPort, workerData } = require('node:worker_threads');
      import(workerData.url).then(({ PolicyTables }) => {
        const t = new PolicyTables(workerData.buffers);
        parentPort.postMessage(workerData.queries.map((q) => t.verdict(...q)));
      });`;
    // the worker runs plain Node: bundle dataplane/tables/policy.ts (and the Lpm4 it wraps) to ESM first
    const { buildSync } = await import('esbuild');
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { pathToFileURL, fileURLToPath } = await import('node:url');
    const out = join(mkdtempSync(join(tmpdir(), 'twill-policy-')), 'tables.mjs');
    buildSync({ entryPoints: [fileURLToPath(new URL('../../dataplane/tables/policy.ts', import.meta.url))], bundle: true, format: 'esm', platform: 'node', outfile: out, logLevel: 'silent' });
    const built = pathToFileURL(out);
    const w = new Worker(src, { eval: true, workerData: { url: built.href, buffers: t.buffers, queries } });
    const got: number[] = await new Promise((res, rej) => {
      w.once('message', res);
      w.once('error', rej);
    });
    await w.terminate();
    expect(got).toEqual(queries.map((q) => t.verdict(q[0], q[1], q[2], q[3], q[4])));
  });
});
