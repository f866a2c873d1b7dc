/**
 * The `blocktab` CLI bundled for Node into dist/bin/ (blocktab.js is the
 * package's bin). Loading a few bundled files instead of ~150 ES modules is
 * most of what the CLI's start-up costs: the entry (src/cli/bin.ts) turns on
 * the compile cache and loads main(); the engine, each command and each
 * format driver are chunks loaded on demand, so `blocktab --version` parses
 * almost nothing and `blocktab info disk.qcow2` only what info and qcow2 need.
 *
 * The bundle is CommonJS (dist/bin/package.json says so): on Node 20 a V8
 * code cache can be kept only for scripts compiled through vm.Script, which
 * src/cli/compile-cache.ts does for these files, so a command's second run
 * skips parsing and compiling (Node 22's module.enableCompileCache does the
 * same for any module). dist/bin/ is two levels below the repository root
 * like the tsc output in dist/cli/, so the paths the code resolves relative
 * to itself (package.json, build/blocktab.wasm, native/build/) are the same.
 * Node's built-ins and the zstd encoder (which loads its own .wasm next to
 * itself) stay external; the pure-JS codecs are bundled in.
 */
import { defineConfig, type Plugin } from 'vite';

/**
 * dist/bin/package.json: the bundle's .js files are CommonJS, whatever the
 * repository's package.json says. And no chunk may keep an import(): the
 * compile cache runs chunks as vm.Scripts, where Node 20 has no import().
 */
function commonJsFolder(): Plugin {
  return {
    name: 'blocktab-commonjs-folder',
    generateBundle(_options, bundle) {
      for (const [name, item] of Object.entries(bundle)) {
        if (item.type === 'chunk' && /\bimport\(/.test(item.code)) this.error(`${name} keeps a dynamic import(): the compile cache cannot run it`);
      }
      this.emitFile({ type: 'asset', fileName: 'package.json', source: '{ "type": "commonjs" }\n' });
    },
  };
}

export default defineConfig({
  logLevel: 'warn',
  publicDir: false,
  plugins: [commonJsFolder()],
  build: {
    ssr: 'src/cli/bin.ts',
    outDir: 'dist/bin',
    emptyOutDir: true,
    target: 'node20',
    minify: false,
    sourcemap: false,
    rollupOptions: {
      external: ['@bokuweb/zstd-wasm'],
      output: {
        format: 'cjs',
        // import() of a chunk or a package becomes require(): code compiled through vm.Script (the compile cache) has no import().
        dynamicImportInCjs: false,
        entryFileNames: 'blocktab.js',
        chunkFileNames: '[name]-[hash].js',
        // Less source to decode and scan at every start-up; names kept, so stacks (BLOCKTAB_DEBUG) stay readable.
        minify: { compress: true, mangle: { keepNames: true }, codegen: { removeWhitespace: true } },
      },
    },
  },
  ssr: { noExternal: ['pako', 'fzstd', '@noble/hashes', '@noble/ciphers'] },
});
