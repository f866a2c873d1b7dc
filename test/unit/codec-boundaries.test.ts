// Guards for issue 11's structure: src/wasm/ is a leaf (imports nothing
// outside itself but Node builtins), and qcow2 entry bits and header bytes
// are touched only by their codecs (l2-entry.ts, refcount-codec.ts,
// header.ts). These read the sources, so a new inline mask or a loop back
// into block/ or formats/ fails here with the file and line.
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from '../helpers/qemu.js';

function sources(dir: string): string[] {
  const abs = path.join(repoRoot, dir);
  return fs
    .readdirSync(abs, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => path.join(abs, f));
}

/** Module specifiers of static imports/exports and literal dynamic imports. */
function specifiers(text: string): Array<{ spec: string; line: number }> {
  const out: Array<{ spec: string; line: number }> = [];
  const re = /(?:^|\n)\s*(?:import|export)\b[^;'"]*?from\s*['"]([^'"]+)['"]|(?:^|\n)\s*import\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/g;
  for (const m of text.matchAll(re)) {
    const spec = m[1] ?? m[2] ?? m[3]!;
    out.push({ spec, line: text.slice(0, m.index).split('\n').length + (text[m.index!] === '\n' ? 1 : 0) });
  }
  return out;
}

describe('src/wasm is a leaf', () => {
  it('imports only files of its own folder and node: builtins', () => {
    const bad: string[] = [];
    const files = sources('src/wasm');
    expect(files.length).toBeGreaterThan(5);
    for (const f of files) {
      const text = fs.readFileSync(f, 'utf8');
      for (const { spec, line } of specifiers(text)) {
        const ok = spec.startsWith('node:') || (spec.startsWith('./') && !spec.includes('/../'));
        if (!ok) bad.push(`${path.relative(repoRoot, f)}:${line}: ${spec}`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('entry points load wasm through src/runtime.ts (which installs the buffer provider)', () => {
    const direct: string[] = [];
    for (const f of [...sources('src'), ...sources('bench')]) {
      if (f.includes(`${path.sep}wasm${path.sep}`) || f.endsWith(`${path.sep}runtime.ts`)) continue;
      const text = fs.readFileSync(f, 'utf8');
      if (/import\s*\{[^}]*\binitWasm\b[^}]*\}\s*from\s*['"][^'"]*wasm\/(index|module)\.js['"]/.test(text)) direct.push(path.relative(repoRoot, f));
    }
    expect(direct).toEqual([]);
    for (const entry of ['src/cli/main.ts', 'src/worker/engine-worker.ts', 'src/index.ts']) {
      expect(specifiers(fs.readFileSync(path.join(repoRoot, entry), 'utf8')).map((s) => s.spec), entry).toContain(entry === 'src/index.ts' ? './runtime.js' : '../runtime.js');
    }
  });

  it('the specifier scanner sees the imports it must see', () => {
    const sample = "import { a } from '../block/errors.js';\nexport { b } from './b.js';\nimport './side.js';\nconst m = await import('../x.js');\n";
    expect(specifiers(sample).map((s) => s.spec)).toEqual(['../block/errors.js', './b.js', './side.js', '../x.js']);
  });
});

describe('qcow2 codecs own the bits', () => {
  const codecs = new Set(['l2-entry.ts', 'refcount-codec.ts', 'header.ts', 'bitmap-table.ts']);
  // Entry masks and flag bits (offset field halves, COPIED, compressed, reserved), and BigInt entry assembly.
  const inlineMask = /0x00ffffff|0xfffffe00|0x[0-9a-f]*[37]fffffff\b|0x[4-8]0000000\b|0x7f000000|0x3f000000|& 0x1ff\b|\[[^\]]*\]!? [&|]=? ?~?0x[48]0\b|62n|>>> ?30\b/i;
  // Header bytes written by hand: a write to the image file at a header field offset.
  const headerWrite = /bdrvPwrite\(\s*[\w.]+\s*,\s*(?:8|16|20|24|32|36|40|48|56|60|64|72|80|88|96|100|104)\s*,/;

  it('no other qcow2 file decodes entry bits or writes header fields by hand', () => {
    const bad: string[] = [];
    for (const f of sources('src/formats/qcow2')) {
      if (codecs.has(path.basename(f))) continue;
      fs.readFileSync(f, 'utf8')
        .split('\n')
        .forEach((l, i) => {
          if (inlineMask.test(l) || headerWrite.test(l)) bad.push(`${path.relative(repoRoot, f)}:${i + 1}: ${l.trim()}`);
        });
    }
    expect(bad).toEqual([]);
  });

  it('the patterns catch the forms that were inline before', () => {
    for (const l of [
      'const l2Off = (be.u32(l1, i * 8) & 0x00ffffff) * TWO32 + ((be.u32(l1, i * 8 + 4) & 0xfffffe00) >>> 0);',
      'if (hi & 0x40000000) return L2_COMPRESSED;',
      "be.put32(s.l1Table, i * 8, rc === 1 ? (hi | 0x80000000) >>> 0 : hi & 0x7fffffff);",
      'const v = (1n << 62n) | (BigInt(sectors) << BigInt(62 - (s.clusterBits - 8)));',
      'if (copied) s.l1Table[index * 8]! |= 0x80;',
      'if (hi & 0x7f000000 || lo & 0x1ff) {',
    ]) {
      expect(inlineMask.test(l), l).toBe(true);
    }
    expect(headerWrite.test('await bdrvPwrite(s.file, 36, 12, hdr);')).toBe(true);
    expect(headerWrite.test('await bdrvPwrite(s.file, 0, cluster.length, cluster);')).toBe(false);
  });
});
