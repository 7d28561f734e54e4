/**
 * The shares ledger: how ingress replicas see each other's admission figures, so that per-tenant
 * limits and fair queueing hold across any number of replicas without a round trip to the broker
 * per call. Each replica publishes one entry (its own figures, a JSON value) every few hundred
 * milliseconds, with a time to live; every replica reads all live entries and adds the others'
 * figures to its own exact ones. A replica that dies stops publishing and its entry expires, so
 * nothing it held (calls in flight, queued work) stays counted for longer than the TTL.
 *
 * One contract, three implementations, chosen by the broker URL like the call queue: NATS
 * JetStream KV (`nats://`), Redis keys (`redis://`) and in-process (`memory:`), each reached as
 * `Broker.shares` on the broker's own connection (nothing is opened until first used). The
 * contract suite in `test/share-ledger.test.ts` runs unchanged against all three.
 *
 * Entries are soft state: a broker that loses them (a restart) loses nothing that the next
 * publish of every live replica does not bring back. Callers should not overlap their own
 * publishes (a publish may take up to the bound below when the broker is down).
 */
export interface ShareLedger {
  /**
   * Publishes this replica's entry, replacing its previous one. The entry is dropped from
   * `read()` once `ttlMs` milliseconds pass without another publish. Rejects with
   * `ClusterError('QUEUE_UNAVAILABLE')` when the broker cannot take it (within a few seconds:
   * `BROKER_RECONNECT_GRACE_MS` for a lost connection, a command timeout of 5 s for a broker that
   * accepts the connection but never answers), and with a `RangeError` before any I/O for a
   * replica id, value or TTL outside the bounds of {@link encodeShareValue}.
   */
  publish(replica: string, value: unknown, ttlMs: number): Promise<void>;

  /**
   * The live entries of every replica (this one's included), by replica id. Each read returns
   * values newly decoded from JSON: the caller may keep or change them. Rejects with
   * `ClusterError('QUEUE_UNAVAILABLE')` when the broker cannot be read (within a few seconds, as
   * `publish`). An entry that another writer left undecodable is skipped (and logged).
   */
  read(): Promise<Map<string, unknown>>;

  /** Removes this replica's entry at once (a clean shutdown), best effort: never rejects. */
  withdraw(replica: string): Promise<void>;

  /**
   * Stops what the ledger runs on the broker connection (e.g. a watch). The connection itself
   * belongs to the broker, which closes the ledger with it. Bounded, like `CallQueue.close`.
   */
  close(): Promise<void>;
}

/** Largest value one entry may hold, in bytes of its JSON text (UTF-8): 64 KiB. */
export const MAX_SHARE_VALUE_BYTES = 64 * 1024;
/** Longest TTL an entry may carry, in milliseconds: 60 s (the design publishes with ~1.5 s). */
export const MAX_SHARE_TTL_MS = 60_000;
/** Longest replica id, in characters. */
export const MAX_REPLICA_ID_LENGTH = 256;

/**
 * Checks a publish and returns the value's JSON text. Throws a `RangeError` naming the problem for
 * a replica id that is empty, longer than {@link MAX_REPLICA_ID_LENGTH} or not well-formed UTF-16
 * (a lone surrogate would not survive UTF-8 on the wire, so two ids could collide), for a TTL that
 * is not an integer in 1..{@link MAX_SHARE_TTL_MS}, and for a value that JSON cannot carry
 * (undefined, a BigInt, a cycle) or whose JSON is over {@link MAX_SHARE_VALUE_BYTES}.
 */
export function encodeShareValue(replica: string, value: unknown, ttlMs: number): string {
  assertReplicaId(replica);
  if (!Number.isInteger(ttlMs) || ttlMs < 1 || ttlMs > MAX_SHARE_TTL_MS) {
    throw new RangeError(
      `share ledger TTL must be an integer number of milliseconds in 1..${MAX_SHARE_TTL_MS}, got ${ttlMs}`,
    );
  }
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch (err) {
    throw new RangeError(
      `the share ledger entry of replica ${replica} cannot be written as JSON: ${(err as Error).message}`,
    );
  }
  if (json === undefined) {
    throw new RangeError(`the share ledger entry of replica ${replica} has no JSON form (${typeof value})`);
  }
  // Cheap first: a string never takes fewer UTF-8 bytes than UTF-16 code units.
  if (json.length > MAX_SHARE_VALUE_BYTES || Buffer.byteLength(json, 'utf8') > MAX_SHARE_VALUE_BYTES) {
    throw new RangeError(
      `the share ledger entry of replica ${replica} is ${Buffer.byteLength(json, 'utf8')} bytes of JSON, over the ${MAX_SHARE_VALUE_BYTES}-byte bound; publish fewer figures (e.g. drop idle tenants)`,
    );
  }
  return json;
}

/** Throws a `RangeError` for a replica id the ledger cannot key by; see {@link encodeShareValue}. */
export function assertReplicaId(replica: string): void {
  if (typeof replica !== 'string' || replica.length === 0 || replica.length > MAX_REPLICA_ID_LENGTH) {
    throw new RangeError(
      `a share ledger replica id must be a string of 1..${MAX_REPLICA_ID_LENGTH} characters, got ${JSON.stringify(String(replica).slice(0, 40))} (${String(replica).length} characters)`,
    );
  }
  if (!isWellFormed(replica)) {
    throw new RangeError(`the share ledger replica id ${JSON.stringify(replica)} has a lone surrogate`);
  }
}

/** Whether {@link assertReplicaId} accepts `replica`. */
export function isReplicaId(replica: string): boolean {
  try {
    assertReplicaId(replica);
    return true;
  } catch {
    return false;
  }
}

function isWellFormed(text: string): boolean {
  // String.prototype.isWellFormed arrived in Node 20; a regex keeps this independent of that.
  return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text);
}
