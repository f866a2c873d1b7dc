/**
 * The DeflatePool's workers in Node: worker_threads, each running Node's C
 * zlib with QEMU's settings (the same call src/node.ts installs for
 * in-thread compression, so the streams are byte-identical). One worker per
 * core up to MAX_WORKERS, started on the first request; a worker holds the
 * process open only while it has work (ref on send, unref when idle), so a
 * CLI command or a library user never has to close the pool to exit.
 *
 * The worker's code is a string evaluated by worker_threads, not a file
 * beside this module, so the bundled CLI (dist/bin/) carries it inside.
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { createDeflatePool, type DeflatePool } from './deflate-pool.js';

const MAX_WORKERS = 8;

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { deflateRawSync } = require('node:zlib');
parentPort.on('message', ({ id, inputs }) => {
  try {
    const outs = inputs.map((input) => {
      const out = deflateRawSync(input, { windowBits: 12, level: 6, memLevel: 9 });
      const copy = new Uint8Array(out.length);
      copy.set(out);
      return copy;
    });
    parentPort.postMessage({ id, outs }, outs.map((o) => o.buffer));
  } catch (e) {
    parentPort.postMessage({ id, error: String((e && e.message) || e) });
  }
});`;

export function createNodeDeflatePool(workers = Math.min(MAX_WORKERS, availableParallelism())): DeflatePool {
  return createDeflatePool((events) => {
    // execArgv: [] so a parent started with --input-type=module does not make this CommonJS source a module.
    // worker_threads loads on the first compressed write only: it costs start-up time every other command would pay.
    const { Worker } = createRequire(import.meta.url)('node:worker_threads') as typeof import('node:worker_threads');
    const w = new Worker(WORKER_SOURCE, { eval: true, execArgv: [] });
    w.on('message', events.message);
    w.on('error', events.error);
    return {
      post: (m, transfer) => w.postMessage(m, transfer),
      ref: () => w.ref(),
      unref: () => w.unref(),
      terminate: () => void w.terminate(),
    };
  }, workers);
}
