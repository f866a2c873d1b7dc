/**
 * The iotests runner's reading of check's TAP output (scripts/iotests/tap.mjs).
 * QEMU 7.2's check prints "ok FMT NNN # SKIP" with no reason for a test that
 * calls _notrun (bochs on a generic test, raw on 174): that is "not run",
 * never a pass, or the figures count tests that did not run.
 */
import { describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM script without types
import { parseTap } from '../../scripts/iotests/tap.mjs';

describe('iotests runner: check TAP verdicts', () => {
  it('a SKIP with no reason is not run, not a pass (raw 174, bochs generic tests)', () => {
    const r: Map<string, string> = parseTap('1..3\nok raw 174 # SKIP\nok raw 003\nnot ok raw 150\n');
    expect(Object.fromEntries(r)).toEqual({ '174': 'skip', '003': 'pass', '150': 'fail' });
  });
  it('a SKIP with a reason, and parallel "# running" lines run together', () => {
    const r: Map<string, string> = parseTap('# running bochs 008# running bochs 001\n\nok bochs 008 # SKIP not suitable for this image format: bochs\n# running bochs 009\nok bochs 001\n');
    expect(Object.fromEntries(r)).toEqual({ '008': 'skip', '001': 'pass' });
  });
  it('verdicts of parallel tests run together are each read (raw 033 and 063 under -j 2)', () => {
    const r: Map<string, string> = parseTap('# running raw 033\nok raw 052\n# running raw 063\nok raw 033ok raw 063\nok raw 174 # SKIPnot ok raw 178\n');
    expect(Object.fromEntries(r)).toEqual({ '052': 'pass', '033': 'pass', '063': 'pass', '174': 'skip', '178': 'fail' });
  });
});
