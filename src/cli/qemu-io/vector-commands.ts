/**
 * qemu-io's vectored and asynchronous commands: readv, writev, aio_read,
 * aio_write, aio_flush. Same options, argument checks and output lines as
 * QEMU 7.2's qemu-io.
 *
 * A vector is a list of lengths that make one contiguous request; the block
 * layer here takes one buffer, so the lengths are summed (the data that
 * reaches the image is the same). The aio commands complete before they
 * return: QEMU's complete in the background and print when they finish,
 * which for the scripts that use them (a request, then aio_flush or another
 * command that polls) is the same order of output. Like QEMU's, an aio command
 * succeeds once submitted: an I/O error is printed, not returned.
 */
import { allocBuffer, freeBuffer } from '../../block/buffers.js';
import type { WriteFlags } from '../../block/driver.js';
import { BlockError } from '../../block/errors.js';
import { cvtnum, cvtnumError, dumpBuffer, elapsedSince, printReport } from './format.js';
import { BDRV_REQUEST_MAX_BYTES, EINVAL, handleOpts, matchesPattern, now, type CmdInfo, type QemuIoSession } from './commands.js';

/** qemu-io's create_iovec: the summed length of the length arguments, or undefined after printing why not. */
function vectorLength(s: QemuIoSession, args: string[]): number | undefined {
  let count = 0;
  for (const arg of args) {
    const r = cvtnum(arg);
    if (!r.ok) {
      s.out(cvtnumError(r.err, arg));
      return undefined;
    }
    if (r.value > BDRV_REQUEST_MAX_BYTES) {
      s.out(`Argument '${arg}' exceeds maximum size ${BDRV_REQUEST_MAX_BYTES}\n`);
      return undefined;
    }
    if (count > BDRV_REQUEST_MAX_BYTES - r.value) {
      s.out(`The total number of bytes exceed the maximum size ${BDRV_REQUEST_MAX_BYTES}\n`);
      return undefined;
    }
    count += r.value;
  }
  return count;
}

interface VectorRead {
  cflag: boolean;
  qflag: boolean;
  vflag: boolean;
  pattern?: number;
}

/** Reads `count` bytes at `offset`, verifies and prints as readv/aio_read; returns 0, EINVAL on mismatch, or the errno. */
async function doRead(s: QemuIoSession, op: string, offset: number, count: number, o: VectorRead, account = false): Promise<number> {
  if (!(await s.inBounds(offset, count))) return s.failed(op, new BlockError('EIO', 'out of range'));
  const buf = allocBuffer(count);
  const opts = { account };
  try {
    buf.fill(0xab);
    const t0 = now();
    try {
      await s.backend.read(offset, count, buf, opts);
    } catch (e) {
      return s.failed(op, e);
    }
    const t = elapsedSince(t0, now());
    let ret = 0;
    if (o.pattern !== undefined && !matchesPattern(buf, 0, count, o.pattern)) {
      s.out(`Pattern verification failed at offset ${offset}, ${count} bytes\n`);
      ret = EINVAL;
    }
    if (o.qflag) return ret;
    if (o.vflag) s.out(dumpBuffer(buf.subarray(0, count), offset));
    s.out(printReport('read', t, offset, count, count, 1, o.cflag));
    return ret;
  } finally {
    freeBuffer(buf);
  }
}

/** Writes `count` bytes of `pattern` (or zeroes) at `offset` and prints as writev/aio_write. */
async function doWrite(s: QemuIoSession, op: string, offset: number, count: number, pattern: number | null, flags: WriteFlags, cflag: boolean, qflag: boolean, account = false): Promise<number> {
  if (!(await s.inBounds(offset, count))) return s.failed(op, new BlockError('EIO', 'out of range'));
  const buf = pattern === null ? null : allocBuffer(count);
  try {
    buf?.fill(pattern!);
    const t0 = now();
    try {
      if (buf) await s.backend.write(offset, count, buf, flags, { account });
      else await s.backend.writeZeroes(offset, count, flags, { account });
    } catch (e) {
      return s.failed(op, e);
    }
    const t = elapsedSince(t0, now());
    if (!qflag) s.out(printReport('wrote', t, offset, count, count, 1, cflag));
    return 0;
  } finally {
    if (buf) freeBuffer(buf);
  }
}

/** The offset operand and the summed lengths after it; undefined after printing why not. */
function offsetAndLength(s: QemuIoSession, operands: string[]): { offset: number; count: number } | number {
  const r = cvtnum(operands[0]!);
  if (!r.ok) {
    s.out(cvtnumError(r.err, operands[0]!));
    return r.err === 'ERANGE' ? -34 : EINVAL;
  }
  const count = vectorLength(s, operands.slice(1));
  if (count === undefined) return EINVAL;
  return { offset: r.value, count };
}

const readvCmd: CmdInfo = {
  name: 'readv',
  argmin: 2,
  argmax: -1,
  args: '[-Cqv] [-P pattern] off len [len..]',
  oneline: 'reads a number of bytes at a specified offset',
  help:
    '\n reads a range of bytes from the given offset into multiple buffers\n\n Example:\n' +
    " 'readv -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into the file\n\n" +
    ' Reads a segment of the currently open file, optionally dumping it to the\n' +
    ' standard output stream (with -v option) for subsequent inspection.\n' +
    ' Uses multiple iovec buffers if more than one byte range is specified.\n' +
    ' -C, -- report statistics in a machine parsable format\n' +
    ' -P, -- use a pattern to verify read data\n' +
    ' -v, -- dump buffer to standard output\n' +
    ' -q, -- quiet mode, do not show I/O statistics\n\n',
  opts: 'CP:qv',
  async run(s, argv, parsed) {
    const o: VectorRead = { cflag: false, qflag: false, vflag: false };
    const stop = handleOpts(s, this, parsed.events, (c, arg) => {
      if (c === 'C') o.cflag = true;
      else if (c === 'q') o.qflag = true;
      else if (c === 'v') o.vflag = true;
      else if (c === 'P') {
        o.pattern = s.pattern(arg!);
        if (o.pattern === undefined) return EINVAL;
      }
      return undefined;
    });
    if (stop !== undefined) return stop;
    if (parsed.operands.length < 2) return s.usage(this);
    const req = offsetAndLength(s, parsed.operands);
    if (typeof req === 'number') return req;
    return doRead(s, 'readv', req.offset, req.count, o);
  },
};

const writevCmd: CmdInfo = {
  name: 'writev',
  argmin: 2,
  argmax: -1,
  write: true,
  args: '[-Cfq] [-P pattern] off len [len..]',
  oneline: 'writes a number of bytes at a specified offset',
  help:
    '\n writes a range of bytes from the given offset source from multiple buffers\n\n Example:\n' +
    " 'writev 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open file\n\n" +
    ' Writes into a segment of the currently open file, using a buffer\n' +
    ' filled with a set pattern (0xcdcdcdcd).\n' +
    ' -P, -- use different pattern to fill file\n' +
    ' -C, -- report statistics in a machine parsable format\n' +
    ' -f, -- use Force Unit Access semantics\n' +
    ' -q, -- quiet mode, do not show I/O statistics\n\n',
  opts: 'CfqP:',
  async run(s, argv, parsed) {
    let cflag = false, qflag = false, pattern = 0xcd;
    const flags: WriteFlags = {};
    const stop = handleOpts(s, this, parsed.events, (c, arg) => {
      if (c === 'C') cflag = true;
      else if (c === 'q') qflag = true;
      else if (c === 'f') flags.fua = true;
      else if (c === 'P') {
        const v = s.pattern(arg!);
        if (v === undefined) return EINVAL;
        pattern = v;
      }
      return undefined;
    });
    if (stop !== undefined) return stop;
    if (parsed.operands.length < 2) return s.usage(this);
    const req = offsetAndLength(s, parsed.operands);
    if (typeof req === 'number') return req;
    return doWrite(s, 'writev', req.offset, req.count, pattern, flags, cflag, qflag);
  },
};

const aioReadCmd: CmdInfo = {
  name: 'aio_read',
  argmin: 2,
  argmax: -1,
  args: '[-Ciqv] [-P pattern] off len [len..]',
  oneline: 'asynchronously reads a number of bytes',
  help:
    '\n asynchronously reads a range of bytes from the given offset\n\n Example:\n' +
    " 'aio_read -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into the file\n\n" +
    ' Reads a segment of the currently open file, optionally dumping it to the\n' +
    ' standard output stream (with -v option) for subsequent inspection.\n' +
    ' The read is performed asynchronously and the aio_flush command must be\n' +
    ' used to ensure all outstanding aio requests have been completed.\n' +
    ' Note that due to its asynchronous nature, this command will be\n' +
    ' considered successful once the request is submitted, independently\n' +
    ' of potential I/O errors or pattern mismatches.\n' +
    ' -C, -- report statistics in a machine parsable format\n' +
    ' -P, -- use a pattern to verify read data\n' +
    ' -i, -- treat request as invalid, for exercising stats\n' +
    ' -v, -- dump buffer to standard output\n' +
    ' -q, -- quiet mode, do not show I/O statistics\n\n',
  opts: 'CP:iqv',
  async run(s, argv, parsed) {
    const o: VectorRead = { cflag: false, qflag: false, vflag: false };
    let invalid = false;
    const stop = handleOpts(s, this, parsed.events, (c, arg) => {
      if (c === 'C') o.cflag = true;
      else if (c === 'q') o.qflag = true;
      else if (c === 'v') o.vflag = true;
      else if (c === 'i') {
        invalid = true;
        return 0;
      } else if (c === 'P') {
        o.pattern = s.pattern(arg!);
        if (o.pattern === undefined) return EINVAL;
      }
      return undefined;
    });
    if (invalid) {
      // qemu-io's -i: a request the device refused, counted as invalid (block_acct_invalid).
      s.backend.stats.invalid('read');
      s.out('injecting invalid read request\n');
      return 0;
    }
    if (stop !== undefined) return stop;
    if (parsed.operands.length < 2) return s.usage(this);
    const req = offsetAndLength(s, parsed.operands);
    if (typeof req === 'number') return req;
    // qemu-io's aio read completion says "readv failed" on an error.
    // The aio commands account their requests as a device does (QEMU's qemu-io aio_* call block_acct_*).
    await s.runAio(doRead(s, 'readv', req.offset, req.count, o, true));
    return 0;
  },
};

const aioWriteCmd: CmdInfo = {
  name: 'aio_write',
  argmin: 2,
  argmax: -1,
  write: true,
  args: '[-Cfiquz] [-P pattern] off len [len..]',
  oneline: 'asynchronously writes a number of bytes',
  help:
    '\n asynchronously writes a range of bytes from the given offset source\n from multiple buffers\n\n Example:\n' +
    " 'aio_write 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open file\n\n" +
    ' Writes into a segment of the currently open file, using a buffer\n' +
    ' filled with a set pattern (0xcdcdcdcd).\n' +
    ' The write is performed asynchronously and the aio_flush command must be\n' +
    ' used to ensure all outstanding aio requests have been completed.\n' +
    ' Note that due to its asynchronous nature, this command will be\n' +
    ' considered successful once the request is submitted, independently\n' +
    ' of potential I/O errors or pattern mismatches.\n' +
    ' -P, -- use different pattern to fill file\n' +
    ' -C, -- report statistics in a machine parsable format\n' +
    ' -f, -- use Force Unit Access semantics\n' +
    ' -i, -- treat request as invalid, for exercising stats\n' +
    ' -q, -- quiet mode, do not show I/O statistics\n' +
    ' -u, -- with -z, allow unmapping\n' +
    ' -z, -- write zeroes using blk_aio_pwrite_zeroes\n\n',
  opts: 'CfiqP:uz',
  async run(s, argv, parsed) {
    let cflag = false, qflag = false, zflag = false, invalid = false, pattern = 0xcd;
    const flags: WriteFlags = {};
    const stop = handleOpts(s, this, parsed.events, (c, arg) => {
      if (c === 'C') cflag = true;
      else if (c === 'q') qflag = true;
      else if (c === 'f') flags.fua = true;
      else if (c === 'u') flags.mayUnmap = true;
      else if (c === 'z') zflag = true;
      else if (c === 'i') {
        invalid = true;
        return 0;
      } else if (c === 'P') {
        const v = s.pattern(arg!);
        if (v === undefined) return EINVAL;
        pattern = v;
      }
      return undefined;
    });
    if (invalid) {
      s.backend.stats.invalid('write');
      s.out('injecting invalid write request\n');
      return 0;
    }
    if (stop !== undefined) return stop;
    const ops = parsed.operands;
    if (ops.length < 2) return s.usage(this);
    if (zflag && ops.length !== 2) {
      s.out('-z supports only a single length parameter\n');
      return EINVAL;
    }
    if (flags.mayUnmap && !zflag) {
      s.out('-u requires -z to be specified\n');
      return EINVAL;
    }
    const req = offsetAndLength(s, ops);
    if (typeof req === 'number') return req;
    await s.runAio(doWrite(s, 'aio_write', req.offset, req.count, zflag ? null : pattern, flags, cflag, qflag, true));
    return 0;
  },
};

const aioFlushCmd: CmdInfo = {
  name: 'aio_flush',
  argmin: 0,
  argmax: 0,
  oneline: 'completes all outstanding aio requests',
  // Every aio request has completed by the time its command returns; the flush is accounted as QEMU's aio_flush does.
  async run(s) {
    await s.drainAio();
    const cookie = s.backend.stats.start(0, 'flush');
    s.backend.stats.done(cookie);
    return 0;
  },
};

export const VECTOR_COMMANDS: CmdInfo[] = [aioFlushCmd, aioReadCmd, aioWriteCmd, readvCmd, writevCmd];
