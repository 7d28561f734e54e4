// Reading the batch API's requests (JSON bodies, metadata, counted uploads) and writing its errors
// in the OpenAI error shape.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { ClusterError, type Logger, sendJson } from '../core/index.js';
import { readBody } from './http-server.js';

/** Largest JSON body of `POST /v1/batches` (16 metadata pairs of 64 + 512 characters fit many times). */
const MAX_JSON_BODY = 64 * 1024;
/** OpenAI's metadata bounds. */
const MAX_METADATA_PAIRS = 16;
const MAX_METADATA_KEY = 64;
const MAX_METADATA_VALUE = 512;

type ErrorType = 'invalid_request_error' | 'permission_error' | 'server_error';

/** An answer in the OpenAI error shape, thrown by a route and written by the dispatcher. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: string | null,
    readonly param: string | null = null,
    readonly type: ErrorType = status >= 500 ? 'server_error' : 'invalid_request_error',
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export function unknown(kind: 'file' | 'batch', id: string): ApiError {
  return new ApiError(404, `no ${kind} ${JSON.stringify(id.slice(0, 200))}`, 'not_found');
}

/** The JSON object body of a request: 415, 413 and 400 naming what is wrong with it. */
export async function readJsonObject(req: IncomingMessage): Promise<Record<string, unknown>> {
  const type = req.headers['content-type'] ?? '';
  if (!/^application\/json\b/i.test(type)) {
    throw new ApiError(
      415,
      `the body must be JSON (Content-Type: application/json), got Content-Type "${type}"`,
      'unsupported_media_type',
    );
  }
  const read = await readBody(req, MAX_JSON_BODY);
  if (read === 'too_large') {
    throw new ApiError(
      413,
      `the request body exceeds ${MAX_JSON_BODY} bytes; a batch is created from an uploaded file`,
      'body_too_large',
    );
  }
  const text = read === 'aborted' ? undefined : read.toString('utf8');
  if (text === undefined)
    throw new ApiError(400, 'the request was cut off before its end', 'incomplete_body');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ApiError(400, `the body is not valid JSON (${(err as Error).message})`, 'invalid_json');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ApiError(
      400,
      'the body must be a JSON object such as {"input_file_id": "file-...", "endpoint": "/v1/embeddings", "completion_window": "24h"}',
      'invalid_json',
    );
  }
  return value as Record<string, unknown>;
}

/** `metadata` as OpenAI bounds it: at most 16 string pairs, keys up to 64, values up to 512 characters. */
export function metadataOf(value: unknown): Record<string, string> | undefined {
  if (value === undefined || value === null) return undefined;
  const bad = (message: string) => new ApiError(400, `metadata ${message}`, 'invalid_metadata', 'metadata');
  if (typeof value !== 'object' || Array.isArray(value)) throw bad('must be an object of string pairs');
  const entries = Object.entries(value);
  if (entries.length > MAX_METADATA_PAIRS)
    throw bad(`has ${entries.length} pairs; at most ${MAX_METADATA_PAIRS}`);
  for (const [key, v] of entries) {
    if (key.length > MAX_METADATA_KEY)
      throw bad(`key "${key.slice(0, 20)}..." is longer than ${MAX_METADATA_KEY} characters`);
    if (typeof v !== 'string') throw bad(`value of "${key}" must be a string`);
    if (v.length > MAX_METADATA_VALUE)
      throw bad(`value of "${key}" is longer than ${MAX_METADATA_VALUE} characters`);
  }
  return Object.fromEntries(entries) as Record<string, string>;
}

/**
 * The request body as a web stream that counts what passes: past `limit` bytes it fails (and
 * `exceeded` says why) without reading further, so the 413 can still be answered.
 */
export function countingBody(req: IncomingMessage, limit: number) {
  const state = {
    exceeded: false,
    failed: false,
    stream: undefined as unknown as ReadableStream<Uint8Array>,
  };
  let size = 0;
  let done = false;
  state.stream = new ReadableStream<Uint8Array>(
    {
      start(controller) {
        req.on('data', (part: Buffer) => {
          if (done) return;
          size += part.length;
          if (size > limit) {
            done = true;
            state.exceeded = true;
            controller.error(new RangeError(`body larger than ${limit} bytes`));
            return;
          }
          controller.enqueue(new Uint8Array(part.buffer, part.byteOffset, part.byteLength));
          if ((controller.desiredSize ?? 1) <= 0) req.pause();
        });
        req.on('end', () => {
          if (done) return;
          done = true;
          controller.close();
        });
        req.on('error', (err) => {
          if (done) return;
          done = true;
          state.failed = true;
          controller.error(err);
        });
        req.on('aborted', () => {
          if (done) return;
          done = true;
          state.failed = true;
          controller.error(new Error('request aborted'));
        });
      },
      pull() {
        req.resume();
      },
      cancel() {
        done = true;
      },
    },
    { highWaterMark: 1024 * 1024, size: (chunk) => chunk.byteLength },
  );
  return state;
}

/** The OpenAI-shaped answer of anything a route threw. */
export function toApiError(err: unknown, log: Logger): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof ClusterError) {
    switch (err.code) {
      case 'UNKNOWN_JOB':
        return new ApiError(404, err.message, 'not_found');
      case 'INVALID_ARGUMENTS':
        return new ApiError(400, err.message, 'invalid_request');
      case 'QUEUE_UNAVAILABLE':
        return new ApiError(
          503,
          `the job store cannot be reached: ${err.message}; retry later`,
          'queue_unavailable',
          null,
          'server_error',
          {
            'retry-after': '5',
          },
        );
      case 'SHUTTING_DOWN':
        return new ApiError(503, err.message, 'shutting_down', null, 'server_error', { 'retry-after': '1' });
      default:
        break;
    }
  }
  log.error('batch api: request failed', { err });
  return new ApiError(500, 'internal error', 'internal_error');
}

export function sendApiError(res: ServerResponse, err: ApiError): void {
  sendJson(
    res,
    err.status,
    { error: { message: err.message, type: err.type, param: err.param, code: err.code } },
    err.headers,
  );
}
