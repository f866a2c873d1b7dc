/**
 * qemu-io's commands over a BlockBackend: the same names, options, argument
 * checks, output lines and failure results as QEMU 7.2's qemu-io, so scripts
 * and iotests-style expectations written for qemu-io work unchanged.
 *
 * Environment-neutral on purpose (no node:*): the CLI feeds it lines from -c
 * or stdin, and the web worker can feed it lines from a console.
 *
 * Every command returns 0 or a negative errno-like number; qemu-io exits
 * with status 1 when any command failed.
 */
import type { BlockBackend } from '../../block/backend.js';
import { BlockError, describeCode, type BlockErrorCode } from '../../block/errors.js';
import type { PreallocMode, WriteFlags } from '../../block/driver.js';
import { allocBuffer, freeBuffer } from '../../block/buffers.js';
import { isAllocated } from '../../block/status.js';
import { bdrvFlush, bdrvLoadVmState, bdrvSaveVmState } from '../../block/io.js';
import type { BlockNode } from '../../block/node.js';
import { cvtnum, cvtnumError, cvtstr, dumpBuffer, elapsedSince, printReport } from './format.js';
import { getopt, type GetoptEvent, type GetoptResult } from './getopt.js';
import { dumpHuman, type QDict } from '../../img/qobject.js';
import { VECTOR_COMMANDS } from './vector-commands.js';
import { DEBUG_COMMANDS } from './debug-commands.js';
import { untilDoneOrSuspended } from '../../block/debug-event.js';
import { OPEN_COMMANDS } from './open-commands.js';

/** Where a session's output goes: `out` is qemu-io's stdout, `err` its stderr. Text includes newlines. */
export interface IoOutput {
  out(text: string): void;
  err(text: string): void;
}

/** QEMU's BDRV_REQUEST_MAX_BYTES: the largest single request qemu-io accepts. */
export const BDRV_REQUEST_MAX_BYTES = 2147483136;
const SECTOR = 512;

export const EINVAL = -22;
const EPERM = -1;

const ERRNO: Partial<Record<BlockErrorCode, number>> = {
  EPERM: -1,
  ENOENT: -2,
  EIO: -5,
  ENOMEM: -12,
  EACCES: -13,
  EBUSY: -16,
  EEXIST: -17,
  EINVAL: -22,
  EFBIG: -27,
  ENOSPC: -28,
  EROFS: -30,
  ENOTSUP: -95,
  ECANCELED: -125,
  ELOOP: -40,
};

export interface CmdInfo {
  name: string;
  altname?: string;
  argmin: number;
  /** -1: no maximum. */
  argmax: number;
  args?: string;
  oneline: string;
  /** Needs write permission (qemu-io's BLK_PERM_WRITE commands). */
  write?: boolean;
  /** Runs without an open image. */
  global?: boolean;
  help?: string;
  /** The command's option string (qemu-io-cmds.c's getopt string); the session parses argv with it before `run`. */
  opts?: string;
  run(s: QemuIoSession, argv: string[], parsed: GetoptResult): Promise<number>;
}

export const now = (): number => (typeof performance !== 'undefined' ? performance.now() : Date.now());

function codeOf(e: unknown): BlockErrorCode {
  return e instanceof BlockError ? e.code : 'EIO';
}

/** True when every byte of buf[start, start+len) equals `pattern`. */
export function matchesPattern(buf: Uint8Array, start: number, len: number, pattern: number): boolean {
  let i = start;
  const end = start + len;
  // Word-wide compare where the view allows it; byte loop for the ends.
  while (i < end && (buf.byteOffset + i) & 3) if (buf[i++] !== pattern) return false;
  const words = (end - i) >>> 2;
  if (words > 0) {
    const w = new Uint32Array(buf.buffer, buf.byteOffset + i, words);
    const p = (pattern * 0x01010101) >>> 0;
    for (let k = 0; k < words; k++) if (w[k] !== p) return false;
    i += words << 2;
  }
  while (i < end) if (buf[i++] !== pattern) return false;
  return true;
}

/** What `open` asks of the host (qemu-io's open options). */
export interface OpenRequest {
  readOnly: boolean;
  /** -s: writes go to a temporary overlay and are dropped at close. */
  snapshot: boolean;
  /** -C: reads copy what the image does not hold into it (BDRV_O_COPY_ON_READ). */
  copyOnRead?: boolean;
  /** -o key=value options (driver=, file.filename=, …), or --image-opts' whole string. */
  options: Record<string, string>;
  /** -t writethrough / directsync: every write is flushed before it completes (the write cache off). */
  writethrough?: boolean;
  /** -d: the discard mode (unmap, the default, lets discards reach the storage). */
  discard?: string;
}

/** The host side of a session: opening and closing images by name, which needs file access. */
export interface IoHost {
  open(name: string | undefined, req: OpenRequest): Promise<BlockBackend>;
  close(blk: BlockBackend): Promise<void>;
  /** sigraise/abort: output flushed, then the signal raised on this process. */
  raise?(signal: number): Promise<void>;
  /** write -s: up to `bytes` bytes of a host file (the pattern file); throws with the host's error message. */
  readPatternFile?(path: string, bytes: number): Promise<Uint8Array>;
}

export class QemuIoSession {
  /** Set by `quit`: the caller stops feeding commands. */
  quit = false;
  /** aio requests a breakpoint held: they complete (and print) after `resume`, by aio_flush or the end of the session. */
  private readonly aioInFlight = new Set<Promise<unknown>>();

  constructor(
    public blk: BlockBackend | null,
    readonly output: IoOutput,
    readonly progname = 'qemu-io',
    /** Opens and closes images for `open`/`close`; without it those commands fail. */
    readonly host?: IoHost,
  ) {}

  out(text: string): void {
    this.output.out(text);
  }

  err(text: string): void {
    this.output.err(text);
  }

  /** qemu-io's error_report(): "progname: message" on stderr. */
  report(message: string): void {
    this.err(`${this.progname}: ${message}\n`);
  }

  /** Runs one command line; returns 0 or a negative errno. */
  async command(line: string): Promise<number> {
    const argv = line.split(' ').filter((w) => w !== '');
    if (argv.length === 0) return 0;
    const ct = findCommand(argv[0]!);
    if (!ct) {
      this.err(`command "${argv[0]}" not found\n`);
      return EINVAL;
    }
    if (!ct.global && !this.blk) {
      this.err("no file open, try 'help open'\n");
      return EINVAL;
    }
    const n = argv.length - 1;
    if (n < ct.argmin || (ct.argmax !== -1 && n > ct.argmax)) {
      if (ct.argmax === -1) {
        this.err(`bad argument count ${n} to ${argv[0]}, expected at least ${ct.argmin} arguments\n`);
      } else if (ct.argmin === ct.argmax) {
        this.err(`bad argument count ${n} to ${argv[0]}, expected ${ct.argmin} arguments\n`);
      } else {
        this.err(`bad argument count ${n} to ${argv[0]}, expected between ${ct.argmin} and ${ct.argmax} arguments\n`);
      }
      return EINVAL;
    }
    if (ct.write && this.blk?.readOnly) {
      this.report('Block node is read-only');
      return EPERM;
    }
    try {
      return await ct.run(this, argv, getopt(argv, ct.opts ?? ''));
    } catch (e) {
      // Commands report their own I/O failures; anything else is a bug surfaced as one line.
      this.report(e instanceof Error ? e.message : String(e));
      return ERRNO[codeOf(e)] ?? -5;
    }
  }

  /** Runs an aio request: awaited unless a breakpoint holds it, then left running in the background. */
  async runAio(request: Promise<unknown>): Promise<void> {
    if (!(await untilDoneOrSuspended(request))) return;
    this.aioInFlight.add(request);
    void request.finally(() => this.aioInFlight.delete(request));
  }

  /** True while an aio request is still running in the background. */
  get aioPending(): boolean {
    return this.aioInFlight.size > 0;
  }

  /** Waits for every aio request in the background (aio_flush, the end of the session). */
  async drainAio(): Promise<void> {
    while (this.aioInFlight.size) await Promise.allSettled([...this.aioInFlight]);
  }

  get backend(): BlockBackend {
    return this.blk!;
  }

  get root(): BlockNode {
    return this.blk!.root;
  }

  usage(ct: CmdInfo): number {
    this.out(`${ct.name} ${ct.args ?? ''} -- ${ct.oneline}\n`);
    return EINVAL;
  }

  /** Parses a size argument; prints qemu-io's message and returns undefined on error. */
  num(arg: string): number | undefined {
    const r = cvtnum(arg);
    if (!r.ok) {
      this.out(cvtnumError(r.err, arg));
      return undefined;
    }
    return r.value;
  }

  pattern(arg: string): number | undefined {
    // strtol(arg, &end, 0): decimal, 0x hex or 0 octal, optional sign, nothing after.
    const m = /^[ \t]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(arg);
    let v = NaN;
    if (m) {
      const body = m[2]!;
      v = /^0[xX]/.test(body) ? parseInt(body.slice(2), 16) : body.length > 1 && body[0] === '0' ? parseInt(body, 8) : parseInt(body, 10);
      if (m[1] === '-') v = -v;
    }
    if (!(v >= 0 && v <= 255)) {
      this.out(`${arg} is not a valid pattern byte\n`);
      return undefined;
    }
    return v;
  }

  /** The errno a failed request maps to, with qemu-io's "<op> failed: <strerror>" line. */
  failed(op: string, e: unknown): number {
    const code = codeOf(e);
    this.out(`${op} failed: ${describeCode(code)}\n`);
    return ERRNO[code] ?? -5;
  }

  /** QEMU's blk_check_byte_request: a request outside the device fails with EIO before any buffer is made. */
  async inBounds(offset: number, bytes: number): Promise<boolean> {
    // No medium: the request itself fails with ENOMEDIUM (blk_check_byte_request checks that first).
    if (!this.backend.hasMedium) return true;
    const len = await this.backend.getLength();
    return offset <= len && bytes <= len - offset;
  }
}

// ------------------------------------------------------------------ commands

/** The node a -b request goes to: the device's root (blk_{save,load}_vmstate need a medium). */
function vmStateRoot(s: QemuIoSession): BlockNode {
  if (!s.backend.hasMedium) throw new BlockError('ENOMEDIUM', 'No medium found');
  return s.root;
}

export function handleOpts(s: QemuIoSession, ct: CmdInfo, events: GetoptEvent[], on: (c: string, arg?: string) => number | undefined): number | undefined {
  for (const ev of events) {
    if (ev.kind === 'error') {
      s.err(ev.message);
      return s.usage(ct);
    }
    const r = on(ev.c, ev.arg);
    if (r !== undefined) return r;
  }
  return undefined;
}

const readCmd: CmdInfo = {
  name: 'read',
  altname: 'r',
  argmin: 2,
  argmax: -1,
  args: '[-abCqv] [-P pattern [-s off] [-l len]] off len',
  oneline: 'reads a number of bytes at a specified offset',
  help:
    '\n reads a range of bytes from the given offset\n\n Example:\n' +
    " 'read -v 512 1k' - dumps 1 kilobyte read from 512 bytes into the file\n\n" +
    ' Reads a segment of the currently open file, optionally dumping it to the\n' +
    ' standard output stream (with -v option) for subsequent inspection.\n' +
    ' -b, -- read from the VM state rather than the virtual disk\n' +
    ' -C, -- report statistics in a machine parsable format\n' +
    ' -l, -- length for pattern verification (only with -P)\n' +
    ' -p, -- ignored for backwards compatibility\n' +
    ' -P, -- use a pattern to verify read data\n' +
    ' -q, -- quiet mode, do not show I/O statistics\n' +
    ' -s, -- start offset for pattern verification (only with -P)\n' +
    ' -v, -- dump buffer to standard output\n\n',
  opts: 'bCl:pP:qs:v',
  async run(s, argv, parsed) {
    let cflag = false, qflag = false, vflag = false, pflag = false, sflag = false, lflag = false, bflag = false;
    let pattern = 0, patternOffset = 0, patternCount = 0;
    const { events, operands } = parsed;
    const stop = handleOpts(s, this, events, (c, arg) => {
      switch (c) {
        case 'b': bflag = true; break;
        case 'C': cflag = true; break;
        case 'l': {
          const v = s.num(arg!);
          if (v === undefined) return EINVAL;
          lflag = true;
          patternCount = v;
          break;
        }
        case 'p': break;
        case 'P': {
          const v = s.pattern(arg!);
          if (v === undefined) return EINVAL;
          pflag = true;
          pattern = v;
          break;
        }
        case 'q': qflag = true; break;
        case 's': {
          const v = s.num(arg!);
          if (v === undefined) return EINVAL;
          sflag = true;
          patternOffset = v;
          break;
        }
        case 'v': vflag = true; break;
      }
      return undefined;
    });
    if (stop !== undefined) return stop;
    if (operands.length !== 2) return s.usage(this);
    const offset = s.num(operands[0]!);
    if (offset === undefined) return EINVAL;
    const count = s.num(operands[1]!);
    if (count === undefined) return EINVAL;
    if (count > BDRV_REQUEST_MAX_BYTES) {
      s.out(`length cannot exceed ${BDRV_REQUEST_MAX_BYTES}, given ${operands[1]}\n`);
      return EINVAL;
    }
    if (!pflag && (lflag || sflag)) return s.usage(this);
    if (!lflag) patternCount = count - patternOffset;
    if (patternCount < 0 || patternCount + patternOffset > count) {
      s.out('pattern verification range exceeds end of read data\n');
      return EINVAL;
    }
    if (bflag) {
      if (offset % SECTOR) {
        s.out(`${offset} is not a sector-aligned value for 'offset'\n`);
        return EINVAL;
      }
      if (count % SECTOR) {
        s.out(`${count} is not a sector-aligned value for 'count'\n`);
        return EINVAL;
      }
    } else if (!(await s.inBounds(offset, count))) return s.failed('read', new BlockError('EIO', 'out of range'));
    const buf = allocBuffer(count);
    try {
      buf.fill(0xab);
      const t0 = now();
      try {
        // -b: the VM state area, which has no device bounds (blk_load_vmstate).
        if (bflag) await bdrvLoadVmState(vmStateRoot(s), offset, count, buf);
        else await s.backend.read(offset, count, buf);
      } catch (e) {
        return s.failed('read', e);
      }
      const t = elapsedSince(t0, now());
      let ret = 0;
      if (pflag && !matchesPattern(buf, patternOffset, patternCount, pattern)) {
        s.out(`Pattern verification failed at offset ${offset + patternOffset}, ${patternCount} bytes\n`);
        ret = EINVAL;
      }
      if (qflag) return ret;
      if (vflag) s.out(dumpBuffer(buf.subarray(0, count), offset));
      s.out(printReport('read', t, offset, count, count, 1, cflag));
      return ret;
    } finally {
      freeBuffer(buf);
    }
  },
};

const writeCmd: CmdInfo = {
  name: 'write',
  altname: 'w',
  argmin: 2,
  argmax: -1,
  write: true,
  args: '[-bcCfnquz] [-P pattern | -s source_file] off len',
  oneline: 'writes a number of bytes at a specified offset',
  help:
    '\n writes a range of bytes from the given offset\n\n Example:\n' +
    " 'write 512 1k' - writes 1 kilobyte at 512 bytes into the open file\n\n" +
    ' Writes into a segment of the currently open file, using a buffer\n' +
    ' filled with a set pattern (0xcdcdcdcd).\n' +
    ' -b, -- write to the VM state rather than the virtual disk\n' +
    ' -c, -- write compressed data with blk_write_compressed\n' +
    ' -f, -- use Force Unit Access semantics\n' +
    " -n, -- with -z, don't allow slow fallback\n" +
    ' -p, -- ignored for backwards compatibility\n' +
    ' -P, -- use different pattern to fill file\n' +
    ' -s, -- use a pattern file to fill the write buffer\n' +
    ' -C, -- report statistics in a machine parsable format\n' +
    ' -q, -- quiet mode, do not show I/O statistics\n' +
    ' -u, -- with -z, allow unmapping\n' +
    ' -z, -- write zeroes using blk_co_pwrite_zeroes\n\n',
  opts: 'bcCfnpP:qs:uz',
  async run(s, argv, parsed) {
    let cflag = false, qflag = false, bflag = false, pflag = false, zflag = false, compressed = false, sflag = false;
    let fua = false, mayUnmap = false, noFallback = false;
    let pattern = 0xcd;
    let patternFile = '';
    const { events, operands } = parsed;
    const stop = handleOpts(s, this, events, (c, arg) => {
      switch (c) {
        case 'b': bflag = true; break;
        case 'c': compressed = true; break;
        case 'C': cflag = true; break;
        case 'f': fua = true; break;
        case 'n': noFallback = true; break;
        case 'p': break;
        case 'P': {
          const v = s.pattern(arg!);
          if (v === undefined) return EINVAL;
          pflag = true;
          pattern = v;
          break;
        }
        case 'q': qflag = true; break;
        case 's': sflag = true; patternFile = arg!; break;
        case 'u': mayUnmap = true; break;
        case 'z': zflag = true; break;
      }
      return undefined;
    });
    if (stop !== undefined) return stop;
    if (operands.length !== 2) return s.usage(this);
    if (bflag && zflag) {
      s.out('-b and -z cannot be specified at the same time\n');
      return EINVAL;
    }
    if (fua && (bflag || compressed)) {
      s.out('-f and -b or -c cannot be specified at the same time\n');
      return EINVAL;
    }
    if (noFallback && !zflag) {
      s.out('-n requires -z to be specified\n');
      return EINVAL;
    }
    if (mayUnmap && !zflag) {
      s.out('-u requires -z to be specified\n');
      return EINVAL;
    }
    if (Number(zflag) + Number(pflag) + Number(sflag) > 1) {
      s.out('Only one of -z, -P, and -s can be specified at the same time\n');
      return EINVAL;
    }
    if (sflag && !s.host?.readPatternFile) {
      // Reading a pattern file needs host file access, which only the CLI's host gives.
      s.out('-s (pattern file) is not supported here\n');
      return -95;
    }
    const offset = s.num(operands[0]!);
    if (offset === undefined) return EINVAL;
    const count = s.num(operands[1]!);
    if (count === undefined) return EINVAL;
    if (count > BDRV_REQUEST_MAX_BYTES) {
      s.out(`length cannot exceed ${BDRV_REQUEST_MAX_BYTES}, given ${operands[1]}\n`);
      return EINVAL;
    }
    if (bflag || compressed) {
      if (offset % SECTOR) {
        s.out(`${offset} is not a sector-aligned value for 'offset'\n`);
        return EINVAL;
      }
      if (count % SECTOR) {
        s.out(`${count} is not a sector-aligned value for 'count'\n`);
        return EINVAL;
      }
    }
    if (!bflag && !(await s.inBounds(offset, count))) return s.failed('write', new BlockError('EIO', 'out of range'));
    const flags: WriteFlags = {};
    if (fua) flags.fua = true;
    if (mayUnmap) flags.mayUnmap = true;
    if (noFallback) flags.noFallback = true;
    if (compressed) flags.compressed = true;
    let head: Uint8Array | undefined;
    if (sflag) {
      // QEMU's qemu_io_alloc_from_file: the file's first bytes, repeated to fill the buffer.
      try {
        head = await s.host!.readPatternFile!(patternFile, count);
      } catch (e) {
        s.output.err(`${patternFile}: ${e instanceof Error ? e.message : String(e)}\n`);
        return EINVAL;
      }
      if (head.length === 0) {
        s.output.err(`${patternFile}: file is empty\n`);
        return EINVAL;
      }
    }
    const buf = zflag ? null : allocBuffer(count);
    try {
      if (head) for (let at = 0; at < count; at += head.length) buf!.set(head.subarray(0, Math.min(head.length, count - at)), at);
      else buf?.fill(pattern);
      const t0 = now();
      try {
        if (bflag) {
          const root = vmStateRoot(s);
          await bdrvSaveVmState(root, offset, count, buf!);
          // QEMU's blk_save_vmstate: with the write cache off the state is flushed before the write completes.
          if (!s.backend.writeCacheEnabled) await bdrvFlush(root);
        }
        else if (buf) await s.backend.write(offset, count, buf, flags);
        else await s.backend.writeZeroes(offset, count, flags);
      } catch (e) {
        return s.failed('write', e);
      }
      const t = elapsedSince(t0, now());
      if (!qflag) s.out(printReport('wrote', t, offset, count, count, 1, cflag));
      return 0;
    } finally {
      if (buf) freeBuffer(buf);
    }
  },
};

const discardCmd: CmdInfo = {
  name: 'discard',
  altname: 'd',
  argmin: 2,
  argmax: -1,
  write: true,
  args: '[-Cq] off len',
  oneline: 'discards a number of bytes at a specified offset',
  help:
    '\n discards a range of bytes from the given offset\n\n Example:\n' +
    " 'discard 512 1k' - discards 1 kilobyte from 512 bytes into the file\n\n" +
    ' Discards a segment of the currently open file.\n' +
    ' -C, -- report statistics in a machine parsable format\n' +
    ' -q, -- quiet mode, do not show I/O statistics\n\n',
  opts: 'Cq',
  async run(s, argv, parsed) {
    let cflag = false, qflag = false;
    const { events, operands } = parsed;
    const stop = handleOpts(s, this, events, (c) => {
      if (c === 'C') cflag = true;
      else if (c === 'q') qflag = true;
      return undefined;
    });
    if (stop !== undefined) return stop;
    if (operands.length !== 2) return s.usage(this);
    const offset = s.num(operands[0]!);
    if (offset === undefined) return EINVAL;
    const bytes = s.num(operands[1]!);
    if (bytes === undefined) return EINVAL;
    if (bytes > BDRV_REQUEST_MAX_BYTES) {
      s.out(`length cannot exceed ${BDRV_REQUEST_MAX_BYTES}, given ${operands[1]}\n`);
      return EINVAL;
    }
    if (!(await s.inBounds(offset, bytes))) return s.failed('discard', new BlockError('EIO', 'out of range'));
    const t0 = now();
    try {
      await s.backend.discard(offset, bytes);
    } catch (e) {
      return s.failed('discard', e);
    }
    const t = elapsedSince(t0, now());
    if (!qflag) s.out(printReport('discard', t, offset, bytes, bytes, 1, cflag));
    return 0;
  },
};

const flushCmd: CmdInfo = {
  name: 'flush',
  altname: 'f',
  argmin: 0,
  argmax: 0,
  oneline: 'flush all in-core file state to disk',
  async run(s) {
    try {
      await s.backend.flush();
      return 0;
    } catch (e) {
      // qemu-io's flush returns the error without printing anything.
      return ERRNO[codeOf(e)] ?? -5;
    }
  },
};

const PREALLOC: PreallocMode[] = ['off', 'metadata', 'falloc', 'full'];

const truncateCmd: CmdInfo = {
  name: 'truncate',
  altname: 't',
  argmin: 1,
  argmax: 3,
  write: true,
  args: '[-m prealloc_mode] off',
  oneline: 'truncates the current file at the given offset',
  opts: 'm:',
  async run(s, argv, parsed) {
    let prealloc: PreallocMode = 'off';
    const { events, operands } = parsed;
    const stop = handleOpts(s, this, events, (c, arg) => {
      if (c !== 'm') return undefined;
      if (!PREALLOC.includes(arg as PreallocMode)) {
        s.report(`Invalid preallocation mode '${arg}'`);
        return EINVAL;
      }
      prealloc = arg as PreallocMode;
      return undefined;
    });
    if (stop !== undefined) return stop;
    if (operands.length !== 1) return s.usage(this);
    const size = s.num(operands[0]!);
    if (size === undefined) return EINVAL;
    try {
      await s.backend.truncate(size, false, prealloc);
      return 0;
    } catch (e) {
      s.report(e instanceof Error ? e.message : String(e));
      return ERRNO[codeOf(e)] ?? -5;
    }
  },
};

const lengthCmd: CmdInfo = {
  name: 'length',
  altname: 'l',
  argmin: 0,
  argmax: 0,
  oneline: 'gets the length of the current file',
  async run(s) {
    try {
      s.out(cvtstr(await s.backend.getLength()) + '\n');
      return 0;
    } catch (e) {
      s.out(`getlength: ${describeCode(codeOf(e))}\n`);
      return ERRNO[codeOf(e)] ?? -5;
    }
  },
};

/** QEMU's bdrv_get_info: the driver's answer (raw's is its file's), a filter's child's, a protocol's empty one, or none. */
function driverInfo(bs: BlockNode): { clusterSize: number; vmStateOffset: number } | undefined {
  for (let p: BlockNode | null = bs; p; p = p.file?.node ?? null) {
    const drv = p.driver;
    if (drv.getDriverInfo) {
      const di = drv.getDriverInfo(p);
      if (!di) return undefined;
      return { clusterSize: di.clusterSize ?? 0, vmStateOffset: di.vmStateOffset ?? 0 };
    }
    // A protocol with no storage behind it (null-co) has no driver info, as QEMU's bdrv_get_info answers.
    if (drv.kind === 'protocol') return drv.standalone ? undefined : { clusterSize: 0, vmStateOffset: 0 };
    if (drv.kind !== 'filter') return undefined;
  }
  return undefined;
}

const infoCmd: CmdInfo = {
  name: 'info',
  altname: 'i',
  argmin: 0,
  argmax: 0,
  oneline: 'prints information about the current file',
  async run(s) {
    const bs = s.root;
    s.out(`format name: ${bs.driver.name}\n`);
    // A protocol driver's protocol name is printed too (QEMU's drivers carry both names).
    if (bs.driver.protocolName) s.out(`format name: ${bs.driver.protocolName}\n`);
    const di = driverInfo(bs);
    if (!di) return 0;
    s.out(`cluster size: ${cvtstr(di.clusterSize)}\n`);
    s.out(`vm state offset: ${cvtstr(di.vmStateOffset)}\n`);
    const spec = bs.driver.getInfo?.(bs);
    if (spec) s.out('Format specific information:\n' + dumpHuman(spec.data as QDict, 1));
    return 0;
  },
};

const allocCmd: CmdInfo = {
  name: 'alloc',
  altname: 'a',
  argmin: 1,
  argmax: 2,
  args: 'offset [count]',
  oneline: 'checks if offset is allocated in the file',
  async run(s, argv) {
    const start = s.num(argv[1]!);
    if (start === undefined) return EINVAL;
    let count = SECTOR;
    if (argv.length === 3) {
      const c = s.num(argv[2]!);
      if (c === undefined) return EINVAL;
      count = c;
    }
    let offset = start;
    let remaining = count;
    let sumAlloc = 0;
    while (remaining > 0) {
      let r: { allocated: boolean; pnum: number };
      try {
        r = await isAllocated(s.root, offset, remaining);
      } catch (e) {
        return s.failed('is_allocated', e);
      }
      offset += r.pnum;
      remaining -= r.pnum;
      if (r.allocated) sumAlloc += r.pnum;
      if (r.pnum === 0) {
        count -= remaining;
        remaining = 0;
      }
    }
    s.out(`${sumAlloc}/${count} bytes allocated at offset ${cvtstr(start)}\n`);
    return 0;
  },
};

const mapCmd: CmdInfo = {
  name: 'map',
  argmin: 0,
  argmax: 0,
  args: '',
  oneline: 'prints the allocated areas of a file',
  async run(s) {
    let offset = 0;
    let bytes: number;
    try {
      bytes = await s.backend.getLength();
    } catch (e) {
      s.report(`Failed to query image length: ${describeCode(codeOf(e))}`);
      return ERRNO[codeOf(e)] ?? -5;
    }
    while (bytes > 0) {
      // Merge answers of the same kind, as qemu-io's map_is_allocated.
      let first: { allocated: boolean; pnum: number };
      let num: number;
      try {
        first = await isAllocated(s.root, offset, Math.min(bytes, BDRV_REQUEST_MAX_BYTES));
        num = first.pnum;
        while (num > 0 && num < bytes) {
          const next = await isAllocated(s.root, offset + num, Math.min(bytes - num, BDRV_REQUEST_MAX_BYTES));
          if (next.allocated !== first.allocated || next.pnum === 0) break;
          num += next.pnum;
        }
      } catch (e) {
        s.report(`Failed to get allocation status: ${describeCode(codeOf(e))}`);
        return ERRNO[codeOf(e)] ?? -5;
      }
      if (num === 0) {
        s.report('Unexpected end of image');
        return -5;
      }
      const what = first.allocated ? '    allocated' : 'not allocated';
      s.out(`${cvtstr(num)} (0x${num.toString(16)}) bytes ${what} at offset ${cvtstr(offset)} (0x${offset.toString(16)})\n`);
      offset += num;
      bytes -= num;
    }
    return 0;
  },
};

const quitCmd: CmdInfo = {
  name: 'quit',
  altname: 'q',
  argmin: 0,
  argmax: 0,
  global: true,
  oneline: 'exit the program',
  async run(s) {
    s.quit = true;
    return 0;
  },
};

const helpCmd: CmdInfo = {
  name: 'help',
  altname: '?',
  argmin: 0,
  argmax: 1,
  global: true,
  args: '[command]',
  oneline: 'help for one or all commands',
  async run(s, argv) {
    const line = (name: string, ct: CmdInfo): string => `${name} ${ct.args !== undefined ? ct.args + ' ' : ''}-- ${ct.oneline}\n`;
    if (argv.length === 1) {
      s.out(commands().map((ct) => line(ct.name, ct)).join('') + "\nUse 'help commandname' for extended help.\n");
      return 0;
    }
    const ct = findCommand(argv[1]!);
    if (!ct) {
      s.out(`command ${argv[1]} not found\n`);
      return EINVAL;
    }
    s.out(line(argv[1]!, ct) + (ct.help ?? ''));
    return 0;
  },
};

/** The command table, sorted by name as qemu-io keeps it (built on first use: vector-commands imports this module). */
let table: CmdInfo[] | undefined;
function commands(): CmdInfo[] {
  table ??= [allocCmd, discardCmd, flushCmd, helpCmd, infoCmd, lengthCmd, mapCmd, quitCmd, readCmd, truncateCmd, writeCmd, ...VECTOR_COMMANDS, ...OPEN_COMMANDS, ...DEBUG_COMMANDS].sort((a, b) =>
    a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
  );
  return table;
}

function findCommand(name: string): CmdInfo | undefined {
  return commands().find((ct) => ct.name === name || ct.altname === name);
}
