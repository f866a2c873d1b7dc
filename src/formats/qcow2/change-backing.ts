/**
 * qcow2's change_backing_file (QEMU's qcow2_change_backing_file →
 * qcow2_update_header): the backing file name and the backing format
 * extension are rewritten by serializing the whole header cluster again and
 * writing it in one request.
 */
import { BlockError } from '../../block/errors.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvPwrite } from '../../block/io.js';
import { MAX_BACKING_FILE_NAME, QCOW2_EXT_MAGIC_BACKING_FORMAT, serializeHeader, type HeaderExtension } from './header.js';
import { syncFile, withLock } from './metadata.js';
import { flushMetadata } from './l1.js';
import { prepareWrite } from './write.js';
import type { Qcow2State } from './state.js';

/** Sets (or with null removes) the backing file name and format in the header. */
export async function qcow2ChangeBackingFile(bs: BlockNode, s: Qcow2State, backingFile: string | null, backingFormat: string | null): Promise<void> {
  if (bs.readOnly) throw new BlockError('EROFS', `${s.image}: cannot change the backing file: the image is opened read-only`);
  if (backingFile !== null && new TextEncoder().encode(backingFile).length > MAX_BACKING_FILE_NAME) {
    throw new BlockError('EINVAL', `${s.image}: backing file name too long (at most ${MAX_BACKING_FILE_NAME} bytes)`);
  }
  if (backingFormat !== null && backingFile === null) {
    throw new BlockError('EINVAL', `${s.image}: cannot set a backing format without a backing file`);
  }
  if (backingFormat !== null && new TextEncoder().encode(backingFormat).length >= 16) {
    throw new BlockError('EINVAL', `${s.image}: backing format name too long: '${backingFormat}'`);
  }
  await withLock(s, async () => {
    await prepareWrite(s);
    await flushMetadata(s);
    const h = { ...s.header, extensions: s.header.extensions.filter((e) => e.type !== QCOW2_EXT_MAGIC_BACKING_FORMAT) };
    if (backingFormat !== null) {
      // QEMU writes the backing format extension first.
      h.extensions.unshift({ type: QCOW2_EXT_MAGIC_BACKING_FORMAT, backingFormat } as HeaderExtension);
    }
    h.backingFile = backingFile;
    // Throws ENOSPC before anything is written when the name does not fit in the header cluster.
    const cluster = serializeHeader(h);
    await bdrvPwrite(s.file, 0, cluster.length, cluster);
    await syncFile(s);
    s.header = h;
  });
  bs.backingFile = backingFile;
  bs.backingFormat = backingFormat;
}
