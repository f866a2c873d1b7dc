/**
 * Prints one plain closing line, `vitest: N passed, N failed[, N skipped]`,
 * after vitest's own summary, so CI (and a person skimming a log) reads the
 * result of every project at once.
 */
import type { Reporter, TestModule, TestRunEndReason } from 'vitest/node';

export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<unknown>, reason: TestRunEndReason): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    for (const mod of testModules) {
      for (const test of mod.children.allTests()) {
        const state = test.result().state;
        if (state === 'passed') passed++;
        else if (state === 'failed') failed++;
        else skipped++;
      }
      if (mod.state() === 'failed' && [...mod.children.allTests()].length === 0) failed++;
    }
    // A run that failed outside any test (setup, no test files, unhandled errors) must not read as clean.
    failed += unhandledErrors.length;
    if (reason === 'failed' && failed === 0) failed = 1;
    process.stdout.write(`\nvitest: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
  }
}
