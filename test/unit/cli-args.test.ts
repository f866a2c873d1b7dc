import { describe, expect, it } from 'vitest';
import { parseCommand, parseSize, str, UsageError } from '../../src/cli/args.js';
import { Progress } from '../../src/cli/progress.js';

describe('qemu-img style arguments', () => {
  const spec = { format: { type: 'string', short: 'f' }, output: { type: 'string' }, progress: { type: 'boolean', short: 'p' } } as const;
  it('accepts short values, --opt=value and options after positionals', () => {
    const p = parseCommand('map', ['disk.qcow2', '-fqcow2', '--output=json', '-p'], spec);
    expect(p.positionals).toEqual(['disk.qcow2']);
    expect(str(p, 'format')).toBe('qcow2');
    expect(str(p, 'output')).toBe('json');
  });
  it('reports unknown options as qemu-img does', () => {
    expect(() => parseCommand('map', ['-x', 'a'], spec)).toThrow(new UsageError("map: invalid option -- 'x'"));
  });
  it('parses sizes with binary suffixes', () => {
    expect(parseSize('s', '4k')).toBe(4096);
    expect(parseSize('s', '1.5M')).toBe(1572864);
    expect(parseSize('s', '512')).toBe(512);
    expect(() => parseSize('s', '12q')).toThrow(UsageError);
  });
});

describe('progress', () => {
  it('prints qemu-img lines only when the value moves by more than 1%', () => {
    let out = '';
    const p = new Progress(true, (s) => (out += s));
    for (const v of [0, 0.5, 1.5, 2, 100, 100]) p.set(v);
    p.end();
    expect(out).toBe('    (0.00/100%)\r    (1.50/100%)\r    (100.00/100%)\r    (100.00/100%)\r\n');
  });
});
