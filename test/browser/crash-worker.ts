/**
 * An engine worker for the crash tests: the normal worker API over an Engine
 * whose OPFS handles count storage writes (write and truncate calls). Once
 * armed with `arm(n)`, the worker lets `n` more writes through; the next one
 * posts `{ crashAt: n }` to its page and spins until the page kills it
 * (Worker.terminate() or closing the tab), so the kill point is exact and
 * repeats: nothing reaches storage after the n-th write.
 */
import * as Comlink from 'comlink';
import '../../src/browser.js';
import { Engine } from '../../src/engine/engine.js';
import { OpfsStorage, type SyncAccessHandle } from '../../src/protocols/opfs.js';
import { MemoryStorage } from '../../src/protocols/memory.js';
import { createWorkerApi } from '../../src/worker/api.js';

let writes = 0;
let killAfter = Infinity;

/** Called before each storage write: past the armed count, tell the page and wait to be killed. */
function beforeWrite(): void {
  if (writes >= killAfter) {
    postMessage({ crashAt: writes });
    const until = Date.now() + 30_000;
    while (Date.now() < until) {
      // Spin: the page terminates this worker now; a worker still alive after 30 s fails the case.
    }
    throw new Error(`crash worker: not killed 30 s after write ${writes}`);
  }
  writes++;
}

const wrapHandle = (h: SyncAccessHandle): SyncAccessHandle => ({
  read: (b, o) => h.read(b, o),
  write: (b, o) => {
    beforeWrite();
    return h.write(b, o);
  },
  truncate: (n) => {
    beforeWrite();
    h.truncate(n);
  },
  getSize: () => h.getSize(),
  flush: () => h.flush(),
  close: () => h.close(),
});

const engine = new Engine({ storages: { opfs: new OpfsStorage(undefined, { wrapHandle }), memory: new MemoryStorage() } });

const api = {
  ...createWorkerApi(engine),
  /** Counts writes from now; the (n+1)-th kills the worker (Infinity: only count). */
  arm(n: number): void {
    writes = 0;
    killAfter = n;
  },
  /** Storage writes since the last arm(). */
  writes: (): number => writes,
};

export type CrashWorkerApi = typeof api;
Comlink.expose(api);
