/**
 * When a micro-batch of embedding texts closes: plain data in, a decision out, no clocks or
 * timers of its own, so every rule is unit-tested without waiting.
 */

/** The limits of one micro-batch (the tool's `batch` settings). */
export interface BatchPolicy {
  /** Most texts in one backend request. */
  maxSize: number;
  /** Most estimated tokens in one backend request (a single longer text still goes, alone). */
  maxTokens: number;
  /** Longest time the first text of a batch waits for company, in milliseconds. */
  maxWaitMs: number;
}

/** What the policy needs to know about an open batch. */
export interface OpenBatchState {
  /** Distinct texts in the batch (what the backend request will carry). */
  texts: number;
  /** Estimated tokens of those texts. */
  tokens: number;
  /** When its first text arrived, in the same clock as `nowMs`. */
  firstArrivalMs: number;
}

/** Why a batch closed. */
export type CloseReason = 'size' | 'tokens' | 'wait' | 'idle';

/**
 * Estimated tokens of a text: one per 4 characters (UTF-16 code units), rounded up, at least 1 —
 * the usual rule of thumb for English with BPE tokenizers. It only sizes batches; the backend
 * counts real tokens and enforces its own limits.
 */
export function estimateTokens(text: string): number {
  return Math.max(1, Math.ceil(text.length / 4));
}

/**
 * Whether a new text of `tokens` tokens may join the open batch without breaking a limit. An
 * empty batch takes any text, so a text longer than `maxTokens` travels alone instead of never.
 */
export function fits(policy: BatchPolicy, batch: OpenBatchState, tokens: number): boolean {
  if (batch.texts === 0) return true;
  return batch.texts + 1 <= policy.maxSize && batch.tokens + tokens <= policy.maxTokens;
}

/**
 * Why the open batch must close now, or undefined while it may keep waiting: it is full
 * (`maxSize` texts), it reached `maxTokens`, its first text has waited `maxWaitMs`, or the
 * backend is idle (`backendBusy` false). Waiting only pays while the backend is working: a
 * batch then fills for free; with nothing running it would only add `maxWaitMs` to the call.
 */
export function closeReason(
  policy: BatchPolicy,
  batch: OpenBatchState,
  nowMs: number,
  backendBusy = true,
): CloseReason | undefined {
  if (batch.texts === 0) return undefined;
  if (batch.texts >= policy.maxSize) return 'size';
  if (batch.tokens >= policy.maxTokens) return 'tokens';
  if (nowMs - batch.firstArrivalMs >= policy.maxWaitMs) return 'wait';
  if (!backendBusy) return 'idle';
  return undefined;
}

/** Milliseconds until the open batch's wait ends (0 when it already has). */
export function waitLeftMs(policy: BatchPolicy, batch: OpenBatchState, nowMs: number): number {
  return Math.max(0, batch.firstArrivalMs + policy.maxWaitMs - nowMs);
}
