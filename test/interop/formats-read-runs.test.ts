/**
 * vdi and vhdx reads in runs: blocks that lie one after the other in the
 * file are read with one request, absent blocks are one fill. Images made
 * by qemu-io with blocks allocated out of guest order (so some guest
 * neighbours are file neighbours and some are not), every block with its
 * own pattern: blocktab's reads, whole and at seeded unaligned ranges, equal
 * qemu-img's raw conversion, and a whole-image read makes one file read per
 * file-contiguous run (counted on the file node).
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BlockNode, bdrvPread, closeNode, openImage, type BlockDriver } from '../../src/index.js';
import { FileStorage, fileDriver } from '../../src/node.js';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu.js';
import { rng } from '../helpers/random.js';

const MiB = 1024 * 1024;
const dir = tmpDir('read-runs-');

/** A FileStorage whose file nodes log every read that reaches the file. */
class CountingStorage extends FileStorage {
  readonly reads: { offset: number; bytes: number }[] = [];

  override async openProtocol(filename: string, options: { readOnly: boolean; create?: boolean }): Promise<BlockNode> {
    const reads = this.reads;
    const driver: BlockDriver = {
      ...fileDriver,
      preadv: (bs, offset, bytes, buf) => {
        reads.push({ offset, bytes });
        return fileDriver.preadv(bs, offset, bytes, buf);
      },
    };
    const bs = new BlockNode(driver, filename, { readOnly: options.readOnly });
    await driver.open!(bs, bs.options);
    return bs;
  }
}

/**
 * Guest blocks 3, 4, 5 first (file neighbours in guest order), then 1, then
 * 0 (file neighbours in reverse order), then 7; 2 and 6 stay absent. Each
 * block has its own pattern and a small piece of another, so a read from the
 * wrong block or the wrong place in a block shows.
 */
const WRITE_ORDER = [3, 4, 5, 1, 0, 7];
/** File-contiguous runs in guest order: [0], [1], [3, 4, 5], [7]. */
const DATA_RUNS = 4;

function writes(): string[] {
  const cmds: string[] = [];
  for (const b of WRITE_ORDER) {
    cmds.push(`write -P ${0x20 + b} ${b * MiB} ${MiB}`, `write -P ${0x80 + b} ${b * MiB + 4096 * (b + 1) + 512} 1536`);
  }
  return cmds;
}

const cases = [
  { format: 'vdi', opts: [] as string[] },
  { format: 'vhdx', opts: ['-o', 'block_size=1M'] },
];

describe.each(cases)('$format: reads in runs of file-contiguous blocks', ({ format, opts }) => {
  const file = path.join(dir, `a.${format}`);
  const rawFile = path.join(dir, `a-${format}.raw`);
  const size = 8 * MiB;

  it('equal qemu-img convert -O raw, whole and at unaligned ranges, with one file read per run', async () => {
    qemuImg(['create', '-q', '-f', format, ...opts, file, String(size)]);
    qemuIo(file, writes(), format);
    qemuImg(['convert', '-f', format, '-O', 'raw', file, rawFile]);
    const want = new Uint8Array(fs.readFileSync(rawFile));

    const st = new CountingStorage();
    const bs = await openImage(st, file, { format, readOnly: true });
    try {
      st.reads.length = 0;
      const all = new Uint8Array(size);
      await bdrvPread(bs, 0, size, all);
      expect(Buffer.compare(all, want)).toBe(0);
      // Data reads only (the open's metadata reads were cleared above; a read adds none).
      expect(st.reads.filter((r) => r.bytes >= 512)).toHaveLength(DATA_RUNS);
      expect(st.reads.reduce((n, r) => n + r.bytes, 0)).toBe(WRITE_ORDER.length * MiB);

      const next = rng(12);
      for (let i = 0; i < 40; i++) {
        const off = Math.floor(next() * size);
        const len = 1 + Math.floor(next() * Math.min(3 * MiB, size - off));
        const got = new Uint8Array(len);
        await bdrvPread(bs, off, len, got);
        expect(Buffer.compare(got, want.subarray(off, off + len)), `${off}+${len}`).toBe(0);
      }
    } finally {
      await closeNode(bs);
      fs.rmSync(rawFile, { force: true });
    }
  });
});
