/**
 * One error type for the whole engine.
 *
 * Every failure that reaches a user carries a POSIX-like `code` (what kind of
 * failure, used by the CLI for exit codes and by the worker boundary to
 * re-create the error) and a message that names the image, the structure and
 * the offset, e.g. "disk.qcow2: L2 table at 0x30200 is not cluster-aligned".
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
  | 'ENOMEDIUM';

export class BlockError extends Error {
  override readonly name = 'BlockError';
  readonly code: BlockErrorCode;

  constructor(code: BlockErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
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
    default:
      return 'Input/output error';
  }
}
