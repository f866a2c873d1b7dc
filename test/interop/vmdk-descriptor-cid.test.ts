/**
 * Regression: the first write's CID update read a descriptor file only up to
 * 10 KiB and wrote it back; when the new CID line was longer than the old
 * one (QEMU writes CIDs unpadded, so "CID=1234567" happens), the character
 * at the cut was lost — iotest 059's 500-extent twoGbMaxExtentFlat image
 * then failed to open ("Invalid extent line: RW 4194304 LAT …").
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { blocktab, qemuImg, tmpDir } from '../helpers/qemu.js';
import { qemuTool } from '../helpers/persona.js';

describe('vmdk descriptor file CID update', () => {
  it('keeps a descriptor longer than 10 KiB whole when the CID line grows', () => {
    const dir = tmpDir('blocktab-vmdk-cid-');
    const img = path.join(dir, 't.vmdk');
    qemuImg(['create', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentFlat', img, '1000G']);
    const before = fs.readFileSync(img, 'utf8');
    expect(before.length).toBeGreaterThan(10 * 1024);
    // A one-digit CID: any new CID is longer, so the text after it moves.
    const shortCid = before.replace(/^CID=[0-9a-f]+$/m, 'CID=1');
    fs.writeFileSync(img, shortCid);
    const w = blocktab(['io', '-f', 'vmdk', '-c', 'write -P 0x59 990G 512', img]);
    expect(w.status, w.stderr).toBe(0);
    const after = fs.readFileSync(img, 'utf8');
    const extents = (t: string) => t.split('\n').filter((l) => l.startsWith('RW '));
    expect(extents(after)).toEqual(extents(shortCid));
    expect(after).toMatch(/^CID=[0-9a-f]{1,8}$/m);
    expect(after).not.toMatch(/^CID=1$/m);
    const r = qemuTool('qemu-io', ['-f', 'vmdk', '-c', 'read -P 0x59 990G 512', img]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('read 512/512 bytes');
  });
});
