/**
 * blocktab vs qemu-img on the same images: convert -O raw output, map JSON
 * and human output, info JSON (and human) and compare verdicts must agree.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it, beforeAll } from 'vitest';
import { blocktab, qemuImgRun, tmpDir } from '../helpers/qemu.js';
import { imageCases } from './image-cases.js';
import { firstDifference } from '../helpers/files.js';
import { sampleCases } from '../helpers/sample.js';

const withoutDiskSize = (s: string) => s.replace(/^disk size: .*$/gm, 'disk size: X');

for (const c of sampleCases('img-differential', imageCases, 0.4)) {
  describe(c.name, () => {
    let dir = '';
    let image = '';
    const fmt = c.format ? ['-f', c.format] : [];
    beforeAll(() => {
      dir = tmpDir();
      image = c.make(dir);
    });

    it('info --output=json agrees (actual-size loosely)', () => {
      const ours = blocktab(['info', ...fmt, '--output=json', image], { cwd: dir });
      const theirs = qemuImgRun(['info', ...fmt, '--output=json', image], { cwd: dir });
      expect(ours.stderr).toBe('');
      expect(ours.status).toBe(theirs.status);
      const a = JSON.parse(ours.stdout) as Record<string, unknown>;
      const b = JSON.parse(theirs.stdout) as Record<string, unknown>;
      const sizeA = a['actual-size'] as number;
      const sizeB = b['actual-size'] as number;
      expect(Math.abs(sizeA - sizeB)).toBeLessThanOrEqual(Math.max(65536, sizeB * 0.1));
      delete a['actual-size'];
      delete b['actual-size'];
      expect(a).toEqual(b);
      // Key order and layout too, once actual-size is taken out.
      const strip = (s: string) => s.replace(/^ {4}"actual-size": \d+,\n/m, '');
      expect(strip(ours.stdout)).toBe(strip(theirs.stdout));
    });

    it('info (human) agrees except disk size', () => {
      const ours = blocktab(['info', ...fmt, image], { cwd: dir });
      const theirs = qemuImgRun(['info', ...fmt, image], { cwd: dir });
      expect(withoutDiskSize(ours.stdout)).toBe(withoutDiskSize(theirs.stdout));
    });

    it('info --backing-chain --output=json lists the same images', () => {
      const ours = blocktab(['info', ...fmt, '--backing-chain', '--output=json', image], { cwd: dir });
      const theirs = qemuImgRun(['info', ...fmt, '--backing-chain', '--output=json', image], { cwd: dir });
      expect(ours.status).toBe(theirs.status);
      const names = (s: string) => (JSON.parse(s) as { filename: string; format: string }[]).map((i) => `${i.filename}:${i.format}`);
      expect(names(ours.stdout)).toEqual(names(theirs.stdout));
    });

    it('map --output=json is identical', () => {
      const ours = blocktab(['map', ...fmt, '--output=json', image], { cwd: dir });
      const theirs = qemuImgRun(['map', ...fmt, '--output=json', image], { cwd: dir });
      expect(ours.stderr).toBe('');
      expect(ours.stdout).toBe(theirs.stdout);
      expect(ours.status).toBe(theirs.status);
    });

    it('map (human) is identical, errors included', () => {
      const ours = blocktab(['map', ...fmt, image], { cwd: dir });
      const theirs = qemuImgRun(['map', ...fmt, image], { cwd: dir });
      expect(ours.stdout).toBe(theirs.stdout);
      expect(ours.status).toBe(theirs.status);
      expect(ours.stderr.replace(/^blocktab: /, '')).toBe(theirs.stderr.replace(/^qemu-img: /, ''));
    });

    it('convert -O raw output equals qemu-img convert -O raw', () => {
      const ours = blocktab(['convert', ...fmt, '-O', 'raw', image, 'ours.raw'], { cwd: dir });
      expect(ours.stderr).toBe('');
      expect(ours.status).toBe(0);
      const theirs = qemuImgRun(['convert', ...fmt, '-O', 'raw', image, 'theirs.raw'], { cwd: dir });
      expect(theirs.status).toBe(0);
      const a = path.join(dir, 'ours.raw');
      const b = path.join(dir, 'theirs.raw');
      expect(fs.statSync(a).size).toBe(fs.statSync(b).size);
      if (c.huge) {
        expect(qemuImgRun(['compare', '-f', 'raw', '-F', 'raw', a, b]).status).toBe(0);
        // Holes stay holes: a sparse source must not become a fully written file.
        expect(fs.statSync(a).blocks * 512).toBeLessThan(64 * 1024 * 1024);
      } else {
        expect(firstDifference(a, b)).toBe(-1);
      }
    });

    it('compare agrees with qemu-img compare (identical, and after a change)', () => {
      const same = blocktab(['compare', ...fmt, '-F', 'raw', image, 'theirs.raw'], { cwd: dir });
      const sameQ = qemuImgRun(['compare', ...fmt, '-F', 'raw', image, 'theirs.raw'], { cwd: dir });
      expect(same.stdout).toBe(sameQ.stdout);
      expect(same.status).toBe(sameQ.status);
      if (c.huge) return;
      // Change one byte somewhere in the middle and compare again.
      const changed = path.join(dir, 'changed.raw');
      fs.copyFileSync(path.join(dir, 'theirs.raw'), changed);
      const size = fs.statSync(changed).size;
      const fd = fs.openSync(changed, 'r+');
      const at = Math.floor((size * 2) / 3);
      const b = Buffer.alloc(1);
      fs.readSync(fd, b, 0, 1, at);
      b[0] = b[0]! ^ 0xff;
      fs.writeSync(fd, b, 0, 1, at);
      fs.closeSync(fd);
      const diff = blocktab(['compare', ...fmt, '-F', 'raw', image, 'changed.raw'], { cwd: dir });
      const diffQ = qemuImgRun(['compare', ...fmt, '-F', 'raw', image, 'changed.raw'], { cwd: dir });
      expect(diff.stdout).toBe(diffQ.stdout);
      expect(diff.status).toBe(1);
      expect(diffQ.status).toBe(1);
    });
  });
}
