/**
 * Failure injection for tests: `POST /sim/fail {mode, count?}` or `SimBackend.setFailure`.
 * The mode applies to the inference endpoints (chat completions, OpenAI embeddings, TEI
 * `/embed`), except `health-down`, which applies to `GET /health` only; `count` limits it to the
 * next N such requests, after which the mode reverts to `none`.
 */

import type { ServerResponse } from 'node:http';
import { SimRequestError, sendError, sendJson } from './http-io.js';

/** The failure modes, in the order the API documents them. */
export const simFailureModes = ['none', '5xx', 'malformed', 'stall', 'drop', 'health-down'] as const;

/**
 * - `none`: no failure.
 * - `5xx`: answer 503 with an OpenAI-style error (TEI's `{error, error_type}` on `/embed`).
 * - `malformed`: answer 200 with a body that is not valid JSON; a stream gets an SSE event whose
 *   data is not valid JSON, then `[DONE]`.
 * - `stall`: read the request, send the headers of a stream (nothing at all otherwise), then
 *   nothing until the client goes away.
 * - `drop`: a stream sends its headers and a few chunks, then the connection is closed without
 *   `[DONE]`; otherwise the connection is closed without an answer.
 * - `health-down`: `GET /health` answers 503; inference requests still work.
 */
export type SimFailureMode = (typeof simFailureModes)[number];

/** The failure in force. */
export interface SimFailureState {
  mode: SimFailureMode;
  /** Requests it still applies to; null when it applies until changed. */
  remaining: number | null;
}

/** The modes that act on inference requests. */
export type RequestFailureMode = Exclude<SimFailureMode, 'none' | 'health-down'>;

/** Why `(mode, count)` is not a valid failure setting, or undefined when it is. */
export function failureProblem(
  mode: unknown,
  count: unknown,
): { param: 'mode' | 'count'; message: string } | undefined {
  if (typeof mode !== 'string' || !(simFailureModes as readonly string[]).includes(mode)) {
    return {
      param: 'mode',
      message: `mode must be one of ${simFailureModes.join(', ')}, got ${JSON.stringify(mode) ?? String(mode)}`,
    };
  }
  if (count !== undefined && count !== null) {
    if (typeof count !== 'number' || !Number.isInteger(count) || count < 1) {
      return {
        param: 'count',
        message: `count must be an integer >= 1 (or absent: until changed), got ${JSON.stringify(count) ?? String(count)}`,
      };
    }
  }
  return undefined;
}

export class FailureInjector {
  #mode: SimFailureMode = 'none';
  #remaining: number | null = null;

  get state(): SimFailureState {
    return { mode: this.#mode, remaining: this.#remaining };
  }

  /**
   * Sets the failure for the next `count` requests it applies to (default: until changed).
   * Throws an Error naming the problem for an unknown mode or a count that is not an integer >= 1.
   */
  set(mode: SimFailureMode, count?: number | null): SimFailureState {
    const problem = failureProblem(mode, count);
    if (problem) throw new Error(`sim failure: ${problem.message}`);
    this.#mode = mode;
    this.#remaining = mode === 'none' || count === undefined || count === null ? null : count;
    return this.state;
  }

  /** Takes the failure for one inference request: its mode, or undefined when none applies. */
  takeForRequest(): RequestFailureMode | undefined {
    const mode = this.#mode;
    if (mode === 'none' || mode === 'health-down') return undefined;
    this.#consume();
    return mode;
  }

  /** Takes the failure for one `GET /health`: true when it must answer 503. */
  takeForHealth(): boolean {
    if (this.#mode !== 'health-down') return false;
    this.#consume();
    return true;
  }

  #consume(): void {
    if (this.#remaining === null) return;
    this.#remaining--;
    if (this.#remaining <= 0) {
      this.#mode = 'none';
      this.#remaining = null;
    }
  }
}

/** The wire format of the endpoint a failure is injected into. */
export type FailureWire = 'chat' | 'embeddings' | 'tei';

const sseHeaders = { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' };

function untilGone(clientGone: AbortSignal): Promise<void> {
  if (clientGone.aborted) return Promise.resolve();
  return new Promise<void>((resolve) =>
    clientGone.addEventListener('abort', () => resolve(), { once: true }),
  );
}

function chunk(content: Record<string, string>): string {
  const data = {
    id: 'chatcmpl-simfailure',
    object: 'chat.completion.chunk',
    created: Math.floor(Date.now() / 1000),
    model: 'sim',
    choices: [{ index: 0, delta: content, logprobs: null, finish_reason: null }],
  };
  return `data: ${JSON.stringify(data)}\n\n`;
}

/** Bodies cut off in the middle: valid JSON up to a point, then nothing. */
const malformedBodies: Record<FailureWire, string> = {
  chat: '{"id":"chatcmpl-simfailure","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Trunc',
  embeddings: '{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.125,-0.5,',
  tei: '[[0.125,-0.5,',
};

/**
 * Answers a request with the injected failure `mode`. Resolves when the answer is done (for
 * `stall`, when the client went away). Never throws for a client that left.
 */
export async function answerWithFailure(
  mode: RequestFailureMode,
  wire: FailureWire,
  stream: boolean,
  res: ServerResponse,
  clientGone: AbortSignal,
): Promise<void> {
  const isStream = stream && wire === 'chat';
  switch (mode) {
    case '5xx': {
      const message = 'the simulated backend is unavailable (injected 5xx failure)';
      if (wire === 'tei') sendJson(res, 503, { error: message, error_type: 'Unhealthy' });
      else sendError(res, new SimRequestError(503, 'ServiceUnavailableError', message));
      return;
    }
    case 'malformed': {
      if (res.headersSent || res.destroyed) return;
      if (isStream) {
        res.writeHead(200, sseHeaders);
        res.end(
          `${chunk({ role: 'assistant', content: '' })}data: {"id":"chatcmpl-simfailure","choices":[{"delta":{"content":"Tru\n\ndata: [DONE]\n\n`,
        );
        return;
      }
      const body = malformedBodies[wire];
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': String(Buffer.byteLength(body)),
      });
      res.end(body);
      return;
    }
    case 'stall':
      if (isStream && !res.headersSent && !res.destroyed) {
        res.writeHead(200, sseHeaders);
        res.flushHeaders();
      }
      await untilGone(clientGone);
      return;
    case 'drop':
      if (!isStream || res.headersSent || res.destroyed) {
        res.destroy();
        return;
      }
      res.writeHead(200, sseHeaders);
      // A few well-formed chunks first, so the client is mid-stream when the connection goes.
      res.write(`${chunk({ role: 'assistant', content: '' })}${chunk({ content: 'Dropped' })}`, () => {
        res.destroy();
      });
      return;
  }
}
