/** Small HTTP helpers: bounded body reading and vLLM-style JSON error answers. */

import type { IncomingMessage, ServerResponse } from 'node:http';

/** The error `type` names vLLM puts in its OpenAI-style error bodies. */
export type OpenAiErrorType =
  | 'BadRequestError'
  | 'NotFoundError'
  | 'MethodNotAllowedError'
  | 'RequestEntityTooLargeError'
  | 'InternalServerError'
  | 'ServiceUnavailableError';

/** A request the server refuses, carried from validation to the answer. */
export class SimRequestError extends Error {
  override readonly name = 'SimRequestError';
  constructor(
    readonly status: number,
    readonly type: OpenAiErrorType,
    message: string,
    /** The request field at fault, e.g. `messages[0].content`, or null. */
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

/** Shorthand for a 400 that names the field at fault. */
export function badRequest(param: string, message: string): SimRequestError {
  return new SimRequestError(400, 'BadRequestError', message, param);
}

/** Writes a JSON body with its length; does nothing if the client is already gone. */
export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent || res.destroyed) return;
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(payload)),
  });
  res.end(payload);
}

/** Answers with vLLM's error body: `{error: {message, type, param, code}}`. */
export function sendError(
  res: ServerResponse,
  error: SimRequestError,
  headers: Record<string, string> = {},
): void {
  sendJson(
    res,
    error.status,
    { error: { message: error.message, type: error.type, param: error.param, code: error.status } },
    headers,
  );
}

/** The outcome of reading a request body. */
export type BodyResult =
  | { kind: 'ok'; body: Buffer }
  /** The body (or its declared Content-Length) is larger than the limit. */
  | { kind: 'too-large'; declared: boolean }
  /** The client closed the connection or the stream failed before the body ended. */
  | { kind: 'aborted' };

/** Reads the whole body, keeping at most `limitBytes` in memory. */
export function readBody(req: IncomingMessage, limitBytes: number): Promise<BodyResult> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limitBytes) {
    return Promise.resolve({ kind: 'too-large', declared: true });
  }
  return new Promise<BodyResult>((resolve) => {
    const parts: Buffer[] = [];
    let size = 0;
    let settled = false;
    const settle = (result: BodyResult): void => {
      if (settled) return;
      settled = true;
      req.off('data', onData);
      resolve(result);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limitBytes) {
        parts.length = 0;
        // Keep draining (and discarding) so the socket can still carry the 413 answer.
        req.resume();
        settle({ kind: 'too-large', declared: false });
        return;
      }
      parts.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => settle({ kind: 'ok', body: Buffer.concat(parts, size) }));
    req.once('error', () => settle({ kind: 'aborted' }));
    req.once('close', () => {
      // 'close' after 'end' is normal; before it, the client went away mid-body.
      if (!req.complete) settle({ kind: 'aborted' });
    });
  });
}

/** Parses a JSON object body; anything else is a 400 naming the problem. */
export function parseJsonObject(body: Buffer): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch (err) {
    const detail = err instanceof Error ? err.message : String(err);
    throw badRequest('body', `request body is not valid JSON: ${detail}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw badRequest('body', 'request body must be a JSON object');
  }
  return value as Record<string, unknown>;
}
