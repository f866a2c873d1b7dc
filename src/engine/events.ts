/**
 * The Engine's event channel: QMP events (JOB_STATUS_CHANGE, BLOCK_JOB_*,
 * BLOCK_IO_ERROR, …) with QEMU's timestamp, sent to every subscriber. The
 * worker forwards them to the page (src/worker/api.ts `subscribe`), the QMP
 * monitor prints them as JSON lines.
 */

/** A QMP event, as QEMU sends it. */
export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}
export type EventListener = (event: QmpEvent) => void;

/** Events QEMU sends without a `data` member (the engine gives them an empty one). */
export const EVENTS_WITHOUT_DATA: ReadonlySet<string> = new Set(['STOP', 'RESUME', 'POWERDOWN']);

export class EngineEvents {
  private readonly listeners = new Set<EventListener>();

  /** Subscribes to QMP events; returns the function that unsubscribes. */
  onEvent(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(event: string, data: Record<string, unknown>): void {
    // Microseconds since the epoch, as QEMU stamps events (performance's origin + offset is finer than Date.now()).
    const us = typeof performance !== 'undefined' ? Math.round((performance.timeOrigin + performance.now()) * 1000) : Date.now() * 1000;
    const ev: QmpEvent = { event, data, timestamp: { seconds: Math.floor(us / 1e6), microseconds: us % 1e6 } };
    for (const l of this.listeners) {
      try {
        l(ev);
      } catch {
        // A listener's failure is its own business; the engine keeps going.
      }
    }
  }
}
