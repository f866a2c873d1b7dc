/**
 * Graph changes over QMP against QEMU 7.2 itself: the same -drive line and
 * input lines go to `qemu-system-x86_64 -machine none -nodefaults -qmp
 * stdio` and to `blocktab qmp` on twin images made by qemu-img, and every
 * reply and event must be equal after normalizeTranscript's masking. The
 * script covers the copy-on-read filter (with `bottom`) and -drive
 * copy-on-read=on, per-node detect-zeroes, node-name rules, mirror's
 * `replaces`, blockdev-reopen, change-backing-file and permission conflicts.
 * Afterwards the images both sides left are compared with qemu-img (map
 * shows what copy-on-read and detect-zeroes wrote; info the backing names).
 * No fixed waits: a line that starts a job waits for its events by count.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu.js';
import { haveQemuSystem } from '../helpers/qmp.js';
import { hmpTextToStdout, normalizeTranscript, runMonitor } from '../helpers/qmp-monitor.js';

const j = (execute: string, args?: Record<string, unknown>) => JSON.stringify({ execute, ...(args ? { arguments: args } : {}) });
const hmp = (dev: string, cmd: string) => j('human-monitor-command', { 'command-line': `qemu-io ${dev} "${cmd}"` });
const qcow2 = (dir: string, name: string, extra: Record<string, unknown> = {}) =>
  j('blockdev-add', { driver: 'qcow2', 'node-name': name, file: { driver: 'file', 'node-name': `${name}f`, filename: path.join(dir, `${name}.qcow2`) }, ...extra });

function makeImages(d: string): void {
  const at = (n: string) => path.join(d, n);
  const create = (n: string, size = '1M', backing?: string) =>
    qemuImg(['create', '-q', '-f', 'qcow2', ...(backing ? ['-b', backing, '-F', 'qcow2'] : []), at(n), ...(backing ? [] : [size])]);
  // copy-on-read: b ← m ← t, and b0 ← d0 for the -drive
  for (const b of ['b.qcow2', 'b0.qcow2']) {
    create(b);
    qemuIo(at(b), ['write -P 1 0 64k', 'write -P 5 512k 128k'], 'qcow2');
  }
  create('m.qcow2', '', 'b.qcow2');
  qemuIo(at('m.qcow2'), ['write -P 2 256k 64k'], 'qcow2');
  create('t.qcow2', '', 'm.qcow2');
  create('d0.qcow2', '', 'b0.qcow2');
  // detect-zeroes, mirror replaces, reopen
  for (const n of ['z.qcow2', 's.qcow2', 'g.qcow2', 'o.qcow2', 'rb.qcow2']) create(n);
  qemuIo(at('z.qcow2'), ['write -P 9 0 256k'], 'qcow2');
  qemuIo(at('s.qcow2'), ['write -P 7 0 128k'], 'qcow2');
  qemuIo(at('rb.qcow2'), ['write -P 4 0 64k'], 'qcow2');
  create('rt.qcow2', '', 'rb.qcow2');
  qemuImg(['bitmap', '--add', '-g', '65536', at('rb.qcow2'), 'bm0']);
  create('cbb.qcow2');
  create('cb.qcow2', '', 'cbb.qcow2');
}

type Line = { line: string; replies?: number; events?: number };

function script(d: string): Line[] {
  const L = (line: string, events = 0): Line => ({ line, events });
  return [
    L(j('qmp_capabilities')),
    // -drive copy-on-read=on: the device's read copies the cluster from b0 into d0.
    L(hmp('d0', 'read -P 1 0 4k')),
    // The copy-on-read filter, with and without bottom.
    L(qcow2(d, 'b')),
    L(qcow2(d, 'm', { backing: 'b' })),
    L(qcow2(d, 't', { backing: 'm' })),
    L(j('blockdev-add', { driver: 'copy-on-read', 'node-name': 'c2', file: 't', bottom: 'nope' })),
    L(j('blockdev-add', { driver: 'copy-on-read', 'node-name': 'c', file: 't', bottom: 'm' })),
    L(hmp('c', 'read -P 1 0 4k')), // from b, below bottom: not copied
    L(hmp('c', 'read -P 2 256k 8k')), // from m: copied
    L(hmp('c', 'write -P 3 700k 4k')),
    L(j('blockdev-add', { driver: 'copy-on-read', 'node-name': 'c5', file: 't' })),
    L(hmp('c5', 'read -P 5 520k 4k')), // from b, no bottom: copied
    L(j('query-named-block-nodes', { flat: true })),
    // Permissions: a second format on a file node a writable format uses is refused; raw passes its users' through.
    L(j('blockdev-add', { driver: 'qcow2', 'node-name': 't2', file: 'tf' })),
    L(j('blockdev-add', { driver: 'qcow2', 'node-name': 't3', file: 'tf', 'read-only': true })),
    L(j('blockdev-add', { driver: 'raw', 'node-name': 'r3', file: 'tf' })),
    L(j('blockdev-del', { 'node-name': 'r3' })),
    // detect-zeroes on every node, shown per node.
    L(j('blockdev-add', { driver: 'qcow2', 'node-name': 'z', 'detect-zeroes': 'unmap', file: { driver: 'file', filename: path.join(d, 'z.qcow2') } })),
    L(
      j('blockdev-add', {
        driver: 'qcow2',
        'node-name': 'z',
        'detect-zeroes': 'on',
        file: { driver: 'file', 'node-name': 'zf', filename: path.join(d, 'z.qcow2'), 'detect-zeroes': 'unmap', discard: 'unmap' },
      }),
    ),
    L(hmp('z', 'write -P 0 0 64k')),
    L(hmp('z', 'write -P 0 128k 64k')),
    L(j('query-named-block-nodes')),
    // node-name rules
    ...['1x', 'a b', '', 'b', 'abcdefghijabcdefghijabcdefghijabc', '#x1', 'd0'].map((n) =>
      L(j('blockdev-add', { driver: 'qcow2', 'node-name': n, file: { driver: 'file', filename: path.join(d, 'o.qcow2') } })),
    ),
    L(j('blockdev-add', { driver: 'qcow2', 'node-name': 'x', file: { driver: 'file', filename: path.join(d, 'o.qcow2'), 'node-name': 'b' } })),
    L(j('blockdev-add', { driver: 'qcow2', file: { driver: 'file', filename: path.join(d, 'o.qcow2') } })),
    // mirror's replaces: the copy takes the place of the node under the source's filter.
    L(qcow2(d, 's')),
    L(j('blockdev-add', { driver: 'copy-on-read', 'node-name': 'sc', file: 's' })),
    L(qcow2(d, 'g')),
    L(qcow2(d, 'o')),
    L(j('blockdev-mirror', { 'job-id': 'j', device: 'sc', target: 'g', sync: 'full', replaces: 'nope' })),
    L(j('blockdev-mirror', { 'job-id': 'j', device: 'sc', target: 'g', sync: 'full', replaces: 'o' })),
    L(j('blockdev-mirror', { 'job-id': 'j', device: 'sc', target: 'g', sync: 'top', replaces: 's' }), 4),
    L(j('query-block-jobs')),
    L(j('job-complete', { id: 'j' }), 5),
    L(j('blockdev-del', { 'node-name': 's' })),
    L(j('blockdev-del', { 'node-name': 'g' })),
    L(hmp('sc', 'read -P 7 0 128k')),
    // blockdev-reopen: read-only <-> read-write, backing changes, QEMU's refusals.
    L(qcow2(d, 'rb', { 'read-only': true })),
    L(qcow2(d, 'rt', { backing: 'rb' })),
    L(j('blockdev-add', { driver: 'qcow2', 'node-name': 'rb2', file: 'rbf', 'read-only': true })),
    L(j('blockdev-add', { driver: 'qcow2', 'node-name': 'rb3', file: 'rbf' })),
    L(j('blockdev-del', { 'node-name': 'rb2' })),
    L(j('query-named-block-nodes', { flat: true })),
    L(j('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': 'rt', file: 'rtf', backing: 'rb', 'read-only': true }] })),
    L(j('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': 'rt', file: 'rtf', backing: null }] })),
    L(j('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': 'rt', file: 'rtf' }] })),
    L(j('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': 'nope', file: 'rtf' }] })),
    L(j('blockdev-reopen', { options: [{ driver: 'qcow2', file: 'rtf' }] })),
    L(j('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': 'rt', file: 'rtf', backing: 'rt', 'read-only': true }] })),
    L(j('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': 'rb', file: 'rbf', backing: 'rt', 'read-only': true }] })),
    L(j('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': 'rt', file: 'rtf', backing: 'rb', 'detect-zeroes': 'on' }] })),
    L(j('blockdev-reopen', { options: [{ driver: 'raw', 'node-name': 'rt', file: 'rtf', backing: 'rb' }] })),
    L(j('blockdev-reopen', { options: [{ driver: 'file', 'node-name': 'rtf', filename: path.join(d, 'o.qcow2'), 'read-only': true }] })),
    L(j('query-named-block-nodes', { flat: true })),
    L(j('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': 'rt', file: 'rtf', backing: 'rb', 'read-only': false, 'lazy-refcounts': true }] })),
    L(hmp('rt', 'write -P 6 64k 4k')),
    L(j('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': 'rt', file: 'rtf', backing: null, 'read-only': false, 'detect-zeroes': 'on' }] })),
    L(hmp('rt', 'read -P 0 0 4k')),
    L(j('query-named-block-nodes', { flat: true })),
    L(j('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': 'rt', file: 'rtf', backing: 'o', 'read-only': false }] })),
    L(j('query-named-block-nodes', { flat: true })),
    // The persistent bitmap rb was opened with: read-only, then read-write (QEMU reloads it writable) and dirtied.
    L(j('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': 'rb', file: 'rbf', 'read-only': false }] })),
    L(hmp('rb', 'write -P 8 0 4k')),
    L(j('query-named-block-nodes', { flat: true })),
    L(j('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': 'rb', file: 'rbf', 'read-only': true }] })),
    L(j('query-named-block-nodes', { flat: true })),
    // change-backing-file
    L(j('blockdev-add', { driver: 'qcow2', 'node-name': 'cb', file: { driver: 'file', filename: path.join(d, 'cb.qcow2') } })),
    L(j('change-backing-file', { device: 'nodev', 'image-node-name': 'cb', 'backing-file': 'x.qcow2' })),
    L(j('change-backing-file', { device: 'cb', 'image-node-name': 'nonode', 'backing-file': 'x.qcow2' })),
    L(j('change-backing-file', { device: 'cb', 'image-node-name': 'o', 'backing-file': 'x.qcow2' })),
    L(j('change-backing-file', { device: 'cb', 'image-node-name': 'cb', 'backing-file': 'x.qcow2' })),
    L(j('change-backing-file', { device: 'o', 'image-node-name': 'o', 'backing-file': 'y.qcow2' })),
    L(j('change-backing-file', { device: 'rt', 'image-node-name': 'cb', 'backing-file': 'y.qcow2' })),
    L(j('query-named-block-nodes', { flat: true })),
    L(j('quit'), 1),
  ];
}

/** qemu-io's output lines without the timing line's figures. */
const texts = (n: unknown) => (n as { text: string }[]).map((s) => s.text);
const withoutText = (n: unknown) => (n as { text: string }[]).map(({ text: _t, ...rest }) => rest);

describe.runIf(haveQemuSystem())('graph changes over QMP, against qemu-system-x86_64', () => {
  it('copy-on-read, detect-zeroes, node names, mirror replaces, reopen, change-backing-file, permissions: replies, events and images as QEMU 7.2', async () => {
    const dirs = { qemu: tmpDir('qmpg-q-'), ours: tmpDir('qmpg-b-') };
    for (const d of Object.values(dirs)) makeImages(d);
    const options = (d: string) => ['-drive', `if=none,id=d0,file=${path.join(d, 'd0.qcow2')},format=qcow2,copy-on-read=on`];
    const [theirs, ours] = await Promise.all([
      runMonitor('qemu', options(dirs.qemu), script(dirs.qemu)),
      runMonitor('blocktab', options(dirs.ours), script(dirs.ours)).then(hmpTextToStdout),
    ]);
    expect(ours.exitCode).toBe(0);
    const a = normalizeTranscript(ours, dirs.ours);
    const b = normalizeTranscript(theirs, dirs.qemu);
    const sa = withoutText(a);
    const sb = withoutText(b);
    const diffs = sb.flatMap((step, i) => (JSON.stringify(sa[i]) === JSON.stringify(step) ? [] : [{ i, ours: sa[i], theirs: step }]));
    if (process.env.QMP_DIFF_FILE) fs.writeFileSync(process.env.QMP_DIFF_FILE, JSON.stringify(diffs, null, 1));
    if (process.env.QMP_DIFF_FILE) fs.writeFileSync(process.env.QMP_DIFF_FILE + '.raw', JSON.stringify([ours.steps, theirs.steps], null, 1));
    expect(diffs).toEqual([]);
    expect(sa.length).toBe(sb.length);
    expect(texts(a)).toEqual(texts(b));
    // The images: what copy-on-read copied, what detect-zeroes made zero, where the mirror went.
    const map = (d: string, f: string) => qemuImg(['map', '--output=json', '-f', 'qcow2', path.join(d, f)]);
    for (const f of ['t.qcow2', 'd0.qcow2', 'z.qcow2', 'g.qcow2', 'rt.qcow2']) expect({ f, map: map(dirs.ours, f) }).toEqual({ f, map: map(dirs.qemu, f) });
    // Backing names change-backing-file wrote; rb's bitmap stored back, dirty where the write went.
    const info = (d: string, f: string) => {
      const i = JSON.parse(qemuImg(['info', '--output=json', '-U', path.join(d, f)])) as Record<string, unknown>;
      return { backing: i['backing-filename'], specific: i['format-specific'] };
    };
    for (const f of ['cb.qcow2', 'o.qcow2', 'rb.qcow2']) expect({ f, info: info(dirs.ours, f) }).toEqual({ f, info: info(dirs.qemu, f) });
    const sha = (d: string) => qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', path.join(d, 'rb.qcow2'), path.join(d, 'rb.raw')]);
    sha(dirs.ours);
    sha(dirs.qemu);
    expect(fs.readFileSync(path.join(dirs.ours, 'rb.raw')).equals(fs.readFileSync(path.join(dirs.qemu, 'rb.raw')))).toBe(true);
  }, 60_000);
});
