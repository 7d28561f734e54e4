/**
 * Durable state of batch jobs, kept in the broker the cluster already runs so that no process
 * holds anything a crash could lose and every ingress replica sees every job: records with
 * compare-and-set (the job record, uploaded-file records) and blobs (a job's input chunks, each
 * chunk's output as float32, its errors). One contract, three implementations: JetStream KV and
 * Object Store on NATS, plain keys on Redis, and an in-process map (optionally backed by a local
 * directory) for the embedded cluster. The contract suite in `test/job-store-contract.test.ts`
 * runs unchanged against all three.
 *
 * Keys and blob names are 1-200 characters of `A-Z a-z 0-9 . _ -` where `.` only separates
 * non-empty levels (no leading, trailing or doubled dot): every backend can store them verbatim, and
 * NATS KV treats `.` as a subject-token separator (an empty token is not a valid subject), which the
 * prefix listing relies on. A prefix is such a name followed by `.`.
 * Every operation rejects with `ClusterError('QUEUE_UNAVAILABLE')` when the broker cannot
 * answer, naming the key, within seconds (never hangs while the broker is down), and with a
 * RangeError for an invalid name or prefix before any I/O.
 */
export interface JobStore {
  /** Which implementation this is. */
  readonly kind: 'nats' | 'redis' | 'memory';

  /**
   * The record at `key` and its revision, or undefined. A revision is a positive integer that grows
   * with every write, also across a delete and a re-create of the key, so a revision read before the
   * delete never matches the new record (no ABA).
   */
  get(key: string): Promise<StoredRecord | undefined>;
  /** Writes `key` only if it does not exist; false when it does. */
  create(key: string, value: Uint8Array): Promise<boolean>;
  /**
   * Replaces `key` only while its revision is still `revision` (compare-and-set); false when
   * another writer got there first or the key is gone. Returns the new revision on success.
   */
  update(key: string, value: Uint8Array, revision: number): Promise<number | false>;
  /** Removes `key` (nothing when absent). */
  delete(key: string): Promise<void>;
  /**
   * Every key that starts with `prefix` (a name followed by `.`, see {@link assertStorePrefix}), in
   * no particular order. Deleted keys are not listed.
   */
  keys(prefix: string): Promise<string[]>;

  /** Stores `bytes` as blob `name`, replacing any blob of that name. Blobs may be large (tens of MB). */
  putBlob(name: string, bytes: Uint8Array): Promise<void>;
  /** The blob `name`, or undefined. */
  getBlob(name: string): Promise<Uint8Array | undefined>;
  /** Removes blob `name` (nothing when absent). */
  deleteBlob(name: string): Promise<void>;
  /** Every blob name that starts with `prefix` (a name followed by `.`), in no particular order. */
  blobNames(prefix: string): Promise<string[]>;

  /** Closes what the store opened (not a connection it shares with the queue). */
  close(): Promise<void>;
}

/** A record as stored. */
export interface StoredRecord {
  value: Uint8Array;
  revision: number;
}

/** What opening a job store needs. */
export interface JobStoreOptions {
  /** The broker URL (`nats://`, `redis://`, `memory:`). */
  url: string;
  /** Prefix of every bucket and key, as for the queue (`cluster.namespace`). */
  namespace: string;
  /** `memory:` only: a directory to keep blobs in instead of the heap (default: the heap). */
  directory?: string;
}

/** Keys and blob names: what every backend stores verbatim (dot-separated non-empty levels). */
const NAME = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/;
/** Longest key or blob name, in characters. */
const NAME_MAX = 200;

/** Throws a RangeError naming `name` when it is not a valid key or blob name. */
export function assertStoreName(name: string): void {
  if (name.length > NAME_MAX || !NAME.test(name))
    throw new RangeError(
      `job store name "${name.slice(0, 80)}" is not 1-200 of A-Z a-z 0-9 . _ - with non-empty dot-separated levels`,
    );
}

/**
 * Throws a RangeError naming `prefix` unless it is a valid name followed by `.` (`job.`,
 * `job.42.in.`): the one shape every backend can list by (a NATS subject filter `job.42.in.>`).
 */
export function assertStorePrefix(prefix: string): void {
  if (!prefix.endsWith('.') || prefix.length > NAME_MAX || !NAME.test(prefix.slice(0, -1)))
    throw new RangeError(`job store prefix "${prefix.slice(0, 80)}" is not a valid name followed by "."`);
}
