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
import { openTree } from '../../block/open-tree.js';
import { setDebugMessageSink } from '../../block/debug-event.js';
import { crumple, mergeTrees, optBool, parseJsonName, type OptionsTree } from '../../block/options-tree.js';
import { innermostFilename } from '../objects.js';
import { BlockBackend } from '../../block/backend.js';
import type { BlockNode } from '../../block/node.js';
import { QemuIoSession, type IoHost, type IoOutput, type OpenRequest } from './commands.js';
import { parseCacheMode, parseKeyValues } from './open-commands.js';
import { createImage, planCreate } from '../../img/create.js';
import { BlockError, describeCode, fromHostError } from '../../block/errors.js';
import { tmpdir } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import { fs } from '../../protocols/node-fs.js';
import { getopt, type LongOption } from './getopt.js';
import { defineObject } from '../objects.js';
import { warnLine } from '../progname.js';

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
const SHORT_OPTS = 'hVc:d:f:rsnCmki:t:T:U';
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
  { name: 'version', hasArg: false, val: 'V' },
  { name: 'snapshot', hasArg: false, val: 's' },
  { name: 'copy-on-read', hasArg: false, val: 'C' },
  { name: 'discard', hasArg: true, val: 'd' },
  { name: 'trace', hasArg: true, val: 'T' },
  { name: 'object', hasArg: true, val: 'O' },
  { name: 'image-opts', hasArg: false, val: 'I' },
];

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
  /** -t writethrough / directsync: each write flushed before it completes. */
  writethrough: boolean;
  aio: string;
  /** -U: QEMU allows it on read-only images only. */
  forceShare: boolean;
  /** -s: writes go to a temporary overlay. */
  snapshot: boolean;
  /** -C: copy-on-read. */
  copyOnRead: boolean;
  /** -d: discard mode. */
  discard?: string;
  /** --image-opts: the operand is key=value options, not a file name. */
  imageOpts: boolean;
}

/** Parses blocktab io's options with the shared getopt; returns an exit code on error or --help. */
function parseArgs(args: string[], output: IoOutput): IoArgs | number {
  const res: IoArgs = { readOnly: false, cmds: [], direct: false, noFlush: false, writethrough: false, aio: 'threads', forceShare: false, snapshot: false, copyOnRead: false, imageOpts: false };
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
      case 'n': Object.assign(res, parseCacheMode('none')); break;
      case 't': {
        const mode = parseCacheMode(arg);
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
      case 's': res.snapshot = true; break;
      case 'I': res.imageOpts = true; break;
      case 'V':
        output.out(`${PROGNAME} version 7.2.0 (blocktab)\n`);
        return 0;
      case 'O':
        try {
          defineObject(arg);
        } catch (e) {
          output.err(`${PROGNAME}: ${e instanceof Error ? e.message : String(e)}\n`);
          return 1;
        }
        break;
      case 'C': res.copyOnRead = true; break;
      case 'd': res.discard = arg; break;
      // Tracing changes nothing observable here.
      case 'T': break;
    }
  }
  if (operands.length > 1) {
    output.out(USAGE);
    return 1;
  }
  res.file = operands[0];
  if (res.format !== undefined && res.imageOpts) {
    output.err(`${PROGNAME}: --image-opts and -f are mutually exclusive\n`);
    return 1;
  }
  return res;
}

/**
 * qemu-io's stdout as C stdio keeps it: to a terminal, written before anything
 * on stderr (line-buffered); to a pipe or file, fully buffered in 4096-byte
 * blocks, so a message on stderr (unbuffered) comes out before the stdout text
 * not yet filling a block, as qemu-io's close-time "Failed to flush ..."
 * lines come before its "write failed" in a script's `2>&1`. The buffer is
 * written at a prompt (qemu-io flushes there), a signal and exit. Whole
 * blocks are written in batches: only their order against stderr shows.
 */
const STDIO_BLOCK = 4096;

function processOutput(stdoutIsTty = process.stdout.isTTY === true): IoOutput & { flush(): Promise<void>; sync(): void } {
  let pending = '';
  const write = (n: number): void => {
    if (n <= 0) return;
    process.stdout.write(pending.slice(0, n));
    pending = pending.slice(n);
  };
  const wholeBlocks = (): number => pending.length - (pending.length % STDIO_BLOCK);
  return {
    out(text) {
      pending += text;
      if (pending.length > 1 << 16) write(stdoutIsTty ? pending.length : wholeBlocks());
    },
    err(text) {
      write(stdoutIsTty ? pending.length : wholeBlocks());
      process.stderr.write(text);
    },
    sync() {
      write(pending.length);
    },
    async flush() {
      write(pending.length);
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


/** QEMU's host protocol drivers and the kind of file each requires. */
const PROTOCOL_KINDS: Record<string, 'regular' | 'device'> = { file: 'regular', host_device: 'device', host_cdrom: 'device' };

function checkProtocolKind(driver: string, path: string, writable: boolean): void {
  let st: ReturnType<typeof fs.statSync> | undefined;
  try {
    st = fs.statSync(path);
  } catch {
    return; // the open that follows reports the missing file
  }
  // Opened for writing, a directory fails in open(2) before the kind is looked at.
  if (writable && st.isDirectory()) throw new Error(`Could not open '${path}': Is a directory`);
  if (PROTOCOL_KINDS[driver] === 'regular' && !st.isFile()) throw new Error(`'${driver}' driver requires '${path}' to be a regular file`);
  if (PROTOCOL_KINDS[driver] === 'device' && !st.isCharacterDevice() && !st.isBlockDevice()) {
    throw new Error(`'${driver}' driver requires '${path}' to be either a character or block device`);
  }
}

/** Opens images for the session from the host's files: file names, json:{…} names, -o/--image-opts options, and -s. */
class CliIoHost implements IoHost {
  private readonly storage = new FileStorage();
  private readonly temps = new Map<BlockBackend, string>();

  constructor(
    private readonly args: IoArgs,
    private readonly output: IoOutput,
  ) {}

  async open(name: string | undefined, req: OpenRequest): Promise<BlockBackend> {
    // The name (json:{…} or a file name) and the -o / --image-opts options make one options tree.
    let tree: OptionsTree = name === undefined ? {} : name.startsWith('json:') ? parseJsonName(name) : { filename: name };
    tree = mergeTrees(tree, crumple(req.options));
    const path = innermostFilename(tree);
    const readOnly = req.readOnly || optBool(tree, 'read-only') === true;
    // A host protocol driver named as the top driver: QEMU opens the file node alone, which reads as raw does.
    const top = typeof tree.driver === 'string' ? tree.driver : undefined;
    if (top && PROTOCOL_KINDS[top] && path !== undefined) {
      checkProtocolKind(top, path.startsWith('file:') ? path.slice(5) : path, !readOnly);
      tree = { driver: 'raw', file: tree };
    }
    let root: BlockNode;
    try {
      root = await openTree(this.storage, tree, { readOnly: readOnly || req.snapshot, warn: (m, kind) => this.output.err(warnLine(m, kind)) });
    } catch (e) {
      // Driver messages start with the image name; qemu-io's "can't open device NAME: " names it already.
      if (e instanceof Error && path !== undefined && e.message.startsWith(`${path}: `)) e.message = e.message.slice(path.length + 2);
      throw e;
    }
    let temp: string | undefined;
    if (req.snapshot) {
      // QEMU's -s: a temporary qcow2 overlay on the image; writes land there and vanish at close.
      temp = join(tmpdir(), `vl.blocktab-${process.pid}-${Math.random().toString(36).slice(2)}`);
      try {
        const size = await new BlockBackend(root).getLength();
        const plan = await planCreate(this.storage, { filename: temp, format: 'qcow2', size, backingFile: resolvePath(root.filename), backingFormat: root.driver.name });
        await createImage(this.storage, plan);
        // The overlay's backing is the node already open, with the options it was opened with
        // (a luks key-secret, json: children): QEMU's temporary snapshot stacks on the open node.
        const overlay = await openImage(this.storage, temp, { format: 'qcow2', readOnly: false, backing: false, warn: (m, kind) => this.output.err(warnLine(m, kind)) });
        overlay.attach(root, 'backing');
        overlay.autoBackingFile = root.filename;
        root = overlay;
      } catch (e) {
        await closeNode(root);
        try {
          fs.unlinkSync(temp);
        } catch {}
        throw e;
      }
    }
    // qemu-io opens with BDRV_O_UNMAP (discards reach the storage) unless discard=ignore was asked for.
    const discard = typeof tree.discard === 'string' ? tree.discard : (req.discard ?? 'unmap');
    const unmap = discard === 'unmap' || discard === 'on';
    // Only the top node's setting is the user's: the nodes below keep QEMU's default for children (unmap).
    root.unmap = unmap;
    for (let n: BlockNode | null = root; n; n = n.file?.node ?? null) {
      if (this.args.noFlush) n.noFlush = true;
    }
    if (req.copyOnRead && root.readOnly) {
      await closeNode(root);
      throw new BlockError('EINVAL', "Can't use copy-on-read on read-only device");
    }
    const blk = new BlockBackend(root, { copyOnRead: req.copyOnRead === true });
    blk.writeCacheEnabled = !(req.writethrough ?? this.args.writethrough);
    if (temp) this.temps.set(blk, temp);
    return blk;
  }

  async readPatternFile(path: string, bytes: number): Promise<Uint8Array> {
    let fd: number;
    try {
      fd = fs.openSync(path, 'r');
    } catch (e) {
      // perror()'s text: the strerror of the host error.
      throw new Error(describeCode(fromHostError(e, path).code));
    }
    try {
      const buf = new Uint8Array(bytes);
      let n = 0;
      for (let r = 1; n < bytes && r > 0; n += r) r = fs.readSync(fd, buf, n, bytes - n, null);
      return buf.subarray(0, n);
    } finally {
      fs.closeSync(fd);
    }
  }

  async raise(signal: number): Promise<void> {
    await (this.output as { flush?(): Promise<void> }).flush?.();
    // Nothing is flushed to the image: a KILL here leaves it as a crash would.
    if (signal > 0) process.kill(process.pid, signal);
  }

  async close(blk: BlockBackend): Promise<void> {
    const temp = this.temps.get(blk);
    this.temps.delete(blk);
    try {
      await closeNode(blk.root);
    } finally {
      if (temp) {
        try {
          fs.unlinkSync(temp);
        } catch {}
      }
    }
  }
}

/** Entry point of `blocktab io`; returns the exit code. */
export async function runIo(args: string[], output: IoOutput & { flush?(): Promise<void> } = processOutput(), input: NodeJS.ReadableStream = process.stdin): Promise<number> {
  const parsed = parseArgs(args, output);
  if (typeof parsed === 'number') {
    await output.flush?.();
    return parsed;
  }
  const host = new CliIoHost(parsed, output);
  setDebugMessageSink((line) => output.out(line + '\n'));
  let blk: BlockBackend | null = null;
  if (parsed.file !== undefined) {
    try {
      if (parsed.forceShare && !parsed.readOnly) throw new Error('force-share=on can only be used with read-only images');
      if (parsed.aio === 'native' && !parsed.direct) {
        throw new Error('aio=native was specified, but it requires cache.direct=on, which was not specified.');
      }
      let name: string | undefined = parsed.file;
      let options: Record<string, string> = {};
      if (parsed.imageOpts) {
        const kv = parseKeyValues(parsed.file);
        if (typeof kv === 'string') throw new Error(kv);
        options = kv;
        name = undefined;
      } else if (parsed.format) options.driver = parsed.format;
      blk = await host.open(name, { readOnly: parsed.readOnly, snapshot: parsed.snapshot, options, copyOnRead: parsed.copyOnRead, discard: parsed.discard });
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      output.err(`${PROGNAME}: can't open${parsed.imageOpts ? '' : ` device ${parsed.file}`}: ${msg}\n`);
      await output.flush?.();
      return 1;
    }
  }
  const session = new QemuIoSession(blk, output, PROGNAME, host);
  let status: number;
  try {
    if (parsed.cmds.length > 0) {
      status = await runCommands(session, parsed.cmds);
    } else {
      const rl = readline.createInterface({ input, terminal: false, crlfDelay: Infinity });
      // qemu-io flushes stdout after its prompt.
      status = await runCommands(session, rl, () => {
        output.out(`${PROGNAME}> `);
        (output as { sync?(): void }).sync?.();
      });
      rl.close();
    }
  } finally {
    await session.drainAio();
    if (session.blk) {
      try {
        await host.close(session.blk);
      } catch {
        // As QEMU's bdrv_close: a flush that fails at exit is not reported (the commands reported their own errors).
      }
    }
  }
  await output.flush?.();
  return status!;
}
