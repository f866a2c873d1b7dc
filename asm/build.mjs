#!/usr/bin/env node
// Compiles asm/index.ts into build/blocktab.wasm (and a .wat next to it for
// reading). Run by `npm run build:asm`; works from a fresh clone because it
// uses the assemblyscript compiler from node_modules through its JS API.
//
// Flags: SIMD is off by default in AssemblyScript 0.28, so it is enabled
// explicitly; memory is imported (src/wasm/ creates it once, at a fixed
// size, so views into it never go stale); `abort=` drops the abort import
// (release build, no asserts); the stub runtime is never used for allocation.
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import asc from 'assemblyscript/asc';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'build');
mkdirSync(out, { recursive: true });

const { error, stdout, stderr } = await asc.main(
  [
    join(root, 'asm', 'index.ts'),
    '--outFile', join(out, 'blocktab.wasm'),
    '--textFile', join(out, 'blocktab.wat'),
    '-O3',
    '--enable', 'simd',
    '--runtime', 'stub',
    '--importMemory',
    '--initialMemory', '1',
    '--use', 'abort=',
    '--noAssert',
  ],
  { stdout: process.stdout, stderr: process.stderr },
);
if (error) {
  console.error(`asm/build.mjs: ${error.message}`);
  process.exit(1);
}
void stdout;
void stderr;
console.log(`asm/build.mjs: wrote ${join('build', 'blocktab.wasm')}`);
