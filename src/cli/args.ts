/**
 * Command-line parsing in qemu-img's dialect on top of Node's util.parseArgs:
 * short options with values (`-f qcow2`, `-fqcow2`), long options with `=`
 * (`--output=json`), options after positionals (getopt permutes them), and
 * `--` to end options. Errors become a UsageError the top level prints as one
 * line.
 */
import { qemuStrtosz } from '../img/options.js';
import { parseArgs, type ParseArgsConfig } from 'node:util';

export class UsageError extends Error {}

/**
 * Several error_report lines at once (qemu-img reports some failures in two
 * calls): the top level prints each with the program name, where a plain
 * error's further lines are hints printed as they are.
 */
export class ReportsError extends UsageError {
  constructor(readonly reports: readonly string[]) {
    super(reports.join('\n'));
  }
}

export type OptionSpec = NonNullable<ParseArgsConfig['options']>;

export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
  /** Options in command-line order (for commands whose options are a sequence of actions). */
  tokens: { name: string; value?: string }[];
}

export function parseCommand(cmd: string, args: string[], options: OptionSpec): Parsed {
  try {
    const { values, positionals, tokens } = parseArgs({ args: joinOptionValues(args, options), options, allowPositionals: true, strict: true, tokens: true });
    const opts = tokens.flatMap((t) => (t.kind === 'option' ? [{ name: t.name, value: t.value }] : []));
    return { values: values as Parsed['values'], positionals, tokens: opts };
  } catch (e) {
    const err = e as { code?: string; message?: string };
    if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      const m = /Unknown option '([^']+)'/.exec(err.message ?? '');
      throw new UsageError(`${cmd}: invalid option -- '${(m?.[1] ?? '?').replace(/^-+/, '')}'`);
    }
    if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      const m = /Option '([^']+)/.exec(err.message ?? '');
      throw new UsageError(`${cmd}: option requires an argument -- '${(m?.[1] ?? '?').replace(/^-+/, '').replace(/,.*$/, '')}'`);
    }
    throw new UsageError(`${cmd}: ${err.message ?? String(e)}`);
  }
}

/**
 * getopt hands an option that takes a value the next argument whatever it
 * looks like (`--size -1`, `-l -x`); parseArgs refuses one that starts with a
 * dash. Such pairs are joined as `--name=value` before parsing.
 */
function joinOptionValues(args: string[], options: OptionSpec): string[] {
  const byShort = new Map<string, string>();
  for (const [name, o] of Object.entries(options)) if (o.short) byShort.set(o.short, name);
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      out.push(...args.slice(i));
      break;
    }
    const name = a.startsWith('--') && !a.includes('=') ? a.slice(2) : /^-[^-]$/.test(a) ? byShort.get(a[1]!) : undefined;
    const next = args[i + 1];
    if (name !== undefined && options[name]?.type === 'string' && next !== undefined && next.startsWith('-')) {
      out.push(`--${name}=${next}`);
      i++;
    } else {
      out.push(a);
    }
  }
  return out;
}

/** qemu-img's is_valid_option_list: not empty, no leading comma, no unpaired (unescaped) trailing comma. */
export function isValidOptionList(list: string): boolean {
  if (list === '' || list.startsWith(',')) return false;
  const trailing = list.length - list.replace(/,+$/, '').length;
  return trailing % 2 === 0;
}

/**
 * `-l` (or the older `-s`): a snapshot name or id, or `snapshot.id=ID,snapshot.name=NAME`
 * (qemu-img's internal snapshot options; the id is looked up first when both are given).
 */
export function parseSnapshotParam(text: string | undefined): string | undefined {
  if (text === undefined || !text.startsWith('snapshot.')) return text;
  const fields = new Map<string, string>();
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq);
    if (key !== 'snapshot.id' && key !== 'snapshot.name') throw new ReportsError([`Invalid parameter '${key}'`, `Failed in parsing snapshot param '${text}'`]);
    fields.set(key, eq < 0 ? 'on' : part.slice(eq + 1));
  }
  return fields.get('snapshot.id') ?? fields.get('snapshot.name');
}

/** Last value of a string option given once or more (qemu-img: the last one wins). */
export function str(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  if (Array.isArray(v)) return v[v.length - 1];
  return typeof v === 'string' ? v : undefined;
}

export function flag(p: Parsed, name: string): boolean {
  return p.values[name] === true;
}

/**
 * qemu-img's cvtnum / qemu_strtosz: a size in bytes with an optional binary
 * suffix (B, K, M, G, T, P, E; case-insensitive), fractions allowed with a suffix.
 */
export function parseSize(what: string, text: string): number {
  const v = qemuStrtosz(text);
  if (v === undefined) {
    throw new UsageError(`Invalid ${what} specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.`);
  }
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new UsageError(`Invalid ${what} specified. Must be less than 8 EiB!`);
  return Number(v);
}

/** Largest image size qemu-img accepts (INT64_MAX). */
const IMAGE_SIZE_MAX = (1n << 63n) - 1n;

/**
 * An image size given on qemu-img's command line (create's size, measure's
 * --size), exact up to INT64_MAX for the "Formatting" line and the
 * format's own limits; with qemu-img's messages for text that is no size and
 * for sizes out of range.
 */
export function parseImageSizeArg(text: string): bigint {
  const v = qemuStrtosz(text);
  if (v === undefined) {
    throw new ReportsError([
      'Invalid image size specified. You may use k, M, G, T, P or E suffixes for',
      'kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.',
    ]);
  }
  if (v > IMAGE_SIZE_MAX) throw new UsageError(`Invalid image size specified. Must be between 0 and ${IMAGE_SIZE_MAX}.`);
  return v;
}

/** `--output=human|json` */
export function outputFormat(p: Parsed): 'human' | 'json' {
  const o = str(p, 'output') ?? 'human';
  if (o !== 'human' && o !== 'json') throw new UsageError(`--output must be used with human or json as argument.`);
  return o;
}
