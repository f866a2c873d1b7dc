/**
 * The `blocktab` CLI bundled for Node into dist/bin/ (blocktab.js is the
 * package's bin). Loading a few bundled files instead of ~150 ES modules is
 * most of what the CLI's start-up costs: the entry holds main() and argument
 * handling only, the engine and each command are chunks loaded on demand, so
 * `blocktab --version` parses almost nothing and `blocktab info` only what
 * info needs. dist/bin/ is two levels below the repository root like the tsc
 * output in dist/cli/, so the paths the code resolves relative to itself
 * (package.json, build/blocktab.wasm, native/build/) are the same. Node's
 * built-ins and the zstd encoder (which loads its own .wasm next to itself)
 * stay external; the pure-JS codecs are bundled in.
 */
import { defineConfig } from 'vite';

export default defineConfig({
  logLevel: 'warn',
  publicDir: false,
  build: {
    ssr: 'src/cli/main.ts',
    outDir: 'dist/bin',
    emptyOutDir: true,
    target: 'node20',
    minify: false,
    sourcemap: false,
    rollupOptions: {
      external: ['@bokuweb/zstd-wasm'],
      output: {
        entryFileNames: 'blocktab.js',
        chunkFileNames: '[name]-[hash].js',
        // Less source to decode and scan at every start-up; names kept, so stacks (BLOCKTAB_DEBUG) stay readable.
        minify: { compress: true, mangle: { keepNames: true }, codegen: { removeWhitespace: true } },
      },
    },
  },
  ssr: { noExternal: ['pako', 'fzstd', '@noble/hashes', '@noble/ciphers'] },
});
