/**
 * qcow2 check and repair without QEMU: images made in memory, damaged by
 * poking bytes, checked and repaired on an opened node; and a power cut at
 * every write of a repair never loses guest data or adds corruption.
 */
import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../../src/protocols/memory.js';
import '../../src/drivers.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { faultyStorage } from '../../src/filters/fault.js';
import { seededBytes } from '../helpers/qemu.js';
import { check, guest } from '../helpers/qcow2-check.js';

const CS = 65536;
/** 1 MiB, metadata preallocated: 0 header, 1 refcount table, 2 refcount block, 3 L1, 4 L2, 5..20 data. */
async function makeImage(): Promise<{ st: MemoryStorage; data: Uint8Array }> {
  const st = new MemoryStorage();
  await createImage(st, await planCreate(st, { filename: 'a.qcow2', format: 'qcow2', options: ['preallocation=metadata'], size: 1 << 20 }));
  const bytes = st.get('a.qcow2')!.slice();
  const data = seededBytes(1 << 20, 7);
  bytes.set(data, 5 * CS);
  st.put('a.qcow2', bytes);
  return { st, data };
}

function poke16(st: MemoryStorage, offset: number, v: number): void {
  const b = st.get('a.qcow2')!.slice();
  b[offset] = v >> 8;
  b[offset + 1] = v & 0xff;
  st.put('a.qcow2', b);
}

function poke64(st: MemoryStorage, offset: number, hi: number, lo: number): void {
  const b = st.get('a.qcow2')!.slice();
  new DataView(b.buffer).setUint32(offset, hi);
  new DataView(b.buffer).setUint32(offset + 4, lo);
  st.put('a.qcow2', b);
}

const none = { leaks: false, errors: false };
const all = { leaks: true, errors: true };

describe('qcow2 check', () => {
  it('a fresh image is clean and fully allocated', async () => {
    const { st } = await makeImage();
    const r = await check(st, none);
    expect(r).toMatchObject({ corruptions: 0, leaks: 0, checkErrors: 0, totalClusters: 16, allocatedClusters: 16, fragmentedClusters: 0, imageEndOffset: 21 * CS });
  });

  it('a raised refcount is a leak plus an OFLAG_COPIED error; -r leaks fixes both', async () => {
    const { st, data } = await makeImage();
    poke16(st, 2 * CS + 2 * 9, 2);
    const r = await check(st, none);
    expect(r.messages).toEqual(['Leaked cluster 9 refcount=2 reference=1', 'ERROR OFLAG_COPIED data cluster: l2_entry=8000000000090000 refcount=2']);
    expect({ c: r.corruptions, l: r.leaks }).toEqual({ c: 1, l: 1 });
    const fixed = await check(st, { leaks: true, errors: false });
    expect(fixed.leaksFixed).toBe(1);
    expect(await check(st, none)).toMatchObject({ corruptions: 0, leaks: 0 });
    expect(Buffer.compare(await guest(st), data)).toBe(0);
  });

  it('COPIED flags: -r leaks repairs them once the leaks are fixed and nothing else is wrong (QEMU\'s rule)', async () => {
    const { st, data } = await makeImage();
    poke64(st, 4 * CS + 8 * 3, 0, 8 * CS);
    poke16(st, 2 * CS + 2 * 9, 2);
    const r = await check(st, { leaks: true, errors: false });
    expect({ leaks: r.leaksFixed, corruptions: r.corruptionsFixed, left: r.corruptions }).toEqual({ leaks: 1, corruptions: 1, left: 0 });
    expect(r.messages).toEqual([
      'Leaked cluster 9 refcount=2 reference=1',
      'Repairing cluster 9 refcount=2 reference=1',
      'Repairing OFLAG_COPIED data cluster: l2_entry=80000 refcount=1',
    ]);
    expect(await check(st, none)).toMatchObject({ corruptions: 0, leaks: 0 });
    expect(Buffer.compare(await guest(st), data)).toBe(0);
  });

  it('COPIED flags are left alone by -r leaks while a corruption remains', async () => {
    const { st } = await makeImage();
    poke64(st, 4 * CS + 8 * 3, 0, 8 * CS);
    poke16(st, 2 * CS + 2 * 9, 0);
    await expect(check(st, { leaks: true, errors: false })).rejects.toMatchObject({ message: 'Input/output error' });
    const ro = await check(st, none);
    expect(ro.messages).toContain('ERROR OFLAG_COPIED data cluster: l2_entry=80000 refcount=1');
  });

  it('a refcount of 0 on a used cluster needs the refcount structure rebuilt', async () => {
    const { st, data } = await makeImage();
    poke16(st, 2 * CS + 2 * 7, 0);
    const ro = await check(st, none);
    expect(ro.corruptions).toBe(2);
    await expect(check(st, { leaks: true, errors: false })).rejects.toMatchObject({ checkMessages: expect.arrayContaining(['ERROR need to rebuild refcount structures']) });
    const r = await check(st, all);
    expect(r.messages).toContain('Rebuilding refcount structure');
    expect(r.corruptions).toBe(0);
    expect(await check(st, none)).toMatchObject({ corruptions: 0, leaks: 0, checkErrors: 0 });
    expect(Buffer.compare(await guest(st), data)).toBe(0);
  });

  it('a power cut at any write of a rebuild leaves the data readable and adds no corruption', async () => {
    const { st: pristine, data } = await makeImage();
    poke16(pristine, 2 * CS + 2 * 7, 0);
    const before = (await check(pristine, none)).corruptions;
    // Count the writes a full repair makes.
    const probe = faultyStorage(new MemoryStorage(), {});
    (probe.inner as MemoryStorage).put('a.qcow2', pristine.get('a.qcow2')!);
    await check(probe, all);
    const writes = probe.counters.writes;
    expect(writes).toBeGreaterThan(2);
    for (let n = 0; n <= writes; n++) {
      const inner = new MemoryStorage();
      inner.put('a.qcow2', pristine.get('a.qcow2')!);
      await check(faultyStorage(inner, { dropWritesAfter: n }), all);
      expect(Buffer.compare(await guest(inner), data)).toBe(0);
      const r = await check(inner, none);
      expect(r.checkErrors).toBe(0);
      expect(r.corruptions).toBeLessThanOrEqual(before);
    }
  });

  it('an L2 entry outside the file is counted, not followed', async () => {
    const { st } = await makeImage();
    poke64(st, 4 * CS + 8 * 2, 0x80000000, 0x10000000);
    const r = await check(st, none);
    expect(r.messages[0]).toBe('ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x10000000 size 0x10000');
    expect(r.corruptions).toBe(2);
    expect(r.leaks).toBe(1);
  });
});
