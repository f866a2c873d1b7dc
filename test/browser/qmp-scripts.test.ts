// The differential QMP scripts (test/helpers/qmp-scripts.ts) through the
// worker's Engine.execute in Chromium: every script marked `browser` runs
// over comlink against images in the worker's memory storage, and its
// replies and events must equal QEMU 7.2's, as recorded by
// test/interop/qmp-sweep.test.ts in test/fixtures/qmp-scripts.json (that
// test also checks the recording is still what QEMU answers). The scripts'
// `file` nodes become `memory` nodes here; each script starts from the
// group's state (node n0) and leaves it as it found it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type BlocktabClient } from '../../src/client/client.js';
import { QmpError } from '../../src/engine/qmp-error.js';
import recording from '../fixtures/qmp-scripts.json';
import { browserSetup, GROUP_IMAGES, scriptGroups, type ScriptLine } from '../helpers/qmp-scripts.js';
import { maskSnapshotTimes, transcriptMasker } from '../helpers/qmp-normalize.js';
import { EVENTS_WITHOUT_DATA } from '../../src/engine/events.js';

type Step = { input: string; replies: unknown; events: unknown };
const recorded = recording as unknown as Record<string, Record<string, Step[]>>;

const DIR = 'qmp-scripts';
let client: BlocktabClient;
let events: { event: string; data?: unknown }[] = [];

/** A script line for this worker: file nodes in its memory storage. */
const local = (line: string) => line.split('"driver":"file"').join('"driver":"memory"').split('$DIR').join(DIR);

beforeAll(async () => {
  client = createClient(new Worker(new URL('../../src/worker/engine-worker.ts', import.meta.url), { type: 'module' }));
  await client.ready();
  for (const [img, size] of Object.entries(GROUP_IMAGES)) await client.create('memory', `${DIR}/${img}`, 'qcow2', Number.parseInt(size, 10) * 1024 * 1024);
  // u is full of data (GROUP_DATA's `write -P 7 0 4M`).
  const u = await client.open('memory', `${DIR}/u.qcow2`, { format: 'qcow2' });
  await client.write(u, 0, new Uint8Array(4 * 1024 * 1024).fill(7));
  await client.close(u);
  // As the QMP monitor writes them: some events carry no data.
  await client.onEvent((e) => events.push(EVENTS_WITHOUT_DATA.has(e.event) ? { event: e.event } : { event: e.event, data: e.data }));
  for (const l of browserSetup) await run(l);
});
afterAll(() => client?.terminate());

/** Runs one line; waits (by count, 10 s at most) for the events the line expects. */
async function run(l: ScriptLine): Promise<Step> {
  const { execute, arguments: args } = JSON.parse(local(l.line)) as { execute: string; arguments?: Record<string, unknown> };
  events = [];
  let reply: unknown;
  try {
    reply = { return: (await client.execute(execute, args)) ?? {} };
  } catch (e) {
    if (!(e instanceof QmpError)) throw e;
    reply = { error: e.toQmp() };
  }
  for (const end = Date.now() + 10_000; events.length < (l.events ?? 0) && Date.now() < end; ) await new Promise((r) => setTimeout(r, 10));
  return { input: l.line, replies: [reply], events: events.map(({ event, data }) => (data === undefined ? { event } : { event, data: JSON.parse(JSON.stringify(data)) as unknown })) };
}

/** Node names numbered per script on both sides (the recording numbered them per group); our directory is QEMU's $DIR. */
const perScript = (steps: Step[], dir: string | null) => {
  const mask = transcriptMasker(dir);
  return steps.map((st) => ({ input: st.input, replies: mask(maskSnapshotTimes(st.replies)), events: mask(st.events) }));
};

describe('the QMP scripts through Engine.execute in the worker, against QEMU 7.2\'s recorded replies', () => {
  for (const [group, scripts] of Object.entries(scriptGroups)) {
    const browserScripts = scripts.filter((sc) => sc.browser);
    if (browserScripts.length === 0) continue;
    it(`${group}: ${browserScripts.length} scripts`, async () => {
      for (const sc of browserScripts) {
        const theirs = recorded[group]?.[sc.name];
        expect(theirs, `recording of ${sc.name}`).toBeDefined();
        const ours: Step[] = [];
        for (const l of sc.lines) ours.push(await run(l));
        expect({ script: sc.name, steps: perScript(ours, DIR) }).toEqual({ script: sc.name, steps: perScript(theirs!, null) });
      }
    });
  }
});
