/**
 * qemu-img check as a function: runs the format's check (and repair) on an
 * opened node and shapes the answer as QEMU's ImageCheck, with the fields
 * qemu-img leaves out when they are zero left out here too.
 */
import { BlockError } from '../block/errors.js';
import type { CheckReport, CheckResult } from '../block/driver.js';
import type { BlockNode } from '../block/node.js';
import type { QDict } from './qobject.js';

export interface ImageCheck extends QDict {
  filename: string;
  format: string;
  'check-errors': number;
  'image-end-offset'?: number;
  corruptions?: number;
  leaks?: number;
  'corruptions-fixed'?: number;
  'leaks-fixed'?: number;
  'total-clusters'?: number;
  'allocated-clusters'?: number;
  'fragmented-clusters'?: number;
  'compressed-clusters'?: number;
}

export interface CheckRun {
  /** The result qemu-img prints (after a repair: the second check, with the fixed counts of the first). */
  check: ImageCheck;
  /** Set when a repair happened: what the first pass fixed. */
  repaired?: { leaks: number; corruptions: number };
}

/** What a check prints while it runs, in qemu-img's order. None of it is kept. */
export interface CheckOutput {
  /** Each line of the first check and then of the second (stderr in qemu-img), as it is found. */
  line: CheckReport;
}

/** Output nobody reads (the engine returns only the ImageCheck). */
export const IGNORE_CHECK_OUTPUT: CheckOutput = { line: () => {} };

async function runFormatCheck(bs: BlockNode, fix: { leaks: boolean; errors: boolean }, report: CheckReport): Promise<CheckResult> {
  if (bs.driver.check) return bs.driver.check(bs, fix, report);
  throw new BlockError('ENOTSUP', 'This image format does not support checks');
}

function toImageCheck(r: CheckResult, filename: string, format: string): ImageCheck {
  // QAPI order (the order QEMU inserts them); absent when zero, as collect_image_check.
  const nz = (v: number | undefined) => (v ? v : undefined);
  return {
    filename,
    format,
    'check-errors': r.checkErrors,
    'image-end-offset': nz(r.imageEndOffset),
    corruptions: nz(r.corruptions),
    leaks: nz(r.leaks),
    'corruptions-fixed': nz(r.corruptionsFixed),
    'leaks-fixed': nz(r.leaksFixed),
    'total-clusters': nz(r.totalClusters),
    'allocated-clusters': nz(r.allocatedClusters),
    'fragmented-clusters': nz(r.fragmentedClusters),
    'compressed-clusters': nz(r.compressedClusters),
  };
}

/**
 * img_check: check, and when something was repaired, check again and report
 * that. The lines go to `out` as the checks find them (qemu-img prints them
 * at once), so memory does not grow with their number.
 */
export async function checkNode(bs: BlockNode, filename: string, fix: { leaks: boolean; errors: boolean }, out: CheckOutput = IGNORE_CHECK_OUTPUT): Promise<CheckRun> {
  const first = await runFormatCheck(bs, fix, out.line);
  const run: CheckRun = { check: toImageCheck(first, filename, bs.driver.name) };
  if (first.corruptionsFixed || first.leaksFixed) {
    run.repaired = { leaks: first.leaksFixed, corruptions: first.corruptionsFixed };
    const second = await runFormatCheck(bs, { leaks: false, errors: false }, out.line);
    run.check = toImageCheck({ ...second, leaksFixed: first.leaksFixed, corruptionsFixed: first.corruptionsFixed }, filename, bs.driver.name);
  }
  return run;
}

/** dump_human_image_check */
export function humanImageCheck(c: ImageCheck): string {
  let s = '';
  const corruptions = c.corruptions ?? 0;
  const leaks = c.leaks ?? 0;
  const errors = c['check-errors'];
  if (!corruptions && !leaks && !errors) s += 'No errors were found on the image.\n';
  else {
    if (corruptions) s += `\n${corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n`;
    if (leaks) s += `\n${leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n`;
    if (errors) s += `\n${errors} internal errors have occurred during the check.\n`;
  }
  const total = c['total-clusters'] ?? 0;
  const alloc = c['allocated-clusters'] ?? 0;
  if (total && alloc) {
    const pct = printfFixed2;
    s += `${alloc}/${total} = ${pct((alloc * 100) / total)}% allocated, ${pct(((c['fragmented-clusters'] ?? 0) * 100) / alloc)}% fragmented, ${pct(((c['compressed-clusters'] ?? 0) * 100) / alloc)}% compressed clusters\n`;
  }
  if (c['image-end-offset']) s += `Image end offset: ${c['image-end-offset']}\n`;
  return s;
}

/**
 * printf("%0.2f"): like toFixed(2), except that an exact tie rounds to even
 * (glibc rounds the exact binary value; 3.125 prints as 3.12).
 */
export function printfFixed2(x: number): string {
  const exact = x.toFixed(100);
  const dot = exact.indexOf('.');
  const rest = exact.slice(dot + 3);
  if (/^50*$/.test(rest)) {
    const cents = BigInt(exact.slice(0, dot) + exact.slice(dot + 1, dot + 3));
    const r = cents % 2n === 0n ? cents : cents + 1n;
    const t = r.toString().padStart(3, '0');
    return `${t.slice(0, -2)}.${t.slice(-2)}`;
  }
  return x.toFixed(2);
}

/** qemu-img check's exit code for a finished check. */
export function checkExitCode(c: ImageCheck): number {
  if (c['check-errors']) return 1;
  if (c.corruptions) return 2;
  if (c.leaks) return 3;
  return 0;
}
