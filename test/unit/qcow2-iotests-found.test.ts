/**
 * Bugs QEMU's iotests found in the qcow2 driver (test 036), each reproduced
 * here on an image made in memory and poked as the iotest pokes it.
 */
import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../../src/protocols/memory.js';
import '../../src/drivers.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { openImage } from '../../src/block/open.js';
import { check } from '../helpers/qcow2-check.js';

/** A 64 MiB qcow2 v3 whose header extensions are replaced by `exts` (magic, data) and whose feature words are set. */
async function image(features: { incompatible?: bigint; autoclear?: bigint }, exts: Array<[number, Uint8Array]> = []): Promise<MemoryStorage> {
  const st = new MemoryStorage();
  await createImage(st, await planCreate(st, { filename: 'a.qcow2', format: 'qcow2', size: 64 << 20 }));
  const b = st.get('a.qcow2')!.slice();
  const dv = new DataView(b.buffer);
  if (features.incompatible !== undefined) dv.setBigUint64(72, features.incompatible);
  if (features.autoclear !== undefined) dv.setBigUint64(88, features.autoclear);
  const headerLength = dv.getUint32(100);
  let p = headerLength;
  b.fill(0, p, 4096);
  for (const [magic, data] of exts) {
    dv.setUint32(p, magic);
    dv.setUint32(p + 4, data.length);
    b.set(data, p + 8);
    p += 8 + Math.ceil(data.length / 8) * 8;
  }
  st.put('a.qcow2', b);
  return st;
}

const FEATURE_TABLE = 0x6803f857;
const entry = (type: number, bit: number, name: string): Uint8Array => {
  const e = new Uint8Array(2 + name.length);
  e[0] = type;
  e[1] = bit;
  e.set(new TextEncoder().encode(name), 2);
  return e;
};

async function openError(st: MemoryStorage): Promise<string> {
  try {
    await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: true });
  } catch (e) {
    return (e as Error).message;
  }
  return 'opened';
}

describe('qcow2 bugs found by QEMU iotests', () => {
  it('feature table whose last entry is cut short still names the feature (036)', async () => {
    const st = await image({ incompatible: 1n << 63n }, [[FEATURE_TABLE, entry(0, 63, 'Test feature')]]);
    expect(await openError(st)).toBe('a.qcow2: Unsupported qcow2 feature(s): Test feature');
    const three = await image({ incompatible: 7n << 61n }, [[FEATURE_TABLE, entry(0, 61, 'Test feature')]]);
    expect(await openError(three)).toBe('a.qcow2: Unsupported qcow2 feature(s): Test feature, Unknown incompatible feature: c000000000000000');
  });

  it('check -r clears unknown autoclear feature bits, as a read-write open does in QEMU (036)', async () => {
    const st = await image({ autoclear: 1n << 63n });
    expect((await check(st, { leaks: false, errors: false })).corruptions).toBe(0);
    expect(new DataView(st.get('a.qcow2')!.buffer).getBigUint64(88)).toBe(1n << 63n);
    await check(st, { leaks: true, errors: true });
    expect(new DataView(st.get('a.qcow2')!.buffer).getBigUint64(88)).toBe(0n);
  });
});

describe('qcow2 header extensions repeated', () => {
  it('the last backing format extension counts, as QEMU reads them (114)', async () => {
    const enc = (t: string): Uint8Array => new TextEncoder().encode(t);
    const st = await image({}, [
      [0xe2792aca, enc('qcow2')],
      [0xe2792aca, enc('foo')],
    ]);
    const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: true, backing: false });
    expect(bs.backingFormat).toBe('foo');
  });
});
