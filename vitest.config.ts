import { defineConfig } from 'vitest/config';

// One config, several projects: Node unit tests, qemu-img differential tests,
// and (as they land) real-browser tests and app end-to-end tests.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          environment: 'node',
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
    ],
  },
});
