/**
 * One differential suite for the read-only formats whose test images are
 * built from the specification (dmg, cloop, bochs): for each case the image
 * is written to a temp dir, then blocktab and qemu-img must agree on
 * `convert -O raw` (and both must equal the known disk contents),
 * `map --output=json`, `info --output=json` (actual-size aside) and
 * `compare`, with -f and by probing.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { blocktab, qemuImgRun, tmpDir } from '../helpers/qemu.js';
import { seededBytes } from '../helpers/random.js';
import type { BuiltImage } from '../helpers/readonly-images.js';
import { sampleCases } from '../helpers/sample.js';

export interface ReadonlyCase {
  name: string;
  /** File name (the extension matters for dmg, whose probe is by name). */
  file: string;
  build: () => BuiltImage;
  /** qemu-img cannot read it (a chunk type Debian's build lacks): check against the known contents only. */
  oursOnly?: boolean;
  /** Probing finds the format (false: only -f works, e.g. a dmg not named .dmg). */
  probes?: boolean;
}

/** Compressible but not trivial contents: runs of text-like bytes mixed with random ones. */
export function mixedData(bytes: number, seed: number): Uint8Array {
  const out = seededBytes(bytes, seed);
  for (let i = 0; i < bytes; i += 4096) {
    if (((i / 4096) * 7 + seed) % 3 === 0) {
      const line = new TextEncoder().encode(`block ${i} of seed ${seed}: the quick brown fox jumps over the lazy dog\n`);
      for (let j = i; j < Math.min(i + 4096, bytes); j++) out[j] = line[(j - i) % line.length]!;
    }
  }
  return out;
}

function sameBytes(file: string, want: Uint8Array): boolean {
  const got = fs.readFileSync(file);
  return got.length === want.length && Buffer.compare(got, Buffer.from(want.buffer, want.byteOffset, want.length)) === 0;
}

export function readonlyDifferential(format: string, cases: ReadonlyCase[]): void {
  for (const c of sampleCases(`read-only ${format}`, cases, 0.5)) {
    describe(`${format}: ${c.name}`, () => {
      let dir = '';
      let built: BuiltImage;
      beforeAll(() => {
        dir = tmpDir(`${format}-`);
        built = c.build();
        fs.writeFileSync(path.join(dir, c.file), built.image);
        fs.writeFileSync(path.join(dir, 'source.raw'), built.disk);
      });
      const modes: string[][] = c.probes === false ? [['-f', format]] : [['-f', format], []];

      for (const fmt of modes) {
        const how = fmt.length ? 'with -f' : 'probed';

        it(`convert -O raw (${how}) equals the source${c.oursOnly ? '' : ' and qemu-img convert'}`, () => {
          const ours = blocktab(['convert', ...fmt, '-O', 'raw', c.file, 'ours.raw'], { cwd: dir });
          expect(ours.stderr).toBe('');
          expect(ours.status).toBe(0);
          expect(sameBytes(path.join(dir, 'ours.raw'), built.disk)).toBe(true);
          if (c.oursOnly) return;
          const theirs = qemuImgRun(['convert', ...fmt, '-O', 'raw', c.file, 'theirs.raw'], { cwd: dir });
          expect(theirs.status, theirs.stderr).toBe(0);
          expect(sameBytes(path.join(dir, 'theirs.raw'), built.disk)).toBe(true);
        });

        it(`map --output=json (${how}) is identical`, () => {
          const ours = blocktab(['map', ...fmt, '--output=json', c.file], { cwd: dir });
          const theirs = qemuImgRun(['map', ...fmt, '--output=json', c.file], { cwd: dir });
          expect(ours.stderr).toBe('');
          expect(ours.stdout).toBe(theirs.stdout);
          expect(ours.status).toBe(theirs.status);
        });

        it(`info --output=json (${how}) is identical but for actual-size`, () => {
          const ours = blocktab(['info', ...fmt, '--output=json', c.file], { cwd: dir });
          const theirs = qemuImgRun(['info', ...fmt, '--output=json', c.file], { cwd: dir });
          expect(ours.stderr).toBe('');
          expect(ours.status).toBe(theirs.status);
          const strip = (s: string) => s.replace(/^ {4}"actual-size": \d+,\n/m, '');
          expect(strip(ours.stdout)).toBe(strip(theirs.stdout));
        });
      }

      it('compare with the source agrees with qemu-img compare', () => {
        const ours = blocktab(['compare', '-f', format, '-F', 'raw', c.file, 'source.raw'], { cwd: dir });
        expect(ours.stderr).toBe('');
        expect(ours.stdout).toBe('Images are identical.\n');
        expect(ours.status).toBe(0);
        if (c.oursOnly) return;
        const theirs = qemuImgRun(['compare', '-f', format, '-F', 'raw', c.file, 'source.raw'], { cwd: dir });
        expect(ours.stdout).toBe(theirs.stdout);
        expect(ours.status).toBe(theirs.status);
      });
    });
  }
}

export interface BadCliCase {
  name: string;
  file: string;
  image: () => Uint8Array;
  /** qemu-img refuses it too (its exit code must then be 1 as well). */
  qemuFails?: boolean;
  /** The damage is in data, not metadata: info and map succeed, convert fails. */
  onRead?: boolean;
}

/** Broken images through the CLI: exit 1 and one `blocktab: ...` line naming the image, for info, map and convert. */
export function readonlyBadCli(format: string, cases: BadCliCase[]): void {
  describe(`${format}: bad images through the CLI`, () => {
    for (const c of cases) {
      it(c.name, () => {
        const dir = tmpDir(`${format}-bad-`);
        fs.writeFileSync(path.join(dir, c.file), c.image());
        for (const cmd of [['info'], ['map', '--output=json'], ['convert', '-O', 'raw']]) {
          const args = [...cmd, '-f', format, c.file, ...(cmd[0] === 'convert' ? ['out.raw'] : [])];
          const ours = blocktab(args, { cwd: dir });
          if (c.onRead && cmd[0] !== 'convert') {
            expect(ours.stderr).toBe('');
            expect(ours.status).toBe(0);
            continue;
          }
          expect(ours.status, `${cmd[0]}: ${ours.stderr}`).toBe(1);
          const lines = ours.stderr.trimEnd().split('\n');
          expect(lines).toHaveLength(1);
          expect(lines[0]).toMatch(/^blocktab: /);
          expect(lines[0]).toContain(c.file);
          if (c.qemuFails) expect(qemuImgRun(args, { cwd: dir }).status).toBe(1);
        }
      });
    }
  });
}
