/**
 * Node's `fs` for the modules that run only under Node (the file protocol,
 * the CLI). Loaded through `require` rather than `import ... from 'node:fs'`:
 * the ESM wrapper Node builds for a built-in reads every export, and fs's
 * lazy ReadStream/WriteStream getters then load the whole streams stack,
 * about 30 ms of every CLI start-up that never opens a stream.
 */
import { createRequire } from 'node:module';

export const fs = createRequire(import.meta.url)('node:fs') as typeof import('node:fs');
