import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuthInfo } from '@modelcontextprotocol/server';
import {
  ClusterError,
  type Logger,
  parseDurationMs,
  type RouteHandler,
  sendJson,
  type ToolDefinition,
} from '../core/index.js';
import type { BatchJobs, FileView, JobOwner, JobView, SubmitOptions } from '../jobs/index.js';
import { type FrontDoorAuth, identityOf } from './auth/index.js';
import {
  ApiError,
  countingBody,
  metadataOf,
  readJsonObject,
  sendApiError,
  toApiError,
  unknown,
} from './batch-api-io.js';
import { discardBody, hostnameOf, originAllowed, writeResponse } from './http-server.js';
import { batchObject, EMBEDDINGS, fileObject } from './openai-objects.js';

/** What the OpenAI-compatible batch API needs. */
export interface BatchApiOptions {
  /** The batch engine: every job and file of every tenant, each call scoped to its owner. */
  jobs: BatchJobs;
  /** The front door's authentication, the same as `/mcp`'s. */
  auth: FrontDoorAuth;
  /** Largest uploaded input file, in bytes (`batch.maxInputSize`). */
  maxUploadBytes: number;
  /**
   * The catalog: creating a batch needs the scopes of its pool's embed tool, as calling that
   * tool would. Without it only the tenant is checked.
   */
  tools?: readonly ToolDefinition[];
  /** Pool of a batch that names none (`batch.pool`); only used to find the embed tool's scopes. */
  defaultPool?: string;
  /** Hostnames accepted in the Host header (`ingress.allowedHosts`); absent: any. */
  allowedHosts?: readonly string[];
  /** Origins accepted in the Origin header (`ingress.allowedOrigins`); absent: any. */
  allowedOrigins?: readonly string[];
  /** False while the replica drains: requests get 503. */
  accepting?: () => boolean;
  log: Logger;
}

/** Room for the multipart framing and the `purpose` field around the file itself. */
const MULTIPART_SLACK = 64 * 1024;
/** Batch and file ids as the engine mints them; anything else names nothing and is answered 404. */
const ID = /^[A-Za-z0-9_-]{1,200}$/;
/** Longest filename kept with an upload. */
const MAX_FILENAME = 255;

/** The matched route: what it does and the id segment it names. */
type Route =
  | { op: 'upload' | 'createBatch' | 'listBatches' }
  | { op: 'getFile' | 'fileContent' | 'getBatch' | 'cancelBatch'; id: string; kind: 'file' | 'batch' };

/**
 * The OpenAI-compatible subset of the Files and Batch APIs, served on the ingress under `/v1/`
 * behind the same authentication as `/mcp`, so that the official `openai` client library works
 * against the cluster with `baseURL: http://host:port/v1`:
 *
 * - `POST /v1/files` (multipart/form-data, `purpose=batch`, `file`), `GET /v1/files/{id}`,
 *   `GET /v1/files/{id}/content` (JSONL, streamed)
 * - `POST /v1/batches` (`input_file_id`, `endpoint: "/v1/embeddings"`, `completion_window`,
 *   `metadata`; and `pool`, an mcp-cluster extension), `GET /v1/batches` (`limit`, `after`),
 *   `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`
 *
 * Every refusal is `{error: {message, type, param, code}}` with a 4xx status naming what to
 * change; ids of another tenant are answered 404 like unknown ones. Only the broker being
 * unreachable (503) or a bug (500) answers 5xx.
 */
export function createBatchApi(options: BatchApiOptions): RouteHandler {
  const { jobs, auth, log } = options;
  const uploadLimit = options.maxUploadBytes;

  return async (req, res) => {
    try {
      await serve(req, res);
    } catch (err) {
      if (res.headersSent) {
        log.warn('batch api: answer cut short', { err });
        res.destroy();
        return;
      }
      const apiError = toApiError(err, log);
      sendApiError(res, apiError);
      // A refused body is not read: what the client still sends is dropped, so it reads this answer.
      discardBody(req);
    }
  };

  async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const host = hostnameOf(req.headers.host);
    if (options.allowedHosts && (!host || !options.allowedHosts.includes(host))) {
      throw new ApiError(
        403,
        `Host "${req.headers.host ?? ''}" is not allowed; allowed hosts: ${options.allowedHosts.join(', ')} (setting ingress.allowedHosts)`,
        'host_not_allowed',
        null,
        'permission_error',
      );
    }
    const origin = req.headers.origin;
    if (
      options.allowedOrigins &&
      origin !== undefined &&
      !originAllowed(origin, [...options.allowedOrigins])
    ) {
      throw new ApiError(
        403,
        `Origin "${origin}" is not allowed (setting ingress.allowedOrigins)`,
        'origin_not_allowed',
        null,
        'permission_error',
      );
    }
    if (options.accepting && !options.accepting()) {
      throw new ApiError(
        503,
        'this replica is shutting down; retry on another',
        'shutting_down',
        null,
        'server_error',
        {
          'retry-after': '1',
        },
      );
    }

    // Authenticated before the body is read and before the path is looked at: as on /mcp, an
    // unknown caller costs no more than its headers and learns nothing.
    const authInfo = await auth.authenticate(req);
    if (authInfo instanceof Response) {
      await writeResponse(res, authInfo, {});
      return;
    }
    const identity = identityOf(authInfo);
    const owner: JobOwner = { tenant: identity.tenant, principal: identity.principal };

    // Split by hand, as roleRoutes does: `new URL` throws on some targets a client may send.
    const target = req.url ?? '/';
    const queryAt = target.indexOf('?');
    const pathname = queryAt < 0 ? target : target.slice(0, queryAt);
    const query = new URLSearchParams(queryAt < 0 ? '' : target.slice(queryAt + 1));
    const route = routeOf(req.method ?? 'GET', pathname);
    switch (route.op) {
      case 'upload':
        return sendJson(res, 200, fileObject(await upload(req, owner)));
      case 'getFile':
        return sendJson(res, 200, fileObject(await jobs.getFile(owner, route.id)));
      case 'fileContent':
        return streamContent(res, owner, route.id);
      case 'createBatch': {
        const job = await createBatch(req, res, authInfo, owner);
        if (job) sendJson(res, 200, batchObject(job));
        return;
      }
      case 'listBatches':
        return sendJson(res, 200, await listBatches(query, owner));
      case 'getBatch':
        return sendJson(res, 200, batchObject(await jobs.get(owner, route.id)));
      case 'cancelBatch':
        req.resume();
        return sendJson(res, 200, batchObject(await jobs.cancel(owner, route.id)));
    }
  }

  /** Reads the multipart upload within the limit, checks its fields and stores the file. */
  async function upload(req: IncomingMessage, owner: JobOwner): Promise<FileView> {
    // The parsed form is out of reach once its file's bytes are: the engine's check of the lines
    // does not run with two copies of the input held.
    const { filename, bytes } = await readUpload(req);
    return jobs.uploadFile(owner, filename, bytes);
  }

  /** The file part of a multipart upload, read within the limit, its fields checked. */
  async function readUpload(req: IncomingMessage): Promise<{ filename: string; bytes: Uint8Array }> {
    const type = req.headers['content-type'] ?? '';
    if (!/^multipart\/form-data\s*;/i.test(type)) {
      throw new ApiError(
        415,
        `POST /v1/files takes multipart/form-data with the fields purpose=batch and file (the JSONL input); got Content-Type "${type}"`,
        'unsupported_media_type',
      );
    }
    const bodyLimit = uploadLimit + MULTIPART_SLACK;
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > bodyLimit) throw tooLarge(declared);
    const body = countingBody(req, bodyLimit);
    let form: FormData;
    try {
      form = await new Request('http://ingress/v1/files', {
        method: 'POST',
        headers: { 'content-type': type },
        body: body.stream,
        duplex: 'half',
      } as RequestInit).formData();
    } catch (err) {
      if (body.exceeded) throw tooLarge(undefined);
      if (body.failed) throw new ApiError(400, 'the upload was cut off before its end', 'incomplete_body');
      throw new ApiError(
        400,
        `the body is not valid multipart/form-data (${(err as Error).message}); send the fields purpose=batch and file`,
        'invalid_multipart',
      );
    }
    const purpose = form.get('purpose');
    if (purpose !== 'batch') {
      throw new ApiError(
        400,
        typeof purpose === 'string'
          ? `purpose must be "batch" (this server stores batch input files only), got "${purpose.slice(0, 64)}"`
          : 'the form has no purpose field; send purpose=batch',
        'invalid_purpose',
        'purpose',
      );
    }
    const file = form.get('file');
    if (file === null) {
      throw new ApiError(
        400,
        'the form has no file field; send the JSONL input as the multipart file field "file"',
        'missing_file',
        'file',
      );
    }
    if (typeof file === 'string') {
      throw new ApiError(
        400,
        'the file field is a plain text field; send the JSONL input as a file part (with a filename)',
        'missing_file',
        'file',
      );
    }
    if (file.size > uploadLimit) throw tooLarge(file.size);
    return {
      filename: (file.name || 'input.jsonl').slice(0, MAX_FILENAME),
      bytes: new Uint8Array(await file.arrayBuffer()),
    };
  }

  function tooLarge(bytes: number | undefined): ApiError {
    const size = bytes === undefined ? 'the upload is larger' : `the upload (${bytes} bytes) is larger`;
    return new ApiError(
      413,
      `${size} than a batch input file may be: at most ${uploadLimit} bytes (setting batch.maxInputSize); split the input into several files`,
      'file_too_large',
      'file',
    );
  }

  /** A file's content: looked up first (so that a refusal gets its status), then streamed. */
  async function streamContent(res: ServerResponse, owner: JobOwner, fileId: string): Promise<void> {
    await jobs.getFile(owner, fileId);
    const chunks = jobs.fileContent(owner, fileId)[Symbol.asyncIterator]();
    // The first chunk before the headers: a failure to start reading still gets its own status.
    let next = await chunks.next();
    res.writeHead(200, { 'content-type': 'application/jsonl', 'x-content-type-options': 'nosniff' });
    let closed = false;
    const onClose = () => {
      closed = true;
    };
    res.on('close', onClose);
    try {
      while (!next.done && !closed) {
        if (!res.write(next.value)) {
          await new Promise<void>((resolve) => {
            res.once('drain', resolve);
            res.once('close', resolve);
          });
        }
        if (closed) break;
        next = await chunks.next();
      }
    } finally {
      res.off('close', onClose);
      if (closed) await chunks.return?.();
    }
    res.end();
  }

  async function createBatch(
    req: IncomingMessage,
    res: ServerResponse,
    authInfo: AuthInfo,
    owner: JobOwner,
  ): Promise<JobView | undefined> {
    const body = await readJsonObject(req);
    const inputFileId = body.input_file_id;
    if (typeof inputFileId !== 'string' || inputFileId === '') {
      throw new ApiError(
        400,
        inputFileId === undefined
          ? 'input_file_id is required: the id POST /v1/files returned for the JSONL input'
          : 'input_file_id must be a string: the id POST /v1/files returned for the JSONL input',
        'missing_required_parameter',
        'input_file_id',
      );
    }
    const endpoint = body.endpoint;
    if (endpoint !== EMBEDDINGS) {
      throw new ApiError(
        400,
        endpoint === undefined
          ? `endpoint is required; this server runs "${EMBEDDINGS}" batches only`
          : `endpoint ${JSON.stringify(endpoint).slice(0, 80)} is not supported; this server runs "${EMBEDDINGS}" batches only`,
        endpoint === undefined ? 'missing_required_parameter' : 'unsupported_endpoint',
        'endpoint',
      );
    }
    const submit: SubmitOptions = {};
    const window = body.completion_window;
    if (window !== undefined && window !== null) {
      const ms = typeof window === 'string' ? parseDurationMs(window) : undefined;
      if (ms === undefined || ms <= 0) {
        throw new ApiError(
          400,
          `completion_window must be a duration such as "24h" (or 30m, 90s), got ${JSON.stringify(window).slice(0, 80)}`,
          'invalid_completion_window',
          'completion_window',
        );
      }
      submit.completionWindowMs = ms;
    }
    const metadata = metadataOf(body.metadata);
    if (metadata) submit.metadata = metadata;
    const pool = body.pool;
    if (pool !== undefined && pool !== null) {
      if (typeof pool !== 'string' || pool === '' || pool.length > 64) {
        throw new ApiError(400, 'pool must name a pool of the cluster (a string)', 'invalid_pool', 'pool');
      }
      submit.pool = pool;
    }
    // A batch runs the pool's embed tool: it needs the scopes a call of that tool needs.
    const tool = embedToolOf(submit.pool ?? options.defaultPool);
    if (tool && auth.enforced) {
      const denied = await auth.challengeFor(
        { jsonrpc: '2.0', id: 0, method: 'tools/call', params: { name: tool.name } },
        authInfo,
      );
      if (denied) {
        await writeResponse(res, denied, {});
        return undefined;
      }
    }
    try {
      return await jobs.submit(owner, { fileId: inputFileId }, submit);
    } catch (err) {
      // The one id of the request: an unknown one is the input file's.
      if (err instanceof ClusterError && err.code === 'UNKNOWN_JOB') {
        throw new ApiError(404, err.message, 'not_found', 'input_file_id');
      }
      throw err;
    }
  }

  function embedToolOf(pool: string | undefined): ToolDefinition | undefined {
    if (pool === undefined) return undefined;
    return options.tools?.find((t) => t.pool === pool && t.template === 'embed');
  }

  async function listBatches(query: URLSearchParams, owner: JobOwner) {
    const limitText = query.get('limit');
    let limit = 20;
    if (limitText !== null) {
      limit = /^\d{1,4}$/.test(limitText) ? Number(limitText) : Number.NaN;
      if (!(limit >= 1 && limit <= 100)) {
        throw new ApiError(
          400,
          `limit must be a whole number from 1 to 100, got "${limitText.slice(0, 20)}"`,
          'invalid_limit',
          'limit',
        );
      }
    }
    const after = query.get('after') ?? undefined;
    if (after !== undefined && !ID.test(after)) {
      throw new ApiError(
        400,
        `after must be a batch id, got "${after.slice(0, 80)}"`,
        'invalid_after',
        'after',
      );
    }
    const page = await jobs.list(owner, { limit, ...(after ? { after } : {}) });
    // Whether there is more: one further job after the page's last.
    const last = page.at(-1);
    const hasMore =
      page.length >= limit &&
      last !== undefined &&
      (await jobs.list(owner, { limit: 1, after: last.id })).length > 0;
    return {
      object: 'list',
      data: page.map(batchObject),
      first_id: page[0]?.id ?? null,
      last_id: last?.id ?? null,
      has_more: hasMore,
    };
  }
}

/** The route of a path under `/v1/`, or the 404/405 answer. */
function routeOf(method: string, pathname: string): Route {
  const segments = pathname.split('/').slice(1);
  const [v1, collection, id, action, ...rest] = segments;
  const allow = (methods: string, what: string): never => {
    throw new ApiError(
      405,
      `${what} takes ${methods.replace(', ', ' or ')}, not ${method}`,
      'method_not_allowed',
      null,
      'invalid_request_error',
      {
        allow: methods,
      },
    );
  };
  if (v1 === 'v1' && rest.length === 0 && (collection === 'files' || collection === 'batches')) {
    const kind = collection === 'files' ? 'file' : 'batch';
    if (id === undefined || (id === '' && action === undefined)) {
      if (collection === 'files') return method === 'POST' ? { op: 'upload' } : allow('POST', '/v1/files');
      if (method === 'POST') return { op: 'createBatch' };
      if (method === 'GET') return { op: 'listBatches' };
      return allow('GET, POST', '/v1/batches');
    }
    if (!ID.test(id)) throw unknown(kind, id);
    if (action === undefined)
      return method === 'GET'
        ? { op: kind === 'file' ? 'getFile' : 'getBatch', id, kind }
        : allow('GET', `/v1/${collection}/{id}`);
    if (kind === 'file' && action === 'content')
      return method === 'GET' ? { op: 'fileContent', id, kind } : allow('GET', '/v1/files/{id}/content');
    if (kind === 'batch' && action === 'cancel')
      return method === 'POST' ? { op: 'cancelBatch', id, kind } : allow('POST', '/v1/batches/{id}/cancel');
  }
  throw new ApiError(
    404,
    `no route ${method} ${pathname.slice(0, 200)}; this server serves the OpenAI Batch API subset: POST /v1/files, GET /v1/files/{id}, GET /v1/files/{id}/content, POST /v1/batches, GET /v1/batches, GET /v1/batches/{id}, POST /v1/batches/{id}/cancel`,
    'unknown_url',
  );
}
