/**
 * A QMP monitor over an Engine, byte for byte the protocol QEMU speaks on
 * `-qmp stdio`: the greeting, capabilities negotiation (only
 * `qmp_capabilities` is accepted until it has run), one reply per command in
 * order with the request's `id` echoed, QEMU's errors for malformed input,
 * and every engine event written as it happens, with its timestamp.
 * Commands run one at a time, in the order they arrive; events that a
 * command causes while it runs come before its reply, as QEMU's do.
 */
import type { Engine } from '../../engine/engine.js';
import { EVENTS_WITHOUT_DATA } from '../../engine/events.js';
import { QmpError, toQmpError } from '../../engine/qmp-error.js';
import { checkArgs } from '../../engine/qapi-args.js';
import { QMP_QEMU_VERSION } from '../../engine/commands/runstate.js';
import { cancelAllJobs } from '../../engine/commands/jobs.js';
import { JsonSplitter, parseQmpJson, toQmpJson, type WireItem } from './wire.js';

type Reply = { return: unknown; id?: unknown } | { error: { class: string; desc: string }; id?: unknown };


const MEMBERS = new Set(['execute', 'exec-oob', 'arguments', 'id', 'control']);

export class QmpMonitor {
  private negotiated = false;
  private readonly splitter = new JsonSplitter();
  private chain: Promise<void> = Promise.resolve();
  private readonly off: () => void;
  /** Set by `quit`: the caller closes the engine and exits. */
  quitRequested = false;

  constructor(
    readonly engine: Engine,
    private readonly write: (line: string) => void,
    version = QMP_QEMU_VERSION,
  ) {
    this.off = engine.onEvent((e) => this.write(toQmpJson({ timestamp: e.timestamp, event: e.event, data: EVENTS_WITHOUT_DATA.has(e.event) ? undefined : e.data })));
    this.write(toQmpJson({ QMP: { version: { qemu: version.qemu, package: version.package }, capabilities: ['oob'] } }));
  }

  /** Feeds input text; commands queue and run in order. Resolves when everything fed so far has been answered. */
  feed(chunk: string): Promise<void> {
    for (const item of this.splitter.feed(chunk)) this.chain = this.chain.then(() => (this.quitRequested ? undefined : this.handle(item)));
    return this.chain;
  }

  /** Waits for queued commands, cancels the jobs still running (their events still go out, as QEMU's at quit), then stops listening for events. */
  async close(): Promise<void> {
    await this.chain;
    await cancelAllJobs(this.engine);
    this.off();
  }

  private send(r: Reply): void {
    this.write(toQmpJson(r));
  }

  private async handle(item: WireItem): Promise<void> {
    if ('stray' in item) {
      const parsed = parseQmpJson(item.stray);
      this.send({ error: { class: 'GenericError', desc: 'error' in parsed ? `JSON parse error, invalid keyword '${item.stray}'` : 'QMP input must be a JSON object' } });
      return;
    }
    const parsed = parseQmpJson(item.text);
    if ('error' in parsed) return this.send({ error: { class: 'GenericError', desc: parsed.error } });
    const req = parsed.value;
    if (typeof req !== 'object' || req === null || Array.isArray(req)) {
      return this.send({ error: { class: 'GenericError', desc: 'QMP input must be a JSON object' } });
    }
    const r = req as Record<string, unknown>;
    const withId = (reply: Reply): Reply => ('id' in r ? { ...reply, id: r.id } : reply);
    const fail = (cls: string, desc: string) => this.send(withId({ error: { class: cls, desc } }));
    for (const k of Object.keys(r)) if (!MEMBERS.has(k)) return fail('GenericError', `QMP input member '${k}' is unexpected`);
    const oob = 'exec-oob' in r;
    const name = oob ? r['exec-oob'] : r.execute;
    if (name === undefined) return fail('GenericError', "QMP input lacks member 'execute'");
    if (typeof name !== 'string') return fail('GenericError', `QMP input member '${oob ? 'exec-oob' : 'execute'}' must be a string`);
    if ('arguments' in r && (typeof r.arguments !== 'object' || r.arguments === null || Array.isArray(r.arguments))) {
      return fail('GenericError', "QMP input member 'arguments' must be an object");
    }
    if (oob) return fail('GenericError', `The command ${name} does not support OOB`);
    if (name === 'qmp_capabilities') {
      if (this.negotiated) return fail('CommandNotFound', 'Capabilities negotiation is already complete, command ignored');
      try {
        checkArgs({ '*enable': { list: { enum: ['oob'] } } }, r.arguments);
      } catch (e) {
        // QEMU 7.2 names the list member 'null' in this one message.
        const q = toQmpError(e);
        return fail(q.errorClass, q.desc.replace(/^Parameter 'enable\[\d+\]'/, "Parameter 'null'"));
      }
      this.negotiated = true;
      return this.send(withId({ return: {} }));
    }
    if (!this.negotiated) return fail('CommandNotFound', "Expecting capabilities negotiation with 'qmp_capabilities'");
    if (name === 'quit') {
      try {
        checkArgs({}, r.arguments);
      } catch (e) {
        const q = toQmpError(e);
        return fail(q.errorClass, q.desc);
      }
      this.quitRequested = true;
      this.engine.emit('SHUTDOWN', { guest: false, reason: 'host-qmp-quit' });
      return this.send(withId({ return: {} }));
    }
    try {
      const ret = await this.engine.execute(name, r.arguments ?? {});
      this.send(withId({ return: ret }));
    } catch (e) {
      const q = e instanceof QmpError ? e : toQmpError(e);
      fail(q.errorClass, q.desc);
    }
  }
}
