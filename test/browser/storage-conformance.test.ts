// The storage conformance suite (conformance.ts) in the page, against every
// storage that works in a window: memory, idb, blob (read-only), http
// (read-only). OPFS runs the same suite inside a worker (opfs.test.ts).
import { describe, it } from 'vitest';
import '../../src/browser.js';
import { storageConformance } from './conformance.js';
import { blobFactory, httpFactory, idbFactory, memoryFactory } from './factories.js';

for (const f of [memoryFactory, idbFactory, blobFactory, httpFactory]) {
  describe(`${f.name} storage conformance`, () => {
    for (const c of storageConformance(f)) it(c.name, c.run);
  });
}
