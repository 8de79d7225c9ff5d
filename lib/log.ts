// The agent's (and its workers') logger: pino, at the level TWILL_LOG_LEVEL names,
// else the agent config's "logLevel", else info. Errors go under `err` as Error
// objects, which pino serializes with their type, message and stack.
// Output: JSON lines (one object per line, as the lab's agent.log and log shippers
// want them), or, when stdout is a terminal, one readable line per entry with the
// stack indented below. TWILL_LOG_FORMAT=json|pretty overrides the choice.
import { writeSync } from 'node:fs';
import { isatty } from 'node:tty';
import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino';

export const LOG_LEVELS: readonly LevelWithSilent[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];
const isLevel = (v: unknown): v is LevelWithSilent => typeof v === 'string' && (LOG_LEVELS as readonly string[]).includes(v);

/** TWILL_LOG_LEVEL, else `configured`, else info; a name pino does not know is an error saying where it came from. */
export function logLevel(configured?: string, env: NodeJS.ProcessEnv = process.env): LevelWithSilent {
  const v = env.TWILL_LOG_LEVEL || configured || 'info';
  const l = v.toLowerCase();
  if (!isLevel(l)) throw new Error(`${env.TWILL_LOG_LEVEL ? 'TWILL_LOG_LEVEL' : '"logLevel"'}: "${v}" is not a log level (${LOG_LEVELS.join(', ')})`);
  return l;
}

/** pretty when TWILL_LOG_FORMAT says so, or it says nothing and stdout is a terminal. */
export function logFormat(env: NodeJS.ProcessEnv = process.env): 'json' | 'pretty' {
  const f = env.TWILL_LOG_FORMAT?.toLowerCase();
  if (f === 'json' || f === 'pretty') return f;
  return isatty(1) ? 'pretty' : 'json';
}

const NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const COLORS: Record<number, string> = { 10: '90', 20: '36', 30: '32', 40: '33', 50: '31', 60: '35' };

function value(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  return JSON.stringify(v) ?? String(v);
}

/** One pino JSON line as a person reads it: time, level, [node/worker], message, key=value..., then an error's stack. */
export function prettyLine(json: string, color = false): string {
  let o: Record<string, unknown>;
  try { o = JSON.parse(json) as Record<string, unknown>; } catch { return json; }
  const { level, time, msg, node, worker, err, ...rest } = o;
  const lv = Number(level);
  const name = (NAMES[lv] ?? String(level)).padEnd(5);
  const t = typeof time === 'number' ? new Date(time).toISOString().slice(11, 23) : '';
  const who = node !== undefined ? ` [${String(node)}${worker !== undefined ? `/w${String(worker)}` : ''}]` : '';
  const fields = Object.entries(rest).map(([k, v]) => `${k}=${value(v)}`).join(' ');
  const e = err as { type?: string; message?: string; stack?: string } | string | undefined;
  const errText = e === undefined ? '' : typeof e === 'string' ? ` err=${value(e)}` : '';
  const stack = e && typeof e === 'object' ? `\n    ${(e.stack ?? `${e.type ?? 'Error'}: ${e.message ?? ''}`).split('\n').join('\n    ')}` : '';
  const lvText = color ? `\x1b[${COLORS[lv] ?? '0'}m${name}\x1b[0m` : name;
  return `${t} ${lvText}${who} ${String(msg ?? '')}${fields ? `  ${fields}` : ''}${errText}${stack}\n`;
}

function prettyStream(): DestinationStream {
  const color = isatty(1) && !process.env.NO_COLOR;
  return {
    write(line: string) {
      const out = prettyLine(line, color);
      try { writeSync(1, out); } catch { /* stdout gone: nothing to tell */ }
    },
  };
}

/** A logger whose every line carries `base` (node, worker), at `level` (default: logLevel()). */
export function createLogger(base: Record<string, unknown>, level: LevelWithSilent = logLevel()): Logger {
  const opts = { base, level };
  return logFormat() === 'pretty' ? pino(opts, prettyStream()) : pino(opts);
}
