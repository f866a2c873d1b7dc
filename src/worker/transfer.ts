/**
 * Comlink transfer handlers for blocktab's errors, installed on import. Both
 * sides of the boundary import this one module (the worker entry and the
 * client), so a BlockError or QmpError thrown in the worker is re-created on
 * the page as the same class with the same `code`, message and QMP
 * class/desc. Comlink's own "throw" handler keeps only name/message/stack of
 * an Error, so the client could not tell ENOENT from EBUSY without it.
 *
 * The `cause` stays behind: it may hold host objects (DOMException, Node
 * errors) that do not survive structured clone, and its message is already
 * part of ours.
 */
import * as Comlink from 'comlink';
import { BlockError, type BlockErrorCode } from '../block/errors.js';
import { QmpError, type QmpErrorClass } from '../engine/qmp-error.js';

export interface SerializedBlockError {
  /** Marks the object as ours inside comlink's "throw" wire value. */
  blocktabError: true;
  code: BlockErrorCode;
  message: string;
  stack?: string;
  /** Present for QmpError. */
  errorClass?: QmpErrorClass;
}

export function serializeBlockError(e: BlockError): SerializedBlockError {
  const s: SerializedBlockError = { blocktabError: true, code: e.code, message: e.message, stack: e.stack };
  if (e instanceof QmpError) s.errorClass = e.errorClass;
  return s;
}

export function deserializeBlockError(s: SerializedBlockError): BlockError {
  const e = s.errorClass ? new QmpError(s.errorClass, s.message, s.code) : new BlockError(s.code, s.message);
  // The worker's stack says where it failed; the local one would only show comlink's message handler.
  if (s.stack) e.stack = s.stack;
  return e;
}

const isSerialized = (v: unknown): v is SerializedBlockError =>
  typeof v === 'object' && v !== null && (v as { blocktabError?: unknown }).blocktabError === true;

let installed = false;

/** Registers the handlers (idempotent; importing this module already did). */
export function installTransferHandlers(): void {
  if (installed) return;
  installed = true;
  const original = Comlink.transferHandlers.get('throw') as Comlink.TransferHandler<{ value: unknown }, unknown>;
  // Thrown values: comlink wraps them as { value } and routes them through "throw".
  Comlink.transferHandlers.set('throw', {
    canHandle: (v: unknown): v is { value: unknown } => original.canHandle(v),
    serialize(thrown: { value: unknown }) {
      if (thrown.value instanceof BlockError) return [serializeBlockError(thrown.value), []];
      return original.serialize(thrown);
    },
    deserialize(s: unknown) {
      if (isSerialized(s)) throw deserializeBlockError(s);
      return original.deserialize(s);
    },
  } as Comlink.TransferHandler<unknown, unknown>);
  // Errors passed as values (an event's payload, a result that carries one).
  Comlink.transferHandlers.set('blocktab-error', {
    canHandle: (v: unknown): v is BlockError => v instanceof BlockError,
    serialize: (e: BlockError) => [serializeBlockError(e), []],
    deserialize: (s: SerializedBlockError) => deserializeBlockError(s),
  } as Comlink.TransferHandler<unknown, unknown>);
}

installTransferHandlers();
