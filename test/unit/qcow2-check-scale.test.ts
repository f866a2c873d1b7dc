/**
 * qcow2 check on images whose metadata spans many L2 tables and more
 * refcount blocks than check keeps cached: the COPIED findings gathered
 * during the counting pass come out in L1/L2 order with the stored
 * refcounts, the same as a repair reading the tables again; and counters
 * as narrow as the refcount width stay exact up to its maximum (the
 * expected messages are qemu-img 7.2's for the same images).
 */
import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../../src/protocols/memory.js';
import '../../src/drivers.js';
import { openImage, closeNode } from '../../src/block/open.js';
import { bdrvPwrite } from '../../src/block/io.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { seededBytes } from '../helpers/qemu.js';
import { check, guest } from '../helpers/qcow2-check.js';

const none = { leaks: false, errors: false };
const all = { leaks: true, errors: true };

async function make(size: number, options: string[], data?: Uint8Array): Promise<MemoryStorage> {
  const st = new MemoryStorage();
  await createImage(st, await planCreate(st, { filename: 'a.qcow2', format: 'qcow2', options, size }));
  if (data) {
    const bs = await openImage(st, 'a.qcow2', { format: 'qcow2' });
    await bdrvPwrite(bs, 0, data.length, data);
    await closeNode(bs);
  }
  return st;
}

/** The image's bytes, a DataView on them, and the host offsets of its active L2 entries in L1/L2 order. */
function layout(st: MemoryStorage): { bytes: Uint8Array; dv: DataView; entries: number[]; clusterSize: number; refcountBlock0: number } {
  const bytes = st.get('a.qcow2')!.slice();
  const dv = new DataView(bytes.buffer);
  const clusterSize = 2 ** dv.getUint32(20);
  const l1Size = dv.getUint32(36);
  const l1 = Number(dv.getBigUint64(40));
  const entries: number[] = [];
  for (let i = 0; i < l1Size; i++) {
    const l2 = Number(dv.getBigUint64(l1 + 8 * i) & 0x00fffffffffffe00n);
    if (!l2) continue;
    for (let j = 0; j < clusterSize / 8; j++) entries.push(l2 + 8 * j);
  }
  const refcountBlock0 = Number(dv.getBigUint64(Number(dv.getBigUint64(48))));
  return { bytes, dv, entries, clusterSize, refcountBlock0 };
}

describe('qcow2 check at scale', () => {
  it('COPIED errors across 128 L2 tables and 130 refcount blocks come out in L2 order, with the stored refcounts; -r all repairs them', async () => {
    // 512-byte clusters, 64-bit refcounts: 64 refcounts per block, so 8192 data clusters need 130 blocks.
    const size = 4 << 20;
    const data = seededBytes(size, 3);
    const st = await make(size, ['cluster_size=512', 'refcount_bits=64', 'preallocation=metadata'], data);
    const { bytes, dv, entries, clusterSize } = layout(st);
    expect(entries.length).toBe(8192);
    const table = Number(dv.getBigUint64(48));
    const refcountAddr = (offset: number): number => {
      const cluster = offset / clusterSize;
      return Number(dv.getBigUint64(table + 8 * Math.floor(cluster / 64))) + 8 * (cluster % 64);
    };
    const expected: string[] = [];
    const leaks: string[] = [];
    entries.forEach((at, n) => {
      const e = dv.getBigUint64(at);
      const host = Number(e & 0x00fffffffffffe00n);
      if (n % 97 === 5) {
        // COPIED cleared on a cluster with refcount 1.
        dv.setBigUint64(at, e & ~(1n << 63n));
        expected.push({ n, line: `ERROR OFLAG_COPIED data cluster: l2_entry=${host.toString(16)} refcount=1` } as never);
      } else if (n % 151 === 7) {
        // Refcount raised to 2 under a COPIED entry: a leak, and a COPIED error with refcount=2.
        dv.setBigUint64(refcountAddr(host), 2n);
        leaks.push({ cluster: host / clusterSize, line: `Leaked cluster ${host / clusterSize} refcount=2 reference=1` } as never);
        expected.push({ n, line: `ERROR OFLAG_COPIED data cluster: l2_entry=${(BigInt(host) | (1n << 63n)).toString(16)} refcount=2` } as never);
      }
    });
    st.put('a.qcow2', bytes);
    const lines = (xs: unknown[]) => (xs as { line: string }[]).map((x) => x.line);
    const leakLines = (leaks as { cluster: number; line: string }[]).sort((a, b) => a.cluster - b.cluster).map((x) => x.line);

    const r = await check(st, none);
    expect(r.messages).toEqual([...leakLines, ...lines(expected)]);
    expect({ corruptions: r.corruptions, leaks: r.leaks }).toEqual({ corruptions: expected.length, leaks: leaks.length });

    const fixed = await check(st, all);
    // Once the leaks are repaired (refcount 1 again) their COPIED flags are right; the cleared ones are repaired.
    expect({ leaksFixed: fixed.leaksFixed, corruptionsFixed: fixed.corruptionsFixed, corruptions: fixed.corruptions, leaks: fixed.leaks }).toEqual({
      leaksFixed: leaks.length,
      corruptionsFixed: expected.length - leaks.length,
      corruptions: 0,
      leaks: 0,
    });
    expect(fixed.messages.filter((m) => m.startsWith('Repairing OFLAG_COPIED'))).toEqual(
      lines(expected.filter((x) => !(x as { line: string }).line.endsWith('refcount=2'))).map((m) => m.replace(/^ERROR/, 'Repairing')),
    );
    expect(await check(st, none)).toMatchObject({ corruptions: 0, leaks: 0, checkErrors: 0, messages: [] });
    expect(Buffer.compare(await guest(st), data)).toBe(0);
  });

  it('8-bit refcounts: references past 255 are overflows, the count stays at 255 (as qemu-img)', async () => {
    const st = await make(32 << 20, ['refcount_bits=8'], seededBytes(65536, 9));
    const { bytes, dv, entries } = layout(st);
    const host = Number(dv.getBigUint64(entries[0]!) & 0x00fffffffffffe00n);
    // 299 more L2 entries (without COPIED) for the same host cluster: 300 references.
    for (let j = 1; j < 300; j++) dv.setBigUint64(entries[j]!, BigInt(host));
    st.put('a.qcow2', bytes);
    const r = await check(st, none);
    const overflow = [`ERROR: overflow cluster offset=0x${host.toString(16)}`, 'Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing'];
    expect(r.messages).toEqual([
      ...Array.from({ length: 45 }, () => overflow).flat(),
      `ERROR cluster ${host / 65536} refcount=1 reference=255`,
      ...Array.from({ length: 299 }, () => `ERROR OFLAG_COPIED data cluster: l2_entry=${host.toString(16)} refcount=1`),
    ]);
    expect({ corruptions: r.corruptions, leaks: r.leaks, allocated: r.allocatedClusters, fragmented: r.fragmentedClusters }).toEqual({ corruptions: 345, leaks: 0, allocated: 300, fragmented: 299 });
  });
});
