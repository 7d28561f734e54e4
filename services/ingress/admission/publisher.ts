import { clusterMetrics, type Logger, type ShareLedger } from '../../core/index.js';
import type { Admission } from './admission.js';

/** How often a replica publishes its entry and reads the others', in ms. */
export const PUBLISH_INTERVAL_MS = 250;
/** How long an entry lives without being published again, in ms: six periods, so one slow publish drops nothing. */
export const ENTRY_TTL_MS = 1_500;

/** The loop that keeps a replica's admission in step with the others through the shares ledger. */
export interface SharePublisher {
  /** One round now: tick, publish, read (the loop runs these every {@link PUBLISH_INTERVAL_MS}). */
  round(): Promise<void>;
  /** Stops the loop and withdraws this replica's entry (best effort). */
  stop(): Promise<void>;
}

/**
 * Every {@link PUBLISH_INTERVAL_MS}: advances the admission's averages, publishes this replica's
 * entry (TTL {@link ENTRY_TTL_MS}) and reads every live entry into the admission. Off the call
 * path: calls never wait on the ledger.
 *
 * When the ledger cannot be written or read (the broker is down), the admission falls back to this
 * replica's own figures (see `Admission.ledgerUnavailable`); the first failure of an outage logs
 * one warning, each failure counts in `mcp_cluster_share_ledger_errors_total`, and the first
 * success after it logs that sharing resumed. A round that is still running when the next is due
 * is not doubled (the next waits for the following period).
 */
export function startSharePublisher(options: {
  admission: Admission;
  ledger: ShareLedger;
  replica: string;
  log: Logger;
  /** Start the timer (default true; the unit tests drive `round` themselves). */
  loop?: boolean;
}): SharePublisher {
  const { admission, ledger, replica, log } = options;
  const metrics = clusterMetrics();
  let outageSince: number | undefined;
  let running: Promise<void> | undefined;
  let stopped = false;

  const round = async (): Promise<void> => {
    admission.tick();
    try {
      await ledger.publish(replica, admission.entry(), ENTRY_TTL_MS);
      const entries = await ledger.read();
      if (stopped) return;
      admission.applyEntries(entries, replica);
      if (outageSince !== undefined) {
        log.info('shares ledger reachable again; limits and fair queueing hold across replicas again', {
          outageMs: Date.now() - outageSince,
        });
        outageSince = undefined;
      }
    } catch (err) {
      metrics.shareLedgerErrors.inc();
      admission.ledgerUnavailable();
      if (outageSince === undefined) {
        outageSince = Date.now();
        log.warn(
          'shares ledger unreachable: each replica now enforces rate and concurrency limits at its share (limit / replicas last seen), fair queueing and load shedding use this replica alone',
          { err },
        );
      }
    }
  };
  const timer =
    options.loop === false
      ? undefined
      : setInterval(() => {
          if (running !== undefined) return;
          running = round().finally(() => {
            running = undefined;
          });
        }, PUBLISH_INTERVAL_MS);
  timer?.unref();

  return {
    round,
    async stop() {
      stopped = true;
      if (timer) clearInterval(timer);
      await running;
      await ledger.withdraw(replica).catch(() => undefined);
    },
  };
}
