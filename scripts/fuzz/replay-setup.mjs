// What replaying a saved case needs, for replay.mjs and minimize.mjs: the
// built engine (dist/: `npm run build` first) with the check, the LUKS
// seed's secret registered, and the seed images (their temp folder removed).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { LUKS_SECRET, makeSeeds } from './seeds.mjs';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export async function replaySetup() {
  const lib = {
    ...(await import(pathToFileURL(path.join(root, 'dist/node.js')).href)),
    ...(await import(pathToFileURL(path.join(root, 'dist/img/check.js')).href)),
  };
  lib.registerSecret(LUKS_SECRET.id, LUKS_SECRET.data);
  const { seeds, dir } = makeSeeds();
  fs.rmSync(dir, { recursive: true, force: true });
  return { lib, seeds };
}
