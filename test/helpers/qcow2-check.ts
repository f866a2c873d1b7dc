/** Shared by the qcow2 check unit tests: check (and repair) `a.qcow2` in a storage, and read its guest bytes. */
import '../../src/drivers.js';
import { openImage, closeNode, type Storage } from '../../src/block/open.js';
import { bdrvPread } from '../../src/block/io.js';
import { checkImage } from '../../src/formats/qcow2/check.js';

/** The check's result with the lines it reported, in order (on a failure they are the error's `checkMessages`). */
export async function check(st: Storage, fix: { leaks: boolean; errors: boolean }) {
  const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: !(fix.leaks || fix.errors) });
  const messages: string[] = [];
  try {
    return { ...(await checkImage(bs, { fix, report: (m) => messages.push(m) })), messages };
  } catch (e) {
    throw Object.assign(e as Error, { checkMessages: messages });
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
