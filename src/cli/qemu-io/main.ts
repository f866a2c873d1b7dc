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
import { getopt, type LongOption } from './getopt.js';

const PROGNAME = 'qemu-io';

const USAGE = `Usage: blocktab io [OPTIONS]... [-c STRING]... [file]
QEMU Disk exerciser (blocktab)

  -c, --cmd STRING     execute command with its arguments
                       from the given string
  -f, --format FMT     specifies the block driver to use
  -r, --read-only      export read-only
  -n, --nocache        disable host cache, short for -t none
  -m, --misalign       misalign allocations for O_DIRECT (accepted, no effect)
  -k, --native-aio     use kernel AIO implementation (short for -i native)
  -i, --aio=MODE       use AIO mode (threads, native or io_uring; accepted, no effect)
  -t, --cache=MODE     use the given cache mode for the image
                       (none, off, writeback, writethrough, directsync, unsafe;
                       unsafe skips flushes, the others are accepted)
  -U, --force-share    force shared permissions (accepted, no effect)
  -h, --help           display this help and exit

See 'blocktab io -c help' for information on available commands.
`;

/** qemu-io's options (qemu-io.c): the short option string and the long table, for the shared parser. */
const SHORT_OPTS = 'hc:f:rnmki:t:U';
const LONG_OPTS: readonly LongOption[] = [
  { name: 'help', hasArg: false, val: 'h' },
  { name: 'cmd', hasArg: true, val: 'c' },
  { name: 'format', hasArg: true, val: 'f' },
  { name: 'read-only', hasArg: false, val: 'r' },
  { name: 'nocache', hasArg: false, val: 'n' },
  { name: 'misalign', hasArg: false, val: 'm' },
  { name: 'native-aio', hasArg: false, val: 'k' },
  { name: 'aio', hasArg: true, val: 'i' },
  { name: 'cache', hasArg: true, val: 't' },
  { name: 'force-share', hasArg: false, val: 'U' },
];

/** QEMU's bdrv_parse_cache_mode: whether the mode bypasses the host cache, and whether it skips flushes. */
const CACHE_MODES: Record<string, { direct: boolean; noFlush: boolean }> = {
  none: { direct: true, noFlush: false },
  off: { direct: true, noFlush: false },
  writeback: { direct: false, noFlush: false },
  writethrough: { direct: false, noFlush: false },
  directsync: { direct: true, noFlush: false },
  unsafe: { direct: false, noFlush: true },
};
const AIO_MODES = ['threads', 'native', 'io_uring'];

interface IoArgs {
  format?: string;
  readOnly: boolean;
  cmds: string[];
  file?: string;
  /** The host cache is bypassed (-n, -t none/directsync): qemu-io's cache.direct. Accepted; I/O is the same. */
  direct: boolean;
  /** -t unsafe: flushes stop short of the storage. */
  noFlush: boolean;
  aio: string;
  /** -U: QEMU allows it on read-only images only. */
  forceShare: boolean;
}

/** Parses blocktab io's options with the shared getopt; returns an exit code on error or --help. */
function parseArgs(args: string[], output: IoOutput): IoArgs | number {
  const res: IoArgs = { readOnly: false, cmds: [], direct: false, noFlush: false, aio: 'threads', forceShare: false };
  const { events, operands } = getopt([PROGNAME, ...args], SHORT_OPTS, LONG_OPTS);
  for (const ev of events) {
    if (ev.kind === 'error') {
      output.err(ev.message);
      output.out(USAGE);
      return 1;
    }
    const arg = ev.arg!;
    switch (ev.c) {
      case 'h':
        output.out(USAGE);
        return 0;
      case 'c': res.cmds.push(arg); break;
      case 'f': res.format = arg; break;
      case 'r': res.readOnly = true; break;
      case 'n': Object.assign(res, CACHE_MODES.none); break;
      case 't': {
        const mode = CACHE_MODES[arg];
        if (!mode) {
          output.err(`${PROGNAME}: Invalid cache option: ${arg}\n`);
          return 1;
        }
        Object.assign(res, mode);
        break;
      }
      case 'k': res.aio = 'native'; break;
      case 'i':
        if (!AIO_MODES.includes(arg)) {
          output.err(`${PROGNAME}: Invalid aio option: ${arg}\n`);
          return 1;
        }
        res.aio = arg;
        break;
      // Sharing permissions across processes do not exist here; QEMU's rule about them is kept.
      case 'U': res.forceShare = true; break;
      // Misaligned buffers for O_DIRECT change nothing here.
      case 'm': break;
    }
  }
  if (operands.length > 1) {
    output.out(USAGE);
    return 1;
  }
  res.file = operands[0];
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
      if (parsed.forceShare && !parsed.readOnly) throw new Error('force-share=on can only be used with read-only images');
      if (parsed.aio === 'native' && !parsed.direct) {
        throw new Error('aio=native was specified, but it requires cache.direct=on, which was not specified.');
      }
      root = await openImage(new FileStorage(), parsed.file, {
        format: parsed.format,
        readOnly: parsed.readOnly,
        warn: (m) => output.err(m + '\n'),
      });
      if (parsed.noFlush) for (let n: BlockNode | null = root; n; n = n.file?.node ?? null) n.noFlush = true;
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
