/** The counters and capacity of one simulated backend, shared by its endpoints. */

import type { ServerResponse } from 'node:http';
import { DecodeEngine } from './decode-engine.js';
import { FailureInjector } from './failures.js';
import {
  embedBatchSizeBuckets,
  Histogram,
  interTokenBucketsSeconds,
  iterationTokenBuckets,
  requestLatencyBucketsSeconds,
  ttftBucketsSeconds,
} from './histogram.js';
import { FifoSlots } from './latency-model.js';
import type { SimOptions } from './options.js';
import { PrefixCache } from './prefix-cache.js';

/**
 * A snapshot of the backend's counters. "Requests" are the inference requests that passed
 * validation (chat completions, OpenAI embeddings and TEI `/embed`); rejected ones and ones
 * answered by an injected failure are not counted. Once the backend is idle,
 * `requests = completed + aborted`.
 */
export interface SimStats {
  /** Inference requests accepted so far (`chatRequests + embedRequests`). */
  requests: number;
  /** Accepted requests whose response was fully written. */
  completed: number;
  /** Accepted requests whose client closed the connection before the response finished. */
  aborted: number;
  /** Chat sequences holding a sequence slot plus embeddings requests holding the GPU, now. */
  running: number;
  /** Chat sequences queued for a slot plus embeddings requests queued for the GPU, now. */
  waiting: number;
  /** Embeddings requests accepted so far, both wire formats (`/v1/embeddings` and TEI `/embed`). */
  embedRequests: number;
  /** Inputs (texts) in the accepted embeddings requests so far, both wire formats. */
  embedInputs: number;
  /** Chat completions requests accepted so far. */
  chatRequests: number;

  /**
   * Prefix-cache lookups: chat sequences admitted to a sequence slot (each looks its prompt up,
   * with or without a session).
   */
  prefixCacheQueries: number;
  /** Lookups that found at least one prompt token cached. */
  prefixCacheHits: number;
  /** Prompt tokens looked up in the prefix cache (what vLLM's `prefix_cache_queries` counts). */
  prefixCacheQueryTokens: number;
  /** Prompt tokens found in the prefix cache (what vLLM's `prefix_cache_hits` counts). */
  prefixCacheHitTokens: number;
  /** Prompt tokens actually prefilled: looked up but not cached. */
  prefillTokens: number;

  /** Chat sequences that reached their first token. */
  firstTokens: number;
  /** Sum over those of the time from acceptance to the first token (queue + prefill), in ms. */
  timeToFirstTokenMsSum: number;

  /** Decode steps run by the continuous-batching loop (steps that gave at least one token). */
  decodeSteps: number;
  /** Tokens given by decode steps (Σ batch size over steps; excludes each sequence's first token). */
  decodeTokens: number;
  /**
   * Model time of those steps, in ms (`Σ decodeStepMs(batch size)`): the time the loop was busy
   * by its own model. Per-sequence rate = `decodeSteps / decodeStepMsSum` tokens/ms; total rate =
   * `decodeTokens / decodeStepMsSum`; mean batch = `decodeTokens / decodeSteps`.
   */
  decodeStepMsSum: number;
  /** Largest decode batch seen (sequences in one step). */
  maxDecodeBatch: number;

  /** GPU batches run for embeddings (a request above `embedMaxBatchTokens` takes several). */
  embedGpuBatches: number;
  /**
   * How many accepted embeddings requests carried each number of inputs, e.g. `{"1": 3, "8": 2}`:
   * the client-side batch sizes, to check micro-batching.
   */
  embedBatchSizes: Record<string, number>;
  /** Most inputs in one accepted embeddings request so far (0 before the first). */
  embedMaxBatchSize: number;

  /** Requests answered by an injected failure (`/sim/fail`, `setFailure`), `/health` included. */
  failuresInjected: number;
}

/** Mutable state behind one backend. */
export interface SimState {
  readonly options: SimOptions;
  /** Sequence slots of the chat model (vLLM's `--max-num-seqs`). */
  readonly chatSlots: FifoSlots;
  /** The continuous-batching decode loop of the chat model. */
  readonly engine: DecodeEngine;
  /** Per-session prefix cache of the chat model. */
  readonly prefixCache: PrefixCache;
  /** The simulated GPU runs one embeddings batch at a time. */
  readonly embedGpu: FifoSlots;
  /** Failure injection for tests. */
  readonly failures: FailureInjector;
  /** Inputs of TEI `/embed` requests in flight (TEI's concurrency permits). */
  teiInFlight: number;
  readonly histograms: {
    /** Acceptance to first token, seconds. */
    timeToFirstToken: Histogram;
    /** Model time between two tokens of a sequence (the decode step), seconds. */
    interTokenLatency: Histogram;
    /** Tokens per decode step. */
    iterationTokens: Histogram;
    /** Acceptance to a sequence slot, seconds. */
    queueTime: Histogram;
    /** Acceptance to the last byte of the answer, seconds. */
    e2eLatency: Histogram;
    /** Inputs per accepted embeddings request. */
    embedBatchSize: Histogram;
  };
  counters: {
    chatRequests: number;
    embedRequests: number;
    embedInputs: number;
    completed: number;
    aborted: number;
    /** Prompt tokens of chat sequences that reached their first token. */
    chatPromptTokens: number;
    /** Tokens of embeddings batches the GPU finished. */
    embedTokens: number;
    /** Output tokens generated (streamed or returned). */
    generationTokens: number;
    prefixCacheQueries: number;
    prefixCacheHits: number;
    prefixCacheQueryTokens: number;
    prefixCacheHitTokens: number;
    firstTokens: number;
    timeToFirstTokenMsSum: number;
    decodeSteps: number;
    decodeTokens: number;
    decodeStepMsSum: number;
    maxDecodeBatch: number;
    embedGpuBatches: number;
    embedMaxBatchSize: number;
    failuresInjected: number;
  };
  /** Accepted embeddings requests per input count. */
  readonly embedBatchSizes: Map<number, number>;
  /**
   * The last {@link RECENT_REQUESTS} model and health requests, oldest first, with the headers as
   * received: tests read them to prove what reaches a backend (no caller credentials, say).
   */
  readonly recentRequests: RecordedRequest[];
  /** Requests recorded so far, the dropped ones included: the next record's `seq` minus one. */
  recordedRequests: number;
}

/** How many requests `recentRequests` keeps. */
export const RECENT_REQUESTS = 256;

/** One request as the backend received it. */
export interface RecordedRequest {
  /**
   * Arrival number, from 1, counting every recorded request (also those dropped since): a
   * reader polling `/sim/requests` joins its reads on it and sees the exact arrival order.
   */
  seq: number;
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  /**
   * For an accepted chat completions request: its OpenAI `user` field (the caller's session key,
   * which tests set to tell tenants apart), `max_tokens` as sent and the prompt's tokens.
   */
  chat?: { user: string | undefined; maxTokens: number | null; promptTokens: number };
}

/** Remembers one request, dropping the oldest past {@link RECENT_REQUESTS}, and returns its record. */
export function recordRequest(state: SimState, request: Omit<RecordedRequest, 'seq'>): RecordedRequest {
  state.recordedRequests += 1;
  const record: RecordedRequest = { seq: state.recordedRequests, ...request };
  state.recentRequests.push(record);
  if (state.recentRequests.length > RECENT_REQUESTS) state.recentRequests.shift();
  return record;
}

export function createSimState(options: SimOptions): SimState {
  const counters: SimState['counters'] = {
    chatRequests: 0,
    embedRequests: 0,
    embedInputs: 0,
    completed: 0,
    aborted: 0,
    chatPromptTokens: 0,
    embedTokens: 0,
    generationTokens: 0,
    prefixCacheQueries: 0,
    prefixCacheHits: 0,
    prefixCacheQueryTokens: 0,
    prefixCacheHitTokens: 0,
    firstTokens: 0,
    timeToFirstTokenMsSum: 0,
    decodeSteps: 0,
    decodeTokens: 0,
    decodeStepMsSum: 0,
    maxDecodeBatch: 0,
    embedGpuBatches: 0,
    embedMaxBatchSize: 0,
    failuresInjected: 0,
  };
  const histograms: SimState['histograms'] = {
    timeToFirstToken: new Histogram(ttftBucketsSeconds),
    interTokenLatency: new Histogram(interTokenBucketsSeconds),
    iterationTokens: new Histogram(iterationTokenBuckets),
    queueTime: new Histogram(requestLatencyBucketsSeconds),
    e2eLatency: new Histogram(requestLatencyBucketsSeconds),
    embedBatchSize: new Histogram(embedBatchSizeBuckets),
  };
  const engine = new DecodeEngine(options, ({ tokens, ms }) => {
    counters.decodeSteps++;
    counters.decodeTokens += tokens;
    counters.decodeStepMsSum += ms;
    counters.generationTokens += tokens;
    if (tokens > counters.maxDecodeBatch) counters.maxDecodeBatch = tokens;
    histograms.iterationTokens.observe(tokens);
    histograms.interTokenLatency.observe(ms / 1000, tokens);
  });
  return {
    options,
    chatSlots: new FifoSlots(options.maxNumSeqs),
    engine,
    prefixCache: new PrefixCache(options.prefixCacheTokens),
    embedGpu: new FifoSlots(1),
    failures: new FailureInjector(),
    teiInFlight: 0,
    histograms,
    counters,
    embedBatchSizes: new Map(),
    recentRequests: [],
    recordedRequests: 0,
  };
}

/** Counts an accepted embeddings request of `inputs` texts (either wire format). */
export function countEmbedRequest(state: SimState, inputs: number): void {
  const { counters } = state;
  counters.embedRequests++;
  counters.embedInputs += inputs;
  if (inputs > counters.embedMaxBatchSize) counters.embedMaxBatchSize = inputs;
  state.embedBatchSizes.set(inputs, (state.embedBatchSizes.get(inputs) ?? 0) + 1);
  state.histograms.embedBatchSize.observe(inputs);
}

export function snapshotStats(state: SimState): SimStats {
  const c = state.counters;
  const embedBatchSizes: Record<string, number> = {};
  for (const size of [...state.embedBatchSizes.keys()].sort((a, b) => a - b)) {
    embedBatchSizes[String(size)] = state.embedBatchSizes.get(size) ?? 0;
  }
  return {
    requests: c.chatRequests + c.embedRequests,
    completed: c.completed,
    aborted: c.aborted,
    running: state.chatSlots.running + state.embedGpu.running,
    waiting: state.chatSlots.waiting + state.embedGpu.waiting,
    embedRequests: c.embedRequests,
    embedInputs: c.embedInputs,
    chatRequests: c.chatRequests,
    prefixCacheQueries: c.prefixCacheQueries,
    prefixCacheHits: c.prefixCacheHits,
    prefixCacheQueryTokens: c.prefixCacheQueryTokens,
    prefixCacheHitTokens: c.prefixCacheHitTokens,
    prefillTokens: c.prefixCacheQueryTokens - c.prefixCacheHitTokens,
    firstTokens: c.firstTokens,
    timeToFirstTokenMsSum: c.timeToFirstTokenMsSum,
    decodeSteps: c.decodeSteps,
    decodeTokens: c.decodeTokens,
    decodeStepMsSum: c.decodeStepMsSum,
    maxDecodeBatch: c.maxDecodeBatch,
    embedGpuBatches: c.embedGpuBatches,
    embedBatchSizes,
    embedMaxBatchSize: c.embedMaxBatchSize,
    failuresInjected: c.failuresInjected,
  };
}

/**
 * Counts the outcome of an accepted request exactly once: completed when the response finished,
 * aborted when `clientGone` fired first (the connection closed before the last byte was written).
 * `onSettled` (if given) runs once with the outcome.
 */
export function trackOutcome(
  state: SimState,
  res: ServerResponse,
  clientGone: AbortSignal,
  onSettled?: (outcome: 'completed' | 'aborted') => void,
): void {
  let counted = false;
  const onFinish = (): void => {
    if (counted) return;
    counted = true;
    clientGone.removeEventListener('abort', onAbort);
    state.counters.completed++;
    onSettled?.('completed');
  };
  const onAbort = (): void => {
    if (counted) return;
    counted = true;
    res.off('finish', onFinish);
    state.counters.aborted++;
    onSettled?.('aborted');
  };
  if (clientGone.aborted) {
    onAbort();
    return;
  }
  res.once('finish', onFinish);
  clientGone.addEventListener('abort', onAbort, { once: true });
}
