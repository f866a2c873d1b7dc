import { defineConfig } from 'vite';

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
});
