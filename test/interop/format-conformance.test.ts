/**
 * The format conformance suite (test/helpers/format-conformance.ts) on host
 * files, for every registered format driver that can create and write images,
 * with qemu-img as the judge of each closed image: `qemu-img check` must find
 * it clean (for formats qemu-img checks) and `qemu-img compare` must find it
 * equal to the suite's model of the guest's bytes, written as a raw file.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import '../../src/node.js';
import { FileStorage } from '../../src/protocols/file.js';
import { formatConformance, writableFormatDrivers } from '../helpers/format-conformance.js';
import { qemuImgRun, tmpDir } from '../helpers/qemu.js';

const dir = tmpDir('blocktab-format-conformance-');
const drivers = await writableFormatDrivers();

it('the registry offers the writable formats this suite must cover (qcow2 and raw at least)', () => {
  expect(drivers.map((d) => d.name)).toEqual(expect.arrayContaining(['qcow2', 'raw']));
});

/** qemu-img check's verdict, or undefined for a format qemu-img cannot check (exit 63). */
function qemuCheck(format: string, file: string): { status: number; out: string } | undefined {
  const r = qemuImgRun(['check', '-f', format, file]);
  if (r.status === 63) return undefined;
  return { status: r.status, out: r.stdout + r.stderr };
}

for (const drv of drivers) {
  const format = drv.name;
  describe(`format conformance: ${format} on host files, judged by qemu-img`, () => {
    const storage = new FileStorage();
    const cases = formatConformance(format, {
      storage: () => storage,
      filename: (n) => path.join(dir, `${n}.${format}`),
      verifyClosed(file, model) {
        const check = qemuCheck(format, file);
        if (check) {
          expect(check.status, `qemu-img check -f ${format} ${file}: ${check.out}`).toBe(0);
          expect(check.out).toMatch(/^No errors were found on the image\.\n/);
        }
        const raw = `${file}.model.raw`;
        fs.writeFileSync(raw, model);
        const cmp = qemuImgRun(['compare', '-f', format, '-F', 'raw', file, raw]);
        expect({ status: cmp.status, stdout: cmp.stdout, stderr: cmp.stderr }, `qemu-img compare -f ${format} -F raw`).toEqual({
          status: 0,
          stdout: 'Images are identical.\n',
          stderr: '',
        });
      },
    });
    for (const c of cases) it(c.name, c.run);
  });
}
