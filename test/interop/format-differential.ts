/**
 * The differential checks every new format runs: for each image made by
 * qemu-img/qemu-io, blocktab's info (JSON and human), map (JSON and human),
 * convert -O raw and compare must equal qemu-img's, once with -f and once
 * probed. Suites call `formatDifferential(cases)` with their own rows.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it, beforeAll } from 'vitest';
import { blocktab, qemuImgRun, tmpDir } from '../helpers/qemu.js';
import { firstDifference } from '../helpers/files.js';
import { sampleCases } from '../helpers/sample.js';

export interface FormatCase {
  name: string;
  /** Creates the image(s) in `dir` (the cwd of every command) and returns the top image's name. */
  make(dir: string): string;
  format: string;
  /** Sparse and large: compare the converted outputs with qemu-img compare rather than byte by byte. */
  huge?: boolean;
}

const withoutDiskSize = (s: string) => s.replace(/^disk size: .*$/gm, 'disk size: X');

export function formatDifferential(cases: FormatCase[]): void {
  for (const c of sampleCases(`differential ${cases[0]?.format}`, cases, 0.4)) {
    describe(c.name, () => {
      let dir = '';
      let image = '';
      beforeAll(() => {
        dir = tmpDir();
        image = c.make(dir);
      });

      for (const fmt of [['-f', c.format], []]) {
        const how = fmt.length ? 'with -f' : 'probed';

        it(`info --output=json agrees (${how}; actual-size loosely)`, () => {
          const ours = blocktab(['info', ...fmt, '--output=json', image], { cwd: dir });
          const theirs = qemuImgRun(['info', ...fmt, '--output=json', image], { cwd: dir });
          expect(ours.stderr).toBe('');
          expect(ours.status).toBe(theirs.status);
          const a = JSON.parse(ours.stdout) as Record<string, unknown>;
          const b = JSON.parse(theirs.stdout) as Record<string, unknown>;
          expect(Math.abs((a['actual-size'] as number) - (b['actual-size'] as number))).toBeLessThanOrEqual(Math.max(65536, (b['actual-size'] as number) * 0.1));
          const strip = (s: string) => s.replace(/^ {4}"actual-size": \d+,\n/m, '');
          expect(strip(ours.stdout)).toBe(strip(theirs.stdout));
        });

        it(`map --output=json is identical (${how})`, () => {
          const ours = blocktab(['map', ...fmt, '--output=json', image], { cwd: dir });
          const theirs = qemuImgRun(['map', ...fmt, '--output=json', image], { cwd: dir });
          expect(ours.stderr).toBe('');
          expect(ours.stdout).toBe(theirs.stdout);
          expect(ours.status).toBe(theirs.status);
        });
      }

      it('info and map (human) agree except disk size', () => {
        const fmt = ['-f', c.format];
        const ours = blocktab(['info', ...fmt, image], { cwd: dir });
        const theirs = qemuImgRun(['info', ...fmt, image], { cwd: dir });
        expect(withoutDiskSize(ours.stdout)).toBe(withoutDiskSize(theirs.stdout));
        const mapOurs = blocktab(['map', ...fmt, image], { cwd: dir });
        const mapTheirs = qemuImgRun(['map', ...fmt, image], { cwd: dir });
        expect(mapOurs.stdout).toBe(mapTheirs.stdout);
      });

      it('convert -O raw output equals qemu-img convert -O raw, and compare agrees', () => {
        const ours = blocktab(['convert', '-f', c.format, '-O', 'raw', image, 'ours.raw'], { cwd: dir });
        expect(ours.stderr).toBe('');
        expect(ours.status).toBe(0);
        const theirs = qemuImgRun(['convert', '-f', c.format, '-O', 'raw', image, 'theirs.raw'], { cwd: dir });
        expect(theirs.status).toBe(0);
        const a = path.join(dir, 'ours.raw');
        const b = path.join(dir, 'theirs.raw');
        expect(fs.statSync(a).size).toBe(fs.statSync(b).size);
        if (c.huge) expect(qemuImgRun(['compare', '-f', 'raw', '-F', 'raw', a, b]).status).toBe(0);
        else expect(firstDifference(a, b)).toBe(-1);
        const same = blocktab(['compare', '-f', c.format, '-F', 'raw', image, 'theirs.raw'], { cwd: dir });
        const sameQ = qemuImgRun(['compare', '-f', c.format, '-F', 'raw', image, 'theirs.raw'], { cwd: dir });
        expect(same.stdout).toBe(sameQ.stdout);
        expect(same.status).toBe(0);
        expect(sameQ.status).toBe(0);
      });
    });
  }
}
