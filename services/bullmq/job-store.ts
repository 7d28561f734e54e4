import { Command, type Redis } from 'ioredis';
import {
  assertStoreName,
  assertStorePrefix,
  ClusterError,
  type JobStore,
  type JobStoreOptions,
  messageOf,
  type StoredRecord,
  withTimeout,
} from '../core/index.js';
import { assertRedisName } from './jobs.js';
import { COMMAND_TIMEOUT_MS, connectOrFail, createClient } from './redis-connection.js';

/**
 * Redis commands of the job store retried across reconnects before failing. Not `null` like the
 * queue's worker connections (which wait forever): a job store call made while Redis is down
 * must fail, not hang the HTTP request that made it. With the reconnect back-off of
 * `createClient` (100 ms growing to 1 s) a command fails within about 1-4 s of an outage.
 */
export const JOB_STORE_RETRIES_PER_REQUEST = 3;
/**
 * The slowest transfer a blob SET or GET is given time for, in bytes per second: a blob of tens of
 * MB is one command, so its timeout is COMMAND_TIMEOUT_MS (5 s) plus its size at this rate (20 MB:
 * 7 s). A Redis that is down fails it within the retry bound above anyway; this bounds the wait
 * on one that accepts and then does not answer (frozen, partitioned).
 */
export const BLOB_MIN_BYTES_PER_S = 10 * 1024 * 1024;
/** Keys a SCAN step looks at (a hint to Redis): bigger steps mean fewer round trips per listing. */
const SCAN_COUNT = 1_000;

/**
 * Creates `KEYS[1]` (a record hash) unless it exists, with value `ARGV[1]` and the next revision of
 * the namespace's counter `KEYS[2]`; returns that revision, or 0 when the record exists.
 */
const CREATE_LUA = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local revision = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'r', revision)
return revision`;

/**
 * Replaces the value of record `KEYS[1]` with `ARGV[1]` while its revision is still `ARGV[2]`,
 * taking the next revision of counter `KEYS[2]`; returns it, or 0 when the record moved on or is gone.
 */
const UPDATE_LUA = `
local current = redis.call('HGET', KEYS[1], 'r')
if current ~= ARGV[2] then return 0 end
local revision = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'r', revision)
return revision`;

/** The scripts above as client commands (EVALSHA, falling back to EVAL once per connection). */
interface JobStoreCommands {
  jobStoreCreate(record: string, counter: string, value: Buffer): Promise<number>;
  jobStoreUpdate(record: string, counter: string, value: Buffer, revision: string): Promise<number>;
}

/**
 * Opens the job store on Redis, on two connections of its own (closed by `close`): one for records,
 * one for blobs, so a large blob transfer never delays a compare-and-set behind it.
 *
 * - A record is a hash `<ns>:jobs:<key>` with fields `v` (the value) and `r` (its revision).
 *   Revisions come from one counter per namespace, `<ns>:jobs-revision` (INCR), so they grow
 *   across keys and across a delete and re-create. `create` and `update` are Lua scripts: the
 *   existence or revision check and the write are one atomic step.
 * - A blob is a plain string `<ns>:jobblobs:<name>` (binary-safe, up to Redis's 512 MB).
 * - Listings SCAN the keyspace with `MATCH <ns>:jobs:<prefix>*` (glob characters escaped): a
 *   walk over every key of the Redis database, in steps of about SCAN_COUNT keys.
 *
 * Commands fail instead of waiting for Redis, with `ClusterError('QUEUE_UNAVAILABLE')` naming the
 * key: after JOB_STORE_RETRIES_PER_REQUEST reconnect attempts (about 0.5-4 s) while Redis is down,
 * after COMMAND_TIMEOUT_MS (5 s; a blob's SET or GET: 5 s plus its size at BLOB_MIN_BYTES_PER_S)
 * when it accepts but does not answer. The connections reconnect by themselves, so calls work again
 * once Redis is back. Opening rejects with QUEUE_UNAVAILABLE when Redis cannot be reached within a
 * few seconds, and with INVALID_CONFIG for a namespace that cannot be part of a Redis key.
 */
export async function openRedisJobStore(options: JobStoreOptions): Promise<JobStore> {
  const { url, namespace } = options;
  assertRedisName(namespace, 'job store namespace');
  const records = createClient(url, 'jobstore', {
    maxRetriesPerRequest: JOB_STORE_RETRIES_PER_REQUEST,
    commandTimeout: COMMAND_TIMEOUT_MS,
  });
  // SET and GET of a blob bring their own, size-dependent timeout (see sendBlobCommand).
  const blobs = createClient(url, 'jobstore-blobs', {
    maxRetriesPerRequest: JOB_STORE_RETRIES_PER_REQUEST,
    commandTimeout: COMMAND_TIMEOUT_MS,
  });
  try {
    await connectOrFail(records, url);
    await connectOrFail(blobs, url);
  } catch (err) {
    records.disconnect();
    blobs.disconnect();
    throw err;
  }
  records.defineCommand('jobStoreCreate', { numberOfKeys: 2, lua: CREATE_LUA });
  records.defineCommand('jobStoreUpdate', { numberOfKeys: 2, lua: UPDATE_LUA });
  const scripts = records as Redis & JobStoreCommands;

  const recordPrefix = `${namespace}:jobs:`;
  const blobPrefix = `${namespace}:jobblobs:`;
  const counter = `${namespace}:jobs-revision`;

  /** Runs one command, mapping every failure to QUEUE_UNAVAILABLE naming what failed and `name`. */
  const run = async <T>(what: string, name: string, op: () => Promise<T>): Promise<T> => {
    try {
      return await op();
    } catch (err) {
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `job store ${what} on Redis at ${url} failed (${name}): ${messageOf(err)}`,
        { cause: err },
      );
    }
  };

  /** Every key of `client` under `keyPrefix + prefix`, with `keyPrefix` cut off. */
  const scan = async (client: Redis, keyPrefix: string, prefix: string): Promise<string[]> => {
    const pattern = `${escapeGlob(keyPrefix + prefix)}*`;
    // SCAN may return a key more than once (when the table is rehashed between steps).
    const found = new Set<string>();
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', SCAN_COUNT);
      for (const key of keys) found.add(key.slice(keyPrefix.length));
      cursor = next;
    } while (cursor !== '0');
    return [...found];
  };

  let closing: Promise<void> | undefined;
  return {
    kind: 'redis',

    async get(key) {
      assertStoreName(key);
      return run('get', key, async (): Promise<StoredRecord | undefined> => {
        const [value, revision] = await records.hmgetBuffer(recordPrefix + key, 'v', 'r');
        if (!value || !revision) return undefined;
        // A copy: a small reply may be a slice of the socket's read buffer, which it would pin.
        return { value: Uint8Array.from(value), revision: Number(revision.toString('latin1')) };
      });
    },

    async create(key, value) {
      assertStoreName(key);
      return run('create', key, async () => {
        const revision = await scripts.jobStoreCreate(recordPrefix + key, counter, bufferOf(value));
        return revision > 0;
      });
    },

    async update(key, value, revision) {
      assertStoreName(key);
      if (!Number.isSafeInteger(revision) || revision < 1) return false;
      return run('update', key, async () => {
        const next = await scripts.jobStoreUpdate(
          recordPrefix + key,
          counter,
          bufferOf(value),
          String(revision),
        );
        return next > 0 ? next : false;
      });
    },

    async delete(key) {
      assertStoreName(key);
      return run('delete', key, async () => {
        await records.del(recordPrefix + key);
      });
    },

    async keys(prefix) {
      assertStorePrefix(prefix);
      return run('key listing', `${prefix}*`, () => scan(records, recordPrefix, prefix));
    },

    async putBlob(name, bytes) {
      assertStoreName(name);
      return run('blob write', name, async () => {
        await sendBlobCommand(blobs, 'set', [blobPrefix + name, bufferOf(bytes)], bytes.byteLength);
      });
    },

    async getBlob(name) {
      assertStoreName(name);
      return run('blob read', name, async () => {
        // The size first, for the GET's timeout (0 for a missing blob as for an empty one).
        const size = await blobs.strlen(blobPrefix + name);
        const bytes = (await sendBlobCommand(blobs, 'get', [blobPrefix + name], size)) as Buffer | null;
        return bytes ? bytesOf(bytes) : undefined;
      });
    },

    async deleteBlob(name) {
      assertStoreName(name);
      return run('blob delete', name, async () => {
        await blobs.del(blobPrefix + name);
      });
    },

    async blobNames(prefix) {
      assertStorePrefix(prefix);
      return run('blob listing', `${prefix}*`, () => scan(blobs, blobPrefix, prefix));
    },

    close() {
      closing ??= Promise.all([quit(records), quit(blobs)]).then(() => undefined);
      return closing;
    },
  };
}

/**
 * Sends a blob's SET or GET with a timeout for `bytes` (see BLOB_MIN_BYTES_PER_S), set on the command
 * before the connection's own COMMAND_TIMEOUT_MS would be (the first timeout set on a command wins).
 * Replies come as Buffers.
 */
function sendBlobCommand(client: Redis, name: 'set' | 'get', args: (string | Buffer)[], bytes: number) {
  const command = new Command(name, args, { replyEncoding: null });
  command.setTimeout(COMMAND_TIMEOUT_MS + Math.ceil((bytes / BLOB_MIN_BYTES_PER_S) * 1_000));
  return client.sendCommand(command);
}

/**
 * `text` as a SCAN MATCH pattern that matches it literally (`*`, `?`, `[`, `]`, `\` escaped). Names
 * and namespaces cannot hold these today; the escape keeps a later, wider alphabet from turning a
 * prefix into a pattern.
 */
function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

/** A Buffer over the same memory (ioredis sends Buffers as binary, other views as strings). */
function bufferOf(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A plain Uint8Array over a (large) reply's memory, like the other stores return; no copy. */
function bytesOf(buffer: Buffer): Uint8Array {
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/**
 * Closes a connection politely (pending replies arrive), or at once when Redis is not connected
 * or does not answer (a quit would wait in the offline queue for a Redis that may never return).
 */
async function quit(client: Redis): Promise<void> {
  if (client.status === 'end') return;
  if (client.status !== 'ready') {
    client.disconnect();
    return;
  }
  try {
    await withTimeout(client.quit(), COMMAND_TIMEOUT_MS);
  } catch {
    client.disconnect();
  }
}
