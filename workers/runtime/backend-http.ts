import {
  type ClientRequest,
  Agent as HttpAgent,
  request as httpRequest,
  type IncomingMessage,
} from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { StringDecoder } from 'node:string_decoder';
import { ClusterError, withTraceHeaders } from '../../services/core/index.js';

// Backend requests go through node:http with one keep-alive agent per worker process rather than
// the built-in fetch: per call, fetch's web streams, AbortSignal.any and its abort machinery cost
// more CPU than everything else a worker does for the call.

/**
 * Sockets one worker process opens to one backend origin at most. The backend actor already
 * bounds the calls in flight per endpoint (`maxConcurrency`, at most 4096), so this only keeps a
 * runaway from opening unbounded connections; a request beyond it waits for a socket, and that
 * wait counts against its timeout.
 */
export const BACKEND_MAX_SOCKETS = 4096;
/** Idle keep-alive sockets kept per backend origin; more are closed once their request ends. */
export const BACKEND_MAX_FREE_SOCKETS = 256;
/**
 * How long an idle keep-alive socket is kept, in milliseconds: below the 5 s after which vLLM
 * (uvicorn) closes an idle connection, so a socket the backend is about to close is not reused
 * (the same 4 s the built-in fetch keeps). A shorter `Keep-Alive: timeout=` hint from the backend
 * wins (node subtracts 1 s from it).
 */
export const BACKEND_IDLE_SOCKET_MS = 4000;

const agentOptions = {
  keepAlive: true,
  maxSockets: BACKEND_MAX_SOCKETS,
  maxFreeSockets: BACKEND_MAX_FREE_SOCKETS,
  // Socket timeout: the agent closes a free socket once it idled this long. On a socket in use
  // it only emits 'timeout', which nothing here listens to: requests keep their own timer.
  timeout: BACKEND_IDLE_SOCKET_MS,
  // The most recently used socket first: the rest idle out instead of all being kept warm.
  scheduling: 'lifo',
} as const;
// One pair per process: every adapter's requests to one backend share its sockets.
const httpAgent = new HttpAgent(agentOptions);
const httpsAgent = new HttpsAgent(agentOptions);

/**
 * A backend's answer whose status line and headers arrived. The body is read once: by `text()`,
 * `bytes()` or iterating the response. `close()` drops the connection while the body is still
 * coming (what makes vLLM abort a sequence); a socket whose answer arrived in full is kept alive.
 */
export interface BackendResponse extends AsyncIterable<Buffer> {
  /** HTTP status code. */
  readonly status: number;
  /** Whether the status is 2xx. */
  readonly ok: boolean;
  /** A response header by its lower-case name; repeated headers joined by `, `. */
  header(name: string): string | undefined;
  /** The whole body as UTF-8 text; rejects when the connection breaks before the body ended. */
  text(): Promise<string>;
  /** The whole body; rejects when the connection breaks before the body ended. */
  bytes(): Promise<Buffer>;
  /**
   * Drops the connection unless the whole body arrived; then discards what was not read and
   * keeps the socket. Idempotent.
   */
  close(): void;
}

/** What `backendRequest` sends. */
export interface BackendRequestInit {
  /** Default `GET`. */
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  /** Sent with its `content-length`. */
  body?: string;
  /** The call's signal: aborting it drops the connection, before or after the headers arrived. */
  signal: AbortSignal;
  /** Milliseconds allowed; see `timeoutCovers`. */
  timeoutMs: number;
  /**
   * `headers` (default): the timeout covers the wait for the status line only, so a long stream
   * is not cut off by it (for a non-2xx status it goes on to cover the body). `answer`: it covers the whole exchange, and firing after the headers
   * arrived drops the connection, so reading the body fails.
   */
  timeoutCovers?: 'headers' | 'answer';
}

/**
 * Sends one request to a backend and resolves with its response, whatever the status, once the
 * status line arrived. Rejects with a CANCELLED ClusterError when `signal` aborted, an Error
 * named `TimeoutError` when no status line came within `timeoutMs`, or the socket's error (with
 * its `code`, e.g. `ECONNREFUSED`) when the backend is unreachable.
 */
export function backendRequest(url: string, init: BackendRequestInit): Promise<BackendResponse> {
  const { signal } = init;
  if (signal.aborted) return Promise.reject(cancelled(signal.reason));
  return new Promise<BackendResponse>((resolve, reject) => {
    const https = url.startsWith('https:');
    const body = init.body;
    // The active span's `traceparent` (the call's backend span or its batch's), when tracing is on.
    const traced = withTraceHeaders(init.headers);
    const headers =
      body === undefined ? traced : { ...traced, 'content-length': String(Buffer.byteLength(body)) };
    let req: ClientRequest;
    try {
      req = https
        ? httpsRequest(url, {
            method: init.method ?? 'GET',
            headers,
            agent: httpsAgent,
          })
        : httpRequest(url, {
            method: init.method ?? 'GET',
            headers,
            agent: httpAgent,
          });
    } catch (err) {
      // An invalid URL or header.
      reject(err);
      return;
    }
    let settled = false;
    const timer = setTimeout(() => {
      if (!settled) {
        settled = true;
        done();
        reject(Object.assign(new Error(`no answer within ${init.timeoutMs} ms`), { name: 'TimeoutError' }));
      }
      req.destroy();
    }, init.timeoutMs);
    const onAbort = () => {
      if (!settled) {
        settled = true;
        done();
        reject(cancelled(signal.reason));
      }
      req.destroy();
    };
    // Detaches from the call's signal once the exchange is over: the listener would otherwise
    // keep the request alive as long as the call.
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    };
    signal.addEventListener('abort', onAbort);
    req.on('error', (err) => {
      // After the response arrived, its body reports the failure; this listener only keeps the
      // request's own 'error' from going unhandled.
      if (settled) return;
      settled = true;
      done();
      reject(err);
    });
    req.once('response', (res: IncomingMessage) => {
      if (settled) {
        res.destroy();
        return;
      }
      settled = true;
      const response = new NodeResponse(req, res);
      // A refusal's body (its message) stays under the timer: a backend that sends an error
      // status and then nothing must not hold the call.
      if (init.timeoutCovers !== 'answer' && response.ok) clearTimeout(timer);
      // 'close' follows both the end of the body and its abandonment.
      res.once('close', done);
      resolve(response);
    });
    req.end(body);
  });
}

class NodeResponse implements BackendResponse {
  readonly status: number;
  readonly ok: boolean;
  private read = false;

  constructor(
    private readonly req: ClientRequest,
    private readonly res: IncomingMessage,
  ) {
    this.status = res.statusCode ?? 0;
    this.ok = this.status >= 200 && this.status < 300;
  }

  header(name: string): string | undefined {
    const value = this.res.headers[name];
    return Array.isArray(value) ? value.join(', ') : value;
  }

  async text(): Promise<string> {
    return (await this.bytes()).toString('utf8');
  }

  bytes(): Promise<Buffer> {
    const res = this.take();
    return new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.once('end', () => resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks)));
      res.once('error', reject);
      res.once('close', () => {
        // After 'end' this is a no-op; before it the connection broke or the body was dropped.
        if (!res.complete) reject(brokenOff());
      });
    });
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return bodyChunks(this.take());
  }

  close(): void {
    // A body that arrived in full only needs its unread rest discarded, which hands the socket
    // back to the agent; destroying it then would close a socket another call may hold.
    if (!this.res.complete) this.req.destroy();
    else if (!this.res.readableEnded) this.res.resume();
  }

  private take(): IncomingMessage {
    if (this.read) throw new Error('the response body was already read');
    this.read = true;
    return this.res;
  }
}

/**
 * The body as Buffers, one per socket read. Leaner than the stream's own async iterator; it
 * pauses the socket while more than a few chunks wait to be consumed. Ending the iteration early
 * (`return()`) leaves the connection to `close()`.
 */
function bodyChunks(res: IncomingMessage): AsyncIterator<Buffer> {
  const queue: Buffer[] = [];
  let ended = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  res.on('data', (chunk: Buffer) => {
    queue.push(chunk);
    if (queue.length >= 16) res.pause();
    notify();
  });
  res.once('end', () => {
    ended = true;
    notify();
  });
  res.once('error', (err) => {
    failure ??= err;
    notify();
  });
  res.once('close', () => {
    if (!res.complete) failure ??= brokenOff();
    ended = true;
    notify();
  });
  const next = async (): Promise<IteratorResult<Buffer>> => {
    for (;;) {
      const chunk = queue.shift();
      if (chunk !== undefined) {
        if (queue.length === 0 && res.isPaused()) res.resume();
        return { value: chunk, done: false };
      }
      if (failure) throw failure;
      if (ended) return { value: undefined, done: true };
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  };
  return { next };
}

function brokenOff(): Error {
  return Object.assign(new Error('the connection closed before the body ended'), { code: 'ECONNRESET' });
}

function cancelled(cause: unknown): ClusterError {
  return new ClusterError('CANCELLED', 'the call was cancelled', { cause });
}

const jsonHeaders = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };

/**
 * POSTs JSON to a backend and returns the response once its status line arrived. Maps what can
 * go wrong to error codes: unreachable, timeout, 5xx or 429 → BACKEND_UNAVAILABLE (retryable,
 * counts against the breaker); other non-2xx → BACKEND_PROTOCOL with the backend's own message
 * and a BackendRefusal cause (not counted against the breaker); `signal` aborting → CANCELLED,
 * also while the body is read (the connection is dropped).
 *
 * @param timeoutMs time allowed until the response headers arrive, in milliseconds.
 */
export async function postJson(
  url: string,
  body: unknown,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<BackendResponse> {
  let res: BackendResponse;
  try {
    // The timeout covers the wait for the status line only: once a stream has started, a long
    // generation must not be cut off by it (the call's own signal still aborts the body).
    res = await backendRequest(url, {
      method: 'POST',
      headers: jsonHeaders,
      body: JSON.stringify(body),
      signal,
      timeoutMs,
    });
  } catch (err) {
    if (err instanceof ClusterError) throw err;
    if ((err as Error).name === 'TimeoutError')
      throw new ClusterError('BACKEND_UNAVAILABLE', `backend ${url} did not answer within ${timeoutMs} ms`, {
        cause: err,
      });
    throw new ClusterError('BACKEND_UNAVAILABLE', `backend ${url} is unreachable: ${causeMessage(err)}`, {
      cause: err,
    });
  }
  if (res.ok) return res;
  // Still under the request's timer, which drops the connection if the body does not come.
  const text = await res.text().catch(() => '');
  const detail = backendMessage(text);
  if (res.status >= 500 || res.status === 429) {
    throw new ClusterError(
      'BACKEND_UNAVAILABLE',
      `backend ${url} answered ${res.status}${detail ? `: ${detail}` : ''}`,
    );
  }
  throw new ClusterError(
    'BACKEND_PROTOCOL',
    `backend ${url} refused the request with ${res.status}${detail ? `: ${detail}` : ''}`,
    { cause: new BackendRefusal(res.status, detail) },
  );
}

/**
 * The cause of a BACKEND_PROTOCOL error for a 4xx answer: the backend works but refused this
 * request (unknown model, prompt too long), so it says nothing about the backend's health.
 */
export class BackendRefusal extends Error {
  override readonly name = 'BackendRefusal';
  constructor(
    readonly status: number,
    detail: string,
  ) {
    super(`refused with ${status}${detail ? `: ${detail}` : ''}`);
  }
}

/** Parses a JSON body, mapping malformed JSON to BACKEND_PROTOCOL. */
export async function readJson(res: BackendResponse, url: string, signal: AbortSignal): Promise<unknown> {
  let text: string;
  try {
    text = await res.text();
  } catch (err) {
    if (signal.aborted) throw new ClusterError('CANCELLED', 'the call was cancelled', { cause: err });
    throw new ClusterError(
      'BACKEND_UNAVAILABLE',
      `backend ${url} broke off its answer: ${causeMessage(err)}`,
      { cause: err },
    );
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ClusterError('BACKEND_PROTOCOL', `backend ${url} sent malformed JSON (${text.slice(0, 80)})`, {
      cause: err,
    });
  }
}

/**
 * Reads a `text/event-stream` body and yields each event's `data` payload. Server-sent events
 * are separated by blank lines (LF or CRLF); the `data:` lines of one event are joined by `\n`;
 * comment lines (`:`) are keep-alives and skipped. However the generator ends (the stream ended,
 * it failed, or the consumer stopped early), it closes the response.
 */
export async function* readSse(
  res: BackendResponse,
  url: string,
  signal: AbortSignal,
): AsyncGenerator<string> {
  const decoder = new StringDecoder('utf8');
  let buffer = '';
  const chunks = res[Symbol.asyncIterator]();
  try {
    for (;;) {
      let chunk: IteratorResult<Buffer>;
      try {
        chunk = await chunks.next();
      } catch (err) {
        if (signal.aborted) throw new ClusterError('CANCELLED', 'the call was cancelled', { cause: err });
        throw new ClusterError(
          'BACKEND_UNAVAILABLE',
          `backend ${url} broke off its stream: ${causeMessage(err)}`,
          { cause: err },
        );
      }
      if (chunk.done) break;
      buffer += decoder.write(chunk.value);
      let end = eventEnd(buffer);
      while (end >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer[end] === '\r' ? 4 : 2));
        const data = eventData(event);
        if (data) yield data;
        end = eventEnd(buffer);
      }
    }
  } finally {
    // Closing the response drops the connection unless the body ended, which is what tells
    // vLLM to abort the sequence when the call is cancelled or stops reading early.
    res.close();
  }
}

/** Where the first blank line (`\n\n` or `\r\n\r\n`) of `buffer` starts, or -1. */
function eventEnd(buffer: string): number {
  const lf = buffer.indexOf('\n\n');
  const crlf = buffer.indexOf('\r\n\r\n');
  if (crlf >= 0 && (lf < 0 || crlf < lf)) return crlf;
  return lf;
}

/** The `data:` lines of one event joined by `\n` (one leading space of each dropped). */
function eventData(event: string): string {
  // The common case, one `data:` line and nothing else, without splitting.
  if (event.startsWith('data:') && !event.includes('\n')) {
    return event.charCodeAt(5) === 32 ? event.slice(6) : event.slice(5);
  }
  let data: string | undefined;
  for (const raw of event.split('\n')) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (!line.startsWith('data:')) continue;
    const value = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5);
    data = data === undefined ? value : `${data}\n${value}`;
  }
  return data ?? '';
}

function backendMessage(text: string): string {
  try {
    const body = JSON.parse(text) as { error?: { message?: unknown } | string; message?: unknown };
    if (typeof body.error === 'string') return body.error;
    if (typeof body.error?.message === 'string') return body.error.message;
    if (typeof body.message === 'string') return body.message;
  } catch {
    // Not JSON: show the start of the text.
  }
  return text.slice(0, 200);
}

/** The short reason of a network error: its code (`ECONNREFUSED`) where it has one. */
function causeMessage(err: unknown): string {
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  return e.code ?? e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}
