/**
 * `blocktab dd`: qemu-img dd. dd(1)-style operands (if=, of=, bs=, count=,
 * skip=) after qemu-img's options (-f, -O, -U, --image-opts, --object). The
 * output image is created (format -O, raw by default) with the input's length
 * less the skipped blocks (or count blocks), then filled with the input's
 * bytes from the skip offset. Messages and exit codes are qemu-img's: each
 * failure is one `qemu-img:` line (two for cvtnum's suffix hint) and status 1;
 * a skip past the input's end only warns and leaves an empty image.
 *
 * The copy reads and writes whole multiples of bs at a time: the image it
 * makes is the same as bs-sized steps would make, without a call per block.
 */
import { createConvertTarget } from '../img/convert.js';
import { qemuStrtosz } from '../img/options.js';
import { closeNode } from '../block/open.js';
import { bdrvGetLength, bdrvPread, bdrvPwrite } from '../block/io.js';
import { allocBuffer, freeBuffer } from '../block/buffers.js';
import { BlockError, describeCode, isBlockError } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import { driverInfo } from '../block/driver.js';
import { flag, parseCommand, str } from './args.js';
import { openForCli, storage } from './open.js';
import { progName } from './progname.js';
import type { Output } from './main.js';

const INT_MAX = 2 ** 31 - 1;
const INT64_MAX = 2n ** 63n - 1n;
/** Bytes moved per read/write pair (rounded down to a multiple of bs). */
const CHUNK = 1 << 20;

/** A failure qemu-img reports as the given lines (each prefixed with the program name). */
class DdError extends Error {
  constructor(readonly lines: string[]) {
    super(lines.join('\n'));
  }
}

/** qemu-img's cvtnum(name, value) with its [min, max] range and messages. */
function cvtnum(name: string, text: string, min: bigint, max: bigint): bigint {
  const v = qemuStrtosz(text);
  if (v === undefined) {
    throw new DdError([`Invalid ${name} specified. You may use k, M, G, T, P or E suffixes for`, 'kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.']);
  }
  if (v < min || v > max) throw new DdError([`Invalid ${name} specified. Must be between ${min} and ${max}.`]);
  return v;
}

interface DdOperands {
  bs: bigint;
  count?: bigint;
  skip?: bigint;
  input?: string;
  output?: string;
}

/** The operands in command-line order, as img_dd's loop takes them (a later one wins). */
function parseOperands(args: string[]): DdOperands {
  const o: DdOperands = { bs: 512n };
  for (const arg of args) {
    const eq = arg.indexOf('=');
    const name = eq < 0 ? arg : arg.slice(0, eq);
    const value = arg.slice(eq + 1);
    if (eq < 0) throw new DdError([`unrecognized operand ${arg}`]);
    if (name === 'bs') o.bs = cvtnum('bs', value, 1n, BigInt(INT_MAX));
    else if (name === 'count') o.count = cvtnum('count', value, 0n, INT64_MAX);
    else if (name === 'skip') o.skip = cvtnum('skip', value, 0n, INT64_MAX);
    else if (name === 'if') o.input = value;
    else if (name === 'of') o.output = value;
    else throw new DdError([`unrecognized operand ${name}`]);
  }
  return o;
}

export async function runDd(args: string[], out: Output): Promise<number> {
  const p = parseCommand('dd', args, {
    format: { type: 'string', short: 'f' },
    'output-format': { type: 'string', short: 'O' },
    'force-share': { type: 'boolean', short: 'U' },
    help: { type: 'boolean', short: 'h' },
  });
  const say = (lines: string[]) => {
    for (const l of lines) out.stderr(`${progName()}: ${l}\n`);
  };
  let src: BlockNode | undefined;
  let dst: BlockNode | undefined;
  try {
    const o = parseOperands(p.positionals);
    if (o.input === undefined || o.output === undefined) throw new DdError(['Must specify both input and output files']);
    const outFmt = str(p, 'output-format') ?? 'raw';
    // -U: blocktab takes no image locks, so there is nothing to share.
    void flag(p, 'force-share');
    src = await openForCli(o.input, { format: str(p, 'format') });
    if (driverInfo(outFmt)?.kind !== 'format') throw new DdError(['Unknown file format']);
    const length = BigInt(await bdrvGetLength(src));
    const bs = o.bs;
    let size = length;
    if (o.count !== undefined && o.count <= INT64_MAX / bs && o.count * bs < size) size = o.count * bs;
    const skipPastEnd = o.skip !== undefined && (o.skip > INT64_MAX / bs || size < bs * o.skip);
    const start = skipPastEnd ? size : (o.skip ?? 0n) * bs;
    const made = await createConvertTarget(storage, {
      filename: o.output,
      format: outFmt,
      options: [],
      compressed: false,
      sourceCount: 1,
      size: Number(size - start),
    }).catch((e: unknown) => {
      const msg = e instanceof Error ? e.message : String(e);
      // createConvertTarget words creation failures for convert; dd's wording is its own.
      const m = /^(.*?): error while converting [^:]+: (.*)$/s.exec(msg);
      throw m ? new BlockError(isBlockError(e) ? e.code : 'EIO', `${m[1]}: error while creating output image: ${m[2]}`) : e;
    });
    dst = made.target;
    if (skipPastEnd) say([`${o.input}: cannot skip to specified offset`]);
    await copy(src, dst, Number(start), Number(size), Number(bs));
  } catch (e) {
    if (e instanceof DdError) say(e.lines);
    else if (isBlockError(e) || e instanceof Error) say([e.message.split('\n')[0]!]);
    else throw e;
    return 1;
  } finally {
    if (dst) await closeNode(dst);
    if (src) await closeNode(src);
  }
  return 0;
}

async function copy(src: BlockNode, dst: BlockNode, inPos: number, end: number, bs: number): Promise<void> {
  const step = Math.max(bs, Math.floor(CHUNK / bs) * bs);
  const buf = allocBuffer(Math.min(step, Math.max(0, end - inPos)));
  try {
    for (let outPos = 0; inPos < end; ) {
      const n = Math.min(step, end - inPos);
      const b = buf.subarray(0, n);
      try {
        await bdrvPread(src, inPos, n, b);
      } catch (e) {
        throw new DdError([`error while reading from input image file: ${reason(e)}`]);
      }
      try {
        await bdrvPwrite(dst, outPos, n, b);
      } catch (e) {
        throw new DdError([`error while writing to output image file: ${reason(e)}`]);
      }
      inPos += n;
      outPos += n;
    }
  } finally {
    freeBuffer(buf);
  }
}

function reason(e: unknown): string {
  return isBlockError(e) ? describeCode(e.code) : e instanceof Error ? e.message : String(e);
}
