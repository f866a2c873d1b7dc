/** Reading a whole image back, for tests that check what a copy wrote. */
import { bdrvPread, openImage, type Storage } from '../../src/index.js';
import { closeNode } from '../../src/block/open.js';

/** Every guest byte of `file` on `storage`, opened read-only as `format` and closed again. */
export async function guestBytes(storage: Storage, file: string, format: string): Promise<Uint8Array> {
  const bs = await openImage(storage, file, { format, readOnly: true });
  try {
    const out = new Uint8Array(bs.totalBytes);
    await bdrvPread(bs, 0, out.length, out);
    return out;
  } finally {
    await closeNode(bs);
  }
}
