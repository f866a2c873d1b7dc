/**
 * GNU getopt as qemu-io's commands use it: short options only, bundling
 * (`-qv`), attached or separate arguments (`-P0x41`, `-P 0x41`), `--` ends
 * the options, and operands may come before options (GNU permutes them).
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

/** Parses argv[1..] against `optstring` ("bCl:pP:qs:v"). `argv[0]` names the command in messages. */
export function getopt(argv: string[], optstring: string): GetoptResult {
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
