/**
 * The copy loop stream and commit share (QEMU's commit_run / stream_run
 * bodies): walk [0, size) in chunks, ask which ranges `allocatedIn` says must
 * move, read them from `from` and write them to `to` through the block layer
 * (src/block/io.ts, so the target's dirty bitmaps and write accounting see
 * every byte), reporting each chunk to the job. Between chunks the job sleeps
 * as its speed limit asks, pauses, or stops when cancelled — after a chunk,
 * never in the middle of one. With `zeroDetect` (stream), all-zero chunks are
 * written as zeros; with `copyOnRead` (stream: the data is what the target
 * already shows) the target's dirty bitmaps and written offset skip the
 * writes, as QEMU's copy-on-read path does. Where `allocatedIn` says a range
 * is allocated and `zero` (qemu-img commit, which QEMU runs as an active
 * commit, i.e. a mirror), it is written as zeros that may unmap.
 */
import { allocBuffer, bufferIsZero, freeBuffer } from '../block/buffers.js';
import { bdrvPread, bdrvPwrite, bdrvPwriteZeroes } from '../block/io.js';
import type { BlockNode } from '../block/node.js';
import type { Job } from './job.js';

/** QEMU's COMMIT_BUFFER_SIZE / STREAM_CHUNK. */
export const JOB_CHUNK = 512 * 1024;

export async function copyAllocated(
  job: Job,
  size: number,
  allocatedIn: (offset: number, bytes: number) => Promise<{ allocated: boolean; pnum: number; zero?: boolean }>,
  from: BlockNode,
  to: BlockNode,
  opts: { zeroDetect?: boolean; copyOnRead?: boolean } = {},
): Promise<void> {
  job.total = size;
  const buf = allocBuffer(Math.min(JOB_CHUNK, Math.max(size, 1)));
  try {
    for (let offset = 0; offset < size; ) {
      await job.rateLimitSleep();
      const want = Math.min(JOB_CHUNK, size - offset);
      const { allocated, pnum, zero } = await allocatedIn(offset, want);
      const n = Math.max(1, Math.min(pnum, want));
      if (allocated && zero) {
        // A range the source reports as zeros (active commit, as QEMU's mirror does): a zero write that may unmap.
        try {
          await bdrvPwriteZeroes(to, offset, n, { mayUnmap: true });
        } catch (e) {
          throw job.ioError('write', e);
        }
      } else if (allocated) {
        const chunk = buf.subarray(0, n);
        try {
          await bdrvPread(from, offset, n, chunk);
        } catch (e) {
          throw job.ioError('read', e);
        }
        try {
          // Stream copies as QEMU's copy-on-read does: an all-zero chunk becomes a zero write.
          const flags = { copyOnRead: opts.copyOnRead };
          if (opts.zeroDetect && bufferIsZero(chunk)) await bdrvPwriteZeroes(to, offset, n, flags);
          else await bdrvPwrite(to, offset, n, chunk, flags);
        } catch (e) {
          throw job.ioError('write', e);
        }
      }
      offset += n;
      job.progress(n, allocated ? n : 0);
    }
  } finally {
    freeBuffer(buf);
  }
}
