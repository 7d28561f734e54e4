import type { Logger } from '../logger.js';
import { ROLE_ENTRY_TTL_MS, ROLE_PUBLISH_INTERVAL_MS, type RoleEntry } from './role-entry.js';
import type { ShareLedger } from './share-ledger.js';

/** Longest `stop()` waits for a publish under way before it withdraws the entry, in ms. */
const STOP_WAIT_MS = 1_000;

/** The loop that keeps one role's entry in the roles ledger; see {@link startRolePublisher}. */
export interface RolePublisher {
  /** Publishes the entry now (the loop does this every interval); never rejects. */
  publish(): Promise<void>;
  /** Stops the loop and withdraws the entry (best effort, bounded like `ShareLedger.withdraw`). */
  stop(): Promise<void>;
}

/**
 * Publishes `entry()` under `key` to the roles ledger at once and then every `intervalMs` (default
 * {@link ROLE_PUBLISH_INTERVAL_MS}), with a TTL of `ttlMs` (default {@link ROLE_ENTRY_TTL_MS}), off
 * every call path. A publish still running when the next is due is not doubled. When the ledger
 * cannot be written (the broker is down) the role goes on as before: the first failure of an outage
 * logs one warning and the first success after it one line; its entry expires meanwhile, so the
 * status page shows the role again once the broker is back.
 */
export function startRolePublisher(options: {
  ledger: Pick<ShareLedger, 'publish' | 'withdraw'>;
  key: string;
  entry: () => RoleEntry;
  log: Logger;
  intervalMs?: number;
  ttlMs?: number;
}): RolePublisher {
  const { ledger, key, log } = options;
  const ttlMs = options.ttlMs ?? ROLE_ENTRY_TTL_MS;
  let outageSince: number | undefined;
  let running: Promise<void> | undefined;
  let stopped = false;

  const once = async (): Promise<void> => {
    try {
      await ledger.publish(key, options.entry(), ttlMs);
      if (outageSince !== undefined) {
        log.info('roles ledger reachable again; the status page shows this role again', {
          outageMs: Date.now() - outageSince,
        });
        outageSince = undefined;
      }
    } catch (err) {
      if (outageSince !== undefined) return;
      outageSince = Date.now();
      log.warn('publishing to the roles ledger failed; the status page misses this role until it works', {
        err,
      });
    }
  };
  const publish = (): Promise<void> => {
    if (stopped) return Promise.resolve();
    running ??= once().finally(() => {
      running = undefined;
    });
    return running;
  };
  void publish();
  const timer = setInterval(() => void publish(), options.intervalMs ?? ROLE_PUBLISH_INTERVAL_MS);
  timer.unref();

  return {
    publish,
    async stop() {
      stopped = true;
      clearInterval(timer);
      // A publish the broker is slow to take is not waited on for long (a shutdown must not wait
      // out a broker outage); one that lands after the withdraw lives one TTL.
      let waited: NodeJS.Timeout | undefined;
      await Promise.race([
        running,
        new Promise<void>((resolve) => {
          waited = setTimeout(resolve, STOP_WAIT_MS);
        }),
      ]);
      clearTimeout(waited);
      await ledger.withdraw(key).catch(() => undefined);
    },
  };
}
