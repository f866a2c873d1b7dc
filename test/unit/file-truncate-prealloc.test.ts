/**
 * Bug found by QEMU's iotest 106: growing a raw image on the host file system
 * with preallocation=falloc or full left the new area unallocated.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import '../../src/drivers.js';
import { FileStorage } from '../../src/protocols/file.js';
import { bdrvTruncate } from '../../src/block/io.js';
import { closeNode } from '../../src/block/open.js';

describe('file protocol truncate with preallocation (iotest 106)', () => {
  for (const mode of ['falloc', 'full'] as const) {
    it(`growing with ${mode} allocates the new area`, async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocktab-prealloc-'));
      const f = path.join(dir, 'a.raw');
      fs.writeFileSync(f, new Uint8Array(0));
      const bs = await new FileStorage().openProtocol(f, { readOnly: false });
      await bdrvTruncate(bs, 256 * 1024, false, mode);
      await closeNode(bs);
      const st = fs.statSync(f);
      expect(st.size).toBe(256 * 1024);
      expect(st.blocks * 512).toBeGreaterThanOrEqual(256 * 1024);
      fs.rmSync(dir, { recursive: true });
    });
  }
});
