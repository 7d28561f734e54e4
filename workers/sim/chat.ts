/**
 * POST /v1/chat/completions as vLLM answers it: validation, a sequence slot from the FIFO, a
 * prefix-cache lookup for the request's session (the OpenAI `user` field), prefill of the
 * uncached prompt tokens (time to first token), then decode in the shared continuous-batching
 * loop (decode-engine.ts), streamed as SSE or returned whole.
 */

import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { DecodingSequence } from './decode-engine.js';
import { badRequest, SimRequestError } from './http-io.js';
import {
  estimateTokens,
  type ReleaseSlot,
  SimAbortedError,
  sleep,
  timeToFirstTokenMs,
} from './latency-model.js';
import { generateTokens } from './seeded-output.js';
import { type SimState, trackOutcome } from './sim-state.js';

/**
 * Largest `max_tokens` accepted: the simulated model's output limit. Larger values are refused
 * with a 400 that names the limit rather than clamped silently.
 */
export const maxCompletionTokens = 4096;

/** Tokens generated when the request sets no `max_tokens`; the sequence then ends with "stop". */
export const defaultCompletionTokens = 16;

const roles = new Set(['system', 'user', 'assistant', 'tool', 'developer']);

/** A validated chat completions request, reduced to what the simulation uses. */
export interface ChatRequest {
  model: string;
  messages: { role: string; content: string }[];
  /** Tokens to generate. */
  completionTokens: number;
  /** "length" when `max_tokens` was given (generation hits it), "stop" otherwise. */
  finishReason: 'length' | 'stop';
  /** `max_tokens` as sent, part of the output seed. */
  requestedMaxTokens: number | null;
  stream: boolean;
  includeUsage: boolean;
  promptTokens: number;
  /** The OpenAI `user` field: the session whose prefix cache the request uses; undefined without one. */
  user: string | undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Text of a message's content: a string, null, or an array of `{type: 'text', text}` parts. */
function contentText(content: unknown, param: string): string {
  if (typeof content === 'string') return content;
  // Assistant turns that only carried tool calls have null content.
  if (content === null || content === undefined) return '';
  if (!Array.isArray(content)) {
    throw badRequest(param, `${param} must be a string or an array of text parts`);
  }
  let text = '';
  content.forEach((part: unknown, i) => {
    if (!isRecord(part) || part.type !== 'text' || typeof part.text !== 'string') {
      throw badRequest(
        `${param}[${i}]`,
        `${param}[${i}] must be {"type": "text", "text": string}; the simulated model reads text only`,
      );
    }
    text += part.text;
  });
  return text;
}

function optionalInteger(
  body: Record<string, unknown>,
  field: string,
  min: number,
  max: number,
): number | null {
  const value = body[field];
  if (value === undefined || value === null) return null;
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw badRequest(field, `${field} must be an integer, got ${JSON.stringify(value)}`);
  }
  if (value < min || value > max) {
    throw badRequest(field, `${field} must be between ${min} and ${max}, got ${value}`);
  }
  return value;
}

function optionalBoolean(value: unknown, field: string): boolean | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'boolean') throw badRequest(field, `${field} must be a boolean`);
  return value;
}

/** Checks a chat completions body; throws SimRequestError (400/404) naming the field at fault. */
export function parseChatRequest(state: SimState, body: Record<string, unknown>): ChatRequest {
  const { options } = state;
  const model = body.model ?? options.model;
  if (typeof model !== 'string') throw badRequest('model', 'model must be a string');
  if (model === options.embeddingModel) {
    throw badRequest(
      'model',
      `The model \`${model}\` is an embeddings model and does not support chat completions.`,
    );
  }
  if (model !== options.model) {
    throw new SimRequestError(404, 'NotFoundError', `The model \`${model}\` does not exist.`, 'model');
  }

  const rawMessages = body.messages;
  if (!Array.isArray(rawMessages)) throw badRequest('messages', 'messages is required and must be an array');
  if (rawMessages.length === 0) throw badRequest('messages', 'messages must not be empty');
  const messages = rawMessages.map((message: unknown, i) => {
    const param = `messages[${i}]`;
    if (!isRecord(message)) throw badRequest(param, `${param} must be an object`);
    if (typeof message.role !== 'string' || !roles.has(message.role)) {
      throw badRequest(`${param}.role`, `${param}.role must be one of ${[...roles].join(', ')}`);
    }
    return { role: message.role, content: contentText(message.content, `${param}.content`) };
  });

  // vLLM prefers the newer max_completion_tokens when both are sent.
  const maxTokens =
    optionalInteger(body, 'max_completion_tokens', 1, maxCompletionTokens) ??
    optionalInteger(body, 'max_tokens', 1, maxCompletionTokens);
  const n = body.n;
  if (n !== undefined && n !== null && n !== 1) {
    throw badRequest(
      'n',
      `n must be 1: the simulated model returns one choice per request, got ${JSON.stringify(n)}`,
    );
  }

  const temperature = body.temperature;
  if (temperature !== undefined && temperature !== null) {
    if (typeof temperature !== 'number' || !Number.isFinite(temperature) || temperature < 0) {
      throw badRequest('temperature', 'temperature must be a number >= 0');
    }
  }

  const stream = optionalBoolean(body.stream, 'stream') ?? false;
  let includeUsage = false;
  const streamOptions = body.stream_options;
  if (streamOptions !== undefined && streamOptions !== null) {
    if (!isRecord(streamOptions)) throw badRequest('stream_options', 'stream_options must be an object');
    // vLLM refuses stream options on a non-streamed request rather than ignoring them.
    if (!stream) throw badRequest('stream_options', 'stream_options can only be set when stream is true');
    includeUsage = optionalBoolean(streamOptions.include_usage, 'stream_options.include_usage') ?? false;
  }

  const user = body.user;
  if (user !== undefined && user !== null && typeof user !== 'string') {
    throw badRequest('user', 'user must be a string');
  }

  return {
    model,
    messages,
    completionTokens: maxTokens ?? defaultCompletionTokens,
    finishReason: maxTokens === null ? 'stop' : 'length',
    requestedMaxTokens: maxTokens,
    stream,
    includeUsage,
    promptTokens: messages.reduce((sum, m) => sum + estimateTokens(m.content), 0),
    // An empty user is no session, as with no user at all.
    user: typeof user === 'string' && user !== '' ? user : undefined,
  };
}

function sseEvent(data: unknown): string {
  return `data: ${JSON.stringify(data)}\n\n`;
}

/** Resolves when the response can take more data; rejects if the client leaves first. */
function drained(res: ServerResponse, clientGone: AbortSignal): Promise<void> {
  if (clientGone.aborted) return Promise.reject(new SimAbortedError('client gone'));
  return new Promise<void>((resolve, reject) => {
    const onDrain = (): void => {
      clientGone.removeEventListener('abort', onAbort);
      resolve();
    };
    const onAbort = (): void => {
      res.off('drain', onDrain);
      reject(new SimAbortedError('client gone'));
    };
    res.once('drain', onDrain);
    clientGone.addEventListener('abort', onAbort, { once: true });
  });
}

/** A sequence of the decode loop whose writer can wait for its next tokens. */
interface WaitableSequence extends DecodingSequence {
  /** Resolves once more than `seen` tokens exist; rejects with SimAbortedError if the client leaves. */
  more(seen: number, clientGone: AbortSignal): Promise<void>;
}

function waitableSequence(target: number): WaitableSequence {
  let wake: (() => void) | undefined;
  const sequence: WaitableSequence = {
    generated: 1,
    target,
    notify() {
      const resolve = wake;
      wake = undefined;
      resolve?.();
    },
    more(seen, clientGone) {
      if (sequence.generated > seen) return Promise.resolve();
      if (clientGone.aborted) return Promise.reject(new SimAbortedError('client gone'));
      return new Promise<void>((resolve, reject) => {
        const onAbort = (): void => {
          wake = undefined;
          reject(new SimAbortedError('client gone'));
        };
        wake = () => {
          clientGone.removeEventListener('abort', onAbort);
          resolve();
        };
        clientGone.addEventListener('abort', onAbort, { once: true });
      });
    },
  };
  return sequence;
}

/**
 * Runs an accepted chat request to its end. `clientGone` aborts when the connection closes
 * before the response finished: generation stops at once and the slot goes to the next waiter.
 */
export async function runChatCompletion(
  state: SimState,
  request: ChatRequest,
  res: ServerResponse,
  clientGone: AbortSignal,
): Promise<void> {
  const { options, counters, histograms } = state;
  counters.chatRequests++;
  const acceptedAt = performance.now();
  trackOutcome(state, res, clientGone, (outcome) => {
    if (outcome === 'completed') histograms.e2eLatency.observe((performance.now() - acceptedAt) / 1000);
  });

  const id = `chatcmpl-${randomUUID().replaceAll('-', '')}`;
  const created = Math.floor(Date.now() / 1000);
  const tokens = generateTokens(
    JSON.stringify({ messages: request.messages, max_tokens: request.requestedMaxTokens }),
    request.completionTokens,
  );

  let release: ReleaseSlot | undefined;
  let sequence: WaitableSequence | undefined;
  try {
    release = await state.chatSlots.acquire(clientGone);
    histograms.queueTime.observe((performance.now() - acceptedAt) / 1000);

    // Prefill: only the prompt tokens the session's prefix cache does not hold are computed.
    const cachedTokens = state.prefixCache.lookup(request.user, request.messages, request.promptTokens);
    counters.prefixCacheQueries++;
    counters.prefixCacheQueryTokens += request.promptTokens;
    if (cachedTokens > 0) {
      counters.prefixCacheHits++;
      counters.prefixCacheHitTokens += cachedTokens;
    }
    await sleep(timeToFirstTokenMs(options, request.promptTokens - cachedTokens), clientGone);

    // The prefill step produced the first token; the prompt is in the KV cache from now on.
    counters.chatPromptTokens += request.promptTokens;
    counters.generationTokens++;
    counters.firstTokens++;
    const ttftMs = performance.now() - acceptedAt;
    counters.timeToFirstTokenMsSum += ttftMs;
    histograms.timeToFirstToken.observe(ttftMs / 1000);
    state.prefixCache.store(request.user, request.messages);
    sequence = waitableSequence(tokens.length);
    state.engine.join(sequence);

    const usage = {
      prompt_tokens: request.promptTokens,
      completion_tokens: tokens.length,
      total_tokens: request.promptTokens + tokens.length,
      prompt_tokens_details: { cached_tokens: cachedTokens },
    };

    if (!request.stream) {
      while (sequence.generated < tokens.length) await sequence.more(sequence.generated, clientGone);
      const payload = JSON.stringify({
        id,
        object: 'chat.completion',
        created,
        model: request.model,
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: tokens.join('') },
            logprobs: null,
            finish_reason: request.finishReason,
          },
        ],
        usage,
      });
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': String(Buffer.byteLength(payload)),
      });
      res.end(payload);
      return;
    }

    const chunk = (delta: Record<string, string>, finishReason: string | null): string =>
      sseEvent({
        id,
        object: 'chat.completion.chunk',
        created,
        model: request.model,
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
      });

    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
    res.write(chunk({ role: 'assistant', content: '' }, null));
    let written = 0;
    while (written < tokens.length) {
      await sequence.more(written, clientGone);
      // Every token generated since the last write goes out in one write (a late writer, or a
      // client slow to read, gets the backlog at once, as from vLLM's output queue).
      let batch = '';
      while (written < sequence.generated) {
        batch += chunk({ content: tokens[written] ?? '' }, null);
        written++;
      }
      if (!res.write(batch)) await drained(res, clientGone);
    }
    let tail = chunk({}, request.finishReason);
    if (request.includeUsage) {
      tail += sseEvent({
        id,
        object: 'chat.completion.chunk',
        created,
        model: request.model,
        choices: [],
        usage,
      });
    }
    tail += 'data: [DONE]\n\n';
    res.end(tail);
  } catch (err) {
    if (err instanceof SimAbortedError) return;
    throw err;
  } finally {
    if (sequence !== undefined) {
      state.engine.leave(sequence);
      // What was computed stays in the KV cache: the prompt and the tokens generated so far.
      const completion = tokens.slice(0, Math.min(sequence.generated, tokens.length)).join('');
      state.prefixCache.store(request.user, [
        ...request.messages,
        { role: 'assistant', content: completion },
      ]);
    }
    release?.();
  }
}
