/**
 * qemu-io's `open` and `close`: an image can be opened and closed between
 * commands. The opening itself is the host's (it needs file access); this
 * module parses the options as qemu-io does and reports as it does.
 */
import { EINVAL, handleOpts, type CmdInfo, type OpenRequest, type QemuIoSession } from './commands.js';
import { BlockError } from '../../block/errors.js';
import { parseKeyValueList } from '../../block/options-tree.js';
import { bdrvReopen } from '../../block/reopen.js';

/** QEMU's QemuOpts syntax (options-tree's parser, bare words as booleans); an error is returned as its message. */
export function parseKeyValues(text: string, implied?: string): Record<string, string> | string {
  try {
    return parseKeyValueList(text, implied, 'flag');
  } catch (e) {
    if (e instanceof BlockError) return e.message;
    throw e;
  }
}

/** An `-o` argument of open/reopen merged into `into`; EINVAL, reported, when it does not parse. */
function addOptions(s: QemuIoSession, arg: string, into: Record<string, string>): number | undefined {
  const kv = parseKeyValues(arg);
  if (typeof kv === 'string') {
    s.report(kv);
    return EINVAL;
  }
  Object.assign(into, kv);
  return undefined;
}

/** QEMU's bdrv_parse_cache_mode: the host cache bypassed, flushes skipped, the write cache off. */
export function parseCacheMode(mode: string): { direct: boolean; noFlush: boolean; writethrough: boolean } | undefined {
  switch (mode) {
    case 'off':
    case 'none': return { direct: true, noFlush: false, writethrough: false };
    case 'directsync': return { direct: true, noFlush: false, writethrough: true };
    case 'writeback': return { direct: false, noFlush: false, writethrough: false };
    case 'unsafe': return { direct: false, noFlush: true, writethrough: false };
    case 'writethrough': return { direct: false, noFlush: false, writethrough: true };
    default: return undefined;
  }
}

const openCmd: CmdInfo = {
  name: 'open',
  altname: 'o',
  argmin: 1,
  argmax: -1,
  global: true,
  args: '[-rsCnkU] [-t cache] [-d discard] [-o options] [path]',
  oneline: 'open the file specified by path',
  help:
    '\n opens a new file in the requested mode\n\n Example:\n' +
    " 'open -n -o driver=raw /tmp/data' - opens raw data file read-write, uncached\n\n" +
    ' Opens a file for subsequent use by all of the other qemu-io commands.\n' +
    ' -r, -- open file read-only\n' +
    ' -s, -- use snapshot file\n' +
    ' -C, -- use copy-on-read\n' +
    ' -n, -- disable host cache, short for -t none\n' +
    ' -U, -- force shared permissions\n' +
    ' -k, -- use kernel AIO implementation (Linux only, prefer use of -i)\n' +
    ' -i, -- use AIO mode (threads, native or io_uring)\n' +
    ' -t, -- use the given cache mode for the image\n' +
    ' -d, -- use the given discard mode for the image\n' +
    ' -o, -- options to be given to the block driver\n',
  opts: 'snCro:ki:t:d:U',
  async run(s, argv, parsed) {
    const req: OpenRequest = { readOnly: false, snapshot: false, options: {} };
    const stop = handleOpts(s, this, parsed.events, (c, arg) => {
      switch (c) {
        case 's': req.snapshot = true; break;
        case 'r': req.readOnly = true; break;
        case 'C': req.copyOnRead = true; break;
        case 'n': req.writethrough = false; break;
        case 't': {
          const mode = parseCacheMode(arg!);
          if (!mode) {
            s.report(`Invalid cache option: ${arg}`);
            return EINVAL;
          }
          req.writethrough = mode.writethrough;
          break;
        }
        case 'd':
          if (!['ignore', 'off', 'unmap', 'on'].includes(arg!)) {
            s.report(`Invalid discard option: ${arg}`);
            return EINVAL;
          }
          req.discard = arg;
          break;
        case 'i':
          if (!['threads', 'native', 'io_uring'].includes(arg!)) {
            s.report(`Invalid aio option: ${arg}`);
            return EINVAL;
          }
          break;
        case 'o':
          return addOptions(s, arg!, req.options);
      }
      return undefined;
    });
    if (stop !== undefined) return stop;
    if (parsed.operands.length > 1) return s.usage(this);
    if (s.blk) {
      s.report("file open already, try 'help close'");
      return EINVAL;
    }
    if (!s.host) {
      s.report('opening images is not available here');
      return EINVAL;
    }
    const name = parsed.operands[0];
    try {
      s.blk = await s.host.open(name, req);
    } catch (e) {
      s.report(`can't open${name !== undefined ? ` device ${name}` : ''}: ${e instanceof Error ? e.message : String(e)}`);
      return EINVAL;
    }
    return 0;
  },
};

const closeCmd: CmdInfo = {
  name: 'close',
  altname: 'c',
  argmin: 0,
  argmax: 0,
  oneline: 'close the current open file',
  async run(s) {
    const blk = s.blk!;
    s.blk = null;
    await s.host?.close(blk);
    return 0;
  },
};

const reopenCmd: CmdInfo = {
  name: 'reopen',
  argmin: 0,
  argmax: -1,
  args: '[(-r|-w)] [-c cache] [-o options]',
  oneline: 'reopens an image with new options',
  help:
    '\n Changes the open options of an already opened image\n\n Example:\n' +
    " 'reopen -o lazy-refcounts=on' - activates lazy refcount writeback on a qcow2 image\n\n" +
    ' -r, -- Reopen the image read-only\n' +
    ' -w, -- Reopen the image read-write\n' +
    ' -c, -- Change the cache mode to the given value\n' +
    " -o, -- Changes block driver options (cf. 'open' command)\n\n",
  opts: 'c:o:rw',
  async run(s, argv, parsed) {
    const blk = s.blk!;
    const bs = s.root;
    let readOnly: boolean | undefined;
    let cache: ReturnType<typeof parseCacheMode>;
    const options: Record<string, string> = {};
    const stop = handleOpts(s, this, parsed.events, (c, arg) => {
      switch (c) {
        case 'c':
          cache = parseCacheMode(arg!);
          if (!cache) {
            s.report(`Invalid cache option: ${arg}`);
            return EINVAL;
          }
          break;
        case 'o':
          return addOptions(s, arg!, options);
        case 'r':
        case 'w':
          if (readOnly !== undefined) {
            s.report('Only one -r/-w option may be given');
            return EINVAL;
          }
          readOnly = c === 'r';
          break;
      }
      return undefined;
    });
    if (stop !== undefined) return stop;
    if (parsed.operands.length > 0) return s.usage(this);
    // As qemu-io's reopen_f: -r/-w and -c stand for the options they set, and may not be given twice.
    if (options['read-only'] !== undefined) {
      if (readOnly !== undefined) {
        s.report("Cannot set both -r/-w and 'read-only'");
        return EINVAL;
      }
    } else {
      options['read-only'] = (readOnly ?? bs.readOnly) ? 'on' : 'off';
    }
    if (options['cache.direct'] !== undefined || options['cache.no-flush'] !== undefined) {
      if (cache) {
        s.report('Cannot set both -c and the cache options');
        return EINVAL;
      }
    } else {
      options['cache.no-flush'] = (cache ? cache.noFlush : bs.noFlush) ? 'on' : 'off';
    }
    try {
      await bdrvReopen(bs, options);
    } catch (e) {
      if (!(e instanceof BlockError)) throw e;
      s.report(e.message);
      return EINVAL;
    }
    if (cache) blk.writeCacheEnabled = !cache.writethrough;
    return 0;
  },
};

const NSIG = 65;
const SIGTERM = 15;
const SIGABRT = 6;

const sigraiseCmd: CmdInfo = {
  name: 'sigraise',
  argmin: 1,
  argmax: 1,
  global: true,
  args: 'signal',
  oneline: 'raises a signal',
  help:
    `\n raises the given signal\n\n Example:\n 'sigraise ${SIGTERM}' - raises SIGTERM\n\n` +
    ' Invokes raise(signal), where "signal" is the mandatory integer argument\n given to sigraise.\n\n',
  async run(s, argv) {
    const sig = s.num(argv[1]!);
    if (sig === undefined) return EINVAL;
    if (sig > NSIG) {
      s.out(`signal argument '${argv[1]}' is too large to be a valid signal\n`);
      return EINVAL;
    }
    await s.host?.raise?.(sig);
    return 0;
  },
};

const abortCmd: CmdInfo = {
  name: 'abort',
  argmin: 0,
  argmax: 0,
  global: true,
  oneline: 'simulate a program crash using abort(3)',
  async run(s) {
    await s.host?.raise?.(SIGABRT);
    return 0;
  },
};

const sleepCmd: CmdInfo = {
  name: 'sleep',
  argmin: 1,
  argmax: 1,
  global: true,
  oneline: 'waits for the given value in milliseconds',
  async run(s, argv) {
    const m = /^[ \t]*\+?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(argv[1]!);
    if (!m) {
      s.out(`${argv[1]} is not a valid number\n`);
      return EINVAL;
    }
    const ms = Number(m[1]!.startsWith('0') && !/^0[xX]/.test(m[1]!) && m[1]!.length > 1 ? parseInt(m[1]!, 8) : m[1]);
    await new Promise((r) => setTimeout(r, ms));
    return 0;
  },
};

export const OPEN_COMMANDS: CmdInfo[] = [abortCmd, closeCmd, openCmd, reopenCmd, sigraiseCmd, sleepCmd];
