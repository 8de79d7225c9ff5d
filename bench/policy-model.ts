// Compile-time benchmark: 10,000 policies over 1,000 pods, then one policy changed and
// one pod relabelled, recompiled incrementally by the same PolicyCompiler.
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PolicyCompiler } from '../policy/compile.js';
import { uniform } from './prng.js';
import { NS_NAME_LABEL, type ClusterModel, type NetworkPolicy, type Pod } from '../policy/model.js';


export interface BenchShape {
  namespaces: number;
  podsPerNamespace: number;
  policies: number;
  apps: number;
}

/** A synthetic cluster: apps with tiers across namespaces, policies mixing every feature. */
export function makeBenchModel(shape: BenchShape = { namespaces: 10, podsPerNamespace: 100, policies: 10_000, apps: 20 }, seed = 42): ClusterModel {
  const r = uniform(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const tiers = ['web', 'api', 'db'] as const;
  const model: ClusterModel = { namespaces: [], pods: [], policies: [], nodeIps: ['10.0.0.1', '10.0.0.2'] };
  for (let n = 0; n < shape.namespaces; n++) {
    const name = `ns${n}`;
    model.namespaces.push({ name, labels: { [NS_NAME_LABEL]: name, team: `t${n % 3}` } });
    for (let j = 0; j < shape.podsPerNamespace; j++) {
      const pod: Pod = {
        namespace: name,
        name: `p${j}`,
        labels: { app: `app${j % shape.apps}`, tier: tiers[j % 3] },
        ip: `10.${100 + Math.floor(n / 200)}.${n % 200}.${j + 1}`,
        containerPorts: [
          { name: 'http', containerPort: 8080 + (j % 2), protocol: 'TCP' },
          { name: 'dns', containerPort: 53, protocol: 'UDP' },
        ],
      };
      model.pods.push(pod);
    }
  }
  for (let i = 0; i < shape.policies; i++) {
    const ns = `ns${i % shape.namespaces}`;
    const app = `app${Math.floor(r() * shape.apps)}`;
    const peer = () =>
      r() < 0.5
        ? { podSelector: { matchLabels: { app: `app${Math.floor(r() * shape.apps)}` } } }
        : r() < 0.5
          ? { namespaceSelector: { matchLabels: { team: `t${Math.floor(r() * 3)}` } }, podSelector: { matchExpressions: [{ key: 'tier', operator: 'In' as const, values: [pick(tiers)] }] } }
          : ((x) => ({ ipBlock: { cidr: `192.168.${x}.0/24`, except: [`192.168.${x}.${Math.floor(r() * 16) * 16}/28`] } }))(Math.floor(r() * 256));
    const ports = () =>
      r() < 0.3
        ? [{ port: 'http' }]
        : r() < 0.5
          ? [{ protocol: 'TCP' as const, port: 8000 + Math.floor(r() * 100), endPort: 8100 + Math.floor(r() * 100) }]
          : [{ protocol: pick(['TCP', 'UDP', 'SCTP'] as const), port: 1 + Math.floor(r() * 1024) }];
    const np: NetworkPolicy = {
      namespace: ns,
      name: `pol${i}`,
      spec: {
        podSelector: r() < 0.8 ? { matchLabels: { app } } : { matchExpressions: [{ key: 'tier', operator: 'NotIn', values: [pick(tiers)] }, { key: 'app', operator: 'Exists' }] },
        ingress: [{ from: [peer()], ports: ports() }, ...(r() < 0.3 ? [{ from: [peer(), peer()] }] : [])],
      },
    };
    if (r() < 0.2) {
      np.spec.egress = [{ to: [peer()], ports: ports() }];
      np.spec.policyTypes = ['Ingress', 'Egress'];
    }
    model.policies.push(np);
  }
  return model;
}

export async function runPolicyBench(opts: { print?: boolean } = {}): Promise<{ compile_ms_10k_policies: number; recompile_one_ms: number; relabel_pod_ms: number }> {
  const model = makeBenchModel();
  const compiler = new PolicyCompiler();
  let t0 = performance.now();
  const first = compiler.compile(model);
  const compileMs = performance.now() - t0;
  const firstStats = compiler.lastStats;

  // one policy changed: a new object (the model is immutable by convention)
  const i = 1234;
  const old = model.policies[i];
  model.policies = model.policies.slice();
  model.policies[i] = { ...old, spec: { ...old.spec, ingress: [{ ports: [{ port: 9999 }] }] } };
  t0 = performance.now();
  compiler.compile(model);
  const recompileMs = performance.now() - t0;
  const oneStats = compiler.lastStats;

  // one pod relabelled
  model.pods = model.pods.slice();
  model.pods[7] = { ...model.pods[7], labels: { ...model.pods[7].labels, app: 'app3' } };
  t0 = performance.now();
  compiler.compile(model);
  const relabelMs = performance.now() - t0;
  const relabelStats = compiler.lastStats;

  const out = { compile_ms_10k_policies: round(compileMs), recompile_one_ms: round(recompileMs), relabel_pod_ms: round(relabelMs) };
  if (opts.print !== false) {
    process.stdout.write(
      `policy compile: ${model.policies.length} policies over ${model.pods.length} pods: ${out.compile_ms_10k_policies} ms ` +
        `(${firstStats.rulesetsBuilt} rule sets, ${(first.bytes / 1024).toFixed(0)} KiB)\n` +
        `recompile after one policy change: ${out.recompile_one_ms} ms (${oneStats.rulesetsBuilt} rule sets rebuilt, ${oneStats.rulesetsReused} reused)\n` +
        `recompile after one pod relabel: ${out.relabel_pod_ms} ms (${relabelStats.rulesetsBuilt} rule sets rebuilt, ${relabelStats.rulesetsReused} reused)\n` +
        `${JSON.stringify(out)}\n`,
    );
  }
  return out;
}

const round = (x: number): number => Math.round(x * 10) / 10;

// `node dist/policy/bench.js` runs it directly (also `twill policy bench`)
if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) await runPolicyBench();
