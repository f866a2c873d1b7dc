/**
 * Crash-point sweep of persistent bitmap metadata writes: an image with a
 * stored bitmap is opened read/write (in-use flags), written (the bitmap
 * marks), given a new persistent bitmap and closed (data, tables, directory,
 * header, frees), with the power cut after each write in turn. Whatever
 * reached the disk must open in qemu-img, check without corruption (leaks
 * allowed), list the bitmaps qemu-img lists, and every bitmap not marked
 * in use must hold either its old or its new bits — never a mix (a cut while
 * the autoclear bit is off drops them all, as in QEMU).
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FileStorage } from '../../src/node.js';
import { openImage, closeNode } from '../../src/block/open.js';
import { bdrvPwrite } from '../../src/block/io.js';
import { addDirtyBitmap, listDirtyBitmaps } from '../../src/block/dirty-bitmap.js';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu.js';
import { checkNoCorruption, sweep, withImage } from '../helpers/crash.js';

const KiB = 1024;

async function extents(file: string): Promise<Record<string, { inconsistent: boolean; ext: string }>> {
  const bs = await openImage(new FileStorage(), file, { readOnly: true });
  try {
    return Object.fromEntries(listDirtyBitmaps(bs).map((b) => [b.name, { inconsistent: b.inconsistent, ext: JSON.stringify([...b.dirtyExtents()]) }]));
  } finally {
    await closeNode(bs);
  }
}

describe('crash sweeps', () => {
  it('bitmaps marked in use, written and stored', async () => {
    const dir = tmpDir('bm-crash-');
    const f = path.join(dir, 'a.qcow2');
    let old!: string;
    const { cuts } = await sweep(
      () => {
        fs.rmSync(f, { force: true });
        qemuImg(['create', '-f', 'qcow2', '-o', 'cluster_size=4k', f, '8M']);
        qemuImg(['bitmap', '--add', '-g', '4k', f, 'b1']);
        qemuIo(f, ['write 0 64k'], 'qcow2');
        return [f];
      },
      (st, [file]) =>
        withImage(st, file!, async (bs) => {
          old ??= JSON.stringify([...listDirtyBitmaps(bs)[0]!.dirtyExtents()]);
          addDirtyBitmap(bs, 'b2', { granularity: 4 * KiB, persistent: true });
          await bdrvPwrite(bs, 1024 * KiB, 8 * KiB, new Uint8Array(8 * KiB).fill(5));
        }),
      async ([file], completed) => {
        checkNoCorruption(file!);
        const now = await extents(file!);
        const b1New = JSON.stringify([{ offset: 0, bytes: 64 * KiB }, { offset: 1024 * KiB, bytes: 8 * KiB }]);
        if (completed) {
          expect(now).toEqual({ b2: { inconsistent: false, ext: JSON.stringify([{ offset: 1024 * KiB, bytes: 8 * KiB }]) }, b1: { inconsistent: false, ext: b1New } });
        } else {
          // In the windows where the autoclear bit is off the bitmaps are dropped (QEMU's in-place update does the same).
          const listed = ((JSON.parse(qemuImg(['info', '--output=json', file!]))['format-specific'].data.bitmaps ?? []) as { name: string }[]).map((b) => b.name);
          expect(Object.keys(now).sort()).toEqual(listed.sort());
          if (now.b1 && !now.b1.inconsistent) expect([old, b1New]).toContain(now.b1!.ext);
          if (now.b2 && !now.b2.inconsistent) expect(now.b2.ext).toBe(JSON.stringify([{ offset: 1024 * KiB, bytes: 8 * KiB }]));
        }
      },
      { maxCuts: 16, edge: 4 },
    );
    expect(cuts).toBeGreaterThan(5);
  });
});
