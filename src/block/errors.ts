/**
 * One error type for the whole engine.
 *
 * Every failure that reaches a user carries a POSIX-like `code` (what kind of
 * failure, used by the CLI for exit codes and by the worker boundary to
 * re-create the error) and a message that names the image, the structure and
 * the offset, e.g. "disk.qcow2: L2 table at 0x30200 is not cluster-aligned".
 *
 * Two wordings. Where QEMU's tools print a fixed text of their own for the
 * same failure ("Catalog size is too large", "QED table offset is invalid"),
 * the error carries both: `detail`, ours with the structure and the offset,
 * and `qemuMessage`, QEMU's words. Which one is the error's `message` is a
 * process-wide choice made once at start-up (setErrorWording): the CLI
 * invoked as `qemu-img` / `qemu-io` speaks QEMU's words, because scripts
 * written for QEMU compare its output; `blocktab`, the engine, the worker and
 * the web app keep the detailed text. Choosing at construction (rather than
 * at every print) means the many places that prefix or wrap a message keep
 * working unchanged; use `wrapError` to add context so both texts survive.
 */

export type BlockErrorCode =
  | 'EIO'
  | 'EINVAL'
  | 'ENOTSUP'
  | 'ENOSPC'
  | 'EPERM'
  | 'EACCES'
  | 'EBUSY'
  | 'ENOENT'
  | 'EEXIST'
  | 'EFBIG'
  | 'EROFS'
  | 'ELOOP'
  | 'ECORRUPT'
  | 'ECANCELED'
  | 'ENOMEM'
  | 'ENOMEDIUM'
  | 'EAGAIN';

export type ErrorWording = 'detailed' | 'qemu';

let wording: ErrorWording = 'detailed';

/** Which text new BlockErrors take as their message (see the top of this file). The CLI sets it once. */
export function setErrorWording(w: ErrorWording): void {
  wording = w;
}

export function errorWording(): ErrorWording {
  return wording;
}

export interface BlockErrorOptions {
  cause?: unknown;
  /** QEMU's text for the same failure, word for word, when it differs from ours (which names structure and offset). */
  qemuMessage?: string;
  /**
   * qemu-img prints this error without a final newline: its last line is an
   * error_append_hint QEMU wrote without one ("Detected format of qcow.").
   * Only in QEMU's wording; blocktab's ends its lines.
   */
  qemuUnterminated?: boolean;
}

export class BlockError extends Error {
  override readonly name = 'BlockError';
  readonly code: BlockErrorCode;
  /** blocktab's own text: names the image, the structure and the offset. */
  readonly detail: string;
  /** QEMU's wording, where it has a text of its own for this failure. */
  readonly qemuMessage?: string;
  /** The message is printed without a final newline (QEMU's wording of a hint QEMU leaves unterminated). */
  readonly unterminated: boolean;

  constructor(code: BlockErrorCode, message: string, options?: BlockErrorOptions) {
    const qemu = options?.qemuMessage;
    super(wording === 'qemu' && qemu !== undefined ? qemu : message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.detail = message;
    if (qemu !== undefined) this.qemuMessage = qemu;
    this.unterminated = wording === 'qemu' && options?.qemuUnterminated === true;
  }
}

/**
 * A new error that puts `prefix` before `e`'s text, in both wordings
 * ("Could not open backing file: " + …), keeping its code unless given.
 */
export function wrapError(e: BlockError, prefix: string, code: BlockErrorCode = e.code): BlockError {
  return new BlockError(code, prefix + e.detail, {
    cause: e,
    ...(e.qemuMessage !== undefined ? { qemuMessage: prefix + e.qemuMessage } : {}),
    ...(e.unterminated ? { qemuUnterminated: true } : {}),
  });
}

export function isBlockError(e: unknown): e is BlockError {
  return e instanceof BlockError;
}

/** Formats a byte offset the way QEMU's messages do (hex with 0x). */
export function hex(offset: number): string {
  return '0x' + offset.toString(16);
}

/** Wraps a host-level error (Node's fs, DOMException…) into a BlockError that names the image. */
export function fromHostError(e: unknown, what: string): BlockError {
  if (e instanceof BlockError) return e;
  const err = e as { code?: string; name?: string; message?: string };
  const known: Record<string, BlockErrorCode> = {
    ENOENT: 'ENOENT',
    EACCES: 'EACCES',
    EPERM: 'EPERM',
    EROFS: 'EROFS',
    ENOSPC: 'ENOSPC',
    EFBIG: 'EFBIG',
    EBUSY: 'EBUSY',
    EEXIST: 'EEXIST',
    EISDIR: 'EINVAL',
    QuotaExceededError: 'ENOSPC',
    NotFoundError: 'ENOENT',
    NoModificationAllowedError: 'EBUSY',
    NotAllowedError: 'EACCES',
  };
  const code = known[err?.code ?? ''] ?? known[err?.name ?? ''] ?? 'EIO';
  const reason = describeCode(code);
  return new BlockError(code, `${what}: ${reason}`, { cause: e });
}

/** strerror()-like text, as qemu-img prints after the colon. */
export function describeCode(code: BlockErrorCode): string {
  switch (code) {
    case 'ENOENT':
      return 'No such file or directory';
    case 'EACCES':
      return 'Permission denied';
    case 'EPERM':
      return 'Operation not permitted';
    case 'EROFS':
      return 'Read-only file system';
    case 'ENOSPC':
      return 'No space left on device';
    case 'EFBIG':
      return 'File too large';
    case 'EBUSY':
      return 'Device or resource busy';
    case 'EEXIST':
      return 'File exists';
    case 'EINVAL':
      return 'Invalid argument';
    case 'ENOTSUP':
      return 'Operation not supported';
    case 'ELOOP':
      return 'Too many levels of backing files';
    case 'ECORRUPT':
      return 'Image is corrupt';
    case 'ECANCELED':
      return 'Operation canceled';
    case 'ENOMEM':
      return 'Cannot allocate memory';
    case 'ENOMEDIUM':
      return 'No medium found';
    case 'EAGAIN':
      return 'Resource temporarily unavailable';
    default:
      return 'Input/output error';
  }
}

/**
 * A format's check stopped (QEMU's check returning -errno): after the lines
 * it already reported, qemu-img prints "Check failed: <message>" and exits 1.
 */
export class CheckFailedError extends BlockError {}
