// Where compiled files live, whether we run from dist/ or from TypeScript
// sources (vitest): worker threads always load the compiled JavaScript.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('twill: package.json not found above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
  return dir;
}

export function distFile(rel: string): string {
  return path.join(repoRoot(), 'dist', rel);
}
