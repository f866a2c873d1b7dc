/**
 * The format conformance suite (test/helpers/format-conformance.ts) for every
 * registered format driver that can create and write images, on memory
 * storage. Drivers come from the registry: a new writable format is tested
 * here without touching this file.
 */
import { describe, expect, it } from 'vitest';
import '../../src/drivers.js';
import { MemoryStorage } from '../../src/protocols/memory.js';
import { formatConformance, writableFormatDrivers } from '../helpers/format-conformance.js';

const drivers = await writableFormatDrivers();

it('the registry offers the writable formats this suite must cover (qcow2 and raw at least)', () => {
  expect(drivers.map((d) => d.name)).toEqual(expect.arrayContaining(['qcow2', 'raw']));
});

for (const drv of drivers) {
  describe(`format conformance: ${drv.name} on memory storage`, () => {
    const storage = new MemoryStorage();
    for (const c of formatConformance(drv.name, { storage: () => storage, filename: (n) => `${n}.${drv.name}` })) {
      it(c.name, c.run);
    }
  });
}
