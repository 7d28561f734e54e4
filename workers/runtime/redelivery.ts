import type { ClusterError, Logger } from '../../services/core/index.js';

// When a call that could not run is handed back, and how settles the broker did not confirm are
// reported: the worker's side of at-least-once delivery.

/** A broker outage's settle failures are logged at most this often, in milliseconds. */
const SETTLE_FAILURE_LOG_EVERY_MS = 5_000;

/**
 * Settles (ack, nack, term) the broker did not confirm, logged as one warning per outage with a
 * count instead of an error per call: the first at once, then at most every
 * SETTLE_FAILURE_LOG_EVERY_MS, and one line with the total once settles are confirmed again.
 * Nothing is lost: the broker redelivers an unsettled call after its ack wait (at-least-once).
 */
export class SettleFailures {
  private failures = 0;
  private loggedAtMs = 0;

  constructor(private readonly log: Logger) {}

  failed(err: ClusterError): void {
    this.failures += 1;
    const now = Date.now();
    if (this.failures > 1 && now - this.loggedAtMs < SETTLE_FAILURE_LOG_EVERY_MS) return;
    this.loggedAtMs = now;
    this.log.warn('the broker did not confirm settles; those calls will be redelivered', {
      failures: this.failures,
      error: err.message,
    });
  }

  confirmed(): void {
    if (this.failures === 0) return;
    this.log.info('the broker confirms settles again', { failuresDuringOutage: this.failures });
    this.failures = 0;
  }
}

/**
 * How long a call waits between two deliveries when no backend could run it, in milliseconds:
 * a ceiling of 1 s after the first delivery, doubling each time, at most 15 s, and a uniformly
 * random point in its upper half ("equal jitter"), so calls handed back together after one
 * outage come back spread out rather than in lockstep. A call that found no backend available
 * waits this long on the worker (and runs the moment one comes back); one that failed at the
 * backend waits it in the queue, where another worker may take it.
 *
 * With `worker.maxDeliveries` 5 the four waits before the last delivery come to 0.5-1, 1-2, 2-4
 * and 4-8 s: 7.5 to 15 s in all, 11.25 s expected, so an outage up to 7.5 s is always ridden out
 * before the last delivery. The last delivery never hands back nor fails for want of a backend:
 * it waits on the worker until the call's deadline, so any outage shorter than what is left of
 * the deadline (a tool's default `deadline` is 60 s) is ridden out too.
 */
export function retryDelayMs(attempt: number, random: () => number = Math.random): number {
  const ceilingMs = Math.min(1000 * 2 ** Math.max(0, attempt - 1), 15_000);
  return Math.round(ceilingMs / 2 + (random() * ceilingMs) / 2);
}
