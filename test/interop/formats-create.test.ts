/**
 * blocktab create / convert -O for vmdk and vhdx against qemu-img 7.2: twins
 * made by both tools (in two directories, with the same relative names) must
 * print the same "Formatting" line, pass `qemu-img check`, and give equal
 * `qemu-img info --output=json` apart from what is random per image (vmdk's
 * CID). A sparse vmdk is QEMU's layout byte for byte once the CID is masked.
 * Converting a qcow2 holding data, zeros and holes must compare equal.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import { main } from '../../src/cli/main.js';

const dir = tmpDir('formats-create-');
const ours = path.join(dir, 'o');
const theirs = path.join(dir, 't');
fs.mkdirSync(ours);
fs.mkdirSync(theirs);

/**
 * Runs our CLI in-process as if in `cwd`: the image names (the arguments
 * ending in .vmdk / .vhdx / .img) are given as paths in `cwd`, and the output
 * shows them as given again, so it compares with qemu-img's run in `cwd`.
 */
async function bt(args: string[], cwd: string): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const isName = (a: string, i: number) => i > 0 && !a.startsWith('-') && /\.(vmdk|vhdx|img)$/.test(a) && args[i - 1] !== '-b';
  const full = args.map((a, i) => (isName(a, i) ? path.join(cwd, a) : a));
  const status = await main(full, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s) });
  const back = (s: string) => s.split(cwd + '/').join('');
  return { status, stdout: back(stdout), stderr: back(stderr) };
}

/** info --output=json run beside the image, without what differs per file: its size on disk and vmdk's random CID. */
function info(cwd: string, file: string): Record<string, unknown> {
  const j = JSON.parse(qemuImg(['info', '--output=json', file], { cwd })) as Record<string, unknown>;
  delete j['actual-size'];
  const spec = j['format-specific'] as { data?: Record<string, unknown> } | undefined;
  if (spec?.data) delete spec.data['cid'];
  return j;
}

/**
 * The file with its descriptor's CID masked (the only random field of a
 * vmdk): the bytes before the descriptor, its text with the CID replaced, the
 * bytes after its zero padding, and the file's length. (QEMU prints the CID
 * unpadded, so the padding's length varies with it.)
 */
function maskedCid(file: string): unknown {
  const b = fs.readFileSync(file);
  const p = b.indexOf('# Disk DescriptorFile');
  let q = b.indexOf(0, p);
  if (q < 0) q = b.length;
  let r = q;
  while (r < b.length && b[r] === 0) r++;
  const raw = b.subarray(p, q).toString('latin1');
  const text = raw.replace(/\nCID=[0-9a-f]{1,8}\n/, '\nCID=x\n');
  // QEMU prints the CID without leading zeros, so a descriptor-only file's length moves with it.
  const descriptorOnly = p === 0 && q === b.length;
  return { length: b.length - (descriptorOnly ? raw.length - text.length : 0), head: b.subarray(0, p).toString('hex'), text, tail: b.subarray(r).toString('hex') };
}

function expectCheckClean(cwd: string, file: string): void {
  const chk = qemuImgRun(['check', file], { cwd });
  expect({ status: chk.status, stdout: chk.stdout, stderr: chk.stderr }).toMatchObject({ status: 0, stderr: '' });
  expect(chk.stdout).toMatch(/^No errors were found on the image\.\n/);
}

let n = 0;
const grid: Array<{ fmt: string; opts?: string; size: string; sameBytes?: boolean; qemuCannotOpen?: boolean }> = [
  { fmt: 'vmdk', size: '1G', sameBytes: true },
  { fmt: 'vmdk', size: '1000', sameBytes: true },
  { fmt: 'vmdk', size: '0', sameBytes: true, qemuCannotOpen: true },
  { fmt: 'vmdk', opts: 'zeroed_grain=on,adapter_type=lsilogic', size: '3M', sameBytes: true },
  { fmt: 'vmdk', opts: 'compat6=on,adapter_type=buslogic', size: '100M', sameBytes: true },
  { fmt: 'vmdk', opts: 'hwversion=10,toolsversion=9344', size: '5G', sameBytes: true },
  { fmt: 'vmdk', opts: 'subformat=monolithicFlat,adapter_type=legacyESX', size: '3M', sameBytes: true },
  { fmt: 'vmdk', opts: 'subformat=monolithicSparse', size: '64k', sameBytes: true },
  { fmt: 'vmdk', opts: 'subformat=streamOptimized', size: '5M', sameBytes: true },
  { fmt: 'vmdk', opts: 'subformat=streamOptimized,adapter_type=lsilogic', size: '1000', sameBytes: true },
  { fmt: 'vmdk', opts: 'subformat=twoGbMaxExtentSparse', size: '5G', sameBytes: true },
  { fmt: 'vmdk', opts: 'subformat=twoGbMaxExtentSparse,zeroed_grain=on', size: '2147484160', sameBytes: true },
  { fmt: 'vmdk', opts: 'subformat=twoGbMaxExtentFlat', size: '4G', sameBytes: true },
  { fmt: 'vmdk', opts: 'subformat=twoGbMaxExtentFlat', size: '0', sameBytes: true, qemuCannotOpen: true },
  { fmt: 'vhdx', size: '1G' },
  { fmt: 'vhdx', size: '0' },
  { fmt: 'vhdx', size: '1000' },
  { fmt: 'vhdx', opts: 'subformat=fixed', size: '3M' },
  { fmt: 'vhdx', opts: 'subformat=fixed,block_size=1M,log_size=2M,block_state_zero=off', size: '10M' },
  { fmt: 'vhdx', opts: 'block_size=32M,log_size=3M', size: '200G' },
  { fmt: 'vhdx', opts: 'block_size=512M', size: '1M' },
  { fmt: 'vhdx', opts: 'block_state_zero=off', size: '40M' },
];

describe('create -f vmdk|vhdx: twins with qemu-img', () => {
  for (const g of grid) {
    it(`-f ${g.fmt} ${g.opts ? `-o ${g.opts} ` : ''}${g.size}`, async () => {
      const name = `img${++n}.${g.fmt}`;
      const args = ['create', '-f', g.fmt, ...(g.opts ? ['-o', g.opts] : []), name, g.size];
      const t = qemuImgRun(args, { cwd: theirs });
      const o = await bt(args, ours);
      expect(t.status).toBe(0);
      expect({ status: o.status, stdout: o.stdout, stderr: o.stderr }).toEqual({ status: 0, stdout: t.stdout, stderr: '' });
      // qemu-img's verdict on our image is its verdict on its own (it cannot open its own empty sparse vmdk).
      const verdict = (cwd: string) => {
        const r = qemuImgRun(['check', name], { cwd });
        return { status: r.status, stdout: r.stdout, stderr: r.stderr };
      };
      expect(verdict(ours)).toEqual(verdict(theirs));
      if (!g.qemuCannotOpen) {
        expectCheckClean(ours, name);
        expect(info(ours, name)).toEqual(info(theirs, name));
      }
      if (g.sameBytes) {
        expect(maskedCid(path.join(ours, name)), 'the image, CID masked, is byte-identical').toEqual(maskedCid(path.join(theirs, name)));
      }
      if (g.opts?.includes('monolithicFlat')) {
        const flat = name.replace(/\.vmdk$/, '-flat.vmdk');
        expect(fs.statSync(path.join(ours, flat)).size).toBe(fs.statSync(path.join(theirs, flat)).size);
      }
      if (g.opts?.includes('twoGbMaxExtent')) {
        // The same extent files: flat ones of the same sizes, sparse ones byte for byte.
        const stem = name.replace(/\.vmdk$/, '-');
        const extents = (dir: string) => fs.readdirSync(dir).filter((f) => f.startsWith(stem)).sort();
        expect(extents(ours)).toEqual(extents(theirs));
        for (const e of extents(theirs)) {
          if (g.opts.includes('Flat')) expect(fs.statSync(path.join(ours, e)).size, e).toBe(fs.statSync(path.join(theirs, e)).size);
          else expect(fs.readFileSync(path.join(ours, e)).equals(fs.readFileSync(path.join(theirs, e))), e).toBe(true);
        }
      }
    });
  }

  it('-o help lists what qemu-img lists', async () => {
    for (const f of ['vmdk', 'vhdx']) {
      for (const file of [[], ['help.img']]) {
        const o = await bt(['create', '-f', f, '-o', 'help', ...file], ours);
        const t = qemuImgRun(['create', '-f', f, '-o', 'help', ...file], { cwd: theirs });
        expect(o.stdout).toBe(t.stdout);
      }
    }
  });

  it('a vmdk on a vmdk backing file: size, parentCID and hint as qemu-img', async () => {
    for (const cwd of [ours, theirs]) qemuImg(['create', '-f', 'vmdk', 'base.vmdk', '7M'], { cwd });
    const args = ['create', '-f', 'vmdk', '-b', 'base.vmdk', '-F', 'vmdk', 'over.vmdk'];
    const t = qemuImgRun(args, { cwd: theirs });
    const o = await bt(args, ours);
    expect({ status: o.status, stdout: o.stdout }).toEqual({ status: t.status, stdout: t.stdout });
    expectCheckClean(ours, 'over.vmdk');
    const strip = (j: Record<string, unknown>) => {
      const d = (j['format-specific'] as { data: Record<string, unknown> }).data;
      delete d['parent-cid']; // the base's random CID
      return j;
    };
    expect(strip(info(ours, 'over.vmdk'))).toEqual(strip(info(theirs, 'over.vmdk')));
    // qemu-img opens the chain, which needs our parentCID to be the base's CID.
    const baseCid = (JSON.parse(qemuImg(['info', '--output=json', 'base.vmdk'], { cwd: ours }))['format-specific'].data as { cid: number }).cid;
    const over = JSON.parse(qemuImg(['info', '--output=json', 'over.vmdk'], { cwd: ours }))['format-specific'].data as { 'parent-cid': number };
    expect(over['parent-cid']).toBe(baseCid);
    expect(qemuImgRun(['compare', 'over.vmdk', 'base.vmdk'], { cwd: ours }).status).toBe(0);
  });
});

describe('create -f vmdk|vhdx: bad options give qemu-img\'s messages', () => {
  const bad: Array<{ fmt: string; args: string[] }> = [
    { fmt: 'vmdk', args: ['-o', 'adapter_type=scsi'] },
    { fmt: 'vmdk', args: ['-o', 'subformat=monolithicsparse'] },
    { fmt: 'vmdk', args: ['-o', 'compat6=on,hwversion=7'] },
    { fmt: 'vmdk', args: ['-o', 'backing_fmt=qcow2'] },
    { fmt: 'vmdk', args: ['-o', 'zeroed_grain=maybe'] },
    { fmt: 'vmdk', args: ['-o', 'cluster_size=64k'] },
    { fmt: 'vhdx', args: ['-o', 'subformat=sparse'] },
    { fmt: 'vhdx', args: ['-o', 'block_size=3M'] },
    { fmt: 'vhdx', args: ['-o', 'log_size=junk'] },
    { fmt: 'vhdx', args: ['-o', 'block_state_zero=perhaps'] },
  ];
  for (const b of bad) {
    it(`-f ${b.fmt} ${b.args.join(' ')}`, async () => {
      const name = `bad.${b.fmt}`;
      const args = ['create', '-f', b.fmt, ...b.args, name, '1M'];
      const t = qemuImgRun(args, { cwd: theirs });
      const o = await bt(args, ours);
      expect(t.status).toBe(1);
      expect(o.status).toBe(1);
      expect(o.stdout).toBe(t.stdout);
      const first = t.stderr.split('\n')[0]!.replace(/^qemu-img: /, 'blocktab: ');
      expect(o.stderr.split('\n')[0]).toBe(first);
    });
  }
});

describe('convert -O vmdk|vhdx from a qcow2 with data, zeros and holes', () => {
  const src = path.join(dir, 'src.qcow2');
  qemuImg(['create', '-f', 'qcow2', src, '21M']);
  qemuIo(src, ['write -P 0xab 0 1M', 'write -P 0x11 5M 300k', 'write -z 8M 1M', 'write -P 0x5 19M 1M', 'write -P 0x7 20M 512'], 'qcow2');

  const cases: Array<{ fmt: string; opts?: string }> = [
    { fmt: 'vmdk' },
    { fmt: 'vmdk', opts: 'subformat=monolithicFlat' },
    { fmt: 'vmdk', opts: 'zeroed_grain=on,adapter_type=lsilogic' },
    { fmt: 'vmdk', opts: 'subformat=streamOptimized' },
    { fmt: 'vhdx' },
    { fmt: 'vhdx', opts: 'subformat=fixed' },
    { fmt: 'vhdx', opts: 'block_state_zero=off,block_size=1M' },
  ];
  for (const c of cases) {
    it(`-O ${c.fmt}${c.opts ? ` -o ${c.opts}` : ''}`, async () => {
      const name = `conv${++n}.${c.fmt}`;
      const args = ['convert', '-O', c.fmt, ...(c.opts ? ['-o', c.opts] : []), src, name];
      const o = await bt(args, ours);
      expect({ status: o.status, stderr: o.stderr }).toEqual({ status: 0, stderr: '' });
      expectCheckClean(ours, name);
      const cmp = qemuImgRun(['compare', '-f', 'qcow2', '-F', c.fmt, src, name], { cwd: ours });
      expect({ status: cmp.status, stdout: cmp.stdout }).toEqual({ status: 0, stdout: 'Images are identical.\n' });
      expect(qemuImgRun(args, { cwd: theirs }).status).toBe(0);
      expect(info(ours, name)).toEqual(info(theirs, name));
    });
  }
});

describe('convert to a vmdk that takes whole compressed grains (needs_compressed_writes, iotest 059)', () => {
  // 4 KiB source clusters put several data runs in one 64 KiB grain; a grain of a streamOptimized vmdk is written once.
  const src = path.join(dir, 'small-clusters.qcow2');
  qemuImg(['create', '-f', 'qcow2', '-o', 'cluster_size=4096', src, '1G']);
  qemuIo(src, ['write -P 0xa 0 512', 'write -P 0xb 10240 512', 'write -P 0xc 70000 30000'], 'qcow2');

  const cases: Array<{ args: string[]; label: string }> = [
    { label: '-o subformat=streamOptimized', args: ['-O', 'vmdk', '-o', 'subformat=streamOptimized'] },
    { label: '-c -O vmdk (monolithicSparse: a compressed write is a plain one)', args: ['-c', '-O', 'vmdk'] },
    { label: '-c -O vmdk -o subformat=streamOptimized', args: ['-c', '-O', 'vmdk', '-o', 'subformat=streamOptimized'] },
  ];
  for (const c of cases) {
    it(c.label, async () => {
      const name = `small${++n}.vmdk`;
      const args = ['convert', ...c.args, src, name];
      const o = await bt(args, ours);
      expect({ status: o.status, stderr: o.stderr }).toEqual({ status: 0, stderr: '' });
      expectCheckClean(ours, name);
      const cmp = qemuImgRun(['compare', '-f', 'qcow2', '-F', 'vmdk', src, name], { cwd: ours });
      expect({ status: cmp.status, stdout: cmp.stdout }).toEqual({ status: 0, stdout: 'Images are identical.\n' });
      expect(qemuImgRun(args, { cwd: theirs }).status).toBe(0);
      expect(info(ours, name)).toEqual(info(theirs, name));
    });
  }
});
