/**
 * The DeflatePool's workers in a page: Web Workers (started from the engine's
 * own worker) running pako, one per core up to MAX_WORKERS. Where a nested
 * worker cannot start, its requests fail and compressed writes fall back to
 * the engine's thread (qcow2/compressed.ts), so nothing depends on it.
 */
import { createDeflatePool, type DeflatePool } from './deflate-pool.js';

const MAX_WORKERS = 4;

export function createBrowserDeflatePool(workers = Math.min(MAX_WORKERS, globalThis.navigator?.hardwareConcurrency ?? 2)): DeflatePool {
  return createDeflatePool((events) => {
    const w = new Worker(new URL('./deflate-worker-browser.ts', import.meta.url), { type: 'module' });
    w.onmessage = (ev: MessageEvent<{ id: number; outs?: Uint8Array[]; error?: string }>) => events.message(ev.data);
    w.onerror = (ev) => {
      ev.preventDefault();
      events.error(new Error(`deflate worker: ${ev.message || 'failed to start'}`));
    };
    return { post: (m, transfer) => w.postMessage(m, transfer), terminate: () => w.terminate() };
  }, Math.max(1, workers));
}
