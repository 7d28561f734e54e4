import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ClusterError, clusterMetrics, createLogger, type ToolConfig } from '../services/core/index.js';
import {
  type BatchPolicy,
  BatchSlots,
  cacheKey,
  closeEmbeddingCaches,
  closeReason,
  createEmbedAdapter,
  decodeVector,
  type EmbedToolSettings,
  embedMetrics,
  embedSettings,
  encodeVector,
  estimateTokens,
  fits,
  MemoryEmbeddingCache,
  MicroBatcher,
  waitLeftMs,
} from '../workers/embeddings/index.js';
import type { BackendActor, ToolAdapter } from '../workers/runtime/index.js';
import type { SimBackend, SimOptions } from '../workers/sim/index.js';
import {
  adapterContext,
  cleanupAfterEach,
  rawEmbeddings,
  rejection,
  startActor,
  startSim,
  stubServer,
} from './support/adapter-harness.js';
import { freePort, type SpawnedBroker, startRedisServer, uniqueNamespace } from './support/brokers.js';
import { resolveConfig } from './support/families.js';
import { waitFor } from './support/wait.js';

// The embed adapter's micro-batcher, result cache and TEI path: the pure batch policy and the
// batcher against a scripted backend, then the adapter against the simulated GPU backend (both
// wire formats) and a real redis-server.

const embedTool = resolveConfig('', {}).tools.find((t) => t.template === 'embed') as ToolConfig;
const defaultTool = { ...embedTool, ...embedSettings.of(embedTool) };
let toolCounter = 0;

/** A fresh embed tool (its own name, so its own in-process cache and metric labels). */
function tool(
  overrides: {
    batch?: Partial<EmbedToolSettings['batch']>;
    cache?: Partial<EmbedToolSettings['cache']>;
  } = {},
) {
  toolCounter += 1;
  return {
    ...defaultTool,
    name: `embed_t${toolCounter}`,
    batch: { ...defaultTool.batch, ...overrides.batch },
    cache: { ...defaultTool.cache, ...overrides.cache },
  } satisfies ToolConfig & EmbedToolSettings;
}

const cleanups = cleanupAfterEach({ before: () => vi.useRealTimers(), after: closeEmbeddingCaches });
const sim = (options: Partial<SimOptions> = {}) => startSim(cleanups, options);

async function embed(
  adapter: ToolAdapter,
  t: ToolConfig,
  url: string,
  texts: string[],
  options: { signal?: AbortSignal; backend?: 'openai-embeddings' | 'tei'; normalize?: boolean } = {},
): Promise<number[][]> {
  const args: Record<string, unknown> = { texts };
  if (options.normalize !== undefined) args.normalize = options.normalize;
  const { signal, backend } = options;
  const result = await adapter.run(
    adapterContext(t, args, url, { signal, backend, call: { wantsProgress: false } }),
  );
  return (result.structuredContent as { vectors: number[][] }).vectors;
}

/** Texts nobody else in this file embeds. */
let textCounter = 0;
function texts(n: number, prefix = 'text'): string[] {
  return Array.from({ length: n }, () => {
    textCounter += 1;
    return `${prefix} number ${textCounter} ${'x'.repeat(textCounter % 7)}`;
  });
}

/** A batch-size histogram observation count per `le` bucket, for one tool. */
async function batchSizeBuckets(toolName: string): Promise<Map<string, number>> {
  const metric = await embedMetrics().batchSize.get();
  const out = new Map<string, number>();
  for (const v of metric.values) {
    if (v.labels.tool === toolName && v.metricName === 'mcp_cluster_batch_size_bucket') {
      out.set(String((v.labels as Record<string, unknown>).le), v.value);
    }
  }
  return out;
}

async function counterValue(which: 'cacheHits' | 'cacheMisses', toolName: string): Promise<number> {
  const metric = await embedMetrics()[which].get();
  return metric.values.find((v) => v.labels.tool === toolName)?.value ?? 0;
}

describe('batch policy (pure)', () => {
  const policy: BatchPolicy = { maxSize: 4, maxTokens: 100, maxWaitMs: 10 };

  it('estimates tokens as ceil(chars / 4), at least 1', () => {
    expect(estimateTokens('')).toBe(1);
    expect(estimateTokens('abc')).toBe(1);
    expect(estimateTokens('abcd')).toBe(1);
    expect(estimateTokens('abcde')).toBe(2);
    expect(estimateTokens('x'.repeat(400))).toBe(100);
  });

  it('closes a batch at maxSize texts', () => {
    expect(closeReason(policy, { texts: 3, tokens: 3, firstArrivalMs: 0 }, 0)).toBeUndefined();
    expect(closeReason(policy, { texts: 4, tokens: 4, firstArrivalMs: 0 }, 0)).toBe('size');
    expect(fits(policy, { texts: 3, tokens: 3, firstArrivalMs: 0 }, 1)).toBe(true);
    expect(fits(policy, { texts: 4, tokens: 4, firstArrivalMs: 0 }, 1)).toBe(false);
  });

  it('closes a batch at maxTokens and keeps a text that would overflow it for the next batch', () => {
    expect(closeReason(policy, { texts: 2, tokens: 99, firstArrivalMs: 0 }, 0)).toBeUndefined();
    expect(closeReason(policy, { texts: 2, tokens: 100, firstArrivalMs: 0 }, 0)).toBe('tokens');
    expect(fits(policy, { texts: 2, tokens: 90, firstArrivalMs: 0 }, 10)).toBe(true);
    expect(fits(policy, { texts: 2, tokens: 90, firstArrivalMs: 0 }, 11)).toBe(false);
    // An empty batch takes any text, so one longer than maxTokens still goes (alone).
    expect(fits(policy, { texts: 0, tokens: 0, firstArrivalMs: 0 }, 500)).toBe(true);
    expect(closeReason(policy, { texts: 1, tokens: 500, firstArrivalMs: 0 }, 0)).toBe('tokens');
  });

  it('closes a batch once its first text waited maxWait', () => {
    const open = { texts: 1, tokens: 1, firstArrivalMs: 100 };
    expect(closeReason(policy, open, 109)).toBeUndefined();
    expect(waitLeftMs(policy, open, 109)).toBe(1);
    expect(closeReason(policy, open, 110)).toBe('wait');
    expect(waitLeftMs(policy, open, 120)).toBe(0);
    expect(closeReason({ ...policy, maxWaitMs: 0 }, open, 100)).toBe('wait');
    expect(closeReason(policy, { texts: 0, tokens: 0, firstArrivalMs: 0 }, 1e9)).toBeUndefined();
  });

  it('closes a batch at once when the backend is idle, and never an empty one', () => {
    const open = { texts: 1, tokens: 1, firstArrivalMs: 100 };
    expect(closeReason(policy, open, 100, true)).toBeUndefined();
    expect(closeReason(policy, open, 100, false)).toBe('idle');
    // A full batch reports what filled it, busy or not.
    expect(closeReason(policy, { texts: 4, tokens: 4, firstArrivalMs: 0 }, 0, false)).toBe('size');
    expect(closeReason(policy, { texts: 0, tokens: 0, firstArrivalMs: 0 }, 0, false)).toBeUndefined();
  });
});

/** A scripted backend: records every request and answers when told to. */
function scriptedBackend() {
  const requests: { texts: string[]; signal: AbortSignal; answer(): void; fail(err: unknown): void }[] = [];
  const vector = (text: string) => [text.length, text.charCodeAt(text.length - 1)];
  const send = (batch: string[], signal: AbortSignal) =>
    new Promise<number[][]>((resolve, reject) => {
      requests.push({
        texts: batch,
        signal,
        answer: () => resolve(batch.map(vector)),
        fail: reject,
      });
      signal.addEventListener('abort', () => reject(new ClusterError('CANCELLED', 'aborted')), {
        once: true,
      });
    });
  return { requests, send, vector };
}

function batcher(
  backend: ReturnType<typeof scriptedBackend>,
  policy: Partial<BatchPolicy> = {},
  extra: { slots?: BatchSlots; isolate?: (err: ClusterError) => boolean } = {},
) {
  return new MicroBatcher({
    policy: { maxSize: 8, maxTokens: 10_000, maxWaitMs: 0, ...policy },
    send: backend.send,
    slots: extra.slots ?? new BatchSlots(1),
    ...(extra.isolate ? { isolate: extra.isolate } : {}),
  });
}

describe('MicroBatcher (scripted backend)', () => {
  it('merges calls that arrive while the endpoint is busy and splits the answer per call, in order', async () => {
    const backend = scriptedBackend();
    const b = batcher(backend);
    const first = b.submit(['a']);
    expect(backend.requests).toHaveLength(1);
    const calls = [['bb', 'ccc'], ['dddd'], ['ee', 'f', 'gg']].map((t) => ({
      texts: t,
      result: b.submit(t),
    }));
    expect(backend.requests).toHaveLength(1);
    expect(b.stats.waitingTexts).toBe(6);
    backend.requests[0]?.answer();
    expect(await first).toEqual([backend.vector('a')]);
    await waitFor('the merged request', () => backend.requests.length === 2);
    expect(backend.requests[1]?.texts).toEqual(['bb', 'ccc', 'dddd', 'ee', 'f', 'gg']);
    backend.requests[1]?.answer();
    for (const c of calls) expect(await c.result).toEqual(c.texts.map(backend.vector));
    expect(b.idle).toBe(true);
  });

  it('splits a call with more texts than maxSize over several requests', async () => {
    const backend = scriptedBackend();
    const b = batcher(backend, { maxSize: 3 }, { slots: new BatchSlots(10) });
    const input = ['t1', 't2', 't3', 't4', 't5', 't6', 't7'];
    const result = b.submit(input);
    expect(backend.requests.map((r) => r.texts)).toEqual([['t1', 't2', 't3'], ['t4', 't5', 't6'], ['t7']]);
    for (const r of [...backend.requests].reverse()) r.answer();
    expect(await result).toEqual(input.map(backend.vector));
  });

  it('closes a batch at maxTokens estimated tokens', async () => {
    const backend = scriptedBackend();
    const b = batcher(backend, { maxTokens: 5 }, { slots: new BatchSlots(10) });
    // 8 chars = 2 tokens each: two fit in 5 tokens, a third would not.
    const result = b.submit(['aaaaaaaa', 'bbbbbbbb', 'cccccccc', 'dddddddd', 'eeeeeeeeeeeeeeeeeeeeeeee']);
    expect(backend.requests.map((r) => r.texts)).toEqual([
      ['aaaaaaaa', 'bbbbbbbb'],
      ['cccccccc', 'dddddddd'],
      ['eeeeeeeeeeeeeeeeeeeeeeee'],
    ]);
    for (const r of backend.requests) r.answer();
    expect(await result).toHaveLength(5);
  });

  it('holds a batch for maxWait, then sends it', async () => {
    vi.useFakeTimers();
    const backend = scriptedBackend();
    const b = new MicroBatcher({
      policy: { maxSize: 8, maxTokens: 10_000, maxWaitMs: 20 },
      send: backend.send,
      slots: new BatchSlots(2),
      now: () => Date.now(),
    });
    // The backend is busy with a first request, so the next batch waits for company.
    const busy = b.submit(['busy']);
    vi.advanceTimersByTime(0);
    expect(backend.requests.map((r) => r.texts)).toEqual([['busy']]);
    const one = b.submit(['x']);
    const two = b.submit(['y']);
    vi.advanceTimersByTime(19);
    expect(backend.requests).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(backend.requests.map((r) => r.texts)).toEqual([['busy'], ['x', 'y']]);
    backend.requests[0]?.answer();
    backend.requests[1]?.answer();
    expect(await busy).toEqual([backend.vector('busy')]);
    expect(await one).toEqual([backend.vector('x')]);
    expect(await two).toEqual([backend.vector('y')]);
  });

  it('sends at once when the backend is idle, merging the calls of the same event-loop turn', async () => {
    vi.useFakeTimers();
    const backend = scriptedBackend();
    const b = new MicroBatcher({
      policy: { maxSize: 8, maxTokens: 10_000, maxWaitMs: 60_000 },
      send: backend.send,
      slots: new BatchSlots(2),
      now: () => Date.now(),
    });
    const one = b.submit(['x']);
    const two = b.submit(['y']);
    expect(backend.requests).toHaveLength(0);
    vi.advanceTimersByTime(0);
    expect(backend.requests.map((r) => r.texts)).toEqual([['x', 'y']]);
    backend.requests[0]?.answer();
    expect(await one).toEqual([backend.vector('x')]);
    expect(await two).toEqual([backend.vector('y')]);
  });

  it('keeps at most `limit` full batches in flight per endpoint; later texts wait and grow a batch', async () => {
    const backend = scriptedBackend();
    const slots = new BatchSlots(2);
    const b = batcher(backend, { maxSize: 2 }, { slots });
    const first = b.submit(['t1', 't2', 't3', 't4', 't5', 't6']);
    expect(backend.requests.map((r) => r.texts)).toEqual([
      ['t1', 't2'],
      ['t3', 't4'],
    ]);
    expect(slots.used).toBe(2);
    expect(b.stats).toEqual({ waitingTexts: 2, queuedBatches: 1, running: 2 });
    backend.requests[1]?.answer();
    await waitFor('the third batch', () => backend.requests.length === 3);
    expect(backend.requests[2]?.texts).toEqual(['t5', 't6']);
    backend.requests[0]?.answer();
    backend.requests[2]?.answer();
    expect(await first).toEqual(['t1', 't2', 't3', 't4', 't5', 't6'].map(backend.vector));
    await waitFor('the slots to be given back', () => slots.used === 0 && b.idle);
  });

  it('sends while the endpoint has a free slot; meanwhile later texts grow the open batch', async () => {
    const backend = scriptedBackend();
    const slots = new BatchSlots(2);
    const b = batcher(backend, { maxSize: 100 }, { slots });
    const results = [b.submit(['a']), b.submit(['b']), b.submit(['c']), b.submit(['d']), b.submit(['e'])];
    expect(backend.requests.map((r) => r.texts)).toEqual([['a'], ['b']]);
    expect(slots.used).toBe(2);
    expect(b.stats.waitingTexts).toBe(3);
    backend.requests[0]?.answer();
    await waitFor('the grown batch', () => backend.requests.length === 3);
    expect(backend.requests[2]?.texts).toEqual(['c', 'd', 'e']);
    for (const r of backend.requests.slice(1)) r.answer();
    expect(await Promise.all(results)).toEqual(['a', 'b', 'c', 'd', 'e'].map((t) => [backend.vector(t)]));
  });

  it('sends a text repeated across calls once and gives it to each', async () => {
    const backend = scriptedBackend();
    const b = batcher(backend);
    const hold = b.submit(['first']);
    const one = b.submit(['same', 'x']);
    const two = b.submit(['same']);
    backend.requests[0]?.answer();
    await hold;
    await waitFor('the second request', () => backend.requests.length === 2);
    expect(backend.requests[1]?.texts).toEqual(['same', 'x']);
    backend.requests[1]?.answer();
    expect(await one).toEqual([backend.vector('same'), backend.vector('x')]);
    expect(await two).toEqual([backend.vector('same')]);
  });

  it('removes a call cancelled while it waits: its texts are never sent', async () => {
    const backend = scriptedBackend();
    const b = batcher(backend);
    const hold = b.submit(['busy']);
    const abort = new AbortController();
    const cancelled = b.submit(['secret-1', 'secret-2'], abort.signal);
    const kept = b.submit(['kept']);
    abort.abort();
    expect((await rejection(cancelled)).code).toBe('CANCELLED');
    backend.requests[0]?.answer();
    await hold;
    await waitFor('the next request', () => backend.requests.length === 2);
    expect(backend.requests[1]?.texts).toEqual(['kept']);
    backend.requests[1]?.answer();
    expect(await kept).toEqual([backend.vector('kept')]);
    expect(backend.requests.flatMap((r) => r.texts)).not.toContain('secret-1');
  });

  it('drops the share of a call cancelled in flight, and aborts a request nobody waits for', async () => {
    const backend = scriptedBackend();
    const b = batcher(backend);
    let hold = b.submit(['hold 1']);
    const [a, c, d, e] = [1, 2, 3, 4].map(() => new AbortController()) as AbortController[];
    const callA = b.submit(['m1'], a?.signal);
    const callB = b.submit(['m2']);
    const callC = b.submit(['m3'], c?.signal);
    backend.requests[0]?.answer();
    await hold;
    await waitFor('the mixed batch', () => backend.requests.length === 2);
    const mixed = backend.requests[1];
    expect(mixed?.texts).toEqual(['m1', 'm2', 'm3']);
    a?.abort();
    expect((await rejection(callA)).code).toBe('CANCELLED');
    expect(mixed?.signal.aborted).toBe(false);
    mixed?.answer();
    expect(await callB).toEqual([backend.vector('m2')]);
    expect(await callC).toEqual([backend.vector('m3')]);
    await waitFor('the batcher to settle', () => b.idle);

    hold = b.submit(['hold 2']);
    const callD = b.submit(['n1'], d?.signal);
    const callE = b.submit(['n2'], e?.signal);
    expect(backend.requests).toHaveLength(3);
    backend.requests[2]?.answer();
    await hold;
    await waitFor('the batch of two calls', () => backend.requests.length === 4);
    const doomed = backend.requests[3];
    d?.abort();
    expect(doomed?.signal.aborted).toBe(false);
    e?.abort();
    // Both callers left: the request is aborted, so the GPU stops working on it.
    expect(doomed?.signal.aborted).toBe(true);
    expect((await rejection(callD)).code).toBe('CANCELLED');
    expect((await rejection(callE)).code).toBe('CANCELLED');
    await waitFor('the batcher to settle', () => b.idle);
  });

  it('fails every call of a failed batch with the same ClusterError', async () => {
    const backend = scriptedBackend();
    const b = batcher(backend);
    const hold = b.submit(['hold']);
    const calls = [b.submit(['p']), b.submit(['q', 'r']), b.submit(['s'])];
    backend.requests[0]?.answer();
    await hold;
    await waitFor('the batch', () => backend.requests.length === 2);
    const failure = new ClusterError('BACKEND_UNAVAILABLE', 'backend down');
    backend.requests[1]?.fail(failure);
    for (const c of calls) expect(await rejection(c)).toBe(failure);
    expect(b.idle).toBe(true);
  });

  it('retries a refused mixed batch call by call, so only the culprit fails', async () => {
    const backend = scriptedBackend();
    const b = batcher(backend, {}, { isolate: (err) => err.code === 'BACKEND_PROTOCOL' });
    const hold = b.submit(['hold']);
    const good = b.submit(['fine', 'also fine']);
    const bad = b.submit(['far too long']);
    backend.requests[0]?.answer();
    await hold;
    await waitFor('the mixed batch', () => backend.requests.length === 2);
    backend.requests[1]?.fail(new ClusterError('BACKEND_PROTOCOL', 'input too long'));
    await waitFor('the first retry', () => backend.requests.length === 3);
    expect(backend.requests[2]?.texts).toEqual(['fine', 'also fine']);
    backend.requests[2]?.answer();
    await waitFor('the second retry', () => backend.requests.length === 4);
    expect(backend.requests[3]?.texts).toEqual(['far too long']);
    backend.requests[3]?.fail(new ClusterError('BACKEND_PROTOCOL', 'input too long'));
    expect(await good).toEqual([backend.vector('fine'), backend.vector('also fine')]);
    expect((await rejection(bad)).message).toBe('input too long');
  });
});

describe('BatchSlots: interactive batches before batch-job ones', () => {
  it('gives a freed slot to a waiting interactive batcher before a waiting background one', () => {
    const slots = new BatchSlots(1);
    expect(slots.tryTake()).toBe(true);
    const woken: string[] = [];
    // A woken batcher takes the slot in the same turn, as MicroBatcher's pump does.
    slots.wait(() => {
      woken.push('background');
      slots.tryTake(true);
    }, true);
    slots.wait(() => {
      woken.push('interactive');
      slots.tryTake();
    });
    slots.give();
    expect(woken).toEqual(['interactive']);
  });

  it('lets batch-job batches take every slot, at once, when no interactive batch came by', () => {
    let now = 0;
    const slots = new BatchSlots(2, 200, () => now);
    expect(slots.tryTake(true)).toBe(true);
    expect(slots.tryTake(true)).toBe(true);
    expect(slots.used).toBe(2);
    now = 5;
    slots.give();
    expect(slots.tryTake(true)).toBe(true);
  });

  it('while interactive batches are about, keeps a slot free for them and paces batch-job batches', () => {
    let now = 0;
    const slots = new BatchSlots(2, 200, () => now);
    expect(slots.tryTake()).toBe(true); // an interactive batch
    slots.give();
    now = 10;
    expect(slots.tryTake(true)).toBe(true); // the first background batch goes
    slots.give();
    now = 20;
    expect(slots.tryTake(true)).toBe(false); // the next one waits for its pause...
    now = 210;
    expect(slots.tryTake(true)).toBe(true); // ...of 200 ms
    // One slot is left for interactive batches: a second background batch may not take it.
    now = 420;
    expect(slots.tryTake(true)).toBe(false);
    expect(slots.tryTake()).toBe(true);
    // A second after the last interactive batch, background batches have every slot again.
    slots.give();
    slots.give();
    now = 1500;
    expect(slots.tryTake(true)).toBe(true);
    expect(slots.tryTake(true)).toBe(true);
  });
});

describe('result cache (unit)', () => {
  it('stores float32-exact vectors in 4 bytes a component and others in 8, bit for bit', () => {
    const f32 = [0.5, -0.25, Math.fround(0.1)];
    const f64 = [0.1, 0.2, 1 / 3];
    expect(encodeVector(f32).length).toBe(1 + 4 * 3);
    expect(encodeVector(f64).length).toBe(1 + 8 * 3);
    expect(decodeVector(encodeVector(f32))).toEqual(f32);
    expect(decodeVector(encodeVector(f64))).toEqual(f64);
    expect(decodeVector(Buffer.from([7, 1, 2]))).toBeUndefined();
  });

  it('keys by model, normalisation and text', () => {
    const key = cacheKey('m', 'true', 'hello');
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    expect(cacheKey('m', 'false', 'hello')).not.toBe(key);
    expect(cacheKey('m2', 'true', 'hello')).not.toBe(key);
    expect(cacheKey('m', 'true', 'hello!')).not.toBe(key);
  });

  it('memory cache: entries expire after their TTL', async () => {
    let now = 1000;
    const cache = new MemoryEmbeddingCache(10, () => now);
    await cache.setMany([{ key: 'k', vector: [1, 2] }], 50);
    now = 1049;
    expect(await cache.getMany(['k'])).toEqual([[1, 2]]);
    now = 1050;
    expect(await cache.getMany(['k'])).toEqual([undefined]);
    expect(cache.size).toBe(0);
  });

  it('memory cache: holds at most maxEntries, evicting the least recently used', async () => {
    const cache = new MemoryEmbeddingCache(2);
    await cache.setMany([{ key: 'a', vector: [1] }], 60_000);
    await cache.setMany([{ key: 'b', vector: [2] }], 60_000);
    expect(await cache.getMany(['a'])).toEqual([[1]]); // a is now the most recently used
    await cache.setMany([{ key: 'c', vector: [3] }], 60_000);
    expect(cache.size).toBe(2);
    expect(await cache.getMany(['a', 'b', 'c'])).toEqual([[1], undefined, [3]]);
  });
});

describe('embed adapter against the simulated backend (OpenAI format)', () => {
  it('serves 32 concurrent calls with fewer backend requests, each caller getting exactly its own vectors', async () => {
    const backend = await sim({ embedFixedMs: 5, embedPerTokenMs: 0.01 });
    const adapter = createEmbedAdapter({ cache: false });
    const t2 = tool({ batch: { maxSize: 64, maxWaitMs: 5 } });
    const inputs = Array.from({ length: 32 }, (_, i) => texts(1 + (i % 3), `concurrent ${i}`));
    // Each call alone first: what every caller must get back.
    const alone: number[][][] = [];
    for (const input of inputs) alone.push(await embed(adapter, t2, backend.url, input));
    const before = backend.stats();
    expect(before.embedRequests).toBe(32);

    const together = await Promise.all(inputs.map((input) => embed(adapter, t2, backend.url, input)));
    const after = backend.stats();
    const requests = after.embedRequests - before.embedRequests;
    expect(requests).toBeLessThan(32);
    expect(after.embedInputs - before.embedInputs).toBe(inputs.flat().length);
    together.forEach((vectors, i) => {
      expect(vectors).toEqual(alone[i]);
    });
    const buckets = await batchSizeBuckets(t2.name);
    expect(buckets.get('+Inf')).toBe(32 + requests);
  });

  it('never sends more than maxSize texts in one request, and splits a large call (in order)', async () => {
    const backend = await sim();
    const adapter = createEmbedAdapter({ cache: false });
    const t = tool({ batch: { maxSize: 4, maxTokens: 16_384, maxWaitMs: 5 } });
    const big = texts(10, 'large call');
    const vectors = await embed(adapter, t, backend.url, big, { normalize: false });
    expect(backend.stats().embedRequests).toBe(3);

    await Promise.all(Array.from({ length: 12 }, () => embed(adapter, t, backend.url, texts(1, 'small'))));
    const buckets = await batchSizeBuckets(t.name);
    expect(buckets.get('4')).toBe(buckets.get('+Inf'));
    const sizes = Object.keys(backend.stats().embedBatchSizes ?? {}).map(Number);
    for (const size of sizes) expect(size).toBeLessThanOrEqual(4);
    expect(vectors).toEqual(await rawEmbeddings(backend, big));
  });

  it('closes a batch on maxTokens and on maxWait', async () => {
    const backend = await sim();
    const adapter = createEmbedAdapter({ cache: false });
    // Every text is 40 chars = 10 tokens; 25 tokens take two.
    const t = tool({ batch: { maxSize: 64, maxTokens: 25, maxWaitMs: 5 } });
    const long = Array.from({ length: 6 }, (_, i) => `${String(i).padStart(2, '0')}${'y'.repeat(38)}`);
    await embed(adapter, t, backend.url, long);
    expect(backend.stats().embedRequests).toBe(3);
    // Alone and far below every size limit: only the wait can close it.
    const waited = tool({ batch: { maxSize: 1000, maxTokens: 1_000_000, maxWaitMs: 20 } });
    expect(await embed(adapter, waited, backend.url, ['lonely'])).toHaveLength(1);
    expect(backend.stats().embedRequests).toBe(4);
  });

  it('never sends a call cancelled while its texts wait in an open batch', async () => {
    const backend = await sim();
    const adapter = createEmbedAdapter({ cache: false });
    // A batch closes only when full (3 texts): the wait is far longer than the test.
    const t = tool({ batch: { maxSize: 3, maxTokens: 16_384, maxWaitMs: 60_000 } });
    const abort = new AbortController();
    const cancelled = embed(adapter, t, backend.url, ['never sent 1', 'never sent 2'], {
      signal: abort.signal,
    });
    abort.abort();
    expect((await rejection(cancelled)).code).toBe('CANCELLED');
    const kept = texts(3, 'kept');
    expect(await embed(adapter, t, backend.url, kept, { normalize: false })).toEqual(
      await rawEmbeddings(backend, kept),
    );
    // One request by the adapter (3 texts) plus the one rawEmbeddings made.
    expect(backend.stats().embedRequests).toBe(2);
    expect(backend.stats().embedInputs).toBe(6);
  });

  it('fails every call of a batch with BACKEND_UNAVAILABLE when the backend fails', async () => {
    const backend = await sim();
    const adapter = createEmbedAdapter({ cache: false });
    const t = tool({ batch: { maxSize: 5, maxTokens: 16_384, maxWaitMs: 60_000 } });
    await injectFailure(backend, '5xx', 1);
    const calls = [texts(1), texts(2), texts(2)].map((input) => embed(adapter, t, backend.url, input));
    const errors = await Promise.all(calls.map(rejection));
    for (const err of errors) {
      expect(err.code).toBe('BACKEND_UNAVAILABLE');
      expect(err).toBe(errors[0]);
    }
    expect(errors[0]?.message).toContain(backend.url);
    // The failure was for one request; the next batch works.
    expect(await embed(adapter, t, backend.url, texts(5))).toHaveLength(5);
  });
});

describe("embed calls through their endpoint's BackendActor (circuit breaker)", () => {
  // The worker runs every call through the actor of the endpoint it routed it to; calls merged
  // into one backend request must count as that one request on the endpoint's breaker.
  const log = createLogger('embeddings-test');
  let pools = 0;

  /** An actor with the breaker's defaults (5 failures in a row open it), labelled with a pool of its own. */
  const actorFor = (url: string): BackendActor => {
    pools += 1;
    return startActor(cleanups, log, url, { pool: `embed_breaker_${pools}` });
  };

  /** `mcp_cluster_backend_breaker_state` of the actor's endpoint: 0 closed, 1 half-open, 2 open. */
  const breakerState = async (actor: BackendActor): Promise<number | undefined> => {
    const metric = await clusterMetrics().backendBreaker.get();
    return metric.values.find((v) => v.labels.pool === actor.options.pool && v.labels.backend === '0')?.value;
  };

  /** One embed call of `input` (raw vectors) through the actor, as the worker runs it. */
  const call = (actor: BackendActor, adapter: ToolAdapter, t: ToolConfig, input: string[]) =>
    actor.run((url) =>
      adapter.run(
        adapterContext(t, { texts: input, normalize: false }, url, { call: { wantsProgress: false } }),
      ),
    );

  /** `n` calls of one text each at once, which fill exactly one batch when the tool's maxSize is `n`. */
  const together = (actor: BackendActor, adapter: ToolAdapter, t: ToolConfig, n: number) =>
    Array.from({ length: n }, () => call(actor, adapter, t, texts(1, 'breaker')));

  /** Runs one batch of `n` calls that must all fail with the same BACKEND_UNAVAILABLE. */
  const failedBatch = async (actor: BackendActor, adapter: ToolAdapter, t: ToolConfig, n: number) => {
    const errors = await Promise.all(together(actor, adapter, t, n).map(rejection));
    for (const err of errors) {
      expect(err.code).toBe('BACKEND_UNAVAILABLE');
      expect(err).toBe(errors[0]);
    }
  };

  it('counts a failed batch of 8 calls as one backend failure: the breaker stays closed', async () => {
    const backend = await sim();
    const actor = actorFor(backend.url);
    const adapter = createEmbedAdapter({ cache: false });
    // The batch closes when full (8 texts), long before its wait.
    const t = tool({ batch: { maxSize: 8, maxTokens: 16_384, maxWaitMs: 60_000 } });
    await injectFailure(backend, '5xx', 1);
    await failedBatch(actor, adapter, t, 8);
    // One backend request failed, once.
    expect(backend.stats()).toMatchObject({ failuresInjected: 1, embedRequests: 0 });
    expect(actor.view()).toMatchObject({ available: true, inFlight: 0 });
    expect(await breakerState(actor)).toBe(0);

    // The next batch is served, each call its own vectors.
    const input = texts(8, 'after the failure');
    const vectors = await Promise.all(input.map((text) => call(actor, adapter, t, [text])));
    expect(backend.stats()).toMatchObject({ failuresInjected: 1, embedRequests: 1, embedInputs: 8 });
    const raw = await rawEmbeddings(backend, input);
    vectors.forEach((result, i) => {
      expect((result.structuredContent as { vectors: number[][] }).vectors).toEqual([raw[i]]);
    });
  });

  it('opens after 5 failed backend requests in a row, however many calls each carried; a good one starts the count over', async () => {
    const backend = await sim();
    const actor = actorFor(backend.url);
    const adapter = createEmbedAdapter({ cache: false });
    const t = tool({ batch: { maxSize: 2, maxTokens: 16_384, maxWaitMs: 60_000 } });
    backend.setFailure('5xx');
    // Four failed requests of two calls each (8 failed calls): still closed.
    for (let i = 0; i < 4; i++) {
      await failedBatch(actor, adapter, t, 2);
      expect(await breakerState(actor)).toBe(0);
    }
    // A good request (two calls) resets the count.
    backend.setFailure('none');
    await Promise.all(together(actor, adapter, t, 2));
    backend.setFailure('5xx');
    for (let i = 0; i < 4; i++) {
      await failedBatch(actor, adapter, t, 2);
      expect(actor.view().available).toBe(true);
      expect(await breakerState(actor)).toBe(0);
    }
    // The fifth failed request in a row opens it.
    await failedBatch(actor, adapter, t, 2);
    expect(await breakerState(actor)).toBe(2);
    expect(actor.view()).toMatchObject({ available: false, inFlight: 0 });
    expect(backend.stats()).toMatchObject({ failuresInjected: 9, embedRequests: 1 });
    // Open: a call that still arrives fails fast, without reaching the backend.
    const fast = await rejection(call(actor, adapter, t, texts(1, 'breaker open')));
    expect(fast.code).toBe('BACKEND_UNAVAILABLE');
    expect(fast.message).toMatch(/circuit breaker is open/);
    expect(backend.stats().failuresInjected).toBe(9);
  });

  it('lets one trial call through once open: a failed trial reopens the breaker, a good one closes it', async () => {
    const backend = await sim();
    pools += 1;
    const actor = startActor(cleanups, log, backend.url, {
      pool: `embed_breaker_${pools}`,
      breakerHalfOpenMs: 100,
    });
    const adapter = createEmbedAdapter({ cache: false });
    const t = tool({ batch: { maxSize: 3, maxTokens: 16_384, maxWaitMs: 60_000 } });
    backend.setFailure('5xx', 6);
    for (let i = 0; i < 5; i++) await failedBatch(actor, adapter, t, 3);
    expect(await breakerState(actor)).toBe(2);

    // Three calls at once when the delay has passed: the first is the trial (alone in its
    // request, which fails); the others wait for it and then find the breaker open again.
    await waitFor('the breaker to admit a trial call', () => actor.view().available);
    const errors = await Promise.all(together(actor, adapter, t, 3).map(rejection));
    expect(errors.map((err) => err.code)).toEqual(Array(3).fill('BACKEND_UNAVAILABLE'));
    expect(errors.filter((err) => /circuit breaker is open/.test(err.message))).toHaveLength(2);
    expect(await breakerState(actor)).toBe(2);
    expect(backend.stats()).toMatchObject({ failuresInjected: 6, embedRequests: 0 });

    // The backend is well again: the trial succeeds and closes the breaker; the others follow.
    await waitFor('the breaker to admit a trial call', () => actor.view().available);
    const served = await Promise.all(together(actor, adapter, t, 3));
    expect(served).toHaveLength(3);
    expect(await breakerState(actor)).toBe(0);
    expect(actor.view()).toMatchObject({ available: true, inFlight: 0 });
    expect(backend.stats()).toMatchObject({ failuresInjected: 6, embedInputs: 3 });
  });
});

describe('embed adapter against the simulated backend (TEI format)', () => {
  it('POSTs /embed and returns the same vectors as the OpenAI path, in order, merged across calls', async () => {
    const backend = await sim();
    const adapter = createEmbedAdapter({ cache: false });
    const t = tool({ batch: { maxSize: 64, maxTokens: 16_384, maxWaitMs: 5 } });
    const inputs = Array.from({ length: 12 }, (_, i) => texts(1 + (i % 3), `tei ${i}`));
    const openai = await Promise.all(
      inputs.map((input) => embed(adapter, t, backend.url, input, { normalize: false })),
    );
    const before = backend.stats().embedRequests;
    const tei = await Promise.all(
      inputs.map((input) => embed(adapter, t, backend.url, input, { backend: 'tei' })),
    );
    expect(backend.stats().embedRequests - before).toBeLessThan(12);
    // TEI normalises on the server; the simulated model's vectors are unit length already.
    expect(tei).toEqual(openai);
    const teiNormalized = await embed(adapter, t, backend.url, inputs[2] as string[], { backend: 'tei' });
    const openaiNormalized = await embed(adapter, t, backend.url, inputs[2] as string[]);
    teiNormalized.forEach((v, i) => {
      v.forEach((x, j) => {
        expect(x).toBeCloseTo(openaiNormalized[i]?.[j] ?? Number.NaN, 12);
      });
    });
  });

  it('passes normalize: false to TEI and returns its raw vectors', async () => {
    const backend = await sim();
    const adapter = createEmbedAdapter({ cache: false });
    const t = tool();
    const input = texts(3, 'raw tei');
    const vectors = await embed(adapter, t, backend.url, input, { backend: 'tei', normalize: false });
    const res = await fetch(`${backend.url}/embed`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ inputs: input, normalize: false }),
    });
    expect(res.status).toBe(200);
    expect(vectors).toEqual(await res.json());
  });

  it('names a text that is too long (TEI 422) and fails only the call that sent it', async () => {
    const backend = await sim({ embedMaxInputTokens: 16 });
    const adapter = createEmbedAdapter({ cache: false });
    const t = tool({ batch: { maxSize: 3, maxTokens: 16_384, maxWaitMs: 60_000 } });
    const good = embed(adapter, t, backend.url, texts(2, 'ok'), { backend: 'tei' });
    const bad = embed(adapter, t, backend.url, ['z'.repeat(400)], { backend: 'tei' });
    const err = await rejection(bad);
    expect(err.code).toBe('BACKEND_PROTOCOL');
    expect(err.message).toMatch(/422/);
    expect(err.message).toMatch(/less than 16 tokens/);
    expect(err.message).toMatch(/longer than the model's maximum input length/);
    expect(await good).toHaveLength(2);
  });

  it("maps TEI's 413, 424 and 429 answers", async () => {
    const adapter = createEmbedAdapter({ cache: false });
    const t = tool();
    for (const [status, code, pattern] of [
      [413, 'BACKEND_PROTOCOL', /too large \(413\).*payload too large.*fewer or shorter/],
      [424, 'BACKEND_UNAVAILABLE', /failed to run the model \(424\).*model crashed/],
      [429, 'BACKEND_UNAVAILABLE', /429.*Model is overloaded/],
      [503, 'BACKEND_UNAVAILABLE', /503/],
    ] as const) {
      const url = await stubServer(cleanups, status, { error: messageFor(status), error_type: 'Test' });
      const err = await rejection(embed(adapter, t, url, texts(1), { backend: 'tei' }));
      expect(err.code).toBe(code);
      expect(err.message).toMatch(pattern);
    }
  });
});

describe('embed adapter result cache', () => {
  it('memory: serves a repeated text without a backend request and counts hits and misses', async () => {
    const backend = await sim();
    const adapter = createEmbedAdapter();
    const t = tool();
    const [a, b] = texts(2, 'cached');
    const first = await embed(adapter, t, backend.url, [a as string, b as string]);
    expect(backend.stats().embedRequests).toBe(1);
    const again = await embed(adapter, t, backend.url, [b as string, a as string, b as string]);
    expect(backend.stats().embedRequests).toBe(1);
    expect(again).toEqual([first[1], first[0], first[1]]);
    // Partly cached: only the new text goes to the backend.
    const [c] = texts(1, 'new');
    const mixed = await embed(adapter, t, backend.url, [a as string, c as string]);
    expect(backend.stats().embedRequests).toBe(2);
    expect(backend.stats().embedInputs).toBe(3);
    expect(mixed[0]).toEqual(first[0]);
    expect(await counterValue('cacheHits', t.name)).toBe(4);
    expect(await counterValue('cacheMisses', t.name)).toBe(3);
    // Normalised and raw answers of the OpenAI path come from the same cached raw vector.
    const raw = await embed(adapter, t, backend.url, [a as string], { normalize: false });
    expect(raw).toEqual(await rawEmbeddings(backend, [a as string]));
    expect(backend.stats().embedRequests).toBe(3); // rawEmbeddings' own request
  });

  it('memory: entries expire after the TTL', async () => {
    const backend = await sim();
    const adapter = createEmbedAdapter();
    const t = tool({ cache: { ttlMs: 1 } });
    const input = texts(1, 'short-lived');
    await embed(adapter, t, backend.url, input);
    await new Promise((resolve) => setTimeout(resolve, 20));
    await embed(adapter, t, backend.url, input);
    expect(backend.stats().embedRequests).toBe(2);
  });

  it('memory: holds at most maxEntries vectors', async () => {
    const backend = await sim();
    const adapter = createEmbedAdapter();
    const t = tool({ cache: { maxEntries: 2 } });
    const [a, b, c] = texts(3, 'bounded') as [string, string, string];
    await embed(adapter, t, backend.url, [a, b, c]);
    expect(backend.stats().embedRequests).toBe(1);
    await embed(adapter, t, backend.url, [b, c]);
    expect(backend.stats().embedRequests).toBe(1);
    await embed(adapter, t, backend.url, [a]);
    expect(backend.stats().embedRequests).toBe(2);
  });

  it('is not used when the tool disables it', async () => {
    const backend = await sim();
    const adapter = createEmbedAdapter();
    const t = tool({ cache: { enabled: false } });
    const input = texts(1);
    await embed(adapter, t, backend.url, input);
    await embed(adapter, t, backend.url, input);
    expect(backend.stats().embedRequests).toBe(2);
  });

  describe('in Redis', () => {
    let redis: SpawnedBroker;
    let client: Redis;
    beforeAll(async () => {
      redis = await startRedisServer();
      client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    });
    afterAll(async () => {
      client?.disconnect();
      await redis?.stop();
    });

    it('serves a repeated text from Redis, stored compactly with a TTL', async () => {
      const backend = await sim({ embeddingDimensions: 32 });
      const prefix = `${uniqueNamespace('embed')}:`;
      const adapter = createEmbedAdapter({ cacheUrl: redis.url, cacheKeyPrefix: prefix });
      const t = tool({ cache: { ttlMs: 3_600_000 } });
      const input = texts(2, 'redis');
      const first = await embed(adapter, t, backend.url, input);
      await waitFor('the cache writes', async () => (await client.keys(`${prefix}*`)).length === 2);
      const again = await embed(adapter, t, backend.url, input);
      expect(again).toEqual(first);
      expect(backend.stats().embedRequests).toBe(1);

      const key = `${prefix}${cacheKey(t.model, 'raw', input[0] as string)}`;
      const stored = await client.getBuffer(key);
      // The sim's vectors are float64: tag byte + 8 bytes per component (no JSON).
      expect(stored?.length).toBe(1 + 8 * 32);
      const ttl = await client.pttl(key);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(3_600_000);

      // Another worker process (another adapter and connection) shares the cache.
      await closeEmbeddingCaches();
      const other = createEmbedAdapter({ cacheUrl: redis.url, cacheKeyPrefix: prefix });
      expect(await embed(other, t, backend.url, input)).toEqual(first);
      expect(backend.stats().embedRequests).toBe(1);
    });

    it('lets entries expire after the TTL', async () => {
      const backend = await sim();
      const prefix = `${uniqueNamespace('embed')}:`;
      const adapter = createEmbedAdapter({ cacheUrl: redis.url, cacheKeyPrefix: prefix });
      const t = tool({ cache: { ttlMs: 200 } });
      const input = texts(1, 'redis ttl');
      await embed(adapter, t, backend.url, input);
      const key = `${prefix}${cacheKey(t.model, 'raw', input[0] as string)}`;
      await waitFor('the entry to be written', async () => (await client.exists(key)) === 1);
      await waitFor('the entry to expire', async () => (await client.exists(key)) === 0);
      await embed(adapter, t, backend.url, input);
      expect(backend.stats().embedRequests).toBe(2);
    });

    it('keeps serving calls (without cache) while Redis is down, and caches again once it is back', async () => {
      const backend = await sim();
      const prefix = `${uniqueNamespace('embed')}:`;
      const adapter = createEmbedAdapter({ cacheUrl: redis.url, cacheKeyPrefix: prefix });
      const t = tool();
      const input = texts(2, 'outage');
      const first = await embed(adapter, t, backend.url, input);
      await redis.stop();
      try {
        expect(await embed(adapter, t, backend.url, input)).toEqual(first);
        expect(backend.stats().embedRequests).toBe(2);
        expect(await embed(adapter, t, backend.url, texts(3, 'during outage'))).toHaveLength(3);
      } finally {
        await redis.restart();
      }
      client.disconnect();
      client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
      // The client reconnects in the background; once it does, results are cached again.
      await waitFor('caching to resume', async () => {
        await embed(adapter, t, backend.url, input);
        return (await client.keys(`${prefix}*`)).length > 0;
      });
      const requests = backend.stats().embedRequests;
      await embed(adapter, t, backend.url, input);
      expect(backend.stats().embedRequests).toBe(requests);
    });

    it('serves calls when Redis was never reachable', async () => {
      const backend = await sim();
      const adapter = createEmbedAdapter({ cacheUrl: `redis://127.0.0.1:${await freePort()}` });
      const t = tool();
      const input = texts(2, 'no redis');
      const first = await embed(adapter, t, backend.url, input);
      expect(await embed(adapter, t, backend.url, input)).toEqual(first);
      expect(backend.stats().embedRequests).toBe(2);
    });
  });
});

async function injectFailure(backend: SimBackend, mode: string, count: number): Promise<void> {
  const res = await fetch(`${backend.url}/sim/fail`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ mode, count }),
  });
  expect(res.status).toBe(200);
}

function messageFor(status: number): string {
  switch (status) {
    case 413:
      return 'payload too large';
    case 424:
      return 'model crashed';
    case 429:
      return 'Model is overloaded';
    default:
      return 'unhealthy';
  }
}
