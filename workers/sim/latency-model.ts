/**
 * The simulated GPU's cost model (pure functions of the options) and its capacity: a FIFO of
 * slots, one per sequence the GPU can generate at once.
 */

import type { SimOptions } from './options.js';

/**
 * Estimated token count of a text: one token per 4 characters (UTF-16 code units), rounded up,
 * at least 1 — the usual rule of thumb for English with BPE tokenizers. Used for prompts and for
 * embeddings inputs alike.
 */
export function estimateTokens(text: string): number {
  return Math.max(1, Math.ceil(text.length / 4));
}

/**
 * Milliseconds from getting a sequence slot to the first token (prefill): a fixed part plus a
 * cost per prompt token that has to be computed, i.e. that was not found in the prefix cache.
 */
export function timeToFirstTokenMs(options: SimOptions, uncachedPromptTokens: number): number {
  return options.ttftMs + options.perPromptTokenMs * uncachedPromptTokens;
}

/** Milliseconds between two tokens of a sequence that decodes alone. */
export function interTokenMs(options: SimOptions): number {
  return 1000 / options.tokensPerSecond;
}

/**
 * Milliseconds of one decode step of a batch of `decoding` sequences (each gets one token):
 * `interTokenMs × (1 + batchPenalty × (decoding − 1))`. Per sequence that is a rate of
 * `1000 / step` tokens/s, falling with the batch; in total `decoding × 1000 / step`, rising
 * sublinearly toward `tokensPerSecond / batchPenalty`.
 */
export function decodeStepMs(options: SimOptions, decoding: number): number {
  return interTokenMs(options) * (1 + options.batchPenalty * Math.max(0, decoding - 1));
}

/** Milliseconds one embeddings batch of `totalTokens` tokens holds the GPU. */
export function embedBatchMs(options: SimOptions, totalTokens: number): number {
  return options.embedFixedMs + options.embedPerTokenMs * totalTokens;
}

/**
 * Splits the inputs of one embeddings request (their token counts, in order) into GPU batches
 * of at most `embedMaxBatchTokens` tokens each; an input larger than that is a batch of its
 * own. Returns the token count of each batch.
 */
export function embedGpuBatches(options: SimOptions, inputTokens: readonly number[]): number[] {
  const batches: number[] = [];
  let current = 0;
  for (const tokens of inputTokens) {
    if (current > 0 && current + tokens > options.embedMaxBatchTokens) {
      batches.push(current);
      current = 0;
    }
    current += tokens;
  }
  if (current > 0) batches.push(current);
  return batches;
}

/** Thrown by an aborted wait; callers treat it as "the client left". */
export class SimAbortedError extends Error {
  override readonly name = 'SimAbortedError';
}

/** Gives a slot back; calling it more than once has no further effect. */
export type ReleaseSlot = () => void;

/**
 * A counting semaphore with a strict FIFO of waiters: `limit` holders at once, the rest wait in
 * arrival order, and a waiter whose signal aborts leaves the queue without taking a slot.
 */
export class FifoSlots {
  #held = 0;
  // A Set keeps insertion order and removes an aborted waiter in O(1).
  readonly #waiters = new Set<() => void>();

  constructor(readonly limit: number) {}

  /** Slots held now. */
  get running(): number {
    return this.#held;
  }

  /** Callers queued for a slot now. */
  get waiting(): number {
    return this.#waiters.size;
  }

  /** Waits for a slot. Rejects with SimAbortedError, holding nothing, if `signal` aborts first. */
  acquire(signal: AbortSignal): Promise<ReleaseSlot> {
    if (signal.aborted) return Promise.reject(new SimAbortedError('aborted before a slot was free'));
    if (this.#held < this.limit && this.#waiters.size === 0) {
      this.#held++;
      return Promise.resolve(this.#releaser());
    }
    return new Promise<ReleaseSlot>((resolve, reject) => {
      const grant = (): void => {
        signal.removeEventListener('abort', onAbort);
        // The slot is handed over by release(), so #held is already counted for this waiter.
        resolve(this.#releaser());
      };
      const onAbort = (): void => {
        this.#waiters.delete(grant);
        reject(new SimAbortedError('aborted while waiting for a slot'));
      };
      this.#waiters.add(grant);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  #releaser(): ReleaseSlot {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiters.values().next();
      if (next.done) {
        this.#held--;
        return;
      }
      // Hand the slot straight to the oldest waiter so a newcomer cannot overtake it.
      this.#waiters.delete(next.value);
      next.value();
    };
  }
}

// setTimeout fires at once for delays above 2^31-1 ms, so longer sleeps are taken in steps.
const maxTimerMs = 2 ** 31 - 1;

/** Resolves after `ms` milliseconds; rejects with SimAbortedError as soon as `signal` aborts. */
export async function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) throw new SimAbortedError('aborted');
  if (!(ms > 0)) return;
  if (ms > maxTimerMs) {
    await sleep(maxTimerMs, signal);
    return sleep(ms - maxTimerMs, signal);
  }
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new SimAbortedError('aborted'));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
