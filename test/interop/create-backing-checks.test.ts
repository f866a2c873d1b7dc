/**
 * qemu-img create's backing checks as QEMU's iotest 301 meets them (qcow
 * over qcow, vmdk and raw), compared with Debian's qemu-img on the same files:
 * - a backing file without -F is refused with qemu-img's words, and the hint
 *   ("Detected format of …") ends without a newline, byte for byte as qemu-img
 *   prints it, when the CLI speaks as qemu-img; `blocktab` ends its lines;
 * - a backing file that is not what -F says fails with QEMU's text through
 *   the persona ("invalid VMDK image descriptor") and the detailed one
 *   through blocktab;
 * - qcow refuses a backing format that names no driver before it touches the
 *   file: an existing image stays as it was (QEMU's qcow_co_create_opts order).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { blocktab, qemuImg, tmpDir } from '../helpers/qemu.js';
import { persona, qemuTool } from '../helpers/persona.js';

const dir = tmpDir('blocktab-create-backing-');
const p = (f: string) => path.join(dir, f);

describe('qemu-img create: backing checks (iotest 301)', () => {
  it('a backing file without -F: qemu-img\'s message and its unterminated hint', () => {
    qemuImg(['create', '-f', 'qcow', p('base.qcow'), '32M']);
    for (const fmt of ['qcow', 'qcow2']) {
      const args = ['create', '-f', fmt, '-b', 'base.qcow', `top.${fmt}`, '32M'];
      const q = qemuTool('qemu-img', args, { cwd: dir });
      const ours = persona('qemu-img', args, { cwd: dir });
      expect(q.stderr).toBe(`qemu-img: top.${fmt}: Backing file specified without backing format\nDetected format of qcow.`);
      expect(ours.stderr).toBe(q.stderr);
      expect(ours.status).toBe(q.status);
      expect(fs.existsSync(p(`top.${fmt}`))).toBe(false);
      // blocktab's own wording ends the line.
      const b = blocktab(args, { cwd: dir });
      expect(b.stderr).toBe(`blocktab: top.${fmt}: Backing file specified without backing format\nDetected format of qcow.\n`);
    }
  });

  it('-F vmdk over a qcow file: QEMU\'s text through the persona, the detailed one through blocktab', () => {
    qemuImg(['create', '-f', 'qcow', p('base2.qcow'), '32M']);
    const args = ['create', '-f', 'qcow', '-b', 'base2.qcow', '-F', 'vmdk', 'top2.qcow', '32M'];
    const q = qemuTool('qemu-img', args, { cwd: dir });
    const ours = persona('qemu-img', args, { cwd: dir });
    expect(q.stderr).toBe('qemu-img: top2.qcow: invalid VMDK image descriptor\nCould not open backing image.\n');
    expect(ours.stderr).toBe(q.stderr);
    expect(ours.status).toBe(q.status);
    const b = blocktab(args, { cwd: dir });
    expect(b.stderr).toMatch(/^blocktab: top2\.qcow: .*base2\.qcow: invalid VMDK image descriptor \(no createType\)\nCould not open backing image\.\n$/);
  });

  it('qcow -F garbage leaves an existing image untouched, as qemu-img', () => {
    qemuImg(['create', '-f', 'qcow', p('base3.qcow'), '32M']);
    for (const [name, run] of [
      ['q.qcow', (a: string[]) => qemuTool('qemu-img', a, { cwd: dir })],
      ['b.qcow', (a: string[]) => persona('qemu-img', a, { cwd: dir })],
    ] as const) {
      qemuImg(['create', '-f', 'qcow', '-u', '-b', 'base3.qcow', '-F', 'vmdk', p(name), '32M']);
      const before = fs.readFileSync(p(name));
      const r = run(['create', '-f', 'qcow', '-u', '-b', 'base3.qcow', '-F', 'garbage', name, '32M']);
      expect(r.status).toBe(1);
      expect(r.stdout).toBe(`Formatting '${name}', fmt=qcow size=33554432 backing_file=base3.qcow backing_fmt=garbage\n`);
      expect(r.stderr).toBe(`qemu-img: ${name}: unrecognized backing format 'garbage'\n`);
      expect(fs.readFileSync(p(name)).equals(before)).toBe(true);
    }
  });
});
