import { ClusterError } from '../../services/core/index.js';

/**
 * POSTs JSON to a backend and returns the response once its status line arrived. Maps what can
 * go wrong to error codes: unreachable, timeout or 5xx → BACKEND_UNAVAILABLE (retryable, counts
 * against the breaker); other non-2xx → BACKEND_PROTOCOL with the backend's own message and a
 * BackendRefusal cause (not counted against the breaker); `signal` aborting → CANCELLED.
 *
 * @param timeoutMs time allowed until the response headers arrive, in milliseconds.
 */
export async function postJson(
  url: string,
  body: unknown,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<Response> {
  // The timeout covers the wait for the status line only: once a stream has started, a long
  // generation must not be cut off by it (the call's own signal still aborts the body).
  const headersDue = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    headersDue.abort(new DOMException(`no answer within ${timeoutMs} ms`, 'TimeoutError'));
  }, timeoutMs);
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify(body),
      signal: AbortSignal.any([signal, headersDue.signal]),
    });
  } catch (err) {
    clearTimeout(timer);
    if (signal.aborted) throw new ClusterError('CANCELLED', 'the call was cancelled', { cause: err });
    if (timedOut)
      throw new ClusterError('BACKEND_UNAVAILABLE', `backend ${url} did not answer within ${timeoutMs} ms`, {
        cause: err,
      });
    throw new ClusterError('BACKEND_UNAVAILABLE', `backend ${url} is unreachable: ${causeMessage(err)}`, {
      cause: err,
    });
  }
  if (res.ok) {
    clearTimeout(timer);
    return res;
  }
  const text = await res.text().catch(() => '');
  clearTimeout(timer);
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
export async function readJson(res: Response, url: string, signal: AbortSignal): Promise<unknown> {
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
 * are separated by blank lines; comment lines (`:`) are keep-alives and skipped.
 */
export async function* readSse(res: Response, url: string, signal: AbortSignal): AsyncGenerator<string> {
  if (!res.body) throw new ClusterError('BACKEND_PROTOCOL', `backend ${url} sent an empty stream`);
  const decoder = new TextDecoder();
  let buffer = '';
  const reader = res.body.getReader();
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (err) {
        if (signal.aborted) throw new ClusterError('CANCELLED', 'the call was cancelled', { cause: err });
        throw new ClusterError(
          'BACKEND_UNAVAILABLE',
          `backend ${url} broke off its stream: ${causeMessage(err)}`,
          { cause: err },
        );
      }
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true });
      let end = buffer.search(/\r?\n\r?\n/);
      while (end >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer[end] === '\r' ? 4 : 2));
        const data = event
          .split(/\r?\n/)
          .filter((line) => line.startsWith('data:'))
          .map((line) => line.slice(5).replace(/^ /, ''))
          .join('\n');
        if (data) yield data;
        end = buffer.search(/\r?\n\r?\n/);
      }
    }
  } finally {
    // Closing the body is what tells vLLM to abort the sequence when the call is cancelled.
    await reader.cancel().catch(() => undefined);
  }
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

function causeMessage(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (err as Error).message;
}
