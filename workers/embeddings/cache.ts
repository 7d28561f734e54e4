/**
 * The embedding result cache: in-process (LRU with a size bound and a TTL) or shared in Redis
 * (TTL per entry, memory bounded by Redis' own `maxmemory` policy). Vectors are stored compactly:
 * one tag byte giving the float width, then little-endian floats — float32 when every component
 * is exactly a float32 (what real embedding servers send), float64 otherwise, so a cached vector
 * is always bit-for-bit the one the backend returned.
 */

import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Logger } from '../../services/core/index.js';

/** Where results live; lookups and writes never throw (a broken cache is a cache miss). */
export interface EmbeddingCache {
  /** One vector or undefined (miss) per key, in order. */
  getMany(keys: readonly string[]): Promise<(number[] | undefined)[]>;
  /** Stores vectors for `ttlMs` milliseconds. */
  setMany(entries: readonly { key: string; vector: readonly number[] }[], ttlMs: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * The cache key of a text: the hex SHA-256 of `model \0 normalize \0 text`. `normalize` is what
 * shapes the stored vector (see the adapter), so vectors of different models or normalisation
 * never mix, and the key does not grow with the text.
 */
export function cacheKey(model: string, normalize: string, text: string): string {
  return createHash('sha256').update(`${model}\u0000${normalize}\u0000${text}`).digest('hex');
}

/** Encodes a vector as a tag byte (4 or 8, the float width) and little-endian floats. */
export function encodeVector(vector: readonly number[]): Buffer {
  const f32 = vector.every((x) => Math.fround(x) === x);
  const width = f32 ? 4 : 8;
  const buf = Buffer.allocUnsafe(1 + width * vector.length);
  buf[0] = width;
  vector.forEach((x, i) => {
    if (f32) buf.writeFloatLE(x, 1 + 4 * i);
    else buf.writeDoubleLE(x, 1 + 8 * i);
  });
  return buf;
}

/** Decodes `encodeVector`'s bytes; undefined for anything else (treated as a miss). */
export function decodeVector(buf: Buffer): number[] | undefined {
  const width = buf[0];
  if ((width !== 4 && width !== 8) || (buf.length - 1) % width !== 0) return undefined;
  const vector = new Array<number>((buf.length - 1) / width);
  for (let i = 0; i < vector.length; i++) {
    vector[i] = width === 4 ? buf.readFloatLE(1 + 4 * i) : buf.readDoubleLE(1 + 8 * i);
  }
  return vector;
}

/** In-process LRU cache: at most `maxEntries` vectors, each for its TTL. */
export class MemoryEmbeddingCache implements EmbeddingCache {
  // A Map iterates in insertion order: re-inserting on every hit keeps the least recently used first.
  readonly #entries = new Map<string, { value: Buffer; expiresAt: number }>();

  constructor(
    readonly maxEntries: number,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.#entries.size;
  }

  async getMany(keys: readonly string[]): Promise<(number[] | undefined)[]> {
    const now = this.now();
    return keys.map((key) => {
      const entry = this.#entries.get(key);
      if (!entry) return undefined;
      this.#entries.delete(key);
      if (entry.expiresAt <= now) return undefined;
      this.#entries.set(key, entry);
      return decodeVector(entry.value);
    });
  }

  async setMany(
    entries: readonly { key: string; vector: readonly number[] }[],
    ttlMs: number,
  ): Promise<void> {
    const expiresAt = this.now() + ttlMs;
    for (const { key, vector } of entries) {
      this.#entries.delete(key);
      this.#entries.set(key, { value: encodeVector(vector), expiresAt });
    }
    for (const key of this.#entries.keys()) {
      if (this.#entries.size <= this.maxEntries) break;
      this.#entries.delete(key);
    }
  }

  async close(): Promise<void> {
    this.#entries.clear();
  }
}

/** Settings of the Redis cache. */
export interface RedisCacheOptions {
  url: string;
  /** Prepended to every key, e.g. `mcp:embed:`. */
  keyPrefix: string;
  log: Logger;
  /** Longest wait for one lookup or write before it counts as failed, in milliseconds. Default 500. */
  opTimeoutMs?: number;
  /** Longest time the first lookups wait for the first connection, in milliseconds. Default 2000. */
  connectWaitMs?: number;
}

/**
 * A cache shared by every worker in Redis: `MGET` for lookups, pipelined `SET … PX ttl` for
 * writes, binary values. Commands are never queued while Redis is unreachable and each has a
 * timeout, so an outage turns into cache misses (with a warning), never into stuck or failed
 * calls; the client reconnects in the background.
 */
export class RedisEmbeddingCache implements EmbeddingCache {
  readonly #client: Redis;
  readonly #prefix: string;
  readonly #log: Logger;
  readonly #opTimeoutMs: number;
  readonly #url: string;
  /** Settles once the first connection attempt succeeded or failed. */
  readonly #firstConnect: Promise<void>;
  #failing = false;
  #closed = false;

  constructor(options: RedisCacheOptions) {
    this.#prefix = options.keyPrefix;
    this.#log = options.log;
    this.#opTimeoutMs = options.opTimeoutMs ?? 500;
    this.#url = redactUrl(options.url);
    this.#client = new Redis(options.url, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: this.#opTimeoutMs,
      connectTimeout: 2000,
      retryStrategy: (times) => Math.min(100 * times, 2000),
    });
    this.#client.on('error', (err: Error) => this.#warn('embedding cache: Redis unreachable', err));
    this.#client.on('ready', () => this.#ok());
    const connectWaitMs = options.connectWaitMs ?? 2000;
    this.#firstConnect = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, connectWaitMs);
      timer.unref();
      const done = () => {
        clearTimeout(timer);
        this.#client.off('ready', done);
        this.#client.off('error', done);
        resolve();
      };
      this.#client.once('ready', done);
      this.#client.once('error', done);
    });
  }

  async getMany(keys: readonly string[]): Promise<(number[] | undefined)[]> {
    const misses = keys.map(() => undefined);
    if (keys.length === 0 || this.#closed) return misses;
    await this.#firstConnect;
    try {
      const values = await this.#withTimeout(this.#client.mgetBuffer(keys.map((k) => this.#prefix + k)));
      this.#ok();
      return values.map((value) => (value ? decodeVector(value) : undefined));
    } catch (err) {
      this.#warn('embedding cache: lookup failed; serving without cache', err);
      return misses;
    }
  }

  async setMany(
    entries: readonly { key: string; vector: readonly number[] }[],
    ttlMs: number,
  ): Promise<void> {
    if (entries.length === 0 || this.#closed) return;
    try {
      const pipeline = this.#client.pipeline();
      const ttl = Math.max(1, Math.round(ttlMs));
      for (const { key, vector } of entries)
        pipeline.set(this.#prefix + key, encodeVector(vector), 'PX', ttl);
      const results = await this.#withTimeout(pipeline.exec());
      const failed = results?.find(([err]) => err);
      if (failed?.[0]) throw failed[0];
      this.#ok();
    } catch (err) {
      this.#warn('embedding cache: write failed; results not cached', err);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.#withTimeout(this.#client.quit());
    } catch {
      this.#client.disconnect();
    }
  }

  #ok(): void {
    if (!this.#failing) return;
    this.#failing = false;
    this.#log.info('embedding cache: Redis answers again; caching resumed', { url: this.#url });
  }

  /** One warning per outage, not one per call. */
  #warn(msg: string, err: unknown): void {
    if (this.#failing || this.#closed) return;
    this.#failing = true;
    this.#log.warn(msg, { err, url: this.#url });
  }

  #withTimeout<T>(work: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`Redis did not answer within ${this.#opTimeoutMs} ms`)),
        this.#opTimeoutMs,
      );
    });
    return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
  }
}

/** The URL without its password, for logs. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparseable URL)';
  }
}
