/**
 * Opening an image loads its format's driver and no other (the CLI's
 * start-up parses only what it opens): a qcow2 image created and opened
 * through the registry leaves vmdk, vhdx and the rest unloaded.
 */
import { expect, it } from 'vitest';
import '../../src/drivers.js';
import { MemoryStorage } from '../../src/protocols/memory.js';
import { closeNode, openImage } from '../../src/block/open.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { isDriverLoaded, listDrivers } from '../../src/block/driver.js';

it('creating and opening (probed) a qcow2 image loads qcow2 and no other format', async () => {
  const storage = new MemoryStorage();
  const formats = listDrivers('format').map((d) => d.name);
  expect(formats.filter(isDriverLoaded)).toEqual([]);
  await createImage(storage, await planCreate(storage, { filename: 'a.qcow2', format: 'qcow2', size: 1 << 20 }));
  const bs = await openImage(storage, 'a.qcow2', { readOnly: true });
  expect(bs.driver.name).toBe('qcow2');
  await closeNode(bs);
  expect(formats.filter(isDriverLoaded)).toEqual(['qcow2']);
});
