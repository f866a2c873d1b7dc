// The fuzzer's seeds: small real images of every format blocktab reads.
// qemu-img / qemu-io make them at start-up in a scratch directory (qcow2 with
// internal snapshots, persistent bitmaps, compressed clusters, a backing file
// and its extension, v2 and v3, 1-bit and 64-bit refcounts, extended L2;
// vmdk's sparse, stream-optimized, flat and split subformats; vpc dynamic and
// fixed; vhdx; vdi dynamic and static; qed; qcow v1; parallels; luks; raw).
// dmg, cloop and bochs, which qemu-img cannot create, come from
// test/fixtures/fuzz/seeds/ (built from the spec; test/unit/fuzz-seeds.test.ts
// keeps them true). Each seed is { name, format, files: {name: bytes},
// readOnly, driverOptions }; `files[name]` is the image the mutators change,
// the other files (backing, extents) ride along unchanged.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The secret of test/fixtures/luks-aes128-sha1.luks.gz (test/interop/formats-luks.test.ts). */
export const LUKS_SECRET = { id: 'fuzzsec', data: 'correct horse battery staple' };

function run(cmd, args, cwd) {
  execFileSync(cmd, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** qemu-io commands that leave data, zeros and a discard behind. */
function fill(dir, file, fmt, size, extra = []) {
  const cmds = ['write -P 0x11 0 4k', `write -P 0x22 ${size / 2} 8k`, `write -z ${size / 4} 4k`, `write -P 0x33 ${size - 4096} 4k`, ...extra];
  run('qemu-io', ['-f', fmt, ...cmds.flatMap((c) => ['-c', c]), file], dir);
}

function qcow2Seeds(dir) {
  const out = [];
  const mk = (name, opts, size, after) => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', ...(opts ? ['-o', opts] : []), name, String(size)], dir);
    after?.(name);
    out.push({ name, format: 'qcow2', main: name });
  };
  mk('snap-bitmap.qcow2', 'cluster_size=512', 256 * 1024, (f) => {
    fill(dir, f, 'qcow2', 256 * 1024, ['write -c -P 0x44 64k 4k']);
    run('qemu-img', ['snapshot', '-c', 'one', f], dir);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x55 0 2k', '-c', 'discard 128k 4k', f], dir);
    run('qemu-img', ['snapshot', '-c', 'two', f], dir);
    run('qemu-img', ['bitmap', '--add', '-g', '4096', f, 'b0'], dir);
    run('qemu-img', ['bitmap', '--add', '--disable', f, 'b1'], dir);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x66 8k 4k', f], dir);
  });
  mk('v2-snap.qcow2', 'compat=0.10,cluster_size=1024', 128 * 1024, (f) => {
    fill(dir, f, 'qcow2', 128 * 1024);
    run('qemu-img', ['snapshot', '-c', 's', f], dir);
  });
  mk('rc1-4k.qcow2', 'cluster_size=4096,refcount_bits=1,lazy_refcounts=on', 512 * 1024, (f) => fill(dir, f, 'qcow2', 512 * 1024));
  mk('rc64-ext.qcow2', 'cluster_size=16384,refcount_bits=64,extended_l2=on', 512 * 1024, (f) =>
    fill(dir, f, 'qcow2', 512 * 1024, ['write -P 0x77 40k 1k', 'write -c -P 0x12 192k 16k']),
  );
  run('qemu-img', ['create', '-q', '-f', 'raw', 'base.raw', '256k'], dir);
  run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xbb 0 256k', 'base.raw'], dir);
  run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=2048', '-b', 'base.raw', '-F', 'raw', 'overlay.qcow2', '256k'], dir);
  fill(dir, 'overlay.qcow2', 'qcow2', 256 * 1024);
  out.push({ name: 'overlay.qcow2', format: 'qcow2', main: 'overlay.qcow2', others: ['base.raw'] });
  try {
    mk('zstd.qcow2', 'cluster_size=4096,compression_type=zstd', 128 * 1024, (f) => fill(dir, f, 'qcow2', 128 * 1024, ['write -c -P 0x13 64k 4k']));
  } catch {
    /* qemu-img without zstd */
  }
  return out;
}

function simple(dir, name, format, size, opts, { fillIt = true, others = [], readOnly = false } = {}) {
  run('qemu-img', ['create', '-q', '-f', format, ...(opts ? ['-o', opts] : []), name, String(size)], dir);
  if (fillIt) fill(dir, name, format, size);
  return { name, format, main: name, others, readOnly };
}

/** Makes every seed in a fresh scratch directory; returns [seeds, dir]. */
export function makeSeeds() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocktab-fuzz-seeds-'));
  const list = [...qcow2Seeds(dir)];
  run('qemu-img', ['create', '-q', '-f', 'raw', 'disk.raw', '64k'], dir);
  fill(dir, 'disk.raw', 'raw', 65536);
  list.push({ name: 'disk.raw', format: 'raw', main: 'disk.raw' });
  list.push(simple(dir, 'sparse.vmdk', 'vmdk', 1 << 20, 'subformat=monolithicSparse'));
  run('qemu-img', ['create', '-q', '-f', 'raw', 'stream.raw', '1M'], dir);
  fill(dir, 'stream.raw', 'raw', 1 << 20);
  run('qemu-img', ['convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', 'stream.raw', 'stream.vmdk'], dir);
  list.push({ name: 'stream.vmdk', format: 'vmdk', main: 'stream.vmdk' });
  list.push(simple(dir, 'flat.vmdk', 'vmdk', 64 * 1024, 'subformat=monolithicFlat', { others: ['flat-flat.vmdk'] }));
  list.push(simple(dir, 'split.vmdk', 'vmdk', 1 << 20, 'subformat=twoGbMaxExtentSparse', { others: ['split-s001.vmdk'] }));
  list.push(simple(dir, 'dyn.vpc', 'vpc', 1 << 20, 'subformat=dynamic'));
  list.push(simple(dir, 'fixed.vpc', 'vpc', 256 * 1024, 'subformat=fixed'));
  list.push(simple(dir, 'disk.vhdx', 'vhdx', 1 << 20, 'block_size=1M,log_size=1M'));
  list.push(simple(dir, 'dyn.vdi', 'vdi', 1 << 20, 'static=off'));
  list.push(simple(dir, 'static.vdi', 'vdi', 256 * 1024, 'static=on'));
  list.push(simple(dir, 'disk.qed', 'qed', 1 << 20, 'cluster_size=4096'));
  list.push(simple(dir, 'disk.qcow', 'qcow', 1 << 20));
  list.push(simple(dir, 'disk.parallels', 'parallels', 1 << 20, 'cluster_size=4096'));
  // luks: the qemu-img-made fixture (qemu-img cannot always time PBKDF2 here: "Unable to get accurate CPU usage")
  fs.writeFileSync(path.join(dir, 'disk.luks'), gunzipSync(fs.readFileSync(path.join(root, 'test/fixtures/luks-aes128-sha1.luks.gz'))));
  list.push({ name: 'disk.luks', format: 'luks', main: 'disk.luks', driverOptions: { 'key-secret': LUKS_SECRET.id } });
  for (const f of fs.readdirSync(path.join(root, 'test/fixtures/fuzz/seeds'))) {
    const name = f.replace(/\.gz$/, '');
    fs.writeFileSync(path.join(dir, name), gunzipSync(fs.readFileSync(path.join(root, 'test/fixtures/fuzz/seeds', f))));
    list.push({ name, format: path.extname(name).slice(1), main: name, readOnly: true });
  }
  const seeds = list.map((s) => ({
    name: s.name,
    format: s.format,
    main: s.main,
    readOnly: !!s.readOnly,
    driverOptions: s.driverOptions ?? {},
    files: Object.fromEntries([s.main, ...(s.others ?? [])].map((f) => [f, new Uint8Array(fs.readFileSync(path.join(dir, f)))])),
  }));
  return { seeds, dir };
}
