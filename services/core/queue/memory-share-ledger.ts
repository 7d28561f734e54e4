import { performance } from 'node:perf_hooks';
import { queueLog } from './queue-support.js';
import { encodeShareValue, type ShareLedger } from './share-ledger.js';

const logEvent = queueLog('queue.memory');

interface MemoryShare {
  /** The value's JSON text: every read decodes a copy, as the networked ledgers do. */
  json: string;
  /** `performance.now()` after which the entry is dead (a monotonic clock: wall-clock steps move nothing). */
  liveUntil: number;
}

/**
 * An in-process ledger of the `memory:` broker (its `shares` and its `roles`, one instance each):
 * one map per broker namespace, so every role opened on that namespace in this process (the embedded
 * mode, tests) sees the others' entries.
 * Entries expire by timestamp, checked at read; nothing runs in the background.
 */
export class MemoryShareLedger implements ShareLedger {
  private readonly entries = new Map<string, MemoryShare>();

  async publish(replica: string, value: unknown, ttlMs: number): Promise<void> {
    const json = encodeShareValue(replica, value, ttlMs);
    this.entries.set(replica, { json, liveUntil: performance.now() + ttlMs });
  }

  async read(): Promise<Map<string, unknown>> {
    const now = performance.now();
    const live = new Map<string, unknown>();
    for (const [replica, entry] of this.entries) {
      if (entry.liveUntil <= now) {
        this.entries.delete(replica);
        continue;
      }
      try {
        live.set(replica, JSON.parse(entry.json));
      } catch (err) {
        // Cannot happen with values written by publish; kept like the networked ledgers.
        logEvent('warn', 'share_entry_undecodable', { replica, error: (err as Error).message });
      }
    }
    return live;
  }

  async withdraw(replica: string): Promise<void> {
    this.entries.delete(replica);
  }

  /** Nothing of its own to close: the entries belong to the namespace and go with the broker. */
  async close(): Promise<void> {}

  /** @internal drops every entry (the broker of the namespace closed). */
  clear(): void {
    this.entries.clear();
  }
}
