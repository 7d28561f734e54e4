// The client side of `mcp-cluster batch`: the cluster's `/v1` API over fetch, and how its
// refusals become the command's exit codes.
import { createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import type { ExitCode } from './args.js';

/** Ends the command with `code` after printing `message` (no stack trace). */
export class Failure extends Error {
  constructor(
    readonly code: ExitCode,
    message: string,
  ) {
    super(message);
  }
}

/** A refusal of the cluster's API: its status and the OpenAI error's message, code and param. */
export class ApiRefusal extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: string | undefined,
    readonly param: string | undefined,
  ) {
    super(message);
  }
}

/** Timeout of one API request; an upload gets longer. */
const REQUEST_TIMEOUT_MS = 30_000;
const UPLOAD_TIMEOUT_MS = 30 * 60_000;

export class ClusterApi {
  constructor(
    readonly base: string,
    private readonly authorization: string | undefined,
  ) {}

  async json(method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
    const res = await this.send(path, {
      method,
      ...(body === undefined
        ? {}
        : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
    });
    return res.json();
  }

  async upload(filename: string, bytes: Uint8Array<ArrayBuffer>): Promise<{ id: string }> {
    const form = new FormData();
    form.set('purpose', 'batch');
    form.set('file', new Blob([bytes], { type: 'application/jsonl' }), filename);
    const res = await this.send('/v1/files', { method: 'POST', body: form }, UPLOAD_TIMEOUT_MS);
    return (await res.json()) as { id: string };
  }

  /** Writes file `fileId`'s content to `path` (an empty file when there is none); returns its rows. */
  async download(fileId: string | null, path: string): Promise<number> {
    const out = createWriteStream(path);
    if (!fileId) {
      await new Promise<void>((resolve, reject) =>
        out.end((err?: Error | null) => (err ? reject(err) : resolve())),
      );
      return 0;
    }
    const res = await this.send(`/v1/files/${fileId}/content`, { method: 'GET' }, UPLOAD_TIMEOUT_MS).catch(
      refusedAs(),
    );
    let rows = 0;
    const body = Readable.fromWeb(res.body as NodeReadableStream<Uint8Array>);
    body.on('data', (chunk: Buffer) => {
      for (const byte of chunk) if (byte === 10) rows++;
    });
    try {
      await pipeline(body, out);
    } catch (err) {
      throw new Failure(1, `downloading ${fileId} to ${path} failed: ${(err as Error).message}`);
    }
    return rows;
  }

  /** Sends a request; a network failure is a Failure (exit 1), a refusal an ApiRefusal. */
  private async send(path: string, init: RequestInit, timeoutMs = REQUEST_TIMEOUT_MS): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.authorization) headers.set('authorization', this.authorization);
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, { ...init, headers, signal: AbortSignal.timeout(timeoutMs) });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const why =
        (err as Error).name === 'TimeoutError'
          ? `no answer within ${timeoutMs / 1000} s`
          : (cause?.code ?? cause?.message ?? (err as Error).message);
      throw new Failure(
        1,
        `cannot reach the cluster at ${this.base} (${why}); is it running? Pass --url or set MCP_CLUSTER_URL`,
      );
    }
    if (res.ok) return res;
    const text = await res.text().catch(() => '');
    throw refusalOf(res.status, text, path);
  }
}

/** The refusal in an answer's body: the OpenAI error shape, an OAuth error, or the role's 404. */
function refusalOf(status: number, text: string, path: string): ApiRefusal {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const error = (body as { error?: unknown } | undefined)?.error;
  if (typeof error === 'object' && error !== null) {
    const e = error as { message?: unknown; code?: unknown; param?: unknown };
    return new ApiRefusal(
      status,
      typeof e.message === 'string' ? e.message : `HTTP ${status}`,
      typeof e.code === 'string' ? e.code : undefined,
      typeof e.param === 'string' ? e.param : undefined,
    );
  }
  const description = (body as { error_description?: unknown } | undefined)?.error_description;
  if (typeof description === 'string') return new ApiRefusal(status, description, String(error), undefined);
  if (status === 404 && typeof error === 'string' && error.startsWith('no route')) {
    return new ApiRefusal(status, `this server has no batch API (${error})`, 'no_batch_api', undefined);
  }
  return new ApiRefusal(
    status,
    `HTTP ${status} on ${path}${text ? `: ${text.slice(0, 200)}` : ''}`,
    undefined,
    undefined,
  );
}

/**
 * Turns an API refusal into the command's failure: `exitOf` may claim it as a bad argument (2),
 * the rest exit 1 with a message saying what to do.
 */
export function refusedAs(
  exitOf: (e: ApiRefusal) => ExitCode | undefined = () => undefined,
  messageOf: (e: ApiRefusal) => string = (e) => e.message,
): (err: unknown) => never {
  return (err) => {
    if (!(err instanceof ApiRefusal)) throw err;
    const code = exitOf(err);
    if (code !== undefined) throw new Failure(code, messageOf(err));
    throw toFailure(err, messageOf(err));
  };
}

export function toFailure(err: ApiRefusal, message = err.message): Failure {
  if (err.status === 401) {
    return new Failure(
      1,
      `the cluster refused the credential (401: ${message}); pass --api-key KEY or --token TOKEN, or set MCP_CLUSTER_API_KEY or MCP_CLUSTER_TOKEN`,
    );
  }
  if (err.status === 403) return new Failure(1, `the cluster refused the request (403: ${message})`);
  if (err.status === 404 && err.code === 'not_found') {
    return new Failure(1, `${message} (unknown here, or not your tenant's)`);
  }
  return new Failure(1, `the cluster answered ${err.status}: ${message}`);
}
