/**
 * The import boundaries the architecture promises (README, "Layers"), checked
 * on every import in src/ — static, `export … from`, `import type` and
 * dynamic `import()` alike (TypeScript's own pre-processor finds them):
 *
 * - A format is known only through the driver registry: nothing outside
 *   src/formats/<name>/ imports from it, except that the registration files
 *   import its entry, src/formats/<name>/index.ts.
 * - src/wasm/ is a leaf: it knows bytes, not blocks or formats.
 * - src/codecs/ (compression providers shared by formats) is a leaf too.
 *
 * A failure lists each offending file and the import it makes.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import ts from 'typescript';

const ROOT = path.resolve(import.meta.dirname, '../..');
const SRC = path.join(ROOT, 'src');

/** The only files that may import a format's entry (they register drivers). */
const REGISTRATION_FILES = new Set(['src/drivers.ts', 'src/node.ts']);

interface Edge {
  /** Importing file, relative to the repository (src/…). */
  from: string;
  /** The specifier as written. */
  spec: string;
  /** The file it resolves to, relative to the repository. */
  to: string;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...sourceFiles(p));
    else if (/\.(ts|tsx|mts)$/.test(e.name) && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Resolves a relative specifier the way the build does ('./x.js' is './x.ts'). */
function resolve(fromFile: string, spec: string): string | undefined {
  const base = path.resolve(path.dirname(fromFile), spec.replace(/[?#].*$/, ''));
  const stem = base.replace(/\.(m?js|ts)$/, '');
  for (const c of [`${stem}.ts`, `${stem}.tsx`, `${stem}.mts`, base, path.join(base, 'index.ts')]) {
    if (fs.existsSync(c) && fs.statSync(c).isFile()) return c;
  }
  return undefined;
}

/** Every relative import in src/, resolved. */
function importEdges(): Edge[] {
  const edges: Edge[] = [];
  for (const file of sourceFiles(SRC)) {
    const text = fs.readFileSync(file, 'utf8');
    for (const imp of ts.preProcessFile(text, true, true).importedFiles) {
      const spec = imp.fileName;
      if (!spec.startsWith('.')) continue; // packages and node: builtins
      const target = resolve(file, spec);
      const to = target ? path.relative(ROOT, target) : path.relative(ROOT, path.resolve(path.dirname(file), spec));
      edges.push({ from: path.relative(ROOT, file), spec, to });
    }
  }
  return edges;
}

const show = (e: Edge) => `${e.from} imports '${e.spec}' (${e.to})`;

/** src/formats/<name>/… → <name>, else undefined. */
function formatOf(file: string): string | undefined {
  return /^src\/formats\/([^/]+)\//.exec(file)?.[1];
}

/** Imports that cross a format's boundary without going through its registered entry. */
export function formatBoundaryViolations(edges: Edge[]): string[] {
  const bad: string[] = [];
  for (const e of edges) {
    const fmt = formatOf(e.to);
    if (fmt === undefined || formatOf(e.from) === fmt) continue;
    // src/wasm/ has its own, stricter rule below.
    if (e.from.startsWith('src/wasm/')) continue;
    const isEntry = e.to === `src/formats/${fmt}/index.ts`;
    if (!isEntry) bad.push(`${show(e)}: only code in src/formats/${fmt}/ may import its internals`);
    else if (!REGISTRATION_FILES.has(e.from)) bad.push(`${show(e)}: only ${[...REGISTRATION_FILES].join(', ')} import a format's entry; use the driver registry`);
  }
  return bad;
}

/** Imports from a leaf folder to anything in src/ outside it. */
export function leafViolations(edges: Edge[], leaf: string): string[] {
  return edges.filter((e) => e.from.startsWith(leaf) && !e.to.startsWith(leaf)).map((e) => `${show(e)}: ${leaf} is a leaf`);
}

describe('import boundaries in src/', () => {
  const edges = importEdges();

  it('finds the imports it checks (the scan itself works)', () => {
    expect(edges.length).toBeGreaterThan(200);
    // One edge of each kind the scanner must see: static, type-only, dynamic.
    expect(edges).toContainEqual(expect.objectContaining({ from: 'src/drivers.ts', to: 'src/formats/qcow2/index.ts' }));
    expect(edges.some((e) => e.from === 'src/formats/qcow2/qcow2.ts' && e.spec === './check.js')).toBe(true);
    expect(edges.some((e) => e.from === 'src/formats/qcow2/make-empty.ts' && e.spec === './state.js')).toBe(true);
  });

  it('the rules catch a boundary crossing (checked on made-up edges)', () => {
    const made: Edge[] = [
      { from: 'src/jobs/commit.ts', spec: '../formats/qcow2/write.js', to: 'src/formats/qcow2/write.ts' },
      { from: 'src/img/create.ts', spec: '../formats/raw/index.js', to: 'src/formats/raw/index.ts' },
      { from: 'src/drivers.ts', spec: './formats/raw/index.js', to: 'src/formats/raw/index.ts' },
      { from: 'src/formats/vdi/vdi.ts', spec: '../qcow2/header.js', to: 'src/formats/qcow2/header.ts' },
      { from: 'src/wasm/l2-scan.ts', spec: '../block/errors.js', to: 'src/block/errors.ts' },
    ];
    expect(formatBoundaryViolations(made)).toEqual([
      "src/jobs/commit.ts imports '../formats/qcow2/write.js' (src/formats/qcow2/write.ts): only code in src/formats/qcow2/ may import its internals",
      "src/img/create.ts imports '../formats/raw/index.js' (src/formats/raw/index.ts): only src/drivers.ts, src/node.ts import a format's entry; use the driver registry",
      "src/formats/vdi/vdi.ts imports '../qcow2/header.js' (src/formats/qcow2/header.ts): only code in src/formats/qcow2/ may import its internals",
    ]);
    expect(leafViolations(made, 'src/wasm/')).toEqual(["src/wasm/l2-scan.ts imports '../block/errors.js' (src/block/errors.ts): src/wasm/ is a leaf"]);
  });

  it('nothing outside src/formats/<name>/ imports a format, except registration files importing its index.ts', () => {
    expect(formatBoundaryViolations(edges)).toEqual([]);
  });

  it('src/codecs/ imports nothing from the rest of src/', () => {
    expect(leafViolations(edges, 'src/codecs/')).toEqual([]);
  });

  // (test/unit/codec-boundaries.test.ts checks the same with its own scanner, and that entries load wasm through src/runtime.ts.)
  it('src/wasm/ imports nothing from the rest of src/ (a leaf that knows bytes, not formats)', () => {
    expect(leafViolations(edges, 'src/wasm/')).toEqual([]);
  });
});
