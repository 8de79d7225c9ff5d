// The agent's logger (lib/log.ts): the level from TWILL_LOG_LEVEL, the
// config, or info; errors under `err` with their stack; JSON lines when stdout is
// not a terminal, readable lines when it is (or TWILL_LOG_FORMAT says so).
import { beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { logFormat, logLevel, prettyLine } from '../../lib/log.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const LOG = `${root}dist/lib/log.js`; // the child runs the compiled module

beforeAll(() => {
  spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'ignore' }); // emits even if another part of the tree has type errors
}, 180_000);

/** Runs a few log calls in a child (fd 1 a pipe) and returns its stdout. */
function logged(env: Record<string, string>, level?: string): string {
  const script = `
    const { createLogger, logLevel } = await import(${JSON.stringify(LOG)});
    const log = createLogger({ node: 'node1' }, logLevel(${JSON.stringify(level)}));
    log.debug('a debug line');
    log.info({ pods: 2, socket: '/run/twill/agent.sock' }, 'agent ready');
    log.error({ err: new Error('boom'), kind: 'pod' }, 'watch failed');`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '', ...env } });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout;
}

describe('log level', () => {
  it('TWILL_LOG_LEVEL, else the config, else info; case does not matter', () => {
    expect(logLevel(undefined, {})).toBe('info');
    expect(logLevel('debug', {})).toBe('debug');
    expect(logLevel('debug', { TWILL_LOG_LEVEL: 'WARN' })).toBe('warn');
    expect(logLevel(undefined, { TWILL_LOG_LEVEL: 'trace' })).toBe('trace');
  });

  it('an unknown level is an error naming where it came from', () => {
    expect(() => logLevel(undefined, { TWILL_LOG_LEVEL: 'loud' })).toThrow('TWILL_LOG_LEVEL: "loud" is not a log level (trace, debug, info, warn, error, fatal, silent)');
    expect(() => logLevel('verbose', {})).toThrow('"logLevel": "verbose" is not a log level');
  });
});

describe('log output', () => {
  it('format: TWILL_LOG_FORMAT, else pretty only on a terminal', () => {
    expect(logFormat({ TWILL_LOG_FORMAT: 'pretty' })).toBe('pretty');
    expect(logFormat({ TWILL_LOG_FORMAT: 'JSON' })).toBe('json');
    // vitest's fd 1 is whatever runs it; the child below has a pipe
  });

  it('not a terminal: JSON lines at the level asked, errors with type, message and stack', () => {
    const lines = logged({}).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => l.msg)).toEqual(['agent ready', 'watch failed']); // info: no debug line
    expect(lines[0]).toMatchObject({ level: 30, node: 'node1', pods: 2 });
    const err = lines[1].err as { type: string; message: string; stack: string };
    expect(err.type).toBe('Error');
    expect(err.message).toBe('boom');
    expect(err.stack).toMatch(/^Error: boom\n {4}at /);
    expect(logged({ TWILL_LOG_LEVEL: 'debug' }).split('\n')[0]).toContain('"msg":"a debug line"');
    expect(logged({}, 'error').trim().split('\n')).toHaveLength(1); // the config's level
    expect(logged({ TWILL_LOG_LEVEL: 'warn' }, 'debug').trim().split('\n')).toHaveLength(1); // the environment wins
  });

  it('pretty: one readable line per entry, the stack indented below', () => {
    const out = logged({ TWILL_LOG_FORMAT: 'pretty' });
    const lines = out.split('\n');
    expect(lines[0]).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO  \[node1\] agent ready {2}pods=2 socket=\/run\/twill\/agent\.sock$/);
    expect(lines[1]).toMatch(/^\d\d:\d\d:\d\d\.\d{3} ERROR \[node1\] watch failed {2}kind=pod$/);
    expect(lines[2]).toBe('    Error: boom');
    expect(lines[3]).toMatch(/^ {8}at /);
  });

  it('prettyLine: workers, quoted values, a string err, colour on request', () => {
    const t = Date.UTC(2026, 0, 2, 3, 4, 5, 6);
    expect(prettyLine(JSON.stringify({ level: 40, time: t, node: 'n2', worker: 1, msg: 'kernel refused an offload', offload: 'udp-gso', note: 'two words', err: 'EINVAL' })))
      .toBe('03:04:05.006 WARN  [n2/w1] kernel refused an offload  offload=udp-gso note="two words" err=EINVAL\n');
    expect(prettyLine(JSON.stringify({ level: 50, time: t, msg: 'x' }), true)).toBe('03:04:05.006 \x1b[31mERROR\x1b[0m x\n');
    expect(prettyLine('not json\n')).toBe('not json\n');
  });
});
