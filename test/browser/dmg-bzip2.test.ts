// The browser build reads a DMG whose chunks are bzip2 (UDBZ) over HTTP: the
// TypeScript decoder (src/codecs/bzip2.ts's default; Node uses libbzip2 as
// wasm instead) gives the bytes the image was built from.
import { describe, expect, inject, it } from 'vitest';
import '../../src/browser.js';
import { HttpStorage } from '../../src/protocols/http.js';
import { bdrvPread } from '../../src/block/io.js';
import { closeNode, openImage } from '../../src/block/open.js';
import { sha256Hex } from './assert.js';

describe('dmg bzip2 chunks in the browser', () => {
  it('a UDBZ image reads back as built', async () => {
    const info = inject('storageServer');
    const img = info.bzip2Dmg;
    const bs = await openImage(new HttpStorage(info.baseUrl), img.name, { readOnly: true });
    try {
      expect(bs.driver.name).toBe('dmg');
      expect(bs.totalBytes).toBe(img.virtualSize);
      const out = new Uint8Array(bs.totalBytes);
      await bdrvPread(bs, 0, out.length, out);
      expect(await sha256Hex(out)).toBe(img.sha256);
    } finally {
      await closeNode(bs);
    }
  });
});
