#!/usr/bin/env node
/**
 * The bundled CLI's entry (dist/bin/blocktab.js, the package's bin, whose
 * first lines are a shell launcher: vite.cli.config.ts): turns on the compile
 * cache (compile-cache.ts) before anything else is loaded, then loads
 * main.ts's chunk and runs the command line. It imports nothing of
 * blocktab's statically, so every chunk of the engine comes through the cache.
 */
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { installCompileCache } from './compile-cache.js';
import type { Output } from './main.js';

const self = fileURLToPath(import.meta.url);
installCompileCache(path.dirname(self));
takeDeferredExtraCaCerts();

/**
 * The launcher (vite.cli.config.ts) kept NODE_EXTRA_CA_CERTS from Node's
 * start-up: put it back for whatever this process starts, and leave its path
 * where the https transport (src/protocols/http-node.ts, same symbol) adds
 * the certificates to its agent.
 */
function takeDeferredExtraCaCerts(): void {
  const file = process.env.BLOCKTAB_EXTRA_CA_CERTS;
  if (file === undefined) return;
  delete process.env.BLOCKTAB_EXTRA_CA_CERTS;
  if (process.env.NODE_EXTRA_CA_CERTS !== undefined) return; // a node started some other way loaded its own
  process.env.NODE_EXTRA_CA_CERTS = file;
  (globalThis as Record<symbol, unknown>)[Symbol.for('blocktab.deferredExtraCaCerts')] = file;
}

/** src/cli/main.ts's main(), for programs that import the bin (bench/lib.mjs). */
export async function main(argv: string[], out: Output): Promise<number> {
  return (await import('./main.js')).main(argv, out);
}

function isEntry(): boolean {
  try {
    const fs = createRequire(import.meta.url)('node:fs') as typeof import('node:fs');
    return process.argv[1] !== undefined && fs.realpathSync(process.argv[1]) === self;
  } catch {
    return false;
  }
}

if (isEntry()) {
  import('./main.js').then(
    (m) => m.runAsEntry(),
    (e: unknown) => {
      process.stderr.write(`blocktab: internal error: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
