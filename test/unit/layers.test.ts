// The import graph of the product and the harness, read off the sources: layers
// point one way (agent → engine → stages → packet, tables, native; lib at the
// bottom; policy above the tables it writes), the CNI executable carries no lab
// code, and no module imports itself back through others (no circle).
import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DIRS = ['agent', 'lib', 'dataplane', 'cni', 'policy', 'cli', 'lab', 'bench'];

function sources(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(path.join(ROOT, dir))) {
    const rel = path.join(dir, e);
    if (['node_modules', 'build', 'results', 'c'].includes(e)) continue;
    if (statSync(path.join(ROOT, rel)).isDirectory()) sources(rel, out);
    else if (e.endsWith('.ts') && !e.endsWith('.d.ts')) out.push(rel);
  }
  return out;
}

/** file → the repository files it imports (static, dynamic and type-only imports alike). */
function graph(): Map<string, string[]> {
  const g = new Map<string, string[]>();
  for (const f of DIRS.flatMap((d) => sources(d))) {
    const text = readFileSync(path.join(ROOT, f), 'utf8');
    const deps = [...text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)].map((m) => path.normalize(path.join(path.dirname(f), m[1])).replace(/\.js$/, '.ts'));
    g.set(f, deps);
  }
  return g;
}

/** The layer a file belongs to: its top folder, and dataplane's by subfolder. */
function layer(f: string): string {
  const [top, sub] = f.split(path.sep);
  return top === 'dataplane' ? `dataplane/${sub}` : top;
}

// What each layer may import (besides itself). Anything not listed is forbidden.
const MAY: Record<string, string[]> = {
  lib: [],
  'dataplane/native': ['lib'],
  'dataplane/packet': ['lib'],
  'dataplane/tables': ['lib', 'dataplane/packet'],
  'dataplane/stages': ['lib', 'dataplane/packet', 'dataplane/tables', 'dataplane/native'],
  'dataplane/engine': ['lib', 'dataplane/packet', 'dataplane/tables', 'dataplane/native', 'dataplane/stages'],
  policy: ['lib', 'dataplane/tables'],
  agent: ['lib', 'dataplane/packet', 'dataplane/tables', 'dataplane/native', 'dataplane/stages', 'dataplane/engine', 'policy'],
  cni: ['lib', 'dataplane/packet', 'agent'],
  lab: ['lib', 'dataplane/packet', 'dataplane/tables', 'dataplane/native', 'dataplane/stages', 'dataplane/engine', 'policy', 'agent', 'cni'],
  bench: ['lib', 'dataplane/packet', 'dataplane/tables', 'dataplane/native', 'dataplane/stages', 'dataplane/engine', 'policy', 'agent', 'cni', 'lab'],
  cli: ['lib', 'dataplane/engine', 'dataplane/tables', 'policy', 'agent', 'cni', 'lab', 'bench'],
};

describe('the import graph', () => {
  const g = graph();

  it('reads every product and harness file (the scan still finds what it should)', () => {
    expect(g.size).toBeGreaterThan(100);
    expect(g.get(path.join('dataplane', 'stages', 'forward.ts'))).toContain(path.join('dataplane', 'stages', 'translated.ts'));
  });

  it('layers point one way', () => {
    const wrong: string[] = [];
    for (const [f, deps] of g) for (const d of deps) {
      const from = layer(f), to = layer(d);
      if (from !== to && !(MAY[from] ?? []).includes(to)) wrong.push(`${f} → ${d}`);
    }
    expect(wrong).toEqual([]);
  });

  it('no import circle', () => {
    // Tarjan's strongly connected components: any with more than one file is a circle.
    let index = 0;
    const idx = new Map<string, number>(), low = new Map<string, number>(), stack: string[] = [], on = new Set<string>(), circles: string[][] = [];
    const visit = (v: string) => {
      idx.set(v, index); low.set(v, index); index++; stack.push(v); on.add(v);
      for (const w of g.get(v) ?? []) {
        if (!g.has(w)) continue;
        if (!idx.has(w)) { visit(w); low.set(v, Math.min(low.get(v)!, low.get(w)!)); }
        else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
      }
      if (low.get(v) === idx.get(v)) {
        const scc: string[] = [];
        let w: string;
        do { w = stack.pop()!; on.delete(w); scc.push(w); } while (w !== v);
        if (scc.length > 1) circles.push(scc.sort());
      }
    };
    for (const v of g.keys()) if (!idx.has(v)) visit(v);
    expect(circles).toEqual([]);
  });
});
