/** Shared by the qcow2 check unit tests: check (and repair) `a.qcow2` in a storage, and read its guest bytes. */
import '../../src/drivers.js';
import { openImage, closeNode, type Storage } from '../../src/block/open.js';
import { bdrvPread } from '../../src/block/io.js';
import { checkImage } from '../../src/formats/qcow2/check.js';

export async function check(st: Storage, fix: { leaks: boolean; errors: boolean }) {
  const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: !(fix.leaks || fix.errors) });
  try {
    return await checkImage(bs, { fix });
  } finally {
    await closeNode(bs);
  }
}

export async function guest(st: Storage): Promise<Uint8Array> {
  const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: true });
  const out = new Uint8Array(bs.totalBytes);
  await bdrvPread(bs, 0, out.length, out);
  await closeNode(bs);
  return out;
}
