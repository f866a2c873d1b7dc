/**
 * The differential suite for the simple image formats (vdi, vpc, qed, qcow,
 * parallels), as a function of the cases: each formats-<name>.test.ts lists
 * its images (made by qemu-img / qemu-io at test time) and this runs blocktab
 * and qemu-img side by side on them through format-differential.ts, with
 * the image-making helpers these formats share.
 */
import { qemuImg, qemuIo } from '../helpers/qemu.js';
import { formatDifferential as sharedDifferential } from './format-differential.js';

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

/**
 * The shared differential checks (format-differential.ts) for this format's
 * cases, named `<format>: <case>`.
 */
export function formatDifferential(format: string, cases: FormatCase[]): void {
  sharedDifferential(cases.map((c) => ({ ...c, name: `${format}: ${c.name}`, format })));
}
