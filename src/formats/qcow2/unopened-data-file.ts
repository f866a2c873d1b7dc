/**
 * The external data file of an image opened for metadata only (QEMU's
 * BDRV_O_NO_IO, as `qemu-img info` opens): QEMU does not open it, so `info`
 * of an untrusted image touches no file the image names, and works when the
 * data file is missing. The node stands in for it so the image still counts
 * as having a data file; any request through it is refused.
 */
import type { BlockDriver } from '../../block/driver.js';
import { BlockNode } from '../../block/node.js';
import { BlockError } from '../../block/errors.js';

function refuse(bs: BlockNode): never {
  throw new BlockError('EIO', `${bs.filename}: the external data file was not opened (image opened for metadata only)`);
}

const unopenedDataFileDriver: BlockDriver = {
  name: 'qcow2-unopened-data-file',
  kind: 'protocol',
  async open() {},
  preadv: async (bs) => refuse(bs),
  pwritev: async (bs) => refuse(bs),
  pwriteZeroes: async (bs) => refuse(bs),
  flush: async () => {},
};

/** A stand-in node for the data file `name` of an image opened without I/O. */
export function unopenedDataFile(name: string): BlockNode {
  return new BlockNode(unopenedDataFileDriver, name, { readOnly: true });
}
