/**
 * Node-only: where build/blocktab.wasm is and how to read it. Kept apart so
 * the browser bundle never sees node:*. The path is relative to this module
 * and is the same from src/wasm/*.ts (vitest) and dist/wasm/*.js (after tsc):
 * both are two levels below the repository root.
 */
import { readFile } from 'node:fs/promises';
import { WasmError } from './errors.js';

export const WASM_URL = new URL('../../build/blocktab.wasm', import.meta.url);

export async function readWasmBytes(): Promise<Uint8Array<ArrayBuffer>> {
  try {
    return await readFile(WASM_URL);
  } catch (e) {
    throw new WasmError('ENOENT', `blocktab.wasm: not found at ${WASM_URL.pathname} (run \`npm run build:asm\`)`, { cause: e });
  }
}
