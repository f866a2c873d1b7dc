/**
 * `blocktab io [-f FMT] [-r] [-U] [-c CMD]... [FILE]`: qemu-io's command line.
 *
 * Commands come from each -c in order, or, without -c, from standard input
 * one per line with qemu-io's "qemu-io> " prompt (printed as qemu-io does
 * when stdin is not a terminal, once more at end of input). The exit status
 * is 1 when the image could not be opened or any command failed, as qemu-io 7.2.
 */
import * as readline from 'node:readline';
import '../../node.js';
import { FileStorage } from '../../protocols/file.js';
import { openImage, closeNode } from '../../block/open.js';
import { BlockBackend } from '../../block/backend.js';
import type { BlockNode } from '../../block/node.js';
import { QemuIoSession, type IoOutput } from './commands.js';

const PROGNAME = 'qemu-io';

const USAGE = `Usage: blocktab io [OPTIONS]... [-c STRING]... [file]
QEMU Disk exerciser (blocktab)

  -c, --cmd STRING     execute command with its arguments
                       from the given string
  -f, --format FMT     specifies the block driver to use
  -r, --read-only      export read-only
  -U, --force-share    force shared permissions (accepted, no effect)
  -h, --help           display this help and exit

See 'blocktab io -c help' for information on available commands.
`;

interface IoArgs {
  format?: string;
  readOnly: boolean;
  cmds: string[];
  file?: string;
}

/** Parses blocktab io's options (GNU style, long forms included); returns an exit code on error or --help. */
function parseArgs(args: string[], output: IoOutput): IoArgs | number {
  const res: IoArgs = { readOnly: false, cmds: [] };
  const files: string[] = [];
  const withArg: Record<string, 'format' | 'cmd'> = { '-f': 'format', '--format': 'format', '-c': 'cmd', '--cmd': 'cmd' };
  for (let i = 0; i < args.length; i++) {
    let a = args[i]!;
    let inline: string | undefined;
    if (a.startsWith('--') && a.includes('=')) {
      inline = a.slice(a.indexOf('=') + 1);
      a = a.slice(0, a.indexOf('='));
    } else if (/^-[fc]./.test(a)) {
      inline = a.slice(2);
      a = a.slice(0, 2);
    }
    const kind = withArg[a];
    if (kind) {
      const v = inline ?? args[++i];
      if (v === undefined) {
        output.err(`${PROGNAME}: option '${a}' requires an argument\n${USAGE}`);
        return 1;
      }
      if (kind === 'format') res.format = v;
      else res.cmds.push(v);
    } else if (a === '-r' || a === '--read-only') {
      res.readOnly = true;
    } else if (a === '-U' || a === '--force-share') {
      // Sharing permissions do not exist across processes here.
    } else if (a === '-h' || a === '--help') {
      output.out(USAGE);
      return 0;
    } else if (a === '--') {
      files.push(...args.slice(i + 1));
      break;
    } else if (a.startsWith('-') && a !== '-') {
      output.err(`${PROGNAME}: invalid option -- '${a.replace(/^-+/, '')}'\n${USAGE}`);
      return 1;
    } else {
      files.push(a);
    }
  }
  if (files.length > 1) {
    output.err(USAGE);
    return 1;
  }
  res.file = files[0];
  return res;
}

/** Buffers stdout so a long `read -v` is not thousands of small writes. */
function processOutput(): IoOutput & { flush(): Promise<void> } {
  let pending: string[] = [];
  let size = 0;
  const drain = (): void => {
    if (pending.length) process.stdout.write(pending.join(''));
    pending = [];
    size = 0;
  };
  return {
    out(text) {
      pending.push(text);
      size += text.length;
      if (size > 1 << 16) drain();
    },
    err(text) {
      drain();
      process.stderr.write(text);
    },
    async flush() {
      drain();
      await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
    },
  };
}

/** Runs a sequence of command lines on a session; the result is qemu-io's exit status. */
export async function runCommands(session: QemuIoSession, lines: Iterable<string> | AsyncIterable<string>, prompt?: () => void): Promise<number> {
  let failed = false;
  prompt?.();
  for await (const line of lines) {
    const ret = await session.command(line);
    if (ret < 0) failed = true;
    if (session.quit) return failed ? 1 : 0;
    prompt?.();
  }
  return failed ? 1 : 0;
}

/** Entry point of `blocktab io`; returns the exit code. */
export async function runIo(args: string[], output: IoOutput & { flush?(): Promise<void> } = processOutput(), input: NodeJS.ReadableStream = process.stdin): Promise<number> {
  const parsed = parseArgs(args, output);
  if (typeof parsed === 'number') {
    await output.flush?.();
    return parsed;
  }
  let root: BlockNode | null = null;
  if (parsed.file !== undefined) {
    try {
      root = await openImage(new FileStorage(), parsed.file, {
        format: parsed.format,
        readOnly: parsed.readOnly,
        warn: (m) => output.err(m + '\n'),
      });
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      output.err(`${PROGNAME}: can't open device ${parsed.file}: ${msg}\n`);
      await output.flush?.();
      return 1;
    }
  }
  const session = new QemuIoSession(root ? new BlockBackend(root) : null, output, PROGNAME);
  let status: number;
  try {
    if (parsed.cmds.length > 0) {
      status = await runCommands(session, parsed.cmds);
    } else {
      const rl = readline.createInterface({ input, terminal: false, crlfDelay: Infinity });
      status = await runCommands(session, rl, () => output.out(`${PROGNAME}> `));
      rl.close();
    }
  } finally {
    if (root) {
      try {
        await closeNode(root);
      } catch (e) {
        output.err(`${PROGNAME}: ${e instanceof Error ? e.message : String(e)}\n`);
        status = 1;
      }
    }
  }
  await output.flush?.();
  return status!;
}
