/**
 * raw's side of qemu-img create and measure: the one implementation of
 * making a raw image (qemu-img create -f raw, convert -O raw, and
 * blockdev-create with driver raw). A raw image is its file: creating one
 * sets the file's length, preallocating as asked.
 */
import { BlockError } from '../../block/errors.js';
import type { ImageCreateRequest, MeasureResult, PreallocMode } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvPwrite, bdrvTruncate } from '../../block/io.js';
import { allocBuffer, freeBuffer } from '../../block/buffers.js';
import type { OptionDesc } from '../../block/options.js';

/** raw's own list: only the size (preallocation comes from the storage's list). */
export const RAW_CREATE_OPTS: readonly OptionDesc[] = [{ name: 'size', type: 'size', help: 'Virtual disk size' }];

const roundToSector = (n: number) => Math.ceil(n / 512) * 512;

/** The preallocation a raw file gets; qemu-img's messages for modes the file protocol refuses. */
function preallocation(req: ImageCreateRequest): PreallocMode {
  const p = req.values.get('preallocation') ?? 'off';
  // blockdev-create checked QAPI's enum; metadata means nothing for a raw file there.
  if (req.origin === 'blockdev-create') return p === 'metadata' ? 'off' : (p as PreallocMode);
  if (!['off', 'metadata', 'falloc', 'full'].includes(p)) throw new BlockError('EINVAL', `invalid parameter value: ${p}`);
  if (p === 'metadata') throw new BlockError('EINVAL', `Unsupported preallocation mode: ${p}`);
  return p as PreallocMode;
}

/** The driver's `create` hook. qemu-img rounds the size up to whole sectors; blockdev-create takes it as given. */
export async function rawCreate(file: BlockNode, req: ImageCreateRequest): Promise<void> {
  const prealloc = preallocation(req);
  const size = req.origin === 'qemu-img' ? roundToSector(req.size) : req.size;
  // qemu-img makes a raw image on the host file directly (file-posix's create), with no fsync
  // unless it wrote the zeros of full preallocation: the file node qemu-img's create opened
  // only for this is then not flushed when it closes.
  if (req.origin === 'qemu-img' && prealloc !== 'full') file.noFlush = true;
  await bdrvTruncate(file, size, true, prealloc);
  // Storages keep new space sparse whatever the mode; full preallocation writes it.
  if (prealloc === 'full') await writeZeros(file, size);
}

async function writeZeros(bs: BlockNode, size: number): Promise<void> {
  if (size === 0) return;
  const zeros = allocBuffer(Math.min(size, 1 << 20));
  zeros.fill(0);
  try {
    for (let done = 0; done < size; done += zeros.length) await bdrvPwrite(bs, done, Math.min(zeros.length, size - done), zeros);
  } finally {
    freeBuffer(zeros);
  }
}

/**
 * `qemu-img measure -O raw`: the size rounded to sectors, or the input's length
 * as it is. Exact past 2^53 too: rounding an exact double up to a multiple of
 * 512 is exact (a double that large has an ulp of 2 or more, a power of two: at
 * most 512 and the multiple is representable, or more and it is one already).
 */
export function measureRaw(opts: { size?: number }, input?: { size: number }): MeasureResult {
  const required = input ? input.size : roundToSector(opts.size ?? 0);
  return { required, fullyAllocated: required, exact: true };
}

/** The driver's `measure` hook. */
export async function rawMeasure(_values: unknown, input: BlockNode | undefined, size: number | undefined): Promise<MeasureResult> {
  return measureRaw({ size }, input ? { size: input.totalBytes } : undefined);
}
