import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { defineConfig } from 'vitest/config';
import { playwright } from '@vitest/browser-playwright';
import { tabCommands } from './test/browser/tab-commands.js';

// Debian's Chromium, started the way this workplace's closed network needs
// (no background networking, no component updates).
const chromium = playwright({
  launchOptions: {
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--headless',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  },
});

// Every test's scratch folder (test/helpers/qemu.ts tmpDir) goes under one folder per run,
// removed when vitest's main process exits: workers are stopped without running their own exit
// hooks, which left hundreds of MiB per run in the temp directory.
if (!process.env.BLOCKTAB_TEST_TMP) {
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocktab-run-'));
  process.env.BLOCKTAB_TEST_TMP = runDir;
  process.once('exit', () => fs.rmSync(runDir, { recursive: true, force: true }));
}

// One config, several projects: Node unit tests, qemu-img differential tests,
// real-browser tests, and (as they land) app end-to-end tests.
export default defineConfig({
  test: {
    reporters: ['default', './test/summary-reporter.ts'],
    // Two test files at a time: most interop time is spent waiting on qemu-img,
    // qemu-io and CLI child processes, so two workers keep both cores busy
    // (vitest's default on a 2-core machine is one).
    maxWorkers: 2,
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          environment: 'node',
          // Generous: with two workers a heavy model test can share its core.
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'interop',
          include: ['test/interop/**/*.test.ts'],
          environment: 'node',
          globalSetup: ['test/interop/global-setup.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
      {
        test: {
          // The built app in Debian's Chromium, driven by Playwright from Node.
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          environment: 'node',
          testTimeout: 180_000,
          hookTimeout: 180_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: 'browser',
          include: ['test/browser/**/*.test.ts'],
          // Node side: makes interop images with qemu-img and serves them over HTTP (with Range) to the page.
          globalSetup: ['test/browser/global-setup.ts'],
          testTimeout: 60_000,
          browser: {
            enabled: true,
            headless: true,
            provider: chromium,
            instances: [{ browser: 'chromium' }],
            screenshotFailures: false,
            // More tabs next to the test page (two-tab locking, quota over CDP, tab closed mid-write).
            commands: tabCommands,
          },
        },
      },
    ],
  },
});
