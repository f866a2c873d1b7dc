/**
 * QMP's error reply, `{ "error": { "class": …, "desc": … } }`, as an
 * exception. It extends BlockError so one `code` still tells the CLI and the
 * worker boundary what kind of failure it was; `errorClass` and `desc` are
 * what a QMP client sees. QEMU uses very few classes: almost everything is
 * GenericError, and clients are told to key on the class only for the few
 * that exist.
 */
import { BlockError, type BlockErrorCode } from '../block/errors.js';

export type QmpErrorClass = 'GenericError' | 'CommandNotFound' | 'DeviceNotFound' | 'DeviceNotActive' | 'KVMMissingCap';

export const QMP_ERROR_CLASSES: readonly QmpErrorClass[] = [
  'GenericError',
  'CommandNotFound',
  'DeviceNotFound',
  'DeviceNotActive',
  'KVMMissingCap',
];

function defaultCode(errorClass: QmpErrorClass): BlockErrorCode {
  switch (errorClass) {
    case 'DeviceNotFound':
      return 'ENOENT';
    case 'CommandNotFound':
      return 'ENOTSUP';
    default:
      return 'EINVAL';
  }
}

export class QmpError extends BlockError {
  readonly errorClass: QmpErrorClass;

  constructor(errorClass: QmpErrorClass, desc: string, code: BlockErrorCode = defaultCode(errorClass), options?: { cause?: unknown }) {
    super(code, desc, options);
    this.errorClass = errorClass;
    // BlockError fixes `name` as a literal; a QmpError should still say what it is in stack traces.
    Object.defineProperty(this, 'name', { value: 'QmpError' });
  }

  /** QMP's human-readable description (the message). */
  get desc(): string {
    return this.message;
  }

  /** The `error` member of a QMP reply. */
  toQmp(): { class: QmpErrorClass; desc: string } {
    return { class: this.errorClass, desc: this.message };
  }
}

export function isQmpError(e: unknown): e is QmpError {
  return e instanceof QmpError;
}

/**
 * What a failed command replies: a QmpError as is; a BlockError becomes a
 * GenericError with the same code and message (as QEMU's error_setg does
 * with every errno); anything else is an internal failure, EIO.
 */
export function toQmpError(e: unknown): QmpError {
  if (e instanceof QmpError) return e;
  if (e instanceof BlockError) return new QmpError('GenericError', e.message, e.code, { cause: e });
  const message = e instanceof Error ? e.message : String(e);
  return new QmpError('GenericError', message, 'EIO', { cause: e });
}

export const genericError = (desc: string, code?: BlockErrorCode): QmpError => new QmpError('GenericError', desc, code);
