/**
 * The one option parser of `blocktab io`: GNU getopt_long as qemu-io uses it,
 * for its own command line (with long options) and for each of its commands
 * (short options only; the option string is the command's table entry, as in
 * QEMU's qemu-io-cmds.c). Bundling (`-qv`), attached or separate arguments
 * (`-P0x41`, `-P 0x41`, `--cache=none`, `--cache none`), unique prefixes of
 * long options (`--form`), `--` ends the options, and operands may come
 * before options (GNU permutes them). Errors carry glibc's messages.
 */

export type GetoptEvent =
  | { kind: 'opt'; c: string; arg?: string }
  /** An unknown option or one missing its argument; `message` is glibc's line for stderr. */
  | { kind: 'error'; c: string; message: string };

export interface GetoptResult {
  /** Options in command-line order, errors where they occur. */
  events: GetoptEvent[];
  operands: string[];
}

/** A long option: `--name`, with or without an argument; reported as option `val` (a short letter or the name). */
export interface LongOption {
  name: string;
  hasArg: boolean;
  val: string;
}

function parseLong(argv: string[], i: number, longopts: readonly LongOption[], events: GetoptEvent[]): number {
  const a = argv[i]!;
  const eq = a.indexOf('=');
  const name = a.slice(2, eq < 0 ? undefined : eq);
  const inline = eq < 0 ? undefined : a.slice(eq + 1);
  const exact = longopts.find((o) => o.name === name);
  const matches = exact ? [exact] : longopts.filter((o) => o.name.startsWith(name));
  const prog = argv[0];
  if (matches.length !== 1) {
    const message =
      matches.length === 0
        ? `${prog}: unrecognized option '--${name}'\n`
        : `${prog}: option '--${name}' is ambiguous; possibilities:${matches.map((o) => ` '--${o.name}'`).join('')}\n`;
    events.push({ kind: 'error', c: name, message });
    return i;
  }
  const o = matches[0]!;
  if (!o.hasArg) {
    if (inline !== undefined) events.push({ kind: 'error', c: o.val, message: `${prog}: option '--${o.name}' doesn't allow an argument\n` });
    else events.push({ kind: 'opt', c: o.val });
    return i;
  }
  if (inline !== undefined) events.push({ kind: 'opt', c: o.val, arg: inline });
  else if (i + 1 < argv.length) events.push({ kind: 'opt', c: o.val, arg: argv[++i]! });
  else events.push({ kind: 'error', c: o.val, message: `${prog}: option '--${o.name}' requires an argument\n` });
  return i;
}

/** Parses argv[1..] against `optstring` ("bCl:pP:qs:v") and `longopts`. `argv[0]` names the program or command in messages. */
export function getopt(argv: string[], optstring: string, longopts: readonly LongOption[] = []): GetoptResult {
  const events: GetoptEvent[] = [];
  const operands: string[] = [];
  const takesArg = (c: string): boolean | undefined => {
    const i = optstring.indexOf(c);
    if (i < 0 || c === ':') return undefined;
    return optstring[i + 1] === ':';
  };
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      operands.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('--') && longopts.length > 0) {
      i = parseLong(argv, i, longopts, events);
      continue;
    }
    if (a.length < 2 || a[0] !== '-') {
      operands.push(a);
      continue;
    }
    for (let j = 1; j < a.length; j++) {
      const c = a[j]!;
      const t = takesArg(c);
      if (t === undefined) {
        events.push({ kind: 'error', c, message: `${argv[0]}: invalid option -- '${c}'\n` });
        continue;
      }
      if (!t) {
        events.push({ kind: 'opt', c });
        continue;
      }
      if (j + 1 < a.length) {
        events.push({ kind: 'opt', c, arg: a.slice(j + 1) });
      } else if (i + 1 < argv.length) {
        events.push({ kind: 'opt', c, arg: argv[++i]! });
      } else {
        events.push({ kind: 'error', c, message: `${argv[0]}: option requires an argument -- '${c}'\n` });
      }
      break;
    }
  }
  return { events, operands };
}
