import type { ShareLedger } from '../../core/index.js';

/**
 * A shares ledger of this process alone, for a broker that offers none: entries live in a map with
 * their expiry. Replicas in one process (tests) may share one; replicas in separate processes see
 * only themselves.
 */
export function localShareLedger(now: () => number = Date.now): ShareLedger {
  const entries = new Map<string, { value: unknown; untilMs: number }>();
  return {
    async publish(replica, value, ttlMs) {
      entries.set(replica, { value: structuredClone(value), untilMs: now() + ttlMs });
    },
    async read() {
      const live = new Map<string, unknown>();
      const at = now();
      for (const [replica, entry] of entries) {
        if (entry.untilMs > at) live.set(replica, entry.value);
        else entries.delete(replica);
      }
      return live;
    },
    async withdraw(replica) {
      entries.delete(replica);
    },
    async close() {
      entries.clear();
    },
  };
}
