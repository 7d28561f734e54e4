/**
 * The `embed` tool: texts → vectors against an OpenAI-compatible `/v1/embeddings` endpoint (vLLM,
 * OpenAI) or Hugging Face TEI's `/embed`, with a result cache in front and micro-batching across
 * concurrent calls behind it.
 *
 * One call goes: cache lookup (memory or Redis) → texts not cached join the micro-batcher of
 * (endpoint, tool, model, normalisation) → one backend request carries texts of many calls →
 * each call gets its own vectors back in order → new vectors are written to the cache. A call
 * whose texts are all cached never waits for a batch.
 */

import {
  ClusterError,
  clusterMetrics,
  createLogger,
  type ResolvedConfig,
  type ToolConfig,
  type ToolFamily,
} from '../../services/core/index.js';
import { type AdapterContext, BackendRefusal, type ToolAdapter, type ToolResult } from '../runtime/index.js';
import { BatchSlots, MicroBatcher } from './batcher.js';
import { cacheKey, type EmbeddingCache, MemoryEmbeddingCache, RedisEmbeddingCache } from './cache.js';
import { embedMetrics } from './metrics.js';
import { embedOpenAI, embedTei } from './protocol.js';
import { embedInput, embedOutput } from './schemas.js';
import { type EmbedToolSettings, embedSettings } from './settings.js';

export type { BatchPolicy, CloseReason, OpenBatchState } from './batch-policy.js';
export { closeReason, estimateTokens, fits, waitLeftMs } from './batch-policy.js';
export type { MicroBatcherOptions, SendBatch } from './batcher.js';
export { BatchSlots, MicroBatcher } from './batcher.js';
export type { EmbeddingCache, RedisCacheOptions } from './cache.js';
export {
  cacheKey,
  decodeVector,
  encodeVector,
  MemoryEmbeddingCache,
  RedisEmbeddingCache,
} from './cache.js';
export { embedMetrics } from './metrics.js';
export { embedOpenAI, embedTei } from './protocol.js';
export { embedInput, embedOutput } from './schemas.js';
export type { EmbedToolSettings } from './settings.js';
export { embedSettings } from './settings.js';

/**
 * Backend requests one endpoint has in flight from this worker's embed batchers, by default. Two
 * keep the GPU busy (one batch runs while the next already waits in the backend's queue, hiding
 * the round trip and the response's encoding) while everything after them keeps collecting in
 * the open batch, so batches grow to their limits under load instead of piling up in the backend
 * as many small requests. One would leave the GPU idle for a round trip after every batch; more
 * would only move the queue into the backend, in smaller batches. (Measured with bench/embeddings:
 * letting a batch closed by its wait go only while nothing runs gave larger batches but no more
 * throughput, since the GPU then idles while the next batch forms.)
 */
export const DEFAULT_BATCHES_IN_FLIGHT = 2;

/** Settings of an embed adapter. */
export interface EmbedAdapterOptions {
  /** `redis://` (or `rediss://`) URL of a cache shared by all workers; empty: in-process. Default ''. */
  cacheUrl?: string;
  /** Prefix of Redis cache keys. Default `mcp:embed:`. */
  cacheKeyPrefix?: string;
  /** Batches in flight per endpoint; see DEFAULT_BATCHES_IN_FLIGHT. */
  maxBatchesInFlight?: number;
  /** Use a result cache where the tool's `cache.enabled` says so. Default true; false: never cache. */
  cache?: boolean;
}

const log = createLogger('embeddings');

/** Caches of this process, created on first use, closed by closeEmbeddingCaches. */
const caches = new Map<string, EmbeddingCache>();
/** Batchers with work; one forgets itself when idle (keys include caller-chosen model names). */
const batchers = new Map<string, MicroBatcher>();
/** In-flight limits per endpoint (and limit, so adapters with different limits do not mix). */
const endpointSlots = new Map<string, BatchSlots>();

/**
 * Closes every embedding result cache of this process (quits Redis connections, empties the
 * in-process ones). Call it on worker shutdown, after running calls finished; a call after it
 * opens a fresh cache.
 */
export async function closeEmbeddingCaches(): Promise<void> {
  const open = [...caches.values()];
  caches.clear();
  await Promise.allSettled(open.map((cache) => cache.close()));
}

/**
 * An embed adapter. Texts of concurrent calls are micro-batched per the tool's `batch` settings;
 * results are cached per its `cache` settings, in Redis when `cacheUrl` is set, else in process.
 * Calls of any number of adapters share the process's caches and batchers.
 */
export function createEmbedAdapter(options: EmbedAdapterOptions = {}): ToolAdapter {
  const cacheUrl = options.cacheUrl ?? '';
  if (cacheUrl !== '' && !/^rediss?:\/\//.test(cacheUrl)) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `cache.url must be a redis:// or rediss:// URL, or empty for an in-process cache (found "${cacheUrl}")`,
    );
  }
  const keyPrefix = options.cacheKeyPrefix ?? 'mcp:embed:';
  const maxInFlight = options.maxBatchesInFlight ?? DEFAULT_BATCHES_IN_FLIGHT;
  if (!(maxInFlight >= 1)) {
    throw new ClusterError('INVALID_CONFIG', `maxBatchesInFlight must be at least 1 (found ${maxInFlight})`);
  }

  const useCache = options.cache !== false;
  const cacheFor = (tool: ToolConfig, settings: EmbedToolSettings['cache']): EmbeddingCache | undefined => {
    if (!useCache || !settings.enabled) return undefined;
    const id = cacheUrl
      ? `redis\u0000${cacheUrl}\u0000${keyPrefix}`
      : `memory\u0000${tool.name}\u0000${settings.maxEntries}`;
    let cache = caches.get(id);
    if (!cache) {
      cache = cacheUrl
        ? new RedisEmbeddingCache({ url: cacheUrl, keyPrefix, log })
        : new MemoryEmbeddingCache(settings.maxEntries);
      caches.set(id, cache);
    }
    return cache;
  };

  const batcherFor = (
    ctx: AdapterContext,
    batch: EmbedToolSettings['batch'],
    model: string,
    normalize: boolean,
  ): MicroBatcher => {
    const tei = ctx.backend === 'tei';
    // Only TEI takes `normalize` on the wire; OpenAI-style batches serve both kinds of caller.
    const wireNormalize = tei ? String(normalize) : 'client';
    const { tool, endpointUrl, backendTimeoutMs } = ctx;
    // Batch-job chunks (priority low) batch among themselves, behind interactive calls.
    const background = ctx.call.priority === 'low';
    const key = [maxInFlight, endpointUrl, ctx.backend, tool.name, model, wireNormalize, background].join(
      '\u0000',
    );
    const existing = batchers.get(key);
    if (existing) return existing;
    const slotsKey = `${maxInFlight}\u0000${endpointUrl}\u0000${batch.backgroundPauseMs}`;
    let slots = endpointSlots.get(slotsKey);
    if (!slots) {
      slots = new BatchSlots(maxInFlight, batch.backgroundPauseMs);
      endpointSlots.set(slotsKey, slots);
    }
    const labels = { pool: tool.pool, tool: tool.name };
    const batcher: MicroBatcher = new MicroBatcher({
      policy: { ...batch },
      slots,
      background,
      send: tei
        ? (texts, signal) => embedTei(endpointUrl, texts, normalize, signal, backendTimeoutMs)
        : (texts, signal) => embedOpenAI(endpointUrl, model, texts, signal, backendTimeoutMs),
      onSend: (texts, calls) => {
        embedMetrics().batchSize.observe(labels, texts);
        clusterMetrics().batchSize.observe(labels, calls);
      },
      // A refusal of the request's content (too long, too many) may be one caller's doing:
      // retry call by call so the others still get their vectors.
      isolate: (err) =>
        err.code === 'BACKEND_PROTOCOL' &&
        err.cause instanceof BackendRefusal &&
        [400, 413, 422].includes(err.cause.status),
      onIdle: () => {
        if (batchers.get(key) === batcher) batchers.delete(key);
      },
    });
    batchers.set(key, batcher);
    return batcher;
  };

  return {
    async run(ctx: AdapterContext): Promise<ToolResult> {
      const args = ctx.arguments as { texts: string[]; model?: string; normalize?: boolean };
      const texts = args.texts;
      if (!Array.isArray(texts) || texts.length === 0 || !texts.every((t) => typeof t === 'string')) {
        throw new ClusterError('INVALID_ARGUMENTS', 'texts must be a non-empty array of strings');
      }
      const model = args.model ?? ctx.tool.model;
      const normalize = args.normalize !== false;
      const tei = ctx.backend === 'tei';
      // The cache holds vectors as the backend returned them: TEI normalises on the server when
      // asked, so its flag is part of the key; the OpenAI protocol has no such switch, so its raw
      // vectors are cached and normalised here, on the way out.
      const cacheVariant = tei ? String(normalize) : 'raw';
      const labels = { pool: ctx.tool.pool, tool: ctx.tool.name };

      const settings = embedSettings.of(ctx.tool);
      const cache = cacheFor(ctx.tool, settings.cache);
      const keys = cache ? texts.map((text) => cacheKey(model, cacheVariant, text)) : [];
      const vectors: (number[] | undefined)[] = cache
        ? await cache.getMany(keys)
        : texts.map(() => undefined);
      if (ctx.signal.aborted) throw new ClusterError('CANCELLED', 'the call was cancelled');

      // Texts to embed, each once even when the call repeats it.
      const missing: string[] = [];
      const positions = new Map<string, number[]>();
      texts.forEach((text, i) => {
        if (vectors[i]) return;
        const at = positions.get(text);
        if (at) at.push(i);
        else {
          positions.set(text, [i]);
          missing.push(text);
        }
      });
      if (cache) {
        const missed = texts.length - vectors.filter(Boolean).length;
        if (texts.length > missed) embedMetrics().cacheHits.inc(labels, texts.length - missed);
        if (missed > 0) embedMetrics().cacheMisses.inc(labels, missed);
      }

      if (missing.length > 0) {
        const waitFrom = performance.now();
        const fresh = await batcherFor(ctx, settings.batch, model, normalize).submit(
          missing,
          ctx.signal,
          () => ctx.noteBatchWait?.(performance.now() - waitFrom),
        );
        const entries: { key: string; vector: number[] }[] = [];
        missing.forEach((text, j) => {
          const vector = fresh[j] as number[];
          const at = positions.get(text) ?? [];
          for (const i of at) vectors[i] = vector;
          if (cache) entries.push({ key: keys[at[0] ?? 0] as string, vector });
        });
        // Not awaited: a write that fails or lags only costs a later miss. (One Redis connection
        // runs commands in order, so this process's next lookup already sees the write.)
        if (cache) void cache.setMany(entries, settings.cache.ttlMs);
      }

      const out = (vectors as number[][]).map((v) => (!tei && normalize ? normalizeVector(v) : v));
      const dimensions = out[0]?.length ?? 0;
      return {
        content: [
          { type: 'text', text: `${out.length} embeddings of ${dimensions} dimensions from ${model}` },
        ],
        structuredContent: { model, dimensions, vectors: out },
      };
    },
  };
}

/** An embed adapter for a worker of `config`: the configured cache URL, keys under the cluster's namespace. */
export function embedAdapterFor(config: ResolvedConfig): ToolAdapter {
  return createEmbedAdapter({ cacheUrl: config.cacheUrl, cacheKeyPrefix: `${config.namespace}:embed:` });
}

/**
 * The embed adapter without a result cache (micro-batching only), for code that has no
 * configuration at hand. A worker should use `embedAdapterFor(config)`, which caches as the
 * configuration says.
 */
export const embedAdapter: ToolAdapter = createEmbedAdapter({ cache: false });

/** Backend kinds of embed: each admits 256 calls per endpoint, so micro-batches can fill. */
const EMBEDDING_BACKEND = { healthPath: '/health', endpointConcurrency: 256 } as const;

/**
 * The embeddings family: `embed` on OpenAI-compatible `/v1/embeddings` (`openai-embeddings`) or
 * Hugging Face TEI (`tei`), with the result cache the configuration names (closed with the
 * family), and the built-in pool `embeddings`.
 */
export const embeddingsFamily: ToolFamily<ToolAdapter> = {
  name: 'embeddings',
  backends: { 'openai-embeddings': EMBEDDING_BACKEND, tei: EMBEDDING_BACKEND },
  settings: embedSettings,
  templates: {
    embed: {
      description:
        'Embed texts as vectors with an embedding model. Returns one vector per text, in order, in structuredContent.vectors.',
      backends: ['openai-embeddings', 'tei'],
      inputSchema: embedInput,
      outputSchema: embedOutput,
      adapter: embedAdapterFor,
    },
  },
  defaults: {
    pool: 'embeddings',
    backend: 'openai-embeddings',
    tools: [{ name: 'embed', template: 'embed', model: 'sim-embed', deadline: '60s' }],
  },
  close: closeEmbeddingCaches,
};

/** The vector scaled to unit length (L2); a zero vector stays as it is. */
function normalizeVector(vector: number[]): number[] {
  let sum = 0;
  for (const x of vector) sum += x * x;
  const norm = Math.sqrt(sum);
  return norm === 0 ? vector : vector.map((x) => x / norm);
}
