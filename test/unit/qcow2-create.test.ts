/**
 * qcow2/raw creation without QEMU: option parsing (qemu_strtosz, -o strings),
 * QEMU's option checks, and images made in memory that open, read as zeros
 * and check clean with our own check.
 */
import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../../src/protocols/memory.js';
import '../../src/drivers.js';
import { openImage, closeNode } from '../../src/block/open.js';
import { bdrvPread } from '../../src/block/io.js';
import { BlockError } from '../../src/block/errors.js';
import { parseHeader } from '../../src/formats/qcow2/header.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { checkImage } from '../../src/formats/qcow2/check.js';
import { createQcow2, validateQcow2CreateOptions } from '../../src/formats/qcow2/create.js';
import { createOptionList, isHelpOption, loadFormat, optionsHelp, optNumber, parseOptions, printOptions, qemuStrtosz } from '../../src/img/options.js';

// Format drivers load on first use; the option tables below are read synchronously.
await loadFormat('qcow2');

describe('qemu_strtosz', () => {
  it.each([
    ['0', 0n],
    ['1', 1n],
    ['1b', 1n],
    ['1B', 1n],
    ['1k', 1024n],
    ['1.5k', 1536n],
    ['1M', 1048576n],
    ['2G', 2n ** 31n],
    ['1T', 2n ** 40n],
    ['1P', 2n ** 50n],
    ['1E', 2n ** 60n],
    ['0x10', 16n],
    // iotest 049: a fraction without a unit when it is zero; scaled fractions round halves up.
    ['1024.0', 1024n],
    ['1024.0b', 1024n],
    ['1.k', 1024n],
    ['0.5k', 512n],
    ['1.00048828125k', 1025n],
    ['0.0004k', 0n],
  ])('%s = %s', (text, want) => {
    expect(qemuStrtosz(text)).toBe(want);
  });
  it.each(['1.5', '1kk', '-1', 'abc', '', '1.5b', '0x1.8k', '1 k', '1.5e3k', '1k '])('rejects %j', (text) => {
    expect(qemuStrtosz(text)).toBeUndefined();
  });
});

describe('-o option strings', () => {
  const list = createOptionList('qcow2');
  it('parses, lets later settings win and prints in table order with defaults', () => {
    const v = parseOptions(list, ['cluster_size=64k,lazy_refcounts=yes', 'cluster_size=4k']);
    v.set('size', '1048576');
    expect(printOptions(list, v)).toBe('cluster_size=4096 extended_l2=off compression_type=zlib size=1048576 lazy_refcounts=yes refcount_bits=16');
  });
  it('keeps ",," as a literal comma', () => {
    const v = parseOptions(list, ['backing_file=a,,b.qcow2,backing_fmt=qcow2']);
    expect(v.get('backing_file')).toBe('a,b.qcow2');
    expect(v.get('backing_fmt')).toBe('qcow2');
  });
  it("refuses unknown names and bad values with QEMU's messages", () => {
    expect(() => parseOptions(list, ['foo=bar'])).toThrow("Invalid parameter 'foo'");
    expect(() => parseOptions(list, ['lazy_refcounts=maybe'])).toThrow("Parameter 'lazy_refcounts' expects 'on' or 'off'");
    expect(() => parseOptions(list, ['refcount_bits=08'])).toThrow("Parameter 'refcount_bits' expects a number");
    expect(() => parseOptions(list, ['size=abc'])).toThrow("Parameter 'size' expects a non-negative number below 2^64");
  });
  it("reads a negative number as strtoull does, modulo 2^64 (iotest 112: refcount_bits=-1 is refused as too wide, after the Formatting line)", () => {
    const bits = (t: string) => optNumber(parseOptions(list, [`refcount_bits=${t}`]), 'refcount_bits');
    expect(parseOptions(list, ['refcount_bits=-1']).get('refcount_bits')).toBe('-1');
    expect(bits('-1')).toBe(2 ** 64);
    expect(bits('-0')).toBe(0);
    expect(bits('+16')).toBe(16);
    expect(bits('020')).toBe(16);
    expect(bits('0x10')).toBe(16);
  });
  it('recognises help and lists options sorted', () => {
    expect(isHelpOption('help')).toBe(true);
    expect(isHelpOption('cluster_size=4k,?')).toBe(true);
    expect(isHelpOption('backing_file=help')).toBe(false);
    const h = optionsHelp(list).split('\n');
    expect(h[0]).toBe('Supported options:');
    expect(h[1]).toBe('  backing_file=<str>     - File name of a base image');
    expect(h).toContain('  size=<size>            - Virtual disk size');
  });
});

describe('qcow2 create option checks', () => {
  it.each([
    [{ clusterSize: 3000 }, 'Cluster size must be a power of two between 512 and 2048k'],
    [{ clusterSize: 4 * 1024 * 1024 }, 'Cluster size must be a power of two between 512 and 2048k'],
    [{ refcountBits: 3 }, 'Refcount width must be a power of two and may not exceed 64 bits'],
    [{ refcountBits: 128 }, 'Refcount width must be a power of two and may not exceed 64 bits'],
    [{ version: 2, lazyRefcounts: true }, 'Lazy refcounts only supported with compatibility level 1.1 and above'],
    [{ extendedL2: true, clusterSize: 8192 }, 'Extended L2 entries are only supported with cluster sizes of at least 16384 bytes'],
    [{ dataFileRaw: true }, 'data-file-raw requires data-file'],
    [{ version: 2, compressionType: 'zstd' }, 'Non-zlib compression type is only supported with compatibility level 1.1'],
    [{ backingFormat: 'qcow2' }, 'Backing format cannot be used without backing file'],
    [{ version: 2, refcountBits: 8 }, 'Different refcount widths than 16 bits require compatibility level 1.1'],
    [{ backingFile: 'b', preallocation: 'metadata' }, 'Backing file and preallocation can only be used at the same time if extended_l2 is on'],
  ] as const)('%j', (o, msg) => {
    expect(() => validateQcow2CreateOptions({ size: 1 << 20, ...o })).toThrow(msg);
  });
});

async function createInMemory(opts: string[], size: number, format = 'qcow2') {
  const st = new MemoryStorage();
  const plan = await planCreate(st, { filename: 'x.img', format, options: opts, size });
  await createImage(st, plan);
  return { st, plan };
}

describe('images created in memory', () => {
  it.each([
    [[], 1 << 20],
    [['compat=0.10'], 3 << 20],
    [['preallocation=metadata'], 5 << 20],
    [['preallocation=metadata,cluster_size=512'], 1 << 20],
    [['preallocation=full,cluster_size=4k'], 1 << 20],
    [['refcount_bits=1,cluster_size=512,preallocation=metadata'], 1 << 20],
    [['refcount_bits=64,cluster_size=512,preallocation=metadata'], 4 << 20],
    [['extended_l2=on,lazy_refcounts=on,compression_type=zstd'], 7 << 20],
    [[], 0],
  ])('%j, %d bytes: opens, reads zeros, checks clean', async (opts, size) => {
    const { st } = await createInMemory(opts, size);
    const bs = await openImage(st, 'x.img', { format: 'qcow2', readOnly: true });
    try {
      expect(bs.totalBytes).toBe(size);
      const buf = new Uint8Array(size).fill(0xaa);
      await bdrvPread(bs, 0, size, buf);
      expect(buf.every((b) => b === 0)).toBe(true);
      const messages: string[] = [];
      const r = await checkImage(bs, { fix: { leaks: false, errors: false }, report: (m) => messages.push(m) });
      expect(messages).toEqual([]);
      expect({ c: r.corruptions, l: r.leaks, e: r.checkErrors }).toEqual({ c: 0, l: 0, e: 0 });
      if (opts.some((o) => o.includes('preallocation'))) expect(r.allocatedClusters).toBe(r.totalClusters);
    } finally {
      await closeNode(bs);
    }
  });

  it('writes the header last-valid: every option lands in the header', async () => {
    const { st } = await createInMemory(['extended_l2=on,lazy_refcounts=on,compression_type=zstd,refcount_bits=4,cluster_size=32k'], 1 << 20);
    const h = parseHeader(st.get('x.img')!, 'x.img');
    expect(h.version).toBe(3);
    expect(h.clusterBits).toBe(15);
    expect(h.refcountOrder).toBe(2);
    expect(h.compressionType).toBe(1);
    expect(h.incompatibleFeatures).toBe(0x18n);
    expect(h.compatibleFeatures).toBe(1n);
    expect(h.refcountTableOffset).toBe(32768);
  });

  it('raw: size rounded up to 512, full preallocation writes zeros', async () => {
    const { st, plan } = await createInMemory(['preallocation=full'], 1000, 'raw');
    expect(plan.line).toBe("Formatting 'x.img', fmt=raw size=1000 preallocation=full");
    expect(st.get('x.img')!.length).toBe(1024);
  });

  it('refuses a backing file for raw and a missing size', async () => {
    const st = new MemoryStorage();
    await expect(planCreate(st, { filename: 'r', format: 'raw', backingFile: 'b', backingFormat: 'raw', size: 1 })).rejects.toThrow(
      "r: Backing file not supported for file format 'raw'",
    );
    await expect(planCreate(st, { filename: 'q', format: 'qcow2' })).rejects.toThrow('q: Image creation needs a size parameter');
    await expect(planCreate(st, { filename: 'q', format: 'nosuchformat', size: 1 })).rejects.toThrow("Unknown file format 'nosuchformat'");
  });

  it('takes the size from the backing image', async () => {
    const st = new MemoryStorage();
    await createImage(st, await planCreate(st, { filename: 'base.qcow2', format: 'qcow2', size: 3 << 20 }));
    const plan = await planCreate(st, { filename: 'top.qcow2', format: 'qcow2', backingFile: 'base.qcow2', backingFormat: 'qcow2' });
    expect(plan.size).toBe(3 << 20);
    expect(plan.line).toContain('size=3145728 backing_file=base.qcow2 backing_fmt=qcow2');
    await createImage(st, plan);
    const bs = await openImage(st, 'top.qcow2', { readOnly: true });
    expect(bs.backing?.node.filename).toBe('base.qcow2');
    await closeNode(bs);
  });

  it('the header is written last: a failure before it leaves no valid image', async () => {
    const st = new MemoryStorage();
    await st.createFile('y');
    const file = await st.openProtocol('y', { readOnly: false });
    await expect(createQcow2(file, { size: 1 << 20, clusterSize: 1000 })).rejects.toBeInstanceOf(BlockError);
    expect(st.get('y')!.length).toBe(0);
    await closeNode(file);
  });
});
