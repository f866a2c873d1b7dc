import { defineConfig, type Plugin } from 'vite';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
// @ts-expect-error a plain .mjs helper without types
import { serviceWorkerSource } from './scripts/service-worker.mjs';

/**
 * Offline, installable app: writes sw.js (scripts/service-worker.mjs) into the
 * production build with every file the build made plus public/'s files, and
 * a cache name that changes with them.
 */
function serviceWorker(): Plugin {
  return {
    name: 'blocktab-service-worker',
    apply: 'build',
    generateBundle(_options, bundle) {
      const files = Object.keys(bundle).filter((f) => f !== 'sw.js');
      const pub = path.resolve('public');
      const walk = (d: string): string[] =>
        fs.existsSync(d) ? fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.relative(pub, path.join(d, e.name)).split(path.sep).join('/')])) : [];
      const all = [...new Set([...files, ...walk(pub)])].sort().map((f) => './' + f);
      const h = createHash('sha256');
      for (const f of files) {
        const item = bundle[f]!;
        h.update(f).update(item.type === 'chunk' ? item.code : typeof item.source === 'string' ? item.source : Buffer.from(item.source));
      }
      this.emitFile({ type: 'asset', fileName: 'sw.js', source: serviceWorkerSource(all, h.digest('hex').slice(0, 16)) });
    },
  };
}

// The app's production build (`npm run build:app`) has its own folder,
// dist-app/: dist/ belongs to tsc (the library and the CLI, `bin` is
// dist/cli/main.js), and vite empties its outDir before writing, so sharing
// dist/ would wipe the CLI. emptyOutDir only ever clears dist-app/.
// Cross-origin isolation (COOP + COEP) gives pages SharedArrayBuffer, which the
// attach API's synchronous channel (src/attach/sync-client.ts) needs. Remote
// images are fetched in CORS mode, which COEP allows.
const isolation = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };

export default defineConfig({
  server: { host: '127.0.0.1', port: 5173, headers: isolation },
  preview: { headers: isolation },
  worker: { format: 'es' },
  build: { outDir: 'dist-app', emptyOutDir: true },
  plugins: [serviceWorker()],
});
