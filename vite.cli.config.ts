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
import { chmodSync } from 'node:fs';
import { join } from 'node:path';
import { LAUNCHER_RAISED_COMMANDS, RAISED_BUDGET } from './src/cli/tier-up.ts';

/**
 * The first lines of dist/bin/blocktab.js: a POSIX shell script that is also
 * JavaScript. Run as a program (the package's bin, the iotests' qemu-img and
 * qemu-io links) the kernel hands it to /bin/sh, which execs node on the
 * same file with the same argv[1] (so the link name still picks the tool);
 * `node dist/bin/blocktab.js` skips the `#!` line and reads line 2 as a
 * string and a comment. The shell's one job is NODE_EXTRA_CA_CERTS: Node 20
 * parses those certificates, and with them its whole bundled root store,
 * before any JavaScript runs (OpenSSL 3 makes that slow: 5x the instructions
 * of a bare `node -e 0`, nodejs/node#40524), though a command only needs them
 * for an https:// image. The launcher hands the variable over under another
 * name; src/cli/bin.ts puts it back and src/protocols/http-node.ts adds the
 * certificates to its https agent. Left alone when NODE_OPTIONS picks a CA
 * store (--use-openssl-ca and the like), whose meaning only Node knows.
 * Its second job: the commands that copy (src/cli/tier-up.ts's
 * LAUNCHER_RAISED_COMMANDS) start with V8's raised tier-up budget on Node's
 * command line (NODE_OPTIONS cannot carry V8 flags).
 */
export const LAUNCHER = [
  '#!/bin/sh',
  `":" //; case "$NODE_OPTIONS" in *-ca*) ;; *) if [ -n "$NODE_EXTRA_CA_CERTS" ]; then BLOCKTAB_EXTRA_CA_CERTS=$NODE_EXTRA_CA_CERTS; export BLOCKTAB_EXTRA_CA_CERTS; unset NODE_EXTRA_CA_CERTS; fi;; esac; ` +
    `case "$1" in ${LAUNCHER_RAISED_COMMANDS.join('|')}) exec node --interrupt-budget=${RAISED_BUDGET} "$0" "$@";; esac; exec node "$0" "$@"`,
].join('\n');

/** Replaces the entry's `#!/usr/bin/env node` line with LAUNCHER and makes the file executable. */
function launcher(): Plugin {
  return {
    name: 'blocktab-launcher',
    // After minification (which would drop line 2's comment).
    generateBundle(_options, bundle) {
      for (const item of Object.values(bundle)) if (item.type === 'chunk' && item.isEntry) item.code = `${LAUNCHER}\n${item.code.replace(/^#![^\n]*\n/, '')}`;
    },
    writeBundle(options, bundle) {
      for (const item of Object.values(bundle)) if (item.type === 'chunk' && item.isEntry) chmodSync(join(options.dir!, item.fileName), 0o755);
    },
  };
}

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
  plugins: [commonJsFolder(), launcher()],
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
        // Fewer, larger chunks where a command loads them all anyway: each file costs a lookup, a read
        // of its source and of its code-cache entry, and a compile (about 0.3 ms, more with a cold page
        // cache). main.ts with everything it imports statically is one chunk (every command loads it),
        // node.ts with its own (every engine command loads it) another, and the cli/img modules that
        // several commands share a third; formats and each command's own code stay apart, so
        // `info disk.qcow2` still loads neither vmdk nor convert. A small convert loads 9 files, not 33.
        codeSplitting: {
          groups: [
            { name: 'cli', test: /src[\\/]cli[\\/]main\.ts$/, priority: 3 },
            { name: 'engine', test: /src[\\/]node\.ts$/, priority: 2 },
            { name: 'commands', test: /src[\\/](cli|img)[\\/]/, minShareCount: 2, priority: 1 },
          ],
        },
        // Less source to decode and scan at every start-up; names kept, so stacks (BLOCKTAB_DEBUG) stay readable.
        minify: { compress: true, mangle: { keepNames: true }, codegen: { removeWhitespace: true } },
      },
    },
  },
  ssr: { noExternal: ['pako', 'fzstd', '@noble/hashes', '@noble/ciphers'] },
});
