import { describe, expect, it } from 'vitest';
import { sizeToStr } from '../../src/img/info.js';

// Expected strings are what qemu-img 7.2 prints for these sizes (size_to_str, "%0.3g").
describe('sizeToStr', () => {
  it.each([
    [0, '0 B'],
    [512, '512 B'],
    [1000, '0.977 KiB'],
    [1048576, '1 MiB'],
    [1000448, '977 KiB'],
    [1004032, '980 KiB'], // 980.5: glibc rounds ties to even
    [1003520, '980 KiB'],
    [200704, '196 KiB'],
    [1572864, '1.5 MiB'],
    [4398046511104, '4 TiB'],
    [1153, '1.13 KiB'], // 1.1259765625
    [1152, '1.12 KiB'], // 1.125 exactly: tie to even
  ])('%d -> %s', (n, s) => {
    expect(sizeToStr(n)).toBe(s);
  });
});
