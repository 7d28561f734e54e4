import { ClusterError } from '../../services/core/index.js';
import { type AdapterContext, postJson, readSse } from '../runtime/index.js';

/** Least time between two progress notifications of one call, in milliseconds. */
export const PROGRESS_INTERVAL_MS = 100;

/** One message of an OpenAI chat completions request. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** What one streamed chat completion asks the backend for. */
export interface ChatCompletionRequest {
  messages: readonly ChatMessage[];
  /** Most tokens to generate. */
  maxTokens: number;
  temperature: number;
  /**
   * Maps the text generated so far to what progress notifications show (e.g. the summary
   * trimmed to its word limit). Default: the text as is.
   */
  present?: (text: string) => string;
}

/** What the backend streamed. */
export interface ChatCompletion {
  /** The generated text, all deltas joined. */
  text: string;
  /** Content deltas received (one per token on vLLM). */
  tokens: number;
  /** The backend's `finish_reason` (`stop`, `length`, …), or undefined when it sent none. */
  finishReason: string | undefined;
}

interface ChatChunk {
  choices?: { delta?: { content?: unknown }; finish_reason?: unknown }[];
  /** vLLM reports an error that happens after the stream started as an event of its own. */
  error?: { message?: unknown } | string;
}

/**
 * Runs one chat completion against an OpenAI-compatible `/v1/chat/completions` endpoint
 * (vLLM), streamed: tokens arrive as SSE chunks and become progress carrying the text so far,
 * at most one notification per PROGRESS_INTERVAL_MS. The call's session key goes out as the
 * OpenAI `user` field so a prefix-caching router or server can keep a conversation together.
 *
 * Failures, each a ClusterError naming the backend URL:
 * - unreachable, 5xx, no response headers within `backendTimeoutMs` → BACKEND_UNAVAILABLE;
 * - the stream stalls: no SSE event for `backendTimeoutMs` once it started → BACKEND_UNAVAILABLE
 *   (a stalled server must not hold the call, and its slot on the backend actor, forever);
 * - the connection drops, or the stream ends before `[DONE]` → BACKEND_UNAVAILABLE;
 * - an error event inside the stream → BACKEND_UNAVAILABLE with the backend's message;
 * - an event that is not JSON → BACKEND_PROTOCOL; a 4xx refusal → BACKEND_PROTOCOL;
 * - `ctx.signal` aborts → CANCELLED. Every way out closes the stream, which makes vLLM abort
 *   the sequence and free its KV cache.
 */
export async function streamChatCompletion(
  ctx: AdapterContext,
  request: ChatCompletionRequest,
): Promise<ChatCompletion> {
  const url = new URL('/v1/chat/completions', ctx.endpointUrl).toString();
  const idleMs = ctx.backendTimeoutMs;
  const res = await postJson(
    url,
    {
      model: ctx.tool.model,
      messages: request.messages,
      max_tokens: request.maxTokens,
      temperature: request.temperature,
      stream: true,
      stream_options: { include_usage: true },
      // vLLM routes on this to reuse a conversation's prefix cache; other servers ignore it.
      ...(ctx.call.sessionKey ? { user: ctx.call.sessionKey } : {}),
    },
    ctx.signal,
    ctx.backendTimeoutMs,
  );
  // Closing the response drops the connection, which makes readSse's pending read fail.
  let stalled = false;
  const idleTimer = setTimeout(() => {
    stalled = true;
    res.close();
  }, idleMs);
  const present = request.present ?? ((text: string) => text);
  let text = '';
  let tokens = 0;
  let finishReason: string | undefined;
  let done = false;
  let lastProgressAt = Number.NEGATIVE_INFINITY;
  try {
    for await (const data of readSse(res, url, ctx.signal)) {
      idleTimer.refresh();
      if (data === '[DONE]') {
        done = true;
        break;
      }
      let chunk: ChatChunk;
      try {
        chunk = JSON.parse(data) as ChatChunk;
      } catch (err) {
        throw new ClusterError(
          'BACKEND_PROTOCOL',
          `backend ${url} sent a stream event that is not JSON: ${data.slice(0, 80)}`,
          { cause: err },
        );
      }
      if (chunk.error !== undefined) {
        const detail = typeof chunk.error === 'string' ? chunk.error : String(chunk.error.message ?? '');
        throw new ClusterError('BACKEND_UNAVAILABLE', `backend ${url} failed mid-stream: ${detail}`);
      }
      const choice = chunk.choices?.[0];
      if (typeof choice?.finish_reason === 'string') finishReason = choice.finish_reason;
      const delta = choice?.delta?.content;
      if (typeof delta === 'string' && delta.length > 0) {
        text += delta;
        tokens += 1;
        const now = performance.now();
        if (now - lastProgressAt >= PROGRESS_INTERVAL_MS) {
          lastProgressAt = now;
          ctx.progress({ progress: tokens, total: request.maxTokens, message: present(text) });
        }
      }
    }
  } catch (err) {
    if (stalled && !ctx.signal.aborted) throw stallError(url, idleMs, err);
    throw err;
  } finally {
    clearTimeout(idleTimer);
  }
  if (!done) {
    if (ctx.signal.aborted) throw new ClusterError('CANCELLED', 'the call was cancelled');
    if (stalled) throw stallError(url, idleMs, undefined);
    throw new ClusterError('BACKEND_UNAVAILABLE', `backend ${url} ended the stream before [DONE]`);
  }
  return { text, tokens, finishReason };
}

function stallError(url: string, idleMs: number, cause: unknown): ClusterError {
  return new ClusterError(
    'BACKEND_UNAVAILABLE',
    `backend ${url} stalled: its stream sent nothing for ${idleMs} ms, so the request was abandoned`,
    { cause },
  );
}
