// Browser benchmarks: the engine worker in Debian's Chromium (headless, a
// persistent profile under the temp dir so OPFS behaves as in a real
// profile), each figure against a bare baseline measured in the same page —
// see bench/browser/main.ts. Vite serves the page from the sources.
// `--profile` prints where a read's time goes instead (profile-worker.ts).
import * as os from 'node:os';
import * as path from 'node:path';
import { createServer } from 'vite';
import { chromium } from 'playwright';
import { bench, root } from './lib.mjs';

const server = await createServer({
  root,
  configFile: false,
  logLevel: 'error',
  server: { host: '127.0.0.1', port: 5180, strictPort: false },
  worker: { format: 'es' },
});
await server.listen();
const url = `${server.resolvedUrls.local[0]}bench/browser/index.html`;
const context = await chromium.launchPersistentContext(path.join(os.tmpdir(), 'blocktab-bench-profile'), {
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});
let failed = false;
try {
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') console.error(`# page: ${m.text()}`);
  });
  await page.goto(url);
  await page.waitForFunction(() => window.benchReady === true, null, { timeout: 120_000 });
  if (process.argv.includes('--profile')) {
    // Where a read's time goes, layer by layer (bench/browser/profile-worker.ts); prints no BENCH lines.
    const r = await page.evaluate(() => window.runProfile(), null);
    for (const [k, v] of Object.entries(r)) console.log(`# ${k.padEnd(36)} ${v.toFixed(2)} us`);
  } else {
    const { lines, wasm } = await page.evaluate(() => window.runBench(), null);
    console.log(`# wasm kernels in the worker: ${wasm}`);
    for (const l of lines) bench(l);
  }
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await context.close();
  await server.close();
}
process.exit(failed ? 1 : 0);
