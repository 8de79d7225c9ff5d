// Builds dist/cni/twill-cni, a standalone executable that runs on a host
// without Node.js: cni/main.ts bundled into one CommonJS file (esbuild), made
// into a Node single executable application (node --experimental-sea-config,
// then postject injects the blob into a copy of this node binary).
// If any SEA step fails, falls back to a shell wrapper that execs node on the
// bundle (which then needs node on the host) and says so.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, rmSync, writeFileSync, existsSync, renameSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'dist', 'cni');
// Everything is built under names of this process and renamed into place at the
// end: tests running in parallel may rebuild while others execute the binary.
const tmp = `.${process.pid}.tmp`;
const bundleFinal = path.join(out, 'twill-cni.cjs');
const bundle = bundleFinal + tmp;
const blob = path.join(out, 'twill-cni.blob' + tmp);
const exeFinal = path.join(out, 'twill-cni');
const exe = exeFinal + tmp;
const seaConfig = path.join(out, 'sea-config.json' + tmp);
mkdirSync(out, { recursive: true });

await build({
  entryPoints: [path.join(root, 'cni', 'main.ts')],
  bundle: true, platform: 'node', target: 'node20', format: 'cjs', outfile: bundle,
  minify: true, legalComments: 'none', logLevel: 'warning',
});

function sea() {
  // useCodeCache: V8's compiled code goes into the blob, which trims start-up time.
  writeFileSync(seaConfig, JSON.stringify({ main: bundle, output: blob, disableExperimentalSEAWarning: true, useCodeCache: true }));
  try {
    execFileSync(process.execPath, ['--experimental-sea-config', seaConfig], { stdio: 'pipe' });
  } catch (e) {
    throw new Error(`node --experimental-sea-config: ${String(e.stderr ?? e.message).trim()}`);
  }
  rmSync(exe, { force: true });
  copyFileSync(process.execPath, exe);
  chmodSync(exe, 0o755);
  const postject = path.join(root, 'node_modules', 'postject', 'dist', 'cli.js');
  // postject warns about ELF note sections it does not know on every run: show its output only on failure.
  try {
    execFileSync(process.execPath, [postject, exe, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'], { stdio: 'pipe' });
  } catch (e) {
    throw new Error(`postject: ${String(e.stderr ?? e.message).trim()}`);
  }
  const v = execFileSync(exe, [], { env: { CNI_COMMAND: 'VERSION' }, encoding: 'utf8' });
  if (!v.includes('supportedVersions')) throw new Error(`the built executable printed ${JSON.stringify(v)} for VERSION`);
  rmSync(blob, { force: true });
  rmSync(seaConfig, { force: true });
}

try {
  if (!existsSync(path.join(root, 'node_modules', 'postject'))) throw new Error('postject is not installed (npm install)');
  sea();
  renameSync(bundle, bundleFinal);
  renameSync(exe, exeFinal);
  console.log(`twill-cni: built ${path.relative(root, exeFinal)} (single executable application, no Node.js needed on the host)`);
} catch (e) {
  console.warn(`twill-cni: single executable build failed (${e instanceof Error ? e.message : String(e)}); writing a shell wrapper that needs node on the host`);
  rmSync(exe, { force: true });
  writeFileSync(exe, `#!/bin/sh\nexec node "$(dirname "$(readlink -f "$0")")/twill-cni.cjs" "$@"\n`);
  chmodSync(exe, 0o755);
  renameSync(bundle, bundleFinal);
  renameSync(exe, exeFinal);
} finally {
  for (const f of [bundle, blob, exe, seaConfig]) rmSync(f, { force: true });
}
