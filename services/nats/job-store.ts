import {
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamManager,
  jetstream,
  StorageType,
} from '@nats-io/jetstream';
import { type KV, Kvm } from '@nats-io/kv';
import { Base64UrlPaddedCodec, type ObjectStore, Objm } from '@nats-io/obj';
import type { QueuedIterator } from '@nats-io/transport-node';
import {
  assertName,
  assertStoreName,
  assertStorePrefix,
  ClusterError,
  type JobStore,
  type JobStoreOptions,
  messageOf,
  type StoredRecord,
  withTimeout,
} from '../core/index.js';
import { API_TIMEOUT_MS, connectNats, NatsLink, RECONNECT_GRACE_MS } from './connection.js';

/**
 * How long a listing or a blob read may go without receiving anything before it fails, in
 * milliseconds: they stream (keys, 128 KiB chunks) over a consumer, so the bound is on a stall, not
 * on the whole transfer, which for tens of MB may take longer than one request's timeout.
 */
export const STALL_TIMEOUT_MS = API_TIMEOUT_MS;

/** What opening the NATS job store takes beyond {@link JobStoreOptions}. */
export interface NatsJobStoreOptions extends JobStoreOptions {
  /**
   * Replicas of both buckets when this open creates them (default 1: a single server, or a cluster
   * where losing the job state with a node is acceptable). Use 3 on a JetStream cluster. An existing
   * bucket keeps its replicas; raise them with `nats stream edit KV_<ns>_jobs --replicas 3` and
   * `nats stream edit OBJ_<ns>_job_blobs --replicas 3` (the NATS CLI) on a clustered JetStream.
   */
  replicas?: number;
}

/**
 * Opens the job store on NATS JetStream, on a connection of its own (closed by `close`):
 *
 * - records in the KV bucket `<ns>_jobs` (stream `KV_<ns>_jobs`): a record's revision is the stream
 *   sequence of its last write, so revisions grow across keys and across a delete and re-create;
 *   `create` is the KV create (expected last subject sequence 0), `update` the KV update (expected
 *   last subject sequence = revision), `keys(prefix)` the KV key listing filtered by `prefix>`;
 * - blobs in the Object Store `<ns>_job_blobs` (stream `OBJ_<ns>_job_blobs`), chunked by the client
 *   into 128 KiB messages, so a blob can be far larger than the server's max_payload.
 *
 * Both buckets use file storage and keep one revision per key (history 1). Deletes purge the
 * key's (or blob's) messages from the stream instead of writing the client's delete marker, so
 * deleted names leave nothing behind that listings would have to skip.
 *
 * Every operation waits up to RECONNECT_GRACE_MS (3 s) for a dropped connection, then gives each
 * request API_TIMEOUT_MS (5 s); a broker that is down therefore fails an operation in about 3 s
 * with `ClusterError('QUEUE_UNAVAILABLE')` naming the key, and the connection reconnects by itself
 * for its whole life. Opening rejects with QUEUE_UNAVAILABLE when NATS or JetStream cannot be
 * reached, and with INVALID_CONFIG for a namespace that cannot name buckets.
 */
export async function openNatsJobStore(options: NatsJobStoreOptions): Promise<JobStore> {
  const { url, namespace } = options;
  assertName(namespace, 'job store namespace', 'NATS KV and Object Store buckets');
  const replicas = options.replicas ?? 1;
  const recordBucket = `${namespace}_jobs`;
  const blobBucket = `${namespace}_job_blobs`;

  const nc = await connectNats(url, namespace);
  let kv: KV;
  let objects: ObjectStore;
  let jsm: JetStreamManager;
  try {
    const js = jetstream(nc, { timeout: API_TIMEOUT_MS });
    jsm = await js.jetstreamManager();
    kv = await new Kvm(js).create(recordBucket, {
      history: 1,
      storage: StorageType.File,
      replicas,
      timeout: API_TIMEOUT_MS,
    });
    objects = await new Objm(js).create(blobBucket, { storage: StorageType.File, replicas });
    // Objm.create swallows every error but "stream not found" from its existence check; make sure.
    await objects.status();
  } catch (err) {
    await nc.close().catch(() => undefined);
    throw new ClusterError(
      'QUEUE_UNAVAILABLE',
      `cannot open the job store buckets ${recordBucket} and ${blobBucket} on NATS at ${url}: ${messageOf(err)}`,
      { cause: err },
    );
  }
  const link = new NatsLink(nc, url);
  const recordStream = `KV_${recordBucket}`;
  const blobStream = `OBJ_${blobBucket}`;
  /** Subjects of blob metadata, as in the Object Store spec (ADR-20): `<this><base64url(name)>`. */
  const metaPrefix = `$O.${blobBucket}.M.`;

  /**
   * Runs one store operation once the connection is up (the client would buffer what it sends
   * while down and deliver it after the caller was told it failed), mapping every failure but a
   * RangeError (a bad name, thrown before any I/O) to QUEUE_UNAVAILABLE naming what failed and
   * `name`.
   */
  const run = async <T>(what: string, name: string, op: () => Promise<T>): Promise<T> => {
    try {
      if (!link.isConnected) await link.awaitConnected(RECONNECT_GRACE_MS);
      return await op();
    } catch (err) {
      if (err instanceof RangeError) throw err;
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `job store ${what} on NATS at ${url} failed (${name}): ${messageOf(err)}`,
        { cause: err },
      );
    }
  };

  return {
    kind: 'nats',

    async get(key) {
      assertStoreName(key);
      return run('get', key, async (): Promise<StoredRecord | undefined> => {
        const entry = await kv.get(key);
        // A delete marker (written by another client; ours purge) means absent too.
        if (entry?.operation !== 'PUT') return undefined;
        // A copy as a plain Uint8Array: the client hands out a Buffer over its read buffer.
        return { value: Uint8Array.from(entry.value), revision: entry.revision };
      });
    },

    async create(key, value) {
      assertStoreName(key);
      return run('create', key, async () => {
        // What kv.create does, but without its second request after a timeout (it reads the key
        // after any failure, doubling the time a down broker takes to fail the call).
        try {
          await kv.put(key, value, { previousSeq: 0 });
          return true;
        } catch (err) {
          if (!isWrongLastSequence(err)) throw err;
        }
        // A delete marker that another client wrote (ours purge) holds the subject: replace it.
        const marker = await kv.get(key);
        if (!marker || marker.operation === 'PUT') return false;
        try {
          await kv.update(key, value, marker.revision);
          return true;
        } catch (err) {
          if (isWrongLastSequence(err)) return false;
          throw err;
        }
      });
    },

    async update(key, value, revision) {
      assertStoreName(key);
      if (!Number.isSafeInteger(revision) || revision < 1) return false;
      return run('update', key, async () => {
        try {
          return await kv.update(key, value, revision);
        } catch (err) {
          if (isWrongLastSequence(err)) return false;
          throw err;
        }
      });
    },

    async delete(key) {
      assertStoreName(key);
      return run('delete', key, async () => {
        await jsm.streams.purge(recordStream, { filter: `$KV.${recordBucket}.${key}` });
      });
    },

    async keys(prefix) {
      assertStorePrefix(prefix);
      return run('key listing', `${prefix}>`, async () => {
        // The listing skips delete markers; a purged key has no message left to list.
        return drain(await kv.keys(`${prefix}>`), 'the key listing');
      });
    },

    async putBlob(name, bytes) {
      assertStoreName(name);
      return run('blob write', name, async () => {
        await objects.putBlob({ name }, bytes, { timeout: API_TIMEOUT_MS });
      });
    },

    async getBlob(name) {
      assertStoreName(name);
      return run('blob read', name, async () => {
        const found = await objects.get(name);
        if (!found) return undefined;
        const reader = found.data.getReader();
        const parts: Uint8Array[] = [];
        let size = 0;
        try {
          for (;;) {
            const { done, value } = await withTimeout(reader.read(), STALL_TIMEOUT_MS);
            if (done) break;
            parts.push(value);
            size += value.length;
          }
        } catch (err) {
          // Stops the consumer behind the stream; a stalled read would otherwise hold it.
          await reader.cancel().catch(() => undefined);
          throw err;
        }
        const failed = await found.error;
        if (failed) throw failed;
        return concat(parts, size);
      });
    },

    async deleteBlob(name) {
      assertStoreName(name);
      return run('blob delete', name, async () => {
        const info = await objects.info(name);
        if (!info || info.deleted) return;
        // Purges the metadata this look saw (and older) but not a newer put that raced us, then the
        // chunks. The client's own delete would leave a metadata marker per name forever, which every
        // listing would read and skip.
        await jsm.streams.purge(blobStream, {
          filter: `${metaPrefix}${Base64UrlPaddedCodec.encode(name)}`,
          seq: info.revision + 1,
        });
        await jsm.streams.purge(blobStream, { filter: `$O.${blobBucket}.C.${info.nuid}` });
      });
    },

    async blobNames(prefix) {
      assertStorePrefix(prefix);
      return run('blob listing', `${prefix}*`, async () => {
        // One metadata subject per live blob (deletes purge theirs), named by the base64 of the blob
        // name, so the server cannot filter by prefix: ask for all of them (the client pages the
        // answer) and filter here. Cheaper than the client's list(), which streams every metadata
        // message through a consumer.
        const info = await jsm.streams.info(blobStream, { subjects_filter: `${metaPrefix}>` });
        const names: string[] = [];
        for (const subject of Object.keys(info.state.subjects ?? {})) {
          const name = Base64UrlPaddedCodec.decode(subject.slice(metaPrefix.length)) as string;
          if (name.startsWith(prefix)) names.push(name);
        }
        return names;
      });
    },

    close: () => link.close(),
  };
}

/** Whether a publish failed its expected-last-subject-sequence check: another writer got there first. */
function isWrongLastSequence(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence ||
      err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

/** Collects an iterator, failing (and stopping it) when nothing arrives for STALL_TIMEOUT_MS. */
async function drain<T>(iterator: QueuedIterator<T>, what: string): Promise<T[]> {
  const items: T[] = [];
  const it = iterator[Symbol.asyncIterator]();
  try {
    for (;;) {
      const next = await withTimeout(it.next(), STALL_TIMEOUT_MS);
      if (next.done) return items;
      items.push(next.value);
    }
  } catch (err) {
    iterator.stop();
    throw new Error(`${what} stalled: ${messageOf(err)}`, { cause: err });
  }
}

/** The chunks copied into one plain Uint8Array (they are Buffers over the client's read buffers). */
function concat(parts: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
