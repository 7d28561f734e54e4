import { messageOf } from '../core/index.js';
import { logEvent, type NatsLink } from './connection.js';
import type { Topology } from './topology.js';

/** Pause before a failed sweep is tried again, in milliseconds. */
const RETRY_MS = 5_000;
/** Tries of one sweep before it waits for the next reconnect. */
const MAX_TRIES = 4;

/**
 * Removes the answered calls a crashed broker brought back ({@link Topology.removeAnswered}) for
 * every pool this process knows: once when the broker opens, and after every reconnect. They only
 * appear when the broker restarts, and every process connected to it then reconnects; the deletions
 * are idempotent, so processes sweeping side by side are safe. A sweep that fails (a broker still
 * recovering its streams) is tried again every RETRY_MS, MAX_TRIES times in all.
 */
export class AnsweredSweep {
  private readonly stopListening: () => void;
  private retry?: NodeJS.Timeout;
  private running?: Promise<void>;
  private closed = false;

  constructor(
    private readonly link: NatsLink,
    private readonly topology: Topology,
  ) {
    this.stopListening = link.onReconnect(() => {
      void this.run();
    });
  }

  /** One sweep over every known pool (joins one under way); never rejects, failures are logged. */
  run(): Promise<void> {
    if (this.closed) return Promise.resolve();
    clearTimeout(this.retry);
    this.running ??= this.sweep(1).finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    this.stopListening();
  }

  private async sweep(attempt: number): Promise<void> {
    let failed: unknown;
    for (const pool of this.topology.knownPools()) {
      try {
        const removed = await this.topology.removeAnswered(pool);
        for (const [priority, count] of Object.entries(removed)) {
          logEvent('warn', 'answered_calls_removed', { pool, priority, count, stream: this.topology.stream });
        }
      } catch (err) {
        failed = err;
      }
    }
    if (failed === undefined || this.closed) return;
    logEvent('warn', 'answered_calls_sweep_failed', {
      url: this.link.url,
      attempt,
      error: messageOf(failed),
    });
    if (attempt >= MAX_TRIES) return;
    this.retry = setTimeout(() => {
      if (this.closed || this.running !== undefined) return;
      this.running = this.sweep(attempt + 1).finally(() => {
        this.running = undefined;
      });
    }, RETRY_MS);
    this.retry.unref();
  }
}
