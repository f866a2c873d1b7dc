/**
 * The driver registry's lazy drivers: a descriptor (name, kind, probe) is
 * all that is known until the first loadDriver, which loads the module once;
 * probing needs no module; the synchronous lookup refuses an unloaded driver
 * loudly (test/unit/driver-lazy-open.test.ts: opening loads one format).
 */
import { describe, expect, it } from 'vitest';
import '../../src/drivers.js';
import {
  driverInfo,
  findDriver,
  isDriverLoaded,
  listDrivers,
  loadDriver,
  probeFormat,
  registerLazyDriver,
  type BlockDriver,
} from '../../src/block/driver.js';

function fakeDriver(name: string, probe: (head: Uint8Array) => number): BlockDriver {
  return { name, kind: 'format', probe, open: async () => {}, preadv: async () => {} };
}

describe('lazily registered drivers', () => {
  it('load once, on the first loadDriver, however many ask at the same time', async () => {
    const probe = (head: Uint8Array) => (head[0] === 0xfe && head[1] === 0xed ? 100 : 0);
    let loads = 0;
    registerLazyDriver({
      name: 'test-lazy',
      kind: 'format',
      probe,
      load: async () => {
        loads++;
        return fakeDriver('test-lazy', probe);
      },
    });
    expect(driverInfo('test-lazy')).toMatchObject({ name: 'test-lazy', kind: 'format' });
    expect(listDrivers('format').map((d) => d.name)).toContain('test-lazy');
    expect(isDriverLoaded('test-lazy')).toBe(false);
    // Probing reads the descriptor: nothing is loaded.
    expect(probeFormat(new Uint8Array([0xfe, 0xed, 0, 0]), 'x.img')).toMatchObject({ driver: { name: 'test-lazy' }, guessed: false });
    expect(loads).toBe(0);
    expect(() => findDriver('test-lazy')).toThrow(/registered but not loaded yet/);
    const [a, b] = await Promise.all([loadDriver('test-lazy'), loadDriver('test-lazy')]);
    expect(a).toBe(b);
    expect(loads).toBe(1);
    expect(findDriver('test-lazy')).toBe(a);
    expect(await loadDriver('test-lazy')).toBe(a);
    expect(loads).toBe(1);
  });

  it('an unknown name is undefined, sync or not', async () => {
    expect(findDriver('no-such-driver')).toBeUndefined();
    expect(driverInfo('no-such-driver')).toBeUndefined();
    expect(await loadDriver('no-such-driver')).toBeUndefined();
  });

  it('a module whose driver does not match its descriptor (another probe) is refused', async () => {
    registerLazyDriver({ name: 'test-mismatch', kind: 'format', probe: () => 0, load: async () => fakeDriver('test-mismatch', () => 0) });
    await expect(loadDriver('test-mismatch')).rejects.toThrow(/does not match its registered descriptor/);
  });
});

describe('the formats', () => {
  it('every format registers a descriptor whose probe is its driver\'s', async () => {
    const formats = listDrivers('format').filter((d) => !d.name.startsWith('test-'));
    expect(formats.map((d) => d.name)).toEqual(expect.arrayContaining(['raw', 'qcow2', 'vmdk', 'vhdx', 'vdi', 'vpc', 'qed', 'qcow', 'parallels', 'dmg', 'cloop', 'bochs', 'luks']));
    for (const d of formats) expect((await loadDriver(d.name))!.probe, d.name).toBe(d.probe);
  });
});
