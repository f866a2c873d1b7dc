#!/usr/bin/env node
/**
 * `blocktab`: qemu-img's subcommands (and `blocktab io` for qemu-io's) over
 * blocktab's engine. Everything that can fail is caught here: a failure is one
 * line `blocktab: <message>` on stderr and qemu-img's exit code, never a stack
 * trace.
 */
import { fs } from '../protocols/node-fs.js';
import { fileURLToPath } from 'node:url';
import { isBlockError, setErrorWording } from '../block/errors.js';
import { listDrivers } from '../block/driver.js';
import { ReportsError, UsageError } from './args.js';
import { takeObjectOptions } from './objects.js';
import { invokedAs, progName, warned } from './progname.js';
import { writeStderrBlocking } from './blocking-stderr.js';

/** Where commands write; tests and the top level pass process streams. */
export interface Output {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  /** stderr that waits for a slow reader instead of queueing in memory (the process's; for bulk output). */
  stderrBlocking?: (s: string) => void;
}

/** A failure with a specific exit code (compare's 2/3/4). */
export class CliError extends Error {
  constructor(
    readonly exitCode: number,
    message: string,
  ) {
    super(message);
  }
}

type Command = (args: string[], out: Output) => Promise<number>;

const commands: Record<string, () => Promise<Command>> = {
  info: () => import('./info.js').then((m) => m.runInfo),
  map: () => import('./map.js').then((m) => m.runMap),
  convert: () => import('./convert.js').then((m) => m.runConvert),
  compare: () => import('./compare.js').then((m) => m.runCompare),
  create: () => import('./create.js').then((m) => m.runCreate),
  check: () => import('./check.js').then((m) => m.runCheck),
  snapshot: () => import('./snapshot.js').then((m) => m.runSnapshot),
  rebase: () => import('./rebase.js').then((m) => m.runRebase),
  commit: () => import('./commit.js').then((m) => m.runCommit),
  measure: () => import('./measure.js').then((m) => m.runMeasure),
  resize: () => import('./resize.js').then((m) => m.runResize),
  amend: () => import('./amend.js').then((m) => m.runAmend),
  bitmap: () => import('./bitmap.js').then((m) => m.runBitmap),
  dd: () => import('./dd.js').then((m) => m.runDd),
  partitions: () => import('./inspect.js').then((m) => m.runPartitions),
  ls: () => import('./inspect.js').then((m) => m.runLs),
  cat: () => import('./inspect.js').then((m) => m.runCat),
};

const HELP = `usage: blocktab [--version] [--help] command [command options]
blocktab: QEMU's block layer in TypeScript; speaks qemu-img's (and qemu-io's) language.

Command syntax:
  info [-f fmt] [--output=human|json] [--backing-chain] [-U] filename
  map [-f fmt] [--output=human|json] [--start-offset=offset] [--max-length=len] [-U] filename
  convert [-c] [-f fmt] [-O output_fmt] [-o options] [-B backing_file [-F backing_fmt]] [-n] [-p] [-q] [-S sparse_size] [-m num_coroutines] [-W] [-U] filename [filename2 [...]] output_filename
  compare [-f fmt] [-F fmt] [-p] [-q] [-s] [-U] filename1 filename2
  create [-q] [-f fmt] [-b backing_file -F backing_fmt] [-u] [-o options] filename [size]
  check [-f fmt] [--output=human|json] [-r leaks|all] [-q] [-U] filename
  measure [--output=human|json] [-O output_fmt] [-o options] [--size N | [-f fmt] filename]
  resize [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size
  bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b source_file [-F source_fmt]] [-g granularity] [-f fmt] filename bitmap
  amend [-f fmt] [-q] -o options filename
  dd [--image-opts] [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] [skip=blocks] if=input of=output
  snapshot [-f fmt] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] [-U] filename
  rebase [-f fmt] [-F backing_fmt] [-p] [-q] [-u] [-U] -b backing_file filename
  commit [-f fmt] [-b base] [-d] [-p] [-q] filename
  io [qemu-io options] [filename]    run qemu-io commands (see 'blocktab io --help')
  qmp [--blockdev OPTIONS]... [--drive OPTIONS]... [--object OPTIONS]...    a QMP monitor on stdin/stdout
  partitions [-f fmt] [--snapshot name] [--output=human|json] filename
  ls [-f fmt] [--snapshot name] [--partition N] [-l] [-R] [--output=human|json] filename [path]
  cat [-f fmt] [--snapshot name] [--partition N] filename path

Exit codes follow qemu-img: 0 success, 1 error; compare: 0 identical, 1 different, 2 error.
Supported formats: ${listDrivers('format')
  .map((d) => d.name)
  .join(' ')}
`;

function version(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    return pkg.version;
  } catch {
    return 'unknown';
  }
}

/**
 * Commands whose work the WebAssembly kernels speed up (zero detection, the
 * L2 scan, dirty bitmaps, the arena I/O buffers come from). The others (info,
 * create, resize, amend, snapshot) start without compiling the module.
 */
const KERNEL_COMMANDS = new Set(['convert', 'compare', 'map', 'check', 'commit', 'rebase', 'measure', 'io']);

/**
 * The arena a command gets (src/wasm/module.ts). V8 counts the whole wasm
 * memory as external memory the moment it is made, and past 64 MiB of that
 * it starts a major GC at once: about 30 M instructions of every command
 * that loaded the kernels with the default 256 MiB arena. A convert's
 * pipeline peaks near 16 MiB of buffers (2 MiB steps, the writes in flight,
 * table slices), so 32 MiB keeps the memory under V8's limit; check's
 * reference counts of a large image (2 bytes a cluster, two mark bitmaps)
 * need the big arena, and pay the GC. A request the arena cannot meet gets a
 * plain buffer: a smaller arena costs speed at worst, never correctness.
 */
const SMALL_ARENA_BYTES = 32 * 1024 * 1024;
const ARENA_BYTES: Record<string, number | undefined> = { check: 256 * 1024 * 1024 };

/**
 * Loads the kernels from build/blocktab.wasm (two levels above this file, in
 * dist/cli/ as in src/cli/). Everything has a JS fallback, so a missing file
 * costs speed, not correctness; say so once when debugging.
 */
async function loadKernels(cmd: string): Promise<void> {
  try {
    const { initWasm } = await import('../runtime.js'); // also installs the arena as the buffer provider
    await initWasm({ bytes: fs.readFileSync(new URL('../../build/blocktab.wasm', import.meta.url)), arenaBytes: ARENA_BYTES[cmd] ?? SMALL_ARENA_BYTES });
  } catch (e) {
    if (process.env.BLOCKTAB_DEBUG) process.stderr.write(`${progName()}: note: wasm kernels not loaded (${String(e)}); using JS fallbacks\n`);
  }
}

/** Runs one command line (without the program name) and returns the exit code. */
export async function main(argv: string[], out: Output): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === undefined) throw new UsageError('Not enough arguments');
    if (cmd === '--help' || cmd === '-h' || cmd === 'help') {
      out.stdout(HELP);
      return 0;
    }
    if (cmd === '--version' || cmd === '-V') {
      out.stdout(`blocktab version ${version()} (qemu-img 7.2 compatible)\n`);
      return 0;
    }
    const load = commands[cmd];
    if (!load && cmd !== 'io' && cmd !== 'qmp') throw new UsageError(`Command not found: ${cmd}`);
    // The engine loads only for a command: --version and --help stay cheap.
    await import('../node.js'); // Node's drivers and C zlib for compressed writes
    if (cmd === 'qmp') {
      await loadKernels(cmd);
      const m = await import('./qmp/main.js');
      return await m.runQmp(rest, out);
    }
    if (cmd === 'io' || !load) {
      await loadKernels('io'); // qemu-io's writes go through detect-zeroes
      const m = await import('./qemu-io/main.js');
      return await m.runIo(rest);
    }
    if (KERNEL_COMMANDS.has(cmd)) await loadKernels(cmd);
    if (rest.includes('--help') || rest.includes('-h')) {
      out.stdout(HELP);
      return 0;
    }
    return await (await load())(takeObjectOptions(rest), out);
  } catch (e) {
    const code = e instanceof CliError ? e.exitCode : 1;
    const msg = e instanceof Error ? e.message : String(e);
    // Only our own errors are expected; anything else still gets one line, marked as internal.
    const known = e instanceof CliError || e instanceof UsageError || isBlockError(e);
    // A known error's further lines are QEMU's hints (error_append_hint), which qemu-img prints after the message.
    if (e instanceof ReportsError) for (const line of e.reports) out.stderr(`${progName()}: ${line}\n`);
    else if (known) out.stderr(`${progName()}: ${msg}${isBlockError(e) && e.unterminated ? '' : '\n'}`);
    else out.stderr(`${progName()}: internal error: ${msg}`.split('\n')[0] + '\n');
    return code;
  }
}

function isEntry(): boolean {
  try {
    return process.argv[1] !== undefined && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

/**
 * Commands that leave nothing running once they return (their images closed,
 * their worker threads ended): the process ends as soon as stdout and stderr
 * have written what is queued. Node's own end of a process tears the heap and
 * the wasm memory down page by page first, which a finished copy does not
 * need: from the target's close to the process's end, 60–104 ms against
 * 40–52 ms on the loaded development VM (4 GiB raw→qcow2, strace -ttt).
 */
const EXITS_WHEN_DONE = new Set(['convert']);

function exitWhenFlushed(wrote: boolean): void {
  // Nothing written through `out`: nothing queued. Asking would only create the two stdio streams (Node makes
  // them on first use, with the streams stack: about 1.5 ms of a small convert) to learn that.
  if (!wrote) process.exit();
  let pending = 2;
  // A write's callback runs once it and everything queued before it is written (a pipe may hold back output).
  const flushed = () => {
    if (--pending === 0) process.exit();
  };
  process.stdout.write('', flushed);
  process.stderr.write('', flushed);
}

/** Runs the process's command line (the CLI started as a program: this file, or the bundle's entry src/cli/bin.ts). */
export function runAsEntry(): void {
  let wrote = false;
  const out: Output = {
    stdout: (s) => void ((wrote = true), process.stdout.write(s)),
    stderr: (s) => void ((wrote = true), process.stderr.write(s)),
    stderrBlocking: (s) => ((wrote = true), writeStderrBlocking(s)),
  };
  // Invoked as qemu-img or qemu-io, errors speak QEMU's words where it has its own (src/block/errors.ts).
  if (invokedAs() !== 'blocktab') setErrorWording('qemu');
  // Invoked as qemu-io, the whole command line is qemu-io's.
  const argv = invokedAs() === 'qemu-io' ? ['io', ...process.argv.slice(2)] : process.argv.slice(2);
  main(argv, out).then(
    (code) => {
      process.exitCode = code;
      if (EXITS_WHEN_DONE.has(argv[0] ?? '')) exitWhenFlushed(wrote || warned());
    },
    (e: unknown) => {
      process.stderr.write(`${progName()}: internal error: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}

if (isEntry()) runAsEntry();
