/** The counters and capacity of one simulated backend, shared by its endpoints. */

import type { ServerResponse } from 'node:http';
import { FifoSlots } from './latency-model.js';
import type { SimOptions } from './options.js';

/**
 * A snapshot of the backend's counters. "Requests" are the inference requests that passed
 * validation (chat completions and embeddings); rejected ones are not counted. Once the
 * backend is idle, `requests = completed + aborted`.
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
  /** Embeddings requests accepted so far. */
  embedRequests: number;
  /** Inputs (texts) in the accepted embeddings requests so far. */
  embedInputs: number;
  /** Chat completions requests accepted so far. */
  chatRequests: number;
}

/** Mutable state behind one backend. */
export interface SimState {
  readonly options: SimOptions;
  /** Sequence slots of the chat model (vLLM's `--max-num-seqs`). */
  readonly chatSlots: FifoSlots;
  /** The simulated GPU runs one embeddings batch at a time. */
  readonly embedGpu: FifoSlots;
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
  };
}

export function createSimState(options: SimOptions): SimState {
  return {
    options,
    chatSlots: new FifoSlots(options.maxNumSeqs),
    embedGpu: new FifoSlots(1),
    counters: {
      chatRequests: 0,
      embedRequests: 0,
      embedInputs: 0,
      completed: 0,
      aborted: 0,
      chatPromptTokens: 0,
      embedTokens: 0,
      generationTokens: 0,
    },
  };
}

export function snapshotStats(state: SimState): SimStats {
  const c = state.counters;
  return {
    requests: c.chatRequests + c.embedRequests,
    completed: c.completed,
    aborted: c.aborted,
    running: state.chatSlots.running + state.embedGpu.running,
    waiting: state.chatSlots.waiting + state.embedGpu.waiting,
    embedRequests: c.embedRequests,
    embedInputs: c.embedInputs,
    chatRequests: c.chatRequests,
  };
}

/**
 * Counts the outcome of an accepted request exactly once: completed when the response finished,
 * aborted when `clientGone` fired first (the connection closed before the last byte was written).
 */
export function trackOutcome(state: SimState, res: ServerResponse, clientGone: AbortSignal): void {
  let counted = false;
  const onFinish = (): void => {
    if (counted) return;
    counted = true;
    clientGone.removeEventListener('abort', onAbort);
    state.counters.completed++;
  };
  const onAbort = (): void => {
    if (counted) return;
    counted = true;
    res.off('finish', onFinish);
    state.counters.aborted++;
  };
  if (clientGone.aborted) {
    onAbort();
    return;
  }
  res.once('finish', onFinish);
  clientGone.addEventListener('abort', onAbort, { once: true });
}
