// The command line's one convention, over node:util.parseArgs: every command is
// described once (its options, arguments and subcommands), and that description
// is both its parser and its usage text.
//   - `--help`/`-h` anywhere before `--` prints the command's usage on stdout (exit 0);
//   - parsing is strict: an unknown option, a missing or extra value, an unknown
//     subcommand or a wrong number of arguments is a usage error: the error, with a
//     hint naming the closest valid spelling, then the usage, on stderr (exit 2);
//   - `--flag value` and `--flag=value`, `-f value` and `-fvalue` all work.
import { parseArgs } from 'node:util';

export interface Opt {
  type: 'string' | 'boolean';
  help: string;
  short?: string;
  multiple?: boolean; // may be given more than once: a list
  value?: string; // the value's name in the usage (default VALUE)
  required?: boolean;
  hidden?: boolean; // accepted but not listed
  alias?: string; // another spelling of this option (hidden): its values go there
}

export interface Command {
  name: string; // the whole invocation: "twill lab up"
  summary: string; // one line, in the parent's list of commands
  about?: string; // what it does, under the usage line
  options?: Record<string, Opt>;
  args?: { name: string; optional?: boolean }[]; // positional arguments, in order
  rest?: string; // what follows `--` (required when set), e.g. "COMMAND..."
  commands?: Command[]; // subcommands; a command with both runs itself when none is named
  hidden?: boolean; // internal: not listed
  synopsis?: string[]; // usage lines instead of the generated ones
}

export type Values = Record<string, string | boolean | string[] | undefined>;

export interface Parsed {
  cmd: Command;
  path: string[]; // subcommand names below the root: ["lab", "up"]
  values: Values;
  args: string[];
  rest: string[];
}

export class UsageError extends Error {
  constructor(message: string, readonly command: Command) {
    super(message);
    this.name = 'UsageError';
  }
}

const HELP: Opt = { type: 'boolean', short: 'h', help: 'print this help' };
const isHelp = (a: string) => a === '--help' || a === '-h';

/** Edit distance (insertions, deletions, substitutions, adjacent swaps). */
export function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const c = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + c);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** The candidate closest to `given`, if it is close enough to be what was meant. */
export function closest(given: string, candidates: string[]): string | undefined {
  const bare = (s: string) => s.replace(/^-+/, '');
  const g = bare(given);
  if (!g) return undefined;
  const prefixed = candidates.filter((c) => bare(c).startsWith(g));
  if (prefixed.length === 1) return prefixed[0];
  let best: string | undefined, bd = Infinity;
  for (const c of candidates) {
    const dd = distance(g, bare(c));
    if (dd < bd) { best = c; bd = dd; }
  }
  return best !== undefined && bd <= Math.max(1, Math.min(3, Math.floor(g.length / 3))) ? best : undefined;
}

const visible = (c: Command) => (c.commands ?? []).filter((s) => !s.hidden);
const optionsOf = (c: Command): Record<string, Opt> => ({ ...c.options, help: HELP });
const flagOf = (name: string, o: Opt) => (o.short ? `-${o.short}` : `--${name}`);
const valueOf = (o: Opt) => (o.type === 'string' ? ` ${o.value ?? 'VALUE'}` : '');

/** The one-line synopsis of a command that runs (its options, arguments, `-- rest`). */
function synopsis(c: Command): string {
  const parts = [c.name];
  for (const [name, o] of Object.entries(c.options ?? {})) {
    if (o.hidden || o.alias) continue;
    const f = `${flagOf(name, o)}${valueOf(o)}`;
    parts.push(o.required ? f : `[${f}]`);
    if (o.multiple) parts[parts.length - 1] += '...';
  }
  for (const a of c.args ?? []) parts.push(a.optional ? `[${a.name}]` : a.name);
  if (c.rest) parts.push(`-- ${c.rest}`);
  return parts.join(' ');
}

/** The command's usage text: synopsis, what it does, its options, its subcommands. */
export function usage(c: Command): string {
  const subs = visible(c);
  const runs = !c.commands || c.options !== undefined || c.args !== undefined;
  const syn = c.synopsis ?? [...(runs ? [synopsis(c)] : []), ...(subs.length ? [`${c.name} <command> [options]`] : [])];
  const lines = syn.map((l, k) => `${k ? '      ' : 'usage:'} ${l}`);
  lines.push('', c.about ?? c.summary);
  const opts = Object.entries(optionsOf(c)).filter(([, o]) => !o.hidden && !o.alias);
  const rows = opts.map(([name, o]) => [`${o.short ? `-${o.short}, ` : '    '}--${name}${valueOf(o)}`, o.help]);
  const cmdRows = subs.map((s) => [s.name.slice(c.name.length + 1), s.summary]);
  const w = Math.max(...rows.map((r) => r[0].length), ...cmdRows.map((r) => r[0].length)) + 3;
  if (cmdRows.length) {
    lines.push('', 'commands:');
    for (const [k, v] of cmdRows) lines.push(`  ${k.padEnd(w)}${v}`);
  }
  lines.push('', 'options:');
  for (const [k, v] of rows) lines.push(`  ${k.padEnd(w)}${v}`);
  if (cmdRows.length) lines.push('', `\`${c.name} <command> --help\` prints a command's usage.`);
  return `${lines.join('\n')}\n`;
}

/** The option's name as parseArgs reports it in an error message. */
function optionInMessage(msg: string): string {
  const m = /Option '(?:-\w, )?(--?[\w-]+)/.exec(msg) ?? /option '(--?[\w-]+)'/i.exec(msg);
  return m ? m[1] : '';
}

function parseError(c: Command, e: Error & { code?: string }): UsageError {
  const opts = optionsOf(c);
  const spellings = Object.entries(opts).flatMap(([name, o]) => (o.hidden || o.alias ? [] : [`--${name}`, ...(o.short ? [`-${o.short}`] : [])]));
  const flag = optionInMessage(e.message);
  const long = flag.replace(/^-+/, '');
  const o = opts[long] ?? Object.values(opts).find((x) => `-${x.short}` === flag);
  switch (e.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION': {
      const hint = closest(flag, spellings.filter((s) => s.startsWith('--') || !flag.startsWith('--')));
      return new UsageError(`unknown option ${flag}${hint ? ` (did you mean ${hint}?)` : ''}`, c);
    }
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      if (/does not take an argument/.test(e.message)) return new UsageError(`${flag} takes no value`, c);
      if (/argument missing|ambiguous/.test(e.message)) {
        return new UsageError(`${flag} needs a value${o ? ` (${flag}${valueOf(o)})` : ''}${/ambiguous/.test(e.message) ? `; to give one that starts with "-", write ${flag}=VALUE` : ''}`, c);
      }
      return new UsageError(e.message.split('\n')[0], c);
    default:
      return new UsageError(e.message.split('\n')[0], c);
  }
}

/**
 * Finds the command `argv` names below `root` and parses its options and arguments.
 * Returns the command whose help was asked for instead, as `{ help }`.
 */
export function resolve(root: Command, argv: string[]): Parsed | { help: Command } {
  let c = root;
  const path: string[] = [];
  let i = 0;
  for (; c.commands && i < argv.length && !argv[i].startsWith('-'); i++) {
    const sub = c.commands.find((s) => s.name === `${c.name} ${argv[i]}`);
    if (!sub) {
      const hint = closest(argv[i], visible(c).map((s) => s.name.slice(c.name.length + 1)));
      throw new UsageError(`unknown command "${argv[i]}"${hint ? ` (did you mean ${hint}?)` : ''}`, c);
    }
    c = sub;
    path.push(argv[i]);
  }
  const rest0 = argv.slice(i);
  const dd = c.rest ? rest0.indexOf('--') : -1;
  const own = dd >= 0 ? rest0.slice(0, dd) : rest0;
  if (own.some(isHelp)) return { help: c };
  if (c.commands && !c.options && !c.args) {
    throw new UsageError(own.length ? `unknown option ${own[0]}` : 'missing command', c);
  }
  let parsed;
  try {
    parsed = parseArgs({ args: own, options: optionsOf(c), strict: true, allowPositionals: true });
  } catch (e) {
    throw parseError(c, e as Error & { code?: string });
  }
  const values = parsed.values as Values;
  for (const [name, o] of Object.entries(c.options ?? {})) {
    if (!o.alias || values[name] === undefined) continue;
    const v = values[name];
    values[o.alias] = Array.isArray(v) ? [...((values[o.alias] as string[] | undefined) ?? []), ...v] : v;
    delete values[name];
  }
  for (const [name, o] of Object.entries(c.options ?? {})) {
    if (o.required && values[name] === undefined) throw new UsageError(`missing ${flagOf(name, o)}${valueOf(o)}`, c);
  }
  const specs = c.args ?? [];
  const args = parsed.positionals;
  if (args.length > specs.length) {
    const extra = args[specs.length];
    if (c.commands && !specs.length) throw new UsageError(`unknown command "${extra}"`, c);
    throw new UsageError(`unexpected argument "${extra}"${c.rest ? ` (${c.rest} goes after --: ${synopsis(c)})` : ''}`, c);
  }
  const missing = specs.find((a, k) => !a.optional && args[k] === undefined);
  if (missing) throw new UsageError(`missing ${missing.name}`, c);
  const rest = dd >= 0 ? rest0.slice(dd + 1) : [];
  if (c.rest && !rest.length) throw new UsageError(`missing -- ${c.rest}`, c);
  return { cmd: c, path, values, args, rest };
}

/** The error line and the usage, as printed for a usage error. */
export function usageErrorText(e: UsageError): string {
  return `${e.command.name}: ${e.message}\n\n${usage(e.command)}`;
}

/**
 * Resolves `argv` and runs `handler`: help on stdout (0), usage errors on stderr (2),
 * a UsageError the handler throws (a value out of range) the same way; any other
 * error as one line on stderr, `<command>: <message>` (1; TWILL_DEBUG=1 adds the stack).
 */
export async function runCommand(root: Command, argv: string[], handler: (p: Parsed) => Promise<number>): Promise<number> {
  let r: Parsed | { help: Command } | undefined;
  try {
    r = resolve(root, argv);
    if ('help' in r) {
      process.stdout.write(usage(r.help));
      return 0;
    }
    return await handler(r);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(usageErrorText(e));
      return 2;
    }
    // Any other failure: one line naming the command, then what failed (the error says which file, source or pod).
    const name = r && 'cmd' in r ? r.cmd.name : root.name;
    process.stderr.write(`${name}: ${e instanceof Error ? e.message : String(e)}\n`);
    if (process.env.TWILL_DEBUG && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
    return 1;
  }
}

// Typed reads of parsed values; a bad value is a usage error of the command.
export const str = (p: Parsed, name: string): string | undefined => p.values[name] as string | undefined;
export const bool = (p: Parsed, name: string): boolean => p.values[name] === true;
export const list = (p: Parsed, ...names: string[]): string[] => names.flatMap((n) => (p.values[n] as string[] | undefined) ?? []);

export function int(p: Parsed, name: string, o: { min: number; max?: number; def: number; what?: string }): number;
export function int(p: Parsed, name: string, o: { min: number; max?: number; def?: undefined; what?: string }): number | undefined;
export function int(p: Parsed, name: string, o: { min: number; max?: number; def?: number; what?: string }): number | undefined {
  const v = str(p, name);
  if (v === undefined) return o.def;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < o.min || (o.max !== undefined && n > o.max)) {
    const range = o.max !== undefined ? `${o.min}-${o.max}` : o.min === 0 ? 'a whole number' : `a whole number, at least ${o.min}`;
    throw new UsageError(`--${name} must be ${o.what ?? range}, not "${v}"`, p.cmd);
  }
  return n;
}

export function oneOf<T extends string>(p: Parsed, name: string, allowed: readonly T[], def?: T): T | undefined {
  const v = str(p, name);
  if (v === undefined) return def;
  const hit = allowed.find((a) => a.toLowerCase() === v.toLowerCase());
  if (!hit) throw new UsageError(`--${name} must be ${allowed.join(' or ')}, not "${v}"`, p.cmd);
  return hit;
}
