// The Engine's QMP command table in Node: argument checking with QEMU's
// messages, error classes, blockdev-add/-del ownership rules, query reply
// shapes, block_resize, dirty bitmaps and events. Images come from MemoryStorage
// and from qemu-img (FileStorage); contents are checked against qemu-img's.
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BlockError, MemoryStorage } from '../../src/node.js';
import { FileStorage } from '../../src/protocols/file.js';
import { Engine, QmpError, type BlockDeviceInfo, type QmpEvent } from '../../src/engine/index.js';
import { driverInfo } from '../../src/block/driver.js';
import { qemuImg, qemuIo, seededBytes, tmpDir } from '../helpers/qemu.js';

function engineWith(files: Record<string, Uint8Array> = {}): { engine: Engine; mem: MemoryStorage } {
  const mem = new MemoryStorage();
  for (const [n, b] of Object.entries(files)) mem.put(n, b);
  return { engine: new Engine({ storages: { memory: mem, file: new FileStorage() } }), mem };
}

/** Runs `p` and returns the QmpError it rejects with (fails the test otherwise). */
async function qmpFailure(p: Promise<unknown>): Promise<QmpError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e, 'expected the command to fail').toBeInstanceOf(QmpError);
  expect(e).toBeInstanceOf(BlockError);
  return e as QmpError;
}

const hasQcow2 = driverInfo('qcow2') !== undefined;

describe('execute: errors keep QMP class, description and BlockError code', () => {
  it('an unknown command is CommandNotFound', async () => {
    const { engine } = engineWith();
    const e = await qmpFailure(engine.execute('no-such-command'));
    expect(e.toQmp()).toEqual({ class: 'CommandNotFound', desc: 'The command no-such-command has not been found' });
  });

  it('bad arguments are GenericError with the QAPI visitor messages', async () => {
    const { engine } = engineWith();
    const cases: [string, unknown, string][] = [
      ['blockdev-del', {}, "Parameter 'node-name' is missing"],
      ['blockdev-del', { 'node-name': 5 }, "Invalid parameter type for 'node-name', expected: string"],
      ['query-named-block-nodes', { flat: 'yes' }, "Invalid parameter type for 'flat', expected: boolean"],
      ['query-block', { extra: 1 }, "Parameter 'extra' is unexpected"],
      ['block_resize', { 'node-name': 'x', size: 1.5 }, "Invalid parameter type for 'size', expected: integer"],
      ['blockdev-add', { driver: 'raw', 'node-name': 'n', file: { driver: 'memory' } }, "Parameter 'file.filename' is missing"],
      ['blockdev-add', { driver: 'nosuch', 'node-name': 'n' }, "Parameter 'driver' does not accept value 'nosuch'"],
      ['blockdev-add', { driver: 'raw', 'node-name': 'n', file: 'f', 'detect-zeroes': 'always' }, "Parameter 'detect-zeroes' does not accept value 'always'"],
      ['blockdev-add', { driver: 'raw', 'node-name': 'n', file: 'f', bogus: true }, "Parameter 'bogus' is unexpected"],
      ['blockdev-add', { driver: 'raw', file: { driver: 'memory', filename: 'a' } }, "'node-name' must be specified for the root node"],
      ['blockdev-add', { driver: 'raw', 'node-name': '1abc', file: { driver: 'memory', filename: 'a' } }, "Invalid node-name: '1abc'"],
      ['blockdev-add', { driver: 'raw', 'node-name': 'n', file: { driver: 'memory', filename: 'a' }, 'detect-zeroes': 'unmap' },
        'setting detect-zeroes to unmap is not allowed without setting discard operation to unmap'],
      ['block-dirty-bitmap-merge', { node: 'n', target: 't', bitmaps: [3] }, "Invalid parameter type for 'bitmaps[0]', expected: object"],
      ['blockdev-del', 'not-an-object', "QMP input member 'arguments' must be an object"],
    ];
    for (const [cmd, args, desc] of cases) {
      const e = await qmpFailure(engine.execute(cmd, args));
      expect(e.toQmp(), `${cmd} ${JSON.stringify(args)}`).toEqual({ class: 'GenericError', desc });
      expect(e.code).toBe('EINVAL');
    }
  });

  it('a missing node is GenericError with QEMU 7.2\'s words, code ENOENT', async () => {
    const { engine } = engineWith();
    const cases: [string, unknown, string][] = [
      ['blockdev-del', { 'node-name': 'ghost' }, "Failed to find node with node-name='ghost'"],
      ['block_resize', { 'node-name': 'ghost', size: 1024 }, "Cannot find device='' nor node-name='ghost'"],
      ['block-dirty-bitmap-add', { node: 'ghost', name: 'b' }, "Cannot find device='ghost' nor node-name='ghost'"],
      ['block-dirty-bitmap-clear', { node: 'ghost', name: 'b' }, "Node 'ghost' not found"],
      ['blockdev-add', { driver: 'raw', 'node-name': 'n', file: 'ghost' }, "Cannot find device='ghost' nor node-name='ghost'"],
    ];
    for (const [cmd, args, desc] of cases) {
      const e = await qmpFailure(engine.execute(cmd, args));
      expect(e.toQmp(), cmd).toEqual({ class: 'GenericError', desc });
      expect(e.code).toBe('ENOENT');
    }
  });

  it("a driver's BlockError becomes a GenericError with the driver's code and message", async () => {
    const { engine } = engineWith();
    const dir = tmpDir();
    const missing = path.join(dir, 'missing.img');
    const e = await qmpFailure(engine.execute('blockdev-add', { driver: 'raw', 'node-name': 'd', file: { driver: 'file', filename: missing } }));
    expect(e.errorClass).toBe('GenericError');
    expect(e.code).toBe('ENOENT');
    expect(e.desc).toContain('missing.img');
    // Nothing was left behind in the graph.
    expect(await engine.execute('query-named-block-nodes')).toEqual([]);
  });

  it('commands that return nothing reply {}; query-commands lists the table, registerCommand extends it', async () => {
    const { engine } = engineWith({ 'a.img': seededBytes(4096, 1) });
    expect(await engine.execute('blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'memory', filename: 'a.img' } })).toEqual({});
    engine.registerCommand('x-echo', { args: { value: 'str' }, run: (_e, a) => ({ echoed: a.value }) });
    expect(await engine.execute('x-echo', { value: 'hi' })).toEqual({ echoed: 'hi' });
    const names = ((await engine.execute('query-commands')) as { name: string }[]).map((c) => c.name);
    for (const n of ['blockdev-add', 'blockdev-del', 'query-named-block-nodes', 'query-block', 'query-blockstats', 'block_resize',
      'block-dirty-bitmap-add', 'block-dirty-bitmap-remove', 'block-dirty-bitmap-clear', 'block-dirty-bitmap-merge',
      'block-dirty-bitmap-enable', 'block-dirty-bitmap-disable', 'x-echo']) {
      expect(names).toContain(n);
    }
  });
});

describe('blockdev-add / blockdev-del', () => {
  it('adds raw over memory; query-named-block-nodes lists the protocol and the format node in QEMU shape', async () => {
    const bytes = seededBytes(100_000, 3);
    const { engine } = engineWith({ 'disk.img': bytes });
    await engine.execute('blockdev-add', {
      driver: 'raw',
      'node-name': 'fmt0',
      'read-only': true,
      cache: { direct: true },
      file: { driver: 'memory', filename: 'disk.img', 'node-name': 'proto0' },
    });
    expect(await engine.read('fmt0', 0, bytes.length)).toEqual(bytes);
    const nodes = (await engine.execute('query-named-block-nodes')) as BlockDeviceInfo[];
    // QEMU lists a parent before its children (checked against QEMU in test/interop/qmp-monitor.test.ts).
    expect(nodes.map((n) => n['node-name'])).toEqual(['fmt0', 'proto0']);
    const fmt = nodes[0]!;
    expect(Object.keys(fmt)).toEqual([
      'file', 'node-name', 'ro', 'drv', 'backing_file_depth', 'encrypted', 'detect_zeroes',
      'bps', 'bps_rd', 'bps_wr', 'iops', 'iops_rd', 'iops_wr', 'image', 'cache', 'write_threshold',
    ]);
    expect(fmt).toMatchObject({ file: 'disk.img', 'node-name': 'fmt0', ro: true, drv: 'raw', backing_file_depth: 0, detect_zeroes: 'off', encrypted: false });
    expect(fmt.image).toMatchObject({ filename: 'disk.img', format: 'raw', 'virtual-size': bytes.length });
    expect(Object.values(fmt.image)).not.toContain(undefined);
    expect(nodes[1]).toMatchObject({ drv: 'memory', ro: true, 'node-name': 'proto0' });
  });

  it('a node-name reference as file: the child is in use while the parent lives, and survives its deletion', async () => {
    const bytes = seededBytes(8192, 4);
    const { engine } = engineWith({ 'd.img': bytes });
    await engine.execute('blockdev-add', { driver: 'memory', 'node-name': 'proto', filename: 'd.img' });
    await engine.execute('blockdev-add', { driver: 'raw', 'node-name': 'top', file: 'proto', offset: 4096 });
    expect(await engine.read('top', 0, 4096)).toEqual(bytes.subarray(4096));
    const busy = await qmpFailure(engine.execute('blockdev-del', { 'node-name': 'proto' }));
    expect(busy.toQmp()).toEqual({ class: 'GenericError', desc: 'Block device proto is in use' });
    expect(busy.code).toBe('EBUSY');
    await engine.execute('blockdev-del', { 'node-name': 'top' });
    // The monitor's reference kept the protocol node open.
    expect(await engine.read('proto', 0, 16)).toEqual(bytes.subarray(0, 16));
    await engine.execute('blockdev-del', { 'node-name': 'proto' });
    expect(await engine.execute('query-named-block-nodes')).toEqual([]);
  });

  it('an implicitly created child is not owned by the monitor and goes with its parent', async () => {
    const { engine } = engineWith({ 'd.img': seededBytes(4096, 5) });
    await engine.execute('blockdev-add', { driver: 'raw', 'node-name': 'top', file: { driver: 'memory', filename: 'd.img', 'node-name': 'kid' } });
    const e = await qmpFailure(engine.execute('blockdev-del', { 'node-name': 'kid' }));
    expect(e.desc).toBe('Node kid is not owned by the monitor');
    const dup = await qmpFailure(engine.execute('blockdev-add', { driver: 'memory', 'node-name': 'kid', filename: 'd.img' }));
    expect(dup.desc).toBe("Duplicate nodes with node-name='kid'");
    await engine.execute('blockdev-del', { 'node-name': 'top' });
    expect(await engine.execute('query-named-block-nodes')).toEqual([]);
  });

  it('a node used by a device is "in use"; closing the device frees it', async () => {
    const { engine } = engineWith({ 'd.img': seededBytes(4096, 6) });
    const name = await engine.open('memory', 'd.img', { format: 'raw', nodeName: 'n0', device: 'disk0' });
    expect(name).toBe('n0');
    const e = await qmpFailure(engine.execute('blockdev-del', { 'node-name': 'n0' }));
    expect(e.desc).toBe('Node n0 is in use');
    await engine.close('disk0');
    expect(await engine.execute('query-named-block-nodes')).toEqual([]);
  });

  it('a read-write format node over a read-only referenced file is refused', async () => {
    const { engine } = engineWith({ 'd.img': seededBytes(4096, 7) });
    await engine.execute('blockdev-add', { driver: 'memory', 'node-name': 'ro', filename: 'd.img', 'read-only': true });
    const e = await qmpFailure(engine.execute('blockdev-add', { driver: 'raw', 'node-name': 'rw', file: 'ro' }));
    expect(e.desc).toBe('Block node is read-only');
    // auto-read-only is not needed for the read-only case; the node stays usable.
    await engine.execute('blockdev-add', { driver: 'raw', 'node-name': 'r', file: 'ro', 'read-only': true });
    expect((await engine.read('r', 0, 4)).length).toBe(4);
  });

  it.runIf(hasQcow2)('qcow2 with a backing chain from qemu-img: the chain opens from the header, contents match qemu-img', async () => {
    const dir = tmpDir();
    const base = path.join(dir, 'base.qcow2');
    const top = path.join(dir, 'top.qcow2');
    qemuImg(['create', '-f', 'qcow2', base, '1M']);
    qemuIo(base, ['write -P 0x41 0 512k'], 'qcow2');
    qemuImg(['create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', top]);
    qemuIo(top, ['write -P 0x42 64k 64k'], 'qcow2');
    qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', top, path.join(dir, 'expect.raw')]);
    const expected = new Uint8Array(fs.readFileSync(path.join(dir, 'expect.raw')));

    const { engine } = engineWith();
    await engine.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'top', 'read-only': true, file: { driver: 'file', filename: top } });
    // Buffer.equals: vitest's deep equality over 1 MiB takes seconds.
    const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
    expect(same(await engine.read('top', 0, expected.length), expected)).toBe(true);

    const nodes = (await engine.execute('query-named-block-nodes')) as BlockDeviceInfo[];
    const t = nodes.find((n) => n['node-name'] === 'top')!;
    expect(t.drv).toBe('qcow2');
    expect(t.backing_file).toBe(base);
    expect(t.backing_file_depth).toBe(1);
    expect(t.image['backing-filename']).toBe('base.qcow2');
    expect(t.image['backing-image']).toMatchObject({ filename: base, format: 'qcow2', 'virtual-size': 1024 * 1024 });
    // Four nodes: top's file, top, base's file, base — all named (auto names for implicit ones).
    expect(nodes).toHaveLength(4);
    const flat = (await engine.execute('query-named-block-nodes', { flat: true })) as BlockDeviceInfo[];
    const tf = flat.find((n) => n['node-name'] === 'top')!;
    expect(tf.image['backing-image']).toBeUndefined();
    // QEMU 7.2 counts the depth while nesting, so flat output says 0.
    expect(tf.backing_file_depth).toBe(0);

    // backing: null opens no chain; the unallocated parts then read as zeros.
    await engine.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'alone', 'read-only': true, backing: null, file: { driver: 'file', filename: top } });
    const alone = await engine.read('alone', 0, expected.length);
    expect(same(alone.subarray(64 * 1024, 128 * 1024), expected.subarray(64 * 1024, 128 * 1024))).toBe(true);
    expect(alone.subarray(0, 1024).every((b) => b === 0)).toBe(true);
    expect(expected[0]).toBe(0x41);

    // backing: a node-name
    await engine.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'b', 'read-only': true, backing: null, file: { driver: 'file', filename: base } });
    await engine.execute('blockdev-add', { driver: 'qcow2', 'node-name': 't2', 'read-only': true, backing: 'b', file: { driver: 'file', filename: top } });
    expect(same(await engine.read('t2', 0, expected.length), expected)).toBe(true);
    expect((await qmpFailure(engine.execute('blockdev-del', { 'node-name': 'b' }))).desc).toBe('Block device b is in use');
    await engine.dispose();
  }, 30_000);
});

describe('block_resize, dirty bitmaps, query-block, query-blockstats, events', () => {
  it('block_resize grows a raw node; the new size shows in queries and reads as zeros', async () => {
    const bytes = seededBytes(4096, 8);
    const { engine, mem } = engineWith({ 'r.img': bytes });
    await engine.execute('blockdev-add', { driver: 'raw', 'node-name': 'r', file: { driver: 'memory', filename: 'r.img' } });
    await engine.execute('block_resize', { 'node-name': 'r', size: 10_000 });
    expect(engine.size('r')).toBe(10_000);
    const nodes = (await engine.execute('query-named-block-nodes')) as BlockDeviceInfo[];
    expect(nodes.find((n) => n['node-name'] === 'r')!.image['virtual-size']).toBe(10_000);
    expect(mem.get('r.img')!.length).toBe(10_000);
    const tail = await engine.read('r', 4096, 10_000 - 4096);
    expect(tail.every((b) => b === 0)).toBe(true);
    expect((await qmpFailure(engine.execute('block_resize', { 'node-name': 'r', size: -1 }))).desc).toBe("Parameter 'size' expects a >0 size");
  });

  it('block_resize of a read-only node is refused', async () => {
    const { engine } = engineWith({ 'r.img': seededBytes(512, 9) });
    await engine.execute('blockdev-add', { driver: 'raw', 'node-name': 'r', 'read-only': true, file: { driver: 'memory', filename: 'r.img' } });
    const e = await qmpFailure(engine.execute('block_resize', { 'node-name': 'r', size: 1024 }));
    expect(e.toQmp()).toEqual({ class: 'GenericError', desc: 'Image is read-only' });
    expect(engine.size('r')).toBe(512);
  });

  it('dirty bitmaps: add, record writes, disable, merge, clear, remove, with QEMU messages on misuse', async () => {
    const { engine } = engineWith({ 'd.img': new Uint8Array(1 << 20) });
    await engine.execute('blockdev-add', { driver: 'raw', 'node-name': 'd', file: { driver: 'memory', filename: 'd.img' } });
    await engine.execute('block-dirty-bitmap-add', { node: 'd', name: 'b0', granularity: 65536 });
    await engine.execute('block-dirty-bitmap-add', { node: 'd', name: 'b1', granularity: 65536, disabled: true });
    await engine.write('d', 70_000, new Uint8Array(100).fill(1)); // one 64 KiB chunk
    await engine.write('d', 65536 * 8 - 1, new Uint8Array(2).fill(1)); // straddles two chunks
    const bitmaps = async () => {
      const n = ((await engine.execute('query-named-block-nodes')) as BlockDeviceInfo[]).find((x) => x['node-name'] === 'd')!;
      return n['dirty-bitmaps'] ?? [];
    };
    expect(await bitmaps()).toEqual([
      { name: 'b1', count: 0, granularity: 65536, recording: false, busy: false, persistent: false },
      { name: 'b0', count: 3 * 65536, granularity: 65536, recording: true, busy: false, persistent: false },
    ]);
    await engine.execute('block-dirty-bitmap-merge', { node: 'd', target: 'b1', bitmaps: ['b0'] });
    expect((await bitmaps())[0]!.count).toBe(3 * 65536);
    await engine.execute('block-dirty-bitmap-clear', { node: 'd', name: 'b0' });
    expect((await bitmaps())[1]!.count).toBe(0);
    await engine.execute('block-dirty-bitmap-enable', { node: 'd', name: 'b1' });
    await engine.execute('block-dirty-bitmap-disable', { node: 'd', name: 'b0' });
    await engine.write('d', 0, new Uint8Array(1).fill(1));
    expect((await bitmaps()).map((b) => [b.name, b.count, b.recording])).toEqual([
      ['b1', 4 * 65536, true],
      ['b0', 0, false],
    ]);
    const dup = await qmpFailure(engine.execute('block-dirty-bitmap-add', { node: 'd', name: 'b0' }));
    expect(dup.toQmp()).toEqual({ class: 'GenericError', desc: 'Bitmap already exists: b0' });
    const gran = await qmpFailure(engine.execute('block-dirty-bitmap-add', { node: 'd', name: 'x', granularity: 1000 }));
    expect(gran.desc).toBe('Granularity must be power of 2 and at least 512');
    const empty = await qmpFailure(engine.execute('block-dirty-bitmap-add', { node: 'd', name: '' }));
    expect(empty.desc).toBe('Bitmap name cannot be empty');
    const none = await qmpFailure(engine.execute('block-dirty-bitmap-remove', { node: 'd', name: 'nope' }));
    expect(none.toQmp()).toEqual({ class: 'GenericError', desc: "Dirty bitmap 'nope' not found" });
    await engine.execute('block-dirty-bitmap-remove', { node: 'd', name: 'b0' });
    await engine.execute('block-dirty-bitmap-remove', { node: 'd', name: 'b1' });
    expect(await bitmaps()).toEqual([]);
  });

  it('query-block and query-blockstats report devices with their I/O counters', async () => {
    const { engine } = engineWith({ 'd.img': seededBytes(65536, 10) });
    await engine.open('memory', 'd.img', { format: 'raw', nodeName: 'n0', device: 'disk0' });
    await engine.read('disk0', 0, 4096);
    await engine.read('disk0', 4096, 100);
    await engine.write('disk0', 1000, new Uint8Array(3000));
    await expect(engine.read('disk0', 65000, 4096)).rejects.toMatchObject({ code: 'EIO' });
    const blocks = (await engine.execute('query-block')) as { device: string; inserted: BlockDeviceInfo }[];
    expect(blocks).toHaveLength(1);
    expect(blocks[0]).toMatchObject({ device: 'disk0', type: 'unknown', removable: true, locked: false, 'io-status': 'ok' });
    expect(blocks[0]!.inserted).toMatchObject({ 'node-name': 'n0', drv: 'raw', file: 'd.img', ro: false });
    const stats = (await engine.execute('query-blockstats')) as { device: string; 'node-name': string; stats: Record<string, number>; parent?: unknown }[];
    expect(stats).toHaveLength(1);
    expect(stats[0]).toMatchObject({ device: 'disk0', 'node-name': 'n0' });
    expect(stats[0]!.stats).toMatchObject({
      rd_bytes: 4196,
      rd_operations: 2,
      wr_bytes: 3000,
      wr_operations: 1,
      wr_highest_offset: 4000,
      invalid_rd_operations: 1,
      failed_rd_operations: 0,
    });
    expect(stats[0]!.parent).toMatchObject({ 'node-name': expect.stringMatching(/^#block\d+$/) });
    const nodeStats = (await engine.execute('query-blockstats', { 'query-nodes': true })) as { 'node-name': string }[];
    expect(nodeStats.map((s) => s['node-name']).sort()).toEqual(engine.allNodes().map((n) => engine.nameOf(n)).sort());
  });

  it('a failed write through the engine emits BLOCK_IO_ERROR naming the node and the operation', async () => {
    const { engine } = engineWith({ 'd.img': seededBytes(4096, 11) });
    await engine.execute('blockdev-add', { driver: 'raw', 'node-name': 'ro', 'read-only': true, file: { driver: 'memory', filename: 'd.img' } });
    const events: QmpEvent[] = [];
    const off = engine.onEvent((e) => events.push(e));
    await expect(engine.write('ro', 0, new Uint8Array(512))).rejects.toMatchObject({ code: 'EPERM' });
    off();
    await expect(engine.write('ro', 0, new Uint8Array(512))).rejects.toBeInstanceOf(BlockError);
    expect(events).toHaveLength(1);
    expect(events[0]!.event).toBe('BLOCK_IO_ERROR');
    expect(events[0]!.data).toMatchObject({ 'node-name': 'ro', operation: 'write', action: 'report', nospace: false });
    expect(events[0]!.data.reason).toMatch(/read-only/);
  });

  it('read() refuses requests over the per-request limit instead of allocating them', async () => {
    const mem = new MemoryStorage();
    mem.put('d.img', new Uint8Array(8192));
    const engine = new Engine({ storages: { memory: mem }, maxIoBytes: 4096 });
    await engine.open('memory', 'd.img', { format: 'raw', nodeName: 'd' });
    await expect(engine.read('d', 0, 8192)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/4096-byte limit/) });
    expect((await engine.read('d', 4096, 4096)).length).toBe(4096);
  });
});
