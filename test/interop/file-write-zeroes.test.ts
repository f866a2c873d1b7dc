/**
 * Write-zeroes on a host file (src/protocols/file.ts), against QEMU's
 * file-posix: where unmapping is allowed the range is deallocated (fallocate
 * PUNCH_HOLE), otherwise zeroed in place (ZERO_RANGE). `convert -n` into an
 * existing raw file leaves its zero ranges as holes, as qemu-img does, and
 * qemu-io's `write -z [-u]` leaves the same bytes, the same map and the same
 * allocated size as QEMU's qemu-io. Past the end of the file the block layer
 * writes zeros (which grows the file), as before.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { blocktab, qemuImg, qemuIo, tmpDir } from '../helpers/qemu.js';
import { seekHoleSupported } from '../../src/protocols/seek-hole.js';

const MiB = 1024 * 1024;
const dir = tmpDir('blocktab-wzeroes-');

/** A file of `mib` MiB of bytes that are never zero (so every block is data). */
function dataFile(name: string, mib: number): string {
  const f = path.join(dir, name);
  const b = Buffer.alloc(mib * MiB);
  for (let i = 0; i < b.length; i++) b[i] = ((i * 2654435761) >>> 24) | 1;
  fs.writeFileSync(f, b);
  return f;
}
const map = (f: string) => qemuImg(['map', '--output=json', '-f', 'raw', f]);
const blocks = (f: string) => fs.statSync(f).blocks;

describe.runIf(seekHoleSupported())('write-zeroes on a host file', () => {
  it('convert -n into an existing raw file punches its zero ranges, as qemu-img does', () => {
    // Source: 1 MiB of data, 1 MiB of written zeros, then a hole to 8 MiB.
    const src = path.join(dir, 'src.raw');
    qemuImg(['create', '-q', '-f', 'raw', src, '8M']);
    qemuIo(src, ['write -P 0x11 0 1M', 'write -P 0 1M 1M'], 'raw');
    const q = dataFile('q.raw', 8);
    const b = dataFile('b.raw', 8);
    qemuImg(['convert', '-n', '-f', 'raw', '-O', 'raw', src, q]);
    const r = blocktab(['convert', '-n', '-f', 'raw', '-O', 'raw', src, b]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(fs.readFileSync(b).equals(fs.readFileSync(q))).toBe(true);
    expect(map(b)).toBe(map(q));
    expect(map(b)).toContain('"zero": true, "data": false');
    expect(blocks(b)).toBe(blocks(q));
    expect(blocks(b)).toBeLessThanOrEqual((1 * MiB) / 512 + 64);
  });

  for (const cmd of ['write -z -u 1M 2M', 'write -z 1M 2M', 'write -z 3M 512k', 'write -z 6M 2M']) {
    it(`qemu-io ${cmd} on raw: same output, bytes, map and allocation as QEMU's`, () => {
      const q = dataFile('io-q.raw', 7);
      const b = dataFile('io-b.raw', 7);
      const qr = spawnSync('qemu-io', ['-f', 'raw', '-c', cmd, q], { encoding: 'utf8' });
      const br = blocktab(['io', '-f', 'raw', '-c', cmd, b]);
      const timing = (s: string) => s.replace(/; [\d:.]+ sec \([^)]*\)/g, '');
      expect(timing(br.stdout)).toBe(timing(qr.stdout));
      expect(br.stderr).toBe(qr.stderr);
      expect(br.status).toBe(qr.status);
      expect(fs.readFileSync(b).equals(fs.readFileSync(q))).toBe(true);
      expect(map(b)).toBe(map(q));
      expect(blocks(b)).toBe(blocks(q));
    });
  }
});
