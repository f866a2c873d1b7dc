/**
 * The differential suite for the simple image formats (vdi, vpc, qed, qcow,
 * parallels), as a function of the cases: each formats-<name>.test.ts lists
 * its images (made by qemu-img / qemu-io at test time) and this runs blocktab
 * and qemu-img side by side on them — info JSON, map JSON, convert -O raw
 * bytes and compare verdicts — with the format given and probed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it, beforeAll } from 'vitest';
import { blocktab, qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import { sampleCases } from '../helpers/sample.js';

export interface FormatCase {
  name: string;
  /** Makes the image(s) in `dir` (the cwd of every command); returns the top image's name. */
  make(dir: string): string;
}

export const img = (dir: string, args: string[]) => qemuImg(args, { cwd: dir });
export const io = (dir: string, file: string, cmds: string[], fmt?: string) => qemuIo(file, cmds, fmt, { cwd: dir });

/** Data at the start, across a block boundary, a small unaligned piece, zeros written as data, and the last sector. */
export function scribble(dir: string, file: string, fmt: string, size: number, unit: number): void {
  const cmds = [`write -P 0x11 0 ${Math.min(unit, size)}`];
  if (size >= 4 * unit) cmds.push(`write -P 0x22 ${unit + unit / 2} ${unit}`);
  if (size >= 8 * unit) cmds.push(`write -P 0x33 ${5 * unit + 512} 1536`, `write -P 0 ${7 * unit} ${unit}`);
  cmds.push(`write -P 0x44 ${size - 512} 512`);
  io(dir, file, cmds, fmt);
}

/** Every byte written (a "full" image). */
export function fill(dir: string, file: string, fmt: string, size: number): void {
  io(dir, file, [`write -P 0x5a 0 ${size}`], fmt);
}

/** Byte-compares two files; returns the first differing offset or -1. */
export function firstDifference(a: string, b: string): number {
  const x = fs.readFileSync(a);
  const y = fs.readFileSync(b);
  if (x.length !== y.length) return Math.min(x.length, y.length);
  if (x.equals(y)) return -1;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return -1;
}

/** info JSON of both tools with actual-size compared loosely (allocation may differ by a block). */
function infoJson(out: string): Record<string, unknown> {
  const j = JSON.parse(out) as Record<string, unknown>;
  delete j['actual-size'];
  return j;
}

export function formatDifferential(format: string, cases: FormatCase[]): void {
  for (const c of sampleCases(`differential ${format}`, cases, 0.4)) {
    describe(`${format}: ${c.name}`, () => {
      let dir = '';
      let image = '';
      beforeAll(() => {
        dir = tmpDir(`fmt-${format}-`);
        image = c.make(dir);
      });

      for (const fmt of [['-f', format], []]) {
        const how = fmt.length ? 'with -f' : 'probed';

        it(`info --output=json agrees (${how})`, () => {
          const ours = blocktab(['info', ...fmt, '--output=json', image], { cwd: dir });
          const theirs = qemuImgRun(['info', ...fmt, '--output=json', image], { cwd: dir });
          expect(ours.stderr).toBe('');
          expect(ours.status).toBe(theirs.status);
          expect(infoJson(ours.stdout)).toEqual(infoJson(theirs.stdout));
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

        it(`convert -O raw equals qemu-img's, and compare agrees (${how})`, () => {
          // Converted once (with -f); the probed pass compares the image with that output instead.
          if (fmt.length) {
            const ours = blocktab(['convert', ...fmt, '-O', 'raw', image, 'ours.raw'], { cwd: dir });
            expect(ours.stderr).toBe('');
            expect(ours.status).toBe(0);
            img(dir, ['convert', ...fmt, '-O', 'raw', image, 'theirs.raw']);
            expect(firstDifference(path.join(dir, 'ours.raw'), path.join(dir, 'theirs.raw'))).toBe(-1);
          }
          const same = blocktab(['compare', ...fmt, '-F', 'raw', image, 'theirs.raw'], { cwd: dir });
          const sameQ = qemuImgRun(['compare', ...fmt, '-F', 'raw', image, 'theirs.raw'], { cwd: dir });
          expect(same.stdout).toBe(sameQ.stdout);
          expect(same.status).toBe(sameQ.status);
          if (fmt.length) expect(same.status).toBe(0);
        });
      }
    });
  }
}
