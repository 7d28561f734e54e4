/**
 * The shares ledger: how ingress replicas see each other's admission figures, so that per-tenant
 * limits and fair queueing hold across any number of replicas without a round trip to the broker
 * per call. Each replica publishes one entry (its own figures, a JSON value) every few hundred
 * milliseconds, with a time to live; every replica reads all live entries and adds the others'
 * figures to its own exact ones. A replica that dies stops publishing and its entry expires, so
 * nothing it held (calls in flight, queued work) stays counted for longer than the TTL.
 *
 * One contract, three implementations, chosen by the broker URL like the call queue: NATS
 * JetStream KV (`nats://`), Redis keys (`redis://`) and in-process (`memory:`). The contract
 * suite in `test/share-ledger.test.ts` runs unchanged against all three.
 */
export interface ShareLedger {
  /**
   * Publishes this replica's entry, replacing its previous one. The entry is dropped from
   * `read()` once `ttlMs` milliseconds pass without another publish. Rejects with
   * `ClusterError('QUEUE_UNAVAILABLE')` when the broker cannot take it (within a few seconds).
   */
  publish(replica: string, value: unknown, ttlMs: number): Promise<void>;

  /**
   * The live entries of every replica (this one's included), by replica id. Rejects with
   * `ClusterError('QUEUE_UNAVAILABLE')` when the broker cannot be read (within a few seconds).
   */
  read(): Promise<Map<string, unknown>>;

  /** Removes this replica's entry at once (a clean shutdown), best effort. */
  withdraw(replica: string): Promise<void>;

  /** Closes the ledger's own connection, if it has one. Bounded, like `CallQueue.close`. */
  close(): Promise<void>;
}
