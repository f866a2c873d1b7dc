// qemu-img's images (made by global-setup.ts) read through the http, idb,
// blob and memory storages: raw content SHA-256 must equal qemu-img convert's.
// OPFS runs the same checks in its worker (opfs.test.ts).
import { describe, inject, it } from 'vitest';
import '../../src/browser.js';
import { driverInfo } from '../../src/block/driver.js';
import { HttpStorage } from '../../src/protocols/http.js';
import { interopChecks } from './interop-checks.js';
import type { StorageFactory } from './conformance.js';
import { blobFactory, idbFactory, memoryFactory } from './factories.js';

const hasQcow2 = driverInfo('qcow2') !== undefined;

const httpImages: StorageFactory = {
  name: 'http',
  writable: false,
  make: async () => new HttpStorage(inject('storageServer').baseUrl),
};

for (const f of [httpImages, idbFactory, blobFactory, memoryFactory]) {
  describe(`${f.name}: images made by qemu-img`, () => {
    for (const c of interopChecks(f)) it.runIf(!c.needsQcow2 || hasQcow2)(c.name, () => c.run(inject('storageServer')));
  });
}
