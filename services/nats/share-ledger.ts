import { performance } from 'node:perf_hooks';
import { jetstream, StorageType } from '@nats-io/jetstream';
import { type KV, Kvm, type KvWatchEntry } from '@nats-io/kv';
import type { QueuedIterator } from '@nats-io/transport-node';
import {
  ClusterError,
  encodeShareValue,
  isReplicaId,
  MAX_SHARE_TTL_MS,
  MAX_SHARE_VALUE_BYTES,
  messageOf,
  type ShareLedger,
  withTimeout,
} from '../core/index.js';
import { API_TIMEOUT_MS, logEvent, type NatsLink, RECONNECT_GRACE_MS } from './connection.js';

/**
 * `max_age` of the shares bucket, in milliseconds: the longest TTL an entry may carry plus 10 s. It
 * only bounds what dead replicas and withdraw markers leave in the bucket (every read goes by the
 * entry's own TTL, see {@link NatsShareLedger}); it must exceed every TTL, or a replica that opens its
 * watch could miss a live entry whose message the server already aged out.
 */
export const SHARES_MAX_AGE_MS = MAX_SHARE_TTL_MS + 10_000;

/** One replica's entry as this process holds it. */
interface CachedShare {
  replica: string;
  /** The value's JSON text; every read decodes a copy. */
  json: string;
  /** `performance.now()` after which the entry is dead. */
  liveUntil: number;
  /** The KV revision (stream sequence) it came from: an older one arriving late never replaces it. */
  revision: number;
}

/**
 * A ledger of the {@link ShareLedger} contract on a JetStream KV bucket `<namespace>_<ledger>`
 * (stream `KV_<namespace>_<ledger>`), on the broker's own connection: the broker opens two, `shares`
 * (the ingress replicas' admission figures) and `roles` (workers' and the autoscaler's status).
 * Nothing happens on the broker until the first call: a role that never uses a ledger creates no
 * bucket and no consumer for it.
 *
 * - Key: the replica id with every character but `A-Z a-z 0-9 _ -` escaped as `=XX` (the bytes of its
 *   UTF-8), so any id makes a valid key, distinct ids make distinct keys, and keys stay readable
 *   (`nats kv ls`). The message is `<ttlMs>\n<replica as JSON>\n<value JSON>`.
 * - Bucket: history 1 (a publish replaces the entry), memory storage (soft state republished every
 *   few hundred milliseconds: no disk writes for it; a server restart empties the bucket, or deletes
 *   it, and the next publish makes it again), `max_age` {@link SHARES_MAX_AGE_MS}.
 * - Expiry by the entry's own TTL, counted from when this process received it, so no clock is
 *   compared with another's; an entry replayed when a watch (re)starts is counted from its server
 *   timestamp instead when that is earlier (a dead replica's old entry is not revived for a TTL),
 *   and a live entry misjudged by clock skew comes right with its next publish. `max_age` cannot
 *   do this job: the TTL is per publish, and on this server version aged-out messages tell no
 *   watcher.
 * - Reads come from a local copy kept up to date by one KV watch (an ordered push consumer), opened
 *   on the first read and again after every reconnect: a read costs no request (the ledger is read
 *   every ~250 ms on every replica); a publish is one JetStream publish with its ack.
 * - Withdraw writes the KV purge marker (a watcher is told at once; a stream purge would tell no
 *   one); markers age out with `max_age`.
 * - A read or publish while the connection is down waits up to RECONNECT_GRACE_MS (3 s), then
 *   rejects with QUEUE_UNAVAILABLE; a request the server never answers rejects after
 *   API_TIMEOUT_MS (5 s).
 */
export class NatsShareLedger implements ShareLedger {
  private readonly bucketName: string;
  private readonly cache = new Map<string, CachedShare>();
  private kvHandle: Promise<KV> | undefined;
  /** The watch being opened or open; resolves once its replay reached the present. */
  private watching: Promise<void> | undefined;
  private watch: QueuedIterator<KvWatchEntry> | undefined;
  private offReconnect: (() => void) | undefined;
  /** Counts reconnects: a watch opened across one is stale and is stopped. */
  private generation = 0;
  private closed = false;

  /**
   * @param ledger the ledger's name, the bucket's suffix: `shares` or `roles` (letters only, so that
   *   `<namespace>_<ledger>` stays a valid bucket name for every namespace `assertName` accepts).
   */
  constructor(
    private readonly link: NatsLink,
    namespace: string,
    ledger: 'shares' | 'roles' = 'shares',
  ) {
    this.bucketName = `${namespace}_${ledger}`;
  }

  async publish(replica: string, value: unknown, ttlMs: number): Promise<void> {
    const json = encodeShareValue(replica, value, ttlMs);
    const key = shareKey(replica);
    const text = `${ttlMs}\n${JSON.stringify(replica)}\n${json}`;
    await this.run('publish', replica, async () => {
      let revision: number;
      try {
        revision = await (await this.kv()).put(key, text);
      } catch (err) {
        if ((err as Error).name !== 'JetStreamNotEnabled') throw err;
        // No stream takes the subject: the server lost the bucket (memory storage across a restart).
        this.kvHandle = undefined;
        revision = await (await this.kv()).put(key, text);
      }
      // Read-your-writes for this replica's own entry, without waiting for the watch to bring it.
      this.remember(key, { replica, json, liveUntil: performance.now() + ttlMs, revision });
    });
  }

  async read(): Promise<Map<string, unknown>> {
    await this.run('read', 'all replicas', async () => {
      this.watching ??= this.openWatch();
      try {
        await this.watching;
      } catch (err) {
        // Open afresh next time, bucket included (it may be what went: deleted, or lost with a server).
        this.watching = undefined;
        this.kvHandle = undefined;
        throw err;
      }
    });
    const now = performance.now();
    const live = new Map<string, unknown>();
    for (const [key, entry] of this.cache) {
      if (entry.liveUntil <= now) {
        this.cache.delete(key);
        continue;
      }
      live.set(entry.replica, JSON.parse(entry.json));
    }
    return live;
  }

  async withdraw(replica: string): Promise<void> {
    if (!isReplicaId(replica)) return; // never published
    try {
      const key = shareKey(replica);
      this.cache.delete(key);
      if (!this.link.isConnected) return;
      await withTimeout(
        this.kv().then((kv) => kv.purge(key)),
        API_TIMEOUT_MS,
      );
    } catch (err) {
      logEvent('warn', 'share_withdraw_failed', {
        url: this.link.url,
        bucket: this.bucketName,
        replica,
        error: messageOf(err),
      });
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.offReconnect?.();
    this.stopWatch();
  }

  /** Runs one operation once the connection is up, mapping failures to QUEUE_UNAVAILABLE. */
  private async run(what: string, replica: string, op: () => Promise<void>): Promise<void> {
    if (this.closed) {
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `the ledger ${this.bucketName} on NATS at ${this.link.url} is closed`,
      );
    }
    try {
      if (!this.link.isConnected) await this.link.awaitConnected(RECONNECT_GRACE_MS);
      await withTimeout(op(), API_TIMEOUT_MS * 2);
    } catch (err) {
      if (err instanceof RangeError) throw err;
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `ledger ${this.bucketName} ${what} (${replica}) on NATS at ${this.link.url} failed: ${messageOf(err)}`,
        { cause: err },
      );
    }
  }

  /** The bucket, created when missing (idempotent: concurrent creates with one config agree). */
  private kv(): Promise<KV> {
    this.kvHandle ??= new Kvm(jetstream(this.link.nc, { timeout: API_TIMEOUT_MS }))
      .create(this.bucketName, {
        history: 1,
        storage: StorageType.Memory,
        ttl: SHARES_MAX_AGE_MS,
        // The value bound plus the id (escaped JSON, at most 6 bytes a character) and the TTL line.
        maxValueSize: MAX_SHARE_VALUE_BYTES + 4096,
        timeout: API_TIMEOUT_MS,
      })
      .catch((err: unknown) => {
        this.kvHandle = undefined;
        throw err;
      });
    return this.kvHandle;
  }

  /** Opens the watch and resolves once its replay of the bucket reached the present. */
  private async openWatch(): Promise<void> {
    this.offReconnect ??= this.link.onReconnect(() => {
      // The watch's consumer may be gone with the server (or the bucket with it): open a new one on
      // the next read. The copy stays; its entries still expire by their TTL.
      this.generation += 1;
      this.stopWatch();
      this.kvHandle = undefined;
    });
    const generation = this.generation;
    const kv = await this.kv();
    const status = await kv.status();
    const watch = await kv.watch({ key: '>' });
    if (this.closed || generation !== this.generation) {
      // Closed, or the connection dropped while it opened: the next read opens a fresh one.
      watch.stop();
      return;
    }
    this.watch = watch;
    let replayed: () => void = () => undefined;
    const caughtUp = new Promise<void>((resolve) => {
      replayed = resolve;
    });
    // An empty bucket has nothing to replay. Otherwise the last replayed entry has nothing pending
    // after it; entries that aged out between the status and the watch would leave that entry
    // missing, hence the bound.
    if (status.values === 0) replayed();
    void (async () => {
      try {
        for await (const entry of watch) {
          this.apply(entry);
          if (entry.delta === 0) replayed();
        }
      } catch (err) {
        logEvent(
          'warn',
          'share_watch_failed',
          { url: this.link.url, bucket: this.bucketName, error: messageOf(err) },
          `share-watch-${this.bucketName}`,
        );
      } finally {
        replayed();
        // Ended by the server or the client (not by us): the next read opens a new one.
        if (this.watch === watch) {
          this.watch = undefined;
          this.watching = undefined;
        }
      }
    })();
    await withTimeout(caughtUp, API_TIMEOUT_MS).catch(() => undefined);
  }

  private stopWatch(): void {
    const watch = this.watch;
    this.watch = undefined;
    this.watching = undefined;
    watch?.stop();
  }

  private apply(entry: KvWatchEntry): void {
    if (entry.operation !== 'PUT') {
      this.cache.delete(entry.key);
      return;
    }
    const share = decodeShare(entry);
    if (!share) {
      logEvent(
        'warn',
        'share_entry_undecodable',
        { url: this.link.url, bucket: this.bucketName, key: entry.key },
        `share-decode-${this.bucketName}`,
      );
      this.cache.delete(entry.key);
      return;
    }
    this.remember(entry.key, share);
  }

  private remember(key: string, share: CachedShare): void {
    const known = this.cache.get(key);
    if (known && known.revision > share.revision) return;
    this.cache.set(key, share);
  }
}

/** The KV key of a replica id; see {@link NatsShareLedger}. */
export function shareKey(replica: string): string {
  let key = '';
  for (const char of replica) {
    if (/^[A-Za-z0-9_-]$/.test(char)) {
      key += char;
      continue;
    }
    for (const byte of Buffer.from(char, 'utf8'))
      key += `=${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return key;
}

/** Reads a watched entry; undefined when another writer left something that is not ours. */
function decodeShare(entry: KvWatchEntry): CachedShare | undefined {
  const text = entry.string();
  const first = text.indexOf('\n');
  const second = text.indexOf('\n', first + 1);
  if (first < 0 || second < 0) return undefined;
  const ttlMs = Number(text.slice(0, first));
  if (!Number.isInteger(ttlMs) || ttlMs < 1 || ttlMs > MAX_SHARE_TTL_MS) return undefined;
  let replica: unknown;
  const json = text.slice(second + 1);
  try {
    replica = JSON.parse(text.slice(first + 1, second));
    JSON.parse(json);
  } catch {
    return undefined;
  }
  if (typeof replica !== 'string' || shareKey(replica) !== entry.key) return undefined;
  const received = performance.now();
  // A replayed entry may be old: count from its server timestamp when that is earlier than now.
  const age = entry.isUpdate ? 0 : Math.max(0, Date.now() - entry.created.getTime());
  return { replica, json, liveUntil: received + ttlMs - age, revision: entry.revision };
}
