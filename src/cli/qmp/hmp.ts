/**
 * `human-monitor-command` for the QMP monitor: HMP's `qemu-io [-d] DEVICE
 * "COMMAND"`, which QEMU's own tests use to do I/O through a device's
 * BlockBackend (so it is throttled and its aio_* requests are accounted in
 * query-blockstats). A node-name gets a temporary backend, as in QEMU. The
 * command's output is the reply's return string (QEMU 7.2 prints it on its
 * stdout and returns ""). Other HMP commands are refused as QEMU refuses
 * unknown ones.
 */
import type { Engine } from '../../engine/engine.js';
import { genericError } from '../../engine/qmp-error.js';
import { QemuIoSession } from '../qemu-io/commands.js';
import type { QmpCommand } from '../../engine/commands/types.js';
import { PERM_RESIZE, PERM_WRITE } from '../../block/child.js';
import { PERM_ALL } from '../../block/permissions.js';

/** qemu-io's commands that take the write permission (its `perm` member). */
const WRITE_COMMANDS = /^(write|writev|aio_write|discard|aio_discard)\b/;

/** Splits an HMP command line: words, and "quoted strings" as one word. */
function hmpWords(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(line); m; m = re.exec(line)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!);
  return out;
}

async function qemuIo(engine: Engine, words: string[]): Promise<string> {
  let i = 1;
  if (words[i] === '-d') i++;
  const device = words[i];
  const cmd = words[i + 1];
  if (device === undefined || cmd === undefined) throw genericError('Parameter \'device\' is missing');
  let text = '';
  const dev = engine.device(device);
  const bs = dev ? undefined : engine.findNode(device);
  // HMP reports a failed command in its output, as QEMU's hmp_handle_error: "Error: …".
  if (!dev && !bs) return `Error: Cannot find device='' nor node-name='${device}'\r\n`;
  // On a node, qemu-io's temporary backend asks for write (or resize) before a command that needs it, as QEMU's
  // qemu-io does; a conflict is reported in the output.
  const perm = WRITE_COMMANDS.test(cmd) ? PERM_WRITE : /^truncate\b/.test(cmd) ? PERM_RESIZE : 0;
  if (bs && perm) {
    try {
      engine.checkAddedUse(bs, { who: 'an unnamed block device', role: 'root', perm, shared: PERM_ALL });
    } catch (e) {
      return `${e instanceof Error ? e.message : String(e)}\r\n`;
    }
  }
  const io = dev ?? engine.ioTarget(device);
  const session = new QemuIoSession(io.backend, { out: (t) => (text += t), err: (t) => (text += t) }, 'qemu-io');
  await session.command(cmd);
  return text;
}

export const humanMonitorCommand: QmpCommand = {
  args: { 'command-line': 'str', '*cpu-index': 'int' },
  async run(engine, args) {
    const words = hmpWords(args['command-line'] as string);
    if (words.length === 0) return '';
    if (words[0] === 'qemu-io') return qemuIo(engine, words);
    return `unknown command: '${words[0]}'\r\n`;
  },
};
