/**
 * The `raw` format: the guest sees the file's bytes, optionally a window of
 * them (`offset`, `size` options, as QEMU's raw driver).
 *
 * Raw is the probing fallback. When it was only guessed, a write that would
 * make block 0 look like another format is refused, as QEMU does, so a guest
 * cannot turn its disk into, say, a qcow2 header pointing at host files.
 * QEMU checks each write's own first sector (it makes probed images
 * sector-aligned); we probe the first PROBE_BUF_SIZE bytes as they would be
 * after the write, so the check also covers writes that build a header piece
 * by piece. Such writes run one at a time (`headQueue`), or two concurrent
 * halves could each pass alone. Zero writes and discards are checked too: a
 * range that reads as zeros afterwards must not make another format either.
 */
import { BlockError, hex } from '../../block/errors.js';
import { probeFormat, type BlockDriver, PROBE_BUF_SIZE } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvGetLength, bdrvPdiscard, bdrvPread, bdrvPwrite, bdrvPwriteZeroes, bdrvTruncate } from '../../block/io.js';
import { blkdbgEvent } from '../../block/debug-event.js';
import { BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_RAW } from '../../block/status.js';
import { RAW_CREATE_OPTS, rawCreate, rawMeasure } from './create.js';
import { rawProbe } from './probe.js';

interface RawState {
  offset: number;
  /** Fixed window size, or undefined to follow the file's length. */
  size: number | undefined;
  /** The last of the guarded writes to the probed head (they run in turn). */
  headQueue?: Promise<unknown>;
}

/**
 * Runs `write` (which changes `bytes` at `offset` to `data`, or to zeros
 * when null) after checking that the image's head would still probe as raw;
 * only on a guessed raw image, for requests that reach the head.
 */
async function guardHead(bs: BlockNode, offset: number, bytes: number, data: Uint8Array | null, write: () => Promise<void>): Promise<void> {
  if (!bs.probedAsRaw || offset >= PROBE_BUF_SIZE || bytes <= 0) return write();
  const s = st(bs);
  const run = (s.headQueue ?? Promise.resolve()).catch(() => {}).then(async () => {
    const head = new Uint8Array(Math.min(PROBE_BUF_SIZE, bs.totalBytes));
    await bdrvPread(bs, 0, head.length, head);
    const end = Math.min(offset + bytes, head.length);
    if (data) head.set(data.subarray(0, end - offset), offset);
    else head.fill(0, offset, end);
    if (probeFormat(head, bs.filename).driver.name !== 'raw') {
      throw new BlockError('EPERM', `${bs.filename}: write to block 0 refused: the image was probed as raw and the write would make it look like another format`);
    }
    await write();
  });
  s.headQueue = run;
  return run;
}

function st(bs: BlockNode): RawState {
  return bs.state<RawState>();
}

function file(bs: BlockNode): BlockNode {
  return bs.file!.node;
}

function toInt(v: unknown, what: string, bs: BlockNode): number | undefined {
  if (v === undefined) return undefined;
  const n = typeof v === 'string' ? Number(v) : (v as number);
  if (!Number.isSafeInteger(n) || n < 0) throw new BlockError('EINVAL', `${bs.filename}: raw option '${what}' must be a non-negative integer`);
  return n;
}

async function refreshSize(bs: BlockNode): Promise<number> {
  const s = st(bs);
  const len = await bdrvGetLength(file(bs));
  if (s.size !== undefined) return s.size;
  return Math.max(0, len - s.offset);
}

export const rawDriver: BlockDriver = {
  name: 'raw',
  kind: 'format',
  blockdevOptions: { file: 'BlockdevRef', '*offset': 'int', '*size': 'int' },
  // Guest offset + the fixed `offset` option: the order of writes never matters.
  writesInPlace: true,
  probe: rawProbe,
  async open(bs, options) {
    const offset = toInt(options.offset, 'offset', bs) ?? 0;
    const size = toInt(options.size, 'size', bs);
    const flen = file(bs).totalBytes;
    if (offset > flen) throw new BlockError('EINVAL', `${bs.filename}: raw offset ${offset} is past the end of the file (${flen} bytes)`);
    if (size !== undefined && offset + size > flen) {
      throw new BlockError('EINVAL', `${bs.filename}: raw window ${hex(offset)}+${size} is past the end of the file (${flen} bytes)`);
    }
    bs.opaque = { offset, size } satisfies RawState;
    bs.totalBytes = size ?? flen - offset;
    // Byte-granular, as QEMU's raw format: an unaligned request reaches the file as it is and the file's node pads it
    // (so its read-modify-write, and the debug events around it, happen there).
    bs.limits = { ...file(bs).limits, requestAlignment: 1 };
  },
  /** QEMU's raw_reopen_prepare/commit: `offset` and `size` may change (171); a key not given keeps its value. */
  async reopenOptions(bs, options, { check }) {
    if (options.offset === undefined && options.size === undefined) return;
    const s = st(bs);
    const offset = options.offset !== undefined ? toInt(options.offset, 'offset', bs)! : s.offset;
    const size = options.size !== undefined ? toInt(options.size, 'size', bs) : s.size;
    const real = await bdrvGetLength(file(bs));
    if (offset > real) throw new BlockError('EINVAL', `Offset (${offset}) cannot be greater than size of the containing file (${real})`);
    if (size !== undefined && real - offset < size) {
      throw new BlockError(
        'EINVAL',
        `The sum of offset (${offset}) and size (${size}) has to be smaller or equal to the  actual size of the containing file (${real})`,
      );
    }
    if (size !== undefined && size % 512 !== 0) throw new BlockError('EINVAL', 'Specified size is not multiple of 512');
    if (check) return;
    s.offset = offset;
    s.size = size;
    bs.totalBytes = size ?? real - offset;
  },
  async preadv(bs, offset, bytes, buf) {
    await blkdbgEvent(bs.file, 'read_aio');
    await bdrvPread(file(bs), offset + st(bs).offset, bytes, buf);
  },
  async pwritev(bs, offset, bytes, buf, flags) {
    await guardHead(bs, offset, bytes, buf, async () => {
      await blkdbgEvent(bs.file, 'write_aio');
      await bdrvPwrite(file(bs), offset + st(bs).offset, bytes, buf, flags);
    });
  },
  async pwriteZeroes(bs, offset, bytes, flags) {
    await guardHead(bs, offset, bytes, null, () => bdrvPwriteZeroes(file(bs), offset + st(bs).offset, bytes, flags));
  },
  async pdiscard(bs, offset, bytes) {
    await guardHead(bs, offset, bytes, null, () => bdrvPdiscard(file(bs), offset + st(bs).offset, bytes));
  },
  async truncate(bs, size, exact, prealloc) {
    const s = st(bs);
    if (s.size !== undefined) throw new BlockError('ENOTSUP', `${bs.filename}: cannot resize a raw image opened with a fixed 'size'`);
    await bdrvTruncate(file(bs), s.offset + size, exact, prealloc);
    bs.totalBytes = size;
  },
  async getLength(bs) {
    return refreshSize(bs);
  },
  async getAllocatedFileSize(bs) {
    return file(bs).driver.getAllocatedFileSize?.(file(bs));
  },
  async blockStatus(bs, _wantZero, offset, bytes) {
    return { status: BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID, pnum: bytes, map: offset + st(bs).offset, file: file(bs) };
  },
  // QEMU's raw_get_info: the file's answer (a protocol's is empty). That it
  // answers at all is why qemu-img prints a dirty-flag for raw (not over
  // http, whose driver cannot answer).
  getDriverInfo(bs) {
    const f = file(bs);
    return f.driver.getDriverInfo ? f.driver.getDriverInfo(f) : {};
  },

  // qemu-img create and measure (create.ts).
  createOptions: RAW_CREATE_OPTS,
  create: rawCreate,
  measure: rawMeasure,
};
