/**
 * One crafted bad header, two wordings (src/block/errors.ts): the CLI
 * invoked as qemu-io / qemu-img prints QEMU's text, compared line for line
 * with Debian's tools on the same file (the cases of iotests 078, 075, 116,
 * 092 and 059); `blocktab` prints the detailed text, which names the
 * structure and its offset.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { blocktab, qemuImg, tmpDir } from '../helpers/qemu.js';
import { persona, qemuTool } from '../helpers/persona.js';
import { buildBochs, buildCloop } from '../helpers/readonly-images.js';
import { mixedData } from './readonly-formats-diff.js';

const dir = tmpDir('blocktab-wording-');

interface Case {
  name: string;
  format: string;
  file: string;
  /** Writes the bad image into `dir`. */
  make: () => void;
  /** QEMU's text, as Debian's tools print it (checked against them too). */
  qemuText: string;
}

/** Writes `bytes` at `offset` of `file` in place. */
function patch(file: string, offset: number, bytes: number[]): void {
  const fd = fs.openSync(path.join(dir, file), 'r+');
  try {
    fs.writeSync(fd, Buffer.from(bytes), 0, bytes.length, offset);
  } finally {
    fs.closeSync(fd);
  }
}

const u32le = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];
const created = (format: string, file: string, size = '64M', opts: string[] = []) => qemuImg(['create', '-f', format, ...opts, path.join(dir, file), size]);

const cases: Case[] = [
  {
    name: 'bochs: catalog too large',
    format: 'bochs',
    file: 'cat.bochs',
    make: () => fs.writeFileSync(path.join(dir, 'cat.bochs'), buildBochs({ diskSize: 65536, extentSize: 4096, data: mixedData(65536, 1), present: () => true, tamper: { header: (h) => void (h.catalog = 0x200000) } }).image),
    qemuText: 'Catalog size is too large',
  },
  {
    name: 'cloop: block_size not a multiple of 512',
    format: 'cloop',
    file: 'bs.cloop',
    make: () => fs.writeFileSync(path.join(dir, 'bs.cloop'), buildCloop({ blockSize: 4096, data: mixedData(16384, 3), tamper: { head: (h) => void (h.block_size = 513) } }).image),
    qemuText: 'block_size 513 must be a multiple of 512',
  },
  {
    name: 'cloop: offsets going back (QEMU meets it before any past-the-end check)',
    format: 'cloop',
    file: 'mono.cloop',
    make: () =>
      fs.writeFileSync(
        path.join(dir, 'mono.cloop'),
        buildCloop({ blockSize: 4096, data: mixedData(16384, 4), tamper: { offsets: (o) => void (o[1] = o[0]! - 8) } }).image,
      ),
    qemuText: 'offsets not monotonically increasing at index 1, image file is corrupt',
  },
  {
    name: 'qed: cluster size',
    format: 'qed',
    file: 'cs.qed',
    make: () => {
      created('qed', 'cs.qed');
      patch('cs.qed', 4, u32le(0xffffffff));
    },
    qemuText: 'QED cluster size is invalid',
  },
  {
    name: 'qed: header size (QEMU checks the L1 table offset first)',
    format: 'qed',
    file: 'hs.qed',
    make: () => {
      created('qed', 'hs.qed');
      patch('hs.qed', 12, u32le(0xffffffff));
    },
    qemuText: 'QED table offset is invalid',
  },
  {
    name: 'qcow: cluster_bits',
    format: 'qcow',
    file: 'cb.qcow',
    make: () => {
      created('qcow', 'cb.qcow');
      patch('cb.qcow', 32, [17]);
    },
    qemuText: 'Cluster size must be between 512 and 64k',
  },
  {
    name: 'vmdk: numGTEsPerGT',
    format: 'vmdk',
    file: 'gt.vmdk',
    make: () => {
      created('vmdk', 'gt.vmdk');
      patch('gt.vmdk', 44, u32le(0xffffffff));
    },
    qemuText: 'L2 table size too big',
  },
  {
    name: 'vmdk: grainSize past 2^53 (QEMU: granularity before our exactness check)',
    format: 'vmdk',
    file: 'gs.vmdk',
    make: () => {
      created('vmdk', 'gs.vmdk');
      patch('gs.vmdk', 20, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    },
    qemuText: 'Invalid granularity, image may be corrupt',
  },
  {
    name: 'vmdk: capacity past 2^53 (QEMU: the L1 size)',
    format: 'vmdk',
    file: 'cap.vmdk',
    make: () => {
      created('vmdk', 'cap.vmdk');
      patch('cap.vmdk', 12, [0, 0, 2, 0, 0xff, 0xff, 0xff, 0xff]);
    },
    qemuText: 'L1 size too big',
  },
];

describe('bad headers: QEMU wording through the qemu persona, the detailed text through blocktab', () => {
  for (const c of cases) {
    it(c.name, () => {
      c.make();
      const io = ['-r', '-f', c.format, '-c', 'read 0 512', c.file];
      const theirs = qemuTool('qemu-io', io, { cwd: dir });
      expect(theirs.stderr).toBe(`qemu-io: can't open device ${c.file}: ${c.qemuText}\n`);
      const ours = persona('qemu-io', io, { cwd: dir });
      expect(ours.stderr).toBe(theirs.stderr);
      expect(ours.status).toBe(theirs.status);

      const info = ['info', '-f', c.format, c.file];
      if (c.format === 'vmdk') {
        // qemu-img's "Could not open 'NAME': " prefix too (iotest 059 prints it).
        const theirInfo = qemuTool('qemu-img', info, { cwd: dir });
        const ourInfo = persona('qemu-img', info, { cwd: dir });
        expect(ourInfo.stderr).toBe(theirInfo.stderr);
        expect(ourInfo.status).toBe(theirInfo.status);
      }

      // blocktab's own wording names the structure and where it is.
      const detailed = blocktab(info, { cwd: dir });
      expect(detailed.status).toBe(1);
      expect(detailed.stderr).toMatch(/^blocktab: /);
      expect(detailed.stderr).not.toContain(`: ${c.qemuText}\n`);
      expect(detailed.stderr).toMatch(/0x[0-9a-f]+|header|offset table|entries|sectors/);
    });
  }
});
