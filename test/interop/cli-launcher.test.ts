/**
 * The shell launcher at the top of dist/bin/blocktab.js (vite.cli.config.ts):
 * run as a program, it keeps NODE_EXTRA_CA_CERTS away from Node's start-up and
 * the https transport trusts those certificates on first use. An https image
 * served with a certificate of a private CA converts to the same bytes as
 * qemu-img's convert of the local file, whichever way the CLI is started
 * (the launcher, the launcher with a CA store chosen in NODE_OPTIONS, plain
 * `node dist/bin/blocktab.js`); without the CA the same command is refused.
 * Through a link named qemu-img the launcher still speaks as qemu-img.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cliEntry, qemuImg, qemuIo, tmpDir } from '../helpers/qemu.js';
import { startRangeServer, type RangeServer } from '../helpers/range-server.js';

let dir: string;
let server: RangeServer;
let caFile: string;

interface Run {
  status: number;
  stdout: string;
  stderr: string;
}
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve) =>
    execFile(cmd, args, { cwd: dir, env, encoding: 'utf8' }, (err, stdout, stderr) =>
      resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}
/** The environment without any CA settings of the machine's, plus `extra`. */
function env(extra: Record<string, string>): NodeJS.ProcessEnv {
  const e = { ...process.env };
  for (const k of ['NODE_EXTRA_CA_CERTS', 'NODE_OPTIONS', 'SSL_CERT_FILE', 'SSL_CERT_DIR', 'BLOCKTAB_EXTRA_CA_CERTS']) delete e[k];
  return { ...e, ...extra };
}

beforeAll(async () => {
  dir = tmpDir('blocktab-launcher-');
  const ssl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=blocktab test CA']);
  ssl(['req', ...ec, '-keyout', 'srv.key', '-out', 'srv.csr', '-subj', '/CN=127.0.0.1']);
  fs.writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
  ssl(['x509', '-req', '-in', 'srv.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'srv.pem', '-days', '2', '-extfile', 'san.ext']);
  caFile = path.join(dir, 'ca.pem');
  qemuImg(['create', '-q', '-f', 'qcow2', path.join(dir, 'a.qcow2'), '4M']);
  qemuIo(path.join(dir, 'a.qcow2'), ['write -P 0x5a 64k 1M', 'write -P 0xa5 3M 100k'], 'qcow2');
  qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', 'a.qcow2', 'want.raw'], { cwd: dir });
  server = await startRangeServer(dir, { key: fs.readFileSync(path.join(dir, 'srv.key'), 'utf8'), cert: fs.readFileSync(path.join(dir, 'srv.pem'), 'utf8') });
});
afterAll(async () => {
  await server?.close();
});

describe('CLI launcher', () => {
  const ways: [string, (args: string[]) => [string, string[]], Record<string, string>][] = [
    ['the launcher', (a) => [cliEntry, a], {}],
    ['the launcher, NODE_OPTIONS choosing a CA store', (a) => [cliEntry, a], { NODE_OPTIONS: '--use-bundled-ca' }],
    ['node on the bundle', (a) => [process.execPath, [cliEntry, ...a]], {}],
  ];
  for (const [name, how, extra] of ways) {
    it(`converts an https image whose CA is in NODE_EXTRA_CA_CERTS (${name})`, async () => {
      const out = `out-${ways.findIndex((w) => w[0] === name)}.raw`;
      const [cmd, args] = how(['convert', '-O', 'raw', `${server.baseUrl}a.qcow2`, out]);
      const r = await run(cmd, args, env({ NODE_EXTRA_CA_CERTS: caFile, ...extra }));
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(fs.readFileSync(path.join(dir, out)).equals(fs.readFileSync(path.join(dir, 'want.raw')))).toBe(true);
    });
  }

  it('refuses the same image without the CA', async () => {
    const r = await run(cliEntry, ['convert', '-O', 'raw', `${server.baseUrl}a.qcow2`, 'refused.raw'], env({}));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/certificate/i);
  });

  it('speaks as qemu-img through a link of that name', async () => {
    const link = path.join(dir, 'bin', 'qemu-img');
    fs.mkdirSync(path.dirname(link), { recursive: true });
    fs.symlinkSync(cliEntry, link);
    for (const args of [['info', 'a.qcow2'], ['info', 'missing.qcow2'], ['check', 'a.qcow2']]) {
      const ours = await run(link, args, env({ NODE_EXTRA_CA_CERTS: caFile }));
      const theirs = await run('qemu-img', args, env({}));
      expect(ours).toEqual(theirs);
    }
  });
});
