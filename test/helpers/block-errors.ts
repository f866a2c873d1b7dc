/**
 * The bad-input suites' two questions: does opening this image fail with a
 * BlockError, and does reading this range of it? (A success closes the node
 * and fails the test.)
 */
import { expect } from 'vitest';
import { BlockError, bdrvPread, closeNode, openImage, type Storage } from '../../src/node.js';

/** Opens `file` expecting a BlockError, which it returns. */
export async function openFailure(storage: Storage, file: string, opts: { format: string; readOnly?: boolean }): Promise<BlockError> {
  const e = await openImage(storage, file, { readOnly: opts.readOnly ?? true, format: opts.format }).then(
    async (bs) => {
      await closeNode(bs);
      return undefined;
    },
    (e: unknown) => e,
  );
  expect(e, 'open should fail').toBeInstanceOf(BlockError);
  return e as BlockError;
}

/** Opens `file` read-only and reads [offset, offset + bytes), expecting a BlockError, which it returns. */
export async function readFailure(storage: Storage, file: string, format: string, offset: number, bytes: number): Promise<BlockError> {
  const bs = await openImage(storage, file, { readOnly: true, format });
  try {
    const e = await bdrvPread(bs, offset, bytes, new Uint8Array(bytes)).catch((e: unknown) => e);
    expect(e, 'read should fail').toBeInstanceOf(BlockError);
    return e as BlockError;
  } finally {
    await closeNode(bs);
  }
}
