// Compiles dataplane/tables/*.ts (and what they import below them) into a temp dir so worker_threads (plain Node, no
// TS loader) can import them. Only the tables, so other packages' work in progress
// cannot break these tests.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Returns file URLs of the compiled modules, e.g. urls['conntrack.js'], and a cleanup. */
export function compileTables(): { urls: Record<string, string>; cleanup: () => void } {
  const out = mkdtempSync(path.join(tmpdir(), 'twill-tables-'));
  writeFileSync(path.join(out, 'package.json'), '{"type":"module"}\n');
  const srcDir = path.join(root, 'dataplane/tables');
  const files = readdirSync(srcDir).filter((f) => f.endsWith('.ts')).map((f) => path.join(srcDir, f));
  const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
  // rootDir is the repository's: the tables import what lies below them (lib/) by relative path.
  execFileSync(process.execPath, [tsc, '--outDir', out, '--rootDir', root, '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--strict', '--skipLibCheck', '--types', 'node', ...files], { stdio: 'pipe' });
  const built = path.join(out, 'dataplane/tables');
  writeFileSync(path.join(out, 'dataplane/package.json'), '{"type":"module"}\n');
  const urls: Record<string, string> = {};
  for (const f of readdirSync(built)) if (f.endsWith('.js')) urls[f] = pathToFileURL(path.join(built, f)).href;
  return { urls, cleanup: () => rmSync(out, { recursive: true, force: true }) };
}
