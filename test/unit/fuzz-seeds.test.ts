/**
 * The fuzzer's seeds for the formats qemu-img cannot create (dmg, cloop,
 * bochs) are small images built from the specification by the test builders
 * (test/helpers/readonly-images.ts) and committed under
 * test/fixtures/fuzz/seeds/, because the fuzzer runs as plain Node on dist/.
 * This test keeps them true: each one must equal what the builder makes today
 * and read back as the builder's disk. FUZZ_WRITE_SEEDS=1 rewrites them.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { MemoryStorage, openImage, bdrvPread, closeNode } from '../../src/node.js';
import { buildBochs, buildCloop, buildDmg, type BuiltImage } from '../helpers/readonly-images.js';
import { seededBytes } from '../helpers/random.js';

const dir = path.resolve(__dirname, '../fixtures/fuzz/seeds');
const S = 512;

const seeds: { file: string; format: string; build: () => BuiltImage }[] = [
  {
    file: 'zlib-raw-zero.dmg',
    format: 'dmg',
    build: () =>
      buildDmg({
        partitions: [
          [{ kind: 'zlib', sectors: 8, data: seededBytes(8 * S, 1) }, { kind: 'zero', sectors: 4 }, { kind: 'raw', sectors: 4, data: seededBytes(4 * S, 2) }],
          [{ kind: 'ignore', sectors: 2 }, { kind: 'zlib', sectors: 4, data: seededBytes(4 * S, 3) }],
        ],
      }),
  },
  {
    file: 'rsrc.dmg',
    format: 'dmg',
    build: () => buildDmg({ variant: 'rsrc', partitions: [[{ kind: 'raw', sectors: 4, data: seededBytes(4 * S, 4) }, { kind: 'zlib', sectors: 4, data: seededBytes(4 * S, 5) }]] }),
  },
  { file: 'b512.cloop', format: 'cloop', build: () => buildCloop({ blockSize: 512, data: seededBytes(9 * S + 100, 6) }) },
  {
    file: 'growing.bochs',
    format: 'bochs',
    build: () => buildBochs({ diskSize: 16 * 1024, extentSize: 4096, data: seededBytes(16 * 1024, 7), present: (s) => s % 3 !== 0 && s < 20 }),
  },
];

describe('fuzz seeds (dmg, cloop, bochs)', () => {
  for (const s of seeds) {
    it(`${s.file} is what the builder makes and reads back`, async () => {
      const built = s.build();
      const file = path.join(dir, s.file + '.gz');
      if (process.env.FUZZ_WRITE_SEEDS) fs.writeFileSync(file, gzipSync(built.image, { level: 9 }));
      const committed = gunzipSync(fs.readFileSync(file));
      expect(Buffer.compare(committed, built.image)).toBe(0);
      const st = new MemoryStorage();
      st.put(s.file, committed);
      const bs = await openImage(st, s.file, { format: s.format, readOnly: true });
      const out = new Uint8Array(bs.totalBytes);
      await bdrvPread(bs, 0, out.length, out);
      await closeNode(bs);
      expect(Buffer.compare(out, built.disk)).toBe(0);
    });
  }
});
