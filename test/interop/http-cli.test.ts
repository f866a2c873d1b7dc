// `blocktab` on http:// image names and json:{"file":{"driver":"http",...}}
// against qemu-img's curl driver, both reading the same loopback Range server:
// info, map, check, compare and convert must answer the same. The commands run
// asynchronously (the server lives in this process).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cliEntry, qemuImg, qemuIo, tmpDir } from '../helpers/qemu.js';
import { startRangeServer, type RangeServer } from '../helpers/range-server.js';

let server: RangeServer;
let dir: string;

interface Run {
  status: number;
  stdout: string;
  stderr: string;
}
function run(cmd: string, args: string[]): Promise<Run> {
  return new Promise((resolve) =>
    execFile(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}
const ours = (args: string[]) => run(process.execPath, [cliEntry, ...args]);
const theirs = (args: string[]) => run('qemu-img', args);

beforeAll(async () => {
  dir = tmpDir();
  // A raw base and a qcow2 on top of it with a relative backing name: the chain resolves against the URL.
  qemuImg(['create', '-f', 'raw', path.join(dir, 'base.raw'), '6M']);
  qemuIo(path.join(dir, 'base.raw'), ['write -P 0x11 0 1M', 'write -P 0x22 4M 512k'], 'raw');
  qemuImg(['create', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', path.join(dir, 'top.qcow2'), '8M']);
  qemuIo(path.join(dir, 'top.qcow2'), ['write -P 0x33 512k 1M', 'write -z 4M 64k', 'write -P 0x44 7M 100k'], 'qcow2');
  server = await startRangeServer(dir);
});
afterAll(async () => {
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('http image names in the CLI, against qemu-img (curl)', () => {
  it('info, map and check answer as qemu-img does, for URLs and json: names with curl options', async () => {
    const url = `${server.baseUrl}top.qcow2`;
    const json = `json:${JSON.stringify({ file: { driver: 'http', url, readahead: '128k', timeout: 10 } })}`;
    for (const args of [
      ['info', '--output=json', '--backing-chain', url],
      ['info', url],
      ['map', '--output=json', url],
      ['check', '--output=json', url],
      ['info', '--output=json', json],
      ['map', json],
    ]) {
      {
        const [a, b] = await Promise.all([ours(args), theirs(args)]);
        expect(a.stderr, args.join(' ')).toBe(b.stderr.replace(/^qemu-img:/gm, 'blocktab:'));
        expect(a.status, args.join(' ')).toBe(b.status);
        expect(a.stdout, args.join(' ')).toBe(b.stdout);
      }
    }
  });

  // qemu-img 7.2's curl driver stalls now and then when it reads a whole chain over loopback (a ranged GET that
  // it never finishes consuming), so whole-image reads are checked against qemu-img on the local files.
  it('convert -O raw of a URL is byte-equal to qemu-img convert of the same file, and compare agrees', async () => {
    const url = `${server.baseUrl}top.qcow2`;
    const mine = path.join(dir, 'mine.raw');
    const qemu = path.join(dir, 'qemu.raw');
    const a = await ours(['convert', '-O', 'raw', url, mine]);
    expect([a.status, a.stderr]).toEqual([0, '']);
    qemuImg(['convert', '-O', 'raw', path.join(dir, 'top.qcow2'), qemu]);
    expect(fs.readFileSync(mine).equals(fs.readFileSync(qemu))).toBe(true);
    // Two URLs: the qcow2 against its own raw base differs where the overlay wrote.
    const x = await ours(['compare', '-f', 'qcow2', '-F', 'raw', url, `${server.baseUrl}base.raw`]);
    const y = await theirs(['compare', '-f', 'qcow2', '-F', 'raw', path.join(dir, 'top.qcow2'), path.join(dir, 'base.raw')]);
    expect([x.status, x.stdout]).toEqual([y.status, y.stdout]);
    expect(x.status).toBe(1);
  });

  it('errors: a missing URL, a server without Range, unknown curl options', async () => {
    const missing = await ours(['info', `${server.baseUrl}none.qcow2`]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toBe(`blocktab: Could not open '${server.baseUrl}none.qcow2': No such file or directory (HTTP 404)\n`);
    const norange = await ours(['convert', '-O', 'raw', `${server.baseUrl}norange/base.raw`, path.join(dir, 'x.raw')]);
    expect(norange.status).toBe(1);
    expect(norange.stderr).toMatch(/the server ignores Range requests/);
    const opt = await ours(['info', `json:${JSON.stringify({ file: { driver: 'http', url: `${server.baseUrl}top.qcow2`, proxy: 'x' } })}`]);
    expect(opt.stderr).toMatch(/Block protocol 'http' doesn't support the option 'proxy'/);
  });
});
