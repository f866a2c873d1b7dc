// Seeds on disk, so worker processes load what the parent made once:
// seeds.json lists them, the image files sit next to it.
import * as fs from 'node:fs';
import * as path from 'node:path';

export function saveSeeds(dir, seeds) {
  const list = seeds.map((s) => ({ ...s, files: Object.keys(s.files) }));
  for (const s of seeds) for (const [f, b] of Object.entries(s.files)) fs.writeFileSync(path.join(dir, f), b);
  fs.writeFileSync(path.join(dir, 'seeds.json'), JSON.stringify(list));
}

export function loadSeeds(dir) {
  return JSON.parse(fs.readFileSync(path.join(dir, 'seeds.json'), 'utf8')).map((s) => ({
    ...s,
    files: Object.fromEntries(s.files.map((f) => [f, new Uint8Array(fs.readFileSync(path.join(dir, f)))])),
  }));
}
