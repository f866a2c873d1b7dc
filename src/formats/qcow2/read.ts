/**
 * Guest reads (QEMU's qcow2_co_preadv_part): one mapRun answer at a time,
 * from the backing chain, zeros, the data file, or a decompressed cluster.
 * The write path reads copy-on-write sources through the same function, so
 * "what the guest sees now" has one definition.
 */
import { BlockError, hex } from '../../block/errors.js';
import type { BlockNode } from '../../block/node.js';
import { allocBuffer, freeBuffer } from '../../block/buffers.js';
import { bdrvPread, readBacking } from '../../block/io.js';
import { mapRun, type MapRun } from './cluster-map.js';
import { decompressCluster } from './compressed.js';
import { QCOW2_COMPRESSION_TYPE_ZSTD } from './header.js';
import { L2_COMPRESSED, L2_NORMAL, L2_UNALLOCATED, L2_UNALLOCATED_ALLOC, L2_ZERO_ALLOC, L2_ZERO_PLAIN } from './l2-scan.js';
import type { Qcow2State } from './state.js';
import { decryptData } from './crypto.js';
import { bdrvDebugEvent } from '../../block/debug-event.js';

async function readCompressed(s: Qcow2State, offset: number, run: MapRun, out: Uint8Array): Promise<void> {
  const { coffset, csize } = run.compressed!;
  const node = s.dataFile;
  const fileSize = node.totalBytes;
  // As QEMU's block layer, bytes past the end of the file read as zeros: a descriptor whose sector count
  // overstates the stream still decompresses (iotest 214), and one that lies wholly past the end fails to.
  const present = Math.max(0, Math.min(csize, fileSize - coffset));
  const input = allocBuffer(csize);
  const cluster = allocBuffer(s.clusterSize);
  try {
    await bdrvDebugEvent(node, 'read_compressed');
    if (present > 0) await bdrvPread(node, coffset, present, input);
    input.fill(0, present, csize);
    if (!decompressCluster(s.header.compressionType, input, cluster)) {
      const where = present < csize ? `, ${csize - present} of them past the end of the file (${fileSize} bytes)` : '';
      throw new BlockError(
        'EIO',
        `${s.image}: could not decompress the ${s.header.compressionType === QCOW2_COMPRESSION_TYPE_ZSTD ? 'zstd' : 'zlib'} cluster for guest offset ${hex(offset)} at host offset ${hex(coffset)} (${csize} bytes${where})`,
      );
    }
    const inCluster = offset % s.clusterSize;
    out.set(cluster.subarray(inCluster, inCluster + run.bytes));
  } finally {
    freeBuffer(input);
    freeBuffer(cluster);
  }
}

/** Reads guest bytes [offset, offset + bytes) into `buf` (inside the virtual disk). */
export async function qcow2Read(bs: BlockNode, s: Qcow2State, offset: number, bytes: number, buf: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes) {
    const off = offset + done;
    const run = await mapRun(s, off, bytes - done);
    const out = buf.subarray(done, done + run.bytes);
    switch (run.type) {
      case L2_UNALLOCATED:
      case L2_UNALLOCATED_ALLOC:
        if (bs.backing) await bdrvDebugEvent(s.file, 'read_backing_aio');
        await readBacking(bs, off, run.bytes, out);
        break;
      case L2_ZERO_PLAIN:
      case L2_ZERO_ALLOC:
        out.fill(0);
        break;
      case L2_NORMAL:
        await bdrvDebugEvent(s.file, 'read_aio');
        await bdrvPread(s.dataFile, run.host, run.bytes, out);
        if (s.crypto) decryptData(s.crypto, s.image, off, run.host, out);
        break;
      case L2_COMPRESSED:
        await readCompressed(s, off, run, out);
        break;
    }
    done += run.bytes;
  }
}
