/**
 * Node side of the workload tests: an HTTP endpoint the page POSTs an image
 * to (the bytes of a file it made in OPFS through the engine worker), with the
 * workload it ran in the `X-Workload` header (JSON WorkloadRequest). The
 * server runs `qemu-img check` on the image, replays the workload with qemu-io
 * and qemu-img snapshot on a twin made by `qemu-img create`, compares both
 * with `qemu-img compare`, and answers a WorkloadVerdict as JSON.
 *
 * A plain HTTP endpoint (started by global-setup.ts) rather than a vitest
 * browser command: it needs no change to vitest.config.ts.
 */
import * as http from 'node:http';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { tmpDir } from '../helpers/qemu.js';
import { qemuIoCommand, type WorkloadOp, type WorkloadRequest, type WorkloadVerdict } from './workload-ops.js';

/**
 * Runs a tool without blocking the event loop: qemu-img opens an HTTP backing
 * file through curl from the range server, which lives in this process.
 */
function run(cmd: string, args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const status = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ status, stdout, stderr });
    });
  });
}

async function must(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const snapshotNames = async (file: string): Promise<string[]> =>
  ((JSON.parse(await must('qemu-img', ['info', '-U', '--output=json', file])) as { snapshots?: { name: string }[] }).snapshots ?? []).map((s) => s.name);

/** Replays `ops` on `file`: runs of data operations in one qemu-io call each, snapshots with qemu-img. */
async function replay(file: string, ops: WorkloadOp[]): Promise<void> {
  let batch: string[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    const out = await must('qemu-io', ['-f', 'qcow2', ...batch.flatMap((c) => ['-c', c]), file]);
    if (/error|failed/i.test(out)) throw new Error(`qemu-io: ${out}`);
    batch = [];
  };
  for (const o of ops) {
    if (o.op === 'snapshot') {
      await flush();
      await must('qemu-img', ['snapshot', `-${o.action[0]}`, o.name, file]);
    } else batch.push(qemuIoCommand(o));
  }
  await flush();
}

export async function verdict(dir: string, image: Uint8Array, req: WorkloadRequest): Promise<WorkloadVerdict> {
  const ours = path.join(dir, 'ours.qcow2');
  const twin = path.join(dir, 'twin.qcow2');
  fs.writeFileSync(ours, image);
  const c = await run('qemu-img', ['check', '--output=json', ours]);
  const v: WorkloadVerdict = {
    check: c.stdout ? (JSON.parse(c.stdout) as Record<string, unknown>) : { stderr: c.stderr },
    checkStatus: c.status,
    compareStatus: -1,
    compareOutput: '',
    snapshots: [],
    twinSnapshots: [],
  };
  if (req.checkOnly) {
    // The human report too: it names each error (the crash tests tell known windows from corruption by it).
    const text = await run('qemu-img', ['check', ours]);
    v.checkText = text.stdout + text.stderr;
    return v;
  }
  const backing = req.backingFile ? ['-b', req.backingFile, '-F', req.backingFormat ?? 'qcow2'] : [];
  await must('qemu-img', ['create', '-f', 'qcow2', ...backing, ...(req.createOptions ? ['-o', req.createOptions] : []), twin, String(req.size)]);
  await replay(twin, req.ops);
  const cmp = await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', ours, twin]);
  v.compareStatus = cmp.status;
  v.compareOutput = (cmp.stdout + cmp.stderr).trim();
  v.snapshots = await snapshotNames(ours);
  v.twinSnapshots = await snapshotNames(twin);
  return v;
}

export async function startWorkloadServer(): Promise<{ url: string; close(): Promise<void> }> {
  let n = 0;
  const root = tmpDir('blocktab-workload-');
  const server = http.createServer((req, res) => {
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Allow-Headers', 'X-Workload, Content-Type');
    res.setHeader('Access-Control-Allow-Methods', 'POST, OPTIONS');
    if (req.method === 'OPTIONS') {
      res.writeHead(204).end();
      return;
    }
    if (req.method !== 'POST') {
      res.writeHead(405).end();
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      try {
        const wl = JSON.parse(String(req.headers['x-workload'] ?? '{}')) as WorkloadRequest;
        const dir = path.join(root, String(++n));
        fs.mkdirSync(dir);
        const body = JSON.stringify(await verdict(dir, Buffer.concat(chunks), wl));
        fs.rmSync(dir, { recursive: true, force: true });
        res.writeHead(200, { 'Content-Type': 'application/json' }).end(body);
      } catch (e) {
        res.writeHead(500, { 'Content-Type': 'text/plain' }).end(e instanceof Error ? e.message : String(e));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/workload`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
