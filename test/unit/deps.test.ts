// Every program the code and the tests run is installed by scripts/ensure-deps.sh
// or comes with any Debian system (a package of priority "required"), so a fresh
// machine passes where this one, with things installed by hand, would hide the
// gap (nft was missing once and six tests failed). The programs are read off the
// sources: the first argument of spawn/execFile calls, the first word of argument
// arrays (sh(ns, ['curl', ...])), and commands given to nsExec and `ip netns exec`.
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DIRS = ['dataplane', 'cni', 'policy', 'bench', 'cli', 'lab', 'test', 'scripts', '.ci'];
const PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
// What a new machine of this kind has before ensure-deps runs (the machine notes: Node.js with npm, python3, make, g++).
const PRESENT = new Set(['node', 'npm', 'npx', 'python3', 'make', 'g++', 'bash', 'sh']);

function sources(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir)) {
    if (e === 'node_modules' || e === 'dist' || e === 'build') continue;
    const p = path.join(dir, e);
    if (statSync(p).isDirectory()) sources(p, out);
    else if (/\.(ts|mjs|js|sh|py)$/.test(e) || e === 'run') out.push(p);
  }
  return out;
}

/** Command names the sources run. */
function commandsIn(text: string): Set<string> {
  const found = new Set<string>();
  const w = `'([a-z][a-z0-9_.+-]*)'`;
  const patterns = [
    new RegExp(`\\b(?:spawn|spawnSync|execFile|execFileSync)\\(\\s*${w}`, 'g'), // spawn('nft', ...)
    new RegExp(`\\[\\s*${w}\\s*,`, 'g'), // ['curl', '-s', ...]
    new RegExp(`\\bnsExec\\([^,()]+,\\s*${w}`, 'g'), // nsExec(ns, 'ethtool', ...)
    new RegExp(`'exec',\\s*[^,\\]]+,\\s*${w}`, 'g'), // 'netns', 'exec', ns, 'iperf3'
    new RegExp(`\\b(?:sh|must|version)\\(\\s*${w}`, 'g'), // the tests' own runners: sh('ctr', [...])
    new RegExp(`--net=[^\`]*\`,\\s*${w}`, 'g'), // nsenter --net=..., 'containerd'
  ];
  for (const re of patterns) for (const m of text.matchAll(re)) found.add(m[1]);
  for (const m of text.matchAll(/'((?:\/usr)?\/s?bin\/[a-z0-9_.+-]+)'/g)) found.add(m[1]); // const DNSMASQ = '/usr/sbin/dnsmasq'
  for (const m of text.matchAll(/^\s*(?:if\s+!?\s*)?([a-z][a-z0-9_.+-]*)\s/gm)) if (text.startsWith('#!')) found.add(m[1]); // shell scripts: first word of a line
  return found;
}

function which(cmd: string): string | undefined {
  if (cmd.startsWith('/')) { try { return statSync(cmd).isFile() ? cmd : undefined; } catch { return undefined; } }
  for (const d of PATH) {
    const p = path.join(d, cmd);
    try { if (statSync(p).isFile()) return p; } catch { /* not here */ }
  }
  return undefined;
}

function ownerOf(file: string): string | undefined {
  try {
    return execFileSync('dpkg', ['-S', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split(':')[0].trim();
  } catch {
    try { // /bin is a link to /usr/bin on merged-/usr systems; dpkg knows one of the two names
      const other = file.startsWith('/usr/') ? file.slice(4) : `/usr${file}`;
      return execFileSync('dpkg', ['-S', other], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split(':')[0].trim();
    } catch { return undefined; }
  }
}

function priorityOf(pkg: string): string {
  try { return execFileSync('dpkg-query', ['-W', '-f', '${Priority}', pkg], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim(); } catch { return ''; }
}

/** ensure-deps' package:path entries. */
function ensured(): { packages: Set<string>; paths: Set<string> } {
  const text = readFileSync(path.join(ROOT, 'scripts/ensure-deps.sh'), 'utf8');
  const block = text.slice(text.indexOf('PKGS=('), text.indexOf(')', text.indexOf('PKGS=(')));
  const packages = new Set<string>(), paths = new Set<string>();
  for (const m of block.matchAll(/^\s*([a-z0-9.+-]+):(\S+)/gm)) { packages.add(m[1]); paths.add(m[2]); }
  return { packages, paths };
}

describe('dependencies', () => {
  it('every program the code and tests run is installed by ensure-deps or is part of any Debian system', () => {
    const { packages, paths } = ensured();
    const used = new Map<string, string>(); // command → first file that runs it
    for (const f of DIRS.flatMap((d) => { try { return sources(path.join(ROOT, d)); } catch { return []; } })) {
      for (const c of commandsIn(readFileSync(f, 'utf8'))) if (!used.has(c)) used.set(c, path.relative(ROOT, f));
    }
    const checked: string[] = [], missing: string[] = [];
    for (const [cmd, file] of used) {
      const at = which(cmd);
      if (!at) continue; // not a program (a word in an argument list), or one this machine lacks: ensure-deps' own check finds those
      checked.push(cmd);
      if (PRESENT.has(path.basename(cmd)) || paths.has(at) || paths.has(at.replace(/^\/usr/, ''))) continue;
      const pkg = ownerOf(at) ?? ownerOf(realpathSync(at)); // alternatives (iptables-restore) are links
      if (pkg && (packages.has(pkg) || priorityOf(pkg) === 'required')) continue;
      missing.push(`${cmd} (${at}, package ${pkg ?? 'none'}, run by ${file})`);
    }
    console.log(`programs run by the code and tests: ${checked.sort().join(' ')}`);
    expect(checked.length).toBeGreaterThan(20); // the scan still finds what it should
    expect(missing).toEqual([]);
  });
});
