import type { IncomingMessage, ServerResponse } from 'node:http';
import type { McpHttpHandler } from '@modelcontextprotocol/server';
import {
  ClusterError,
  checkParamHeaders,
  clusterMetrics,
  httpStatusOf,
  JSON_RPC,
  type Logger,
  type ParamHeader,
  retryAfterSeconds,
  sendJson,
  toJsonRpcError,
} from '../core/index.js';
import { type FrontDoorAuth, identityOf } from './auth/index.js';
import { clientResponsesOf } from './input-required.js';
import { nestsDeeperThan } from './json-depth.js';
import { type RequestScope, requestScope } from './mcp-server.js';
import { unsupportedProtocolVersion } from './protocol-version.js';
import type { SessionIds } from './session-id.js';
import type { ToolCallFastPath } from './tool-call-fast-path.js';

/** Settings of the MCP front door. */
export interface FrontDoorOptions {
  /** Hostnames accepted in the Host header (DNS-rebinding protection). */
  allowedHosts: string[];
  /** Origins accepted in the Origin header; `http://localhost` without a port allows any port. */
  allowedOrigins: string[];
  /** Largest request body, in bytes; larger ones get 413. */
  maxBodyBytes: number;
  /**
   * Deepest nesting of arrays and objects in a request body (the message itself is level 1);
   * deeper bodies get 400 before they are parsed. See {@link nestsDeeperThan}.
   */
  maxJsonDepth: number;
  sessions: SessionIds;
  /** Who the caller is and what they may call; mode `none` trusts everyone. */
  auth: FrontDoorAuth;
  handler: McpHttpHandler;
  /** Serves plain `tools/call` requests without the SDK; the rest goes to `handler`. */
  fastPath?: ToolCallFastPath;
  /**
   * Called for each JSON-RPC response a 2025-era client POSTs (its answer to a server-to-client
   * request), with the verified session id, the response's id as JSON and `{"result"|"error":...}`.
   */
  onClientAnswer?: (sessionId: string, requestIdJson: string, answerJson: string) => void;
  /**
   * The `x-mcp-header` declarations of the tools that have any, by tool name: a 2026-07-28
   * `tools/call` of such a tool must carry `Mcp-Param-*` headers that agree with its arguments
   * (else HTTP 400, MCP -32020). Absent: no tool declares any.
   */
  paramHeaders?: ReadonlyMap<string, readonly ParamHeader[]>;
  /** Called for a 2025-era `notifications/cancelled`, with the verified session id. */
  onCancelNotification: (sessionId: string, requestId: string | number, reason: string) => void;
  /** False while draining: new MCP requests get 503. */
  accepting: () => boolean;
  log: Logger;
}

const SESSION_HEADER = 'mcp-session-id';

/**
 * Serves `/mcp`: checks Host and Origin, bounds (size, nesting) and parses the body so malformed
 * input gets a JSON-RPC error before any MCP machinery runs, refuses an `MCP-Protocol-Version`
 * this server does not serve, handles 2025-era cancels itself (they may name
 * a call owned by another replica), mints signed session ids on `initialize`, serves plain
 * `tools/call` requests on the fast path, and hands the rest to the SDK's stateless handler.
 */
export function createMcpFrontDoor(
  options: FrontDoorOptions,
): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  const metrics = clusterMetrics();
  const reject = (
    res: ServerResponse,
    status: number,
    reason: string,
    code: number,
    message: string,
    headers: Record<string, string> = {},
  ) => {
    metrics.ingressRejected.inc({ reason });
    sendJson(res, status, { jsonrpc: '2.0', error: { code, message }, id: null }, headers);
  };
  const rejectWith = (res: ServerResponse, status: number, reason: string, error: ClusterError) => {
    metrics.ingressRejected.inc({ reason });
    sendJson(res, status, { jsonrpc: '2.0', error: toJsonRpcError(error), id: null });
  };

  return async (req, res) => {
    const host = hostnameOf(req.headers.host);
    if (!host || !options.allowedHosts.includes(host)) {
      return reject(
        res,
        403,
        'host',
        JSON_RPC.INVALID_REQUEST,
        `Host "${req.headers.host ?? ''}" is not allowed; allowed hosts: ${options.allowedHosts.join(', ')} (setting ingress.allowedHosts)`,
      );
    }
    const origin = req.headers.origin;
    if (origin !== undefined && !originAllowed(origin, options.allowedOrigins)) {
      return reject(
        res,
        403,
        'origin',
        JSON_RPC.INVALID_REQUEST,
        `Origin "${origin}" is not allowed (setting ingress.allowedOrigins)`,
      );
    }
    if (!options.accepting()) {
      return reject(
        res,
        503,
        'draining',
        JSON_RPC.INTERNAL_ERROR,
        'this replica is shutting down; retry on another',
        { 'retry-after': '1' },
      );
    }

    // Authenticated before the body is read: an unknown caller costs no more than its headers.
    const authInfo = await options.auth.authenticate(req);
    if (authInfo instanceof Response) return writeResponse(res, authInfo, {});
    const identity = identityOf(authInfo);

    let sessionId: string | undefined;
    const given = req.headers[SESSION_HEADER];
    if (typeof given === 'string' && given !== '') {
      // A real id initialized by another principal fails like a forged one: it names nothing of theirs.
      if (!options.sessions.verify(given, identity.principal)) {
        return rejectWith(
          res,
          404,
          'session',
          new ClusterError(
            'UNKNOWN_SESSION',
            'unknown or forged Mcp-Session-Id; start a new session with initialize',
          ),
        );
      }
      sessionId = given;
    }

    let parsed: unknown;
    let text: string | undefined;
    if (req.method === 'POST') {
      const type = req.headers['content-type'] ?? '';
      if (!/^application\/json\b/i.test(type)) {
        return reject(
          res,
          415,
          'content_type',
          JSON_RPC.INVALID_REQUEST,
          `Content-Type must be application/json, got "${type}"`,
        );
      }
      const read = await readBody(req, options.maxBodyBytes);
      if (read === 'too_large') {
        return reject(
          res,
          413,
          'body_size',
          JSON_RPC.INVALID_REQUEST,
          `request body exceeds ${options.maxBodyBytes} bytes (setting ingress.maxBodySize)`,
        );
      }
      if (read === 'aborted') return;
      text = read.toString('utf8');
      // Before JSON.parse and all that recurses on the parsed value (ajv, JSON.stringify, zod).
      if (nestsDeeperThan(text, options.maxJsonDepth)) {
        return reject(
          res,
          400,
          'json_depth',
          JSON_RPC.INVALID_REQUEST,
          `request body nests deeper than ${options.maxJsonDepth} levels (setting ingress.maxJsonDepth)`,
        );
      }
      try {
        parsed = JSON.parse(text);
      } catch (err) {
        return reject(
          res,
          400,
          'parse',
          JSON_RPC.PARSE_ERROR,
          `Parse error: the body is not valid JSON (${(err as Error).message})`,
        );
      }
      if (typeof parsed !== 'object' || parsed === null) {
        return reject(
          res,
          400,
          'invalid_request',
          JSON_RPC.INVALID_REQUEST,
          'Invalid Request: the body must be a JSON-RPC message object',
        );
      }
      const unsupported = unsupportedProtocolVersion(req.headers['mcp-protocol-version'], parsed);
      if (unsupported) {
        metrics.ingressRejected.inc({ reason: 'protocol_version' });
        return sendJson(res, 400, { jsonrpc: '2.0', error: unsupported, id: null });
      }
      const denied = await options.auth.challengeFor(parsed, authInfo);
      if (denied) return writeResponse(res, denied, {});
      if (handleCancels(parsed, sessionId, options)) {
        res.writeHead(202).end();
        return;
      }
      const headerProblem = paramHeaderProblem(req, parsed, options.paramHeaders);
      if (headerProblem) {
        metrics.ingressRejected.inc({ reason: 'param_header' });
        const id =
          isObject(parsed) && (typeof parsed.id === 'string' || typeof parsed.id === 'number')
            ? parsed.id
            : null;
        return sendJson(res, 400, { jsonrpc: '2.0', id, error: toJsonRpcError(headerProblem) });
      }
      // A 2025-era client answering what the ingress asked it on a call's stream (elicitation,
      // sampling, roots). Without a session the answer names nothing: accepted and dropped.
      const answers = clientResponsesOf(parsed);
      if (answers) {
        if (sessionId)
          for (const a of answers) options.onClientAnswer?.(sessionId, a.requestIdJson, a.answerJson);
        res.writeHead(202).end();
        return;
      }
    }

    const abort = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    const mintedSession = isInitialize(parsed) ? options.sessions.mint(identity.principal) : undefined;
    const scope: RequestScope = {
      sessionId: sessionId ?? mintedSession,
      signal: abort.signal,
      sessionKeyHeader: headerValue(req, 'mcp-cluster-session-key')?.slice(0, 256),
      traceparent: headerValue(req, 'traceparent'),
      tracestate: headerValue(req, 'tracestate'),
      withdraw: () => withdrawResponse(res),
    };
    try {
      const fast = mintedSession ? undefined : options.fastPath?.tryServe(req, res, parsed, scope, identity);
      if (fast !== undefined) return await fast;
      const request = webRequestOf(req, text, abort.signal);
      const response = await requestScope.run(scope, () =>
        options.handler.fetch(
          request,
          parsed === undefined ? { authInfo } : { parsedBody: parsed, authInfo },
        ),
      );
      const refused = scope.refused;
      const refusedStatus = refused && !Array.isArray(parsed) ? httpStatusOf(refused.code) : undefined;
      if (refused && refusedStatus !== undefined && response.ok) {
        // The SDK answered the refused call with its JSON-RPC error; the status and Retry-After
        // are the refusal's, as on the fast path. (In a JSON-RPC batch the error stays in its slot.)
        const retryAfter = retryAfterSeconds(refused);
        await writeResponse(
          res,
          new Response(response.body, {
            status: refusedStatus,
            headers: {
              ...Object.fromEntries(response.headers),
              ...(retryAfter ? { 'retry-after': retryAfter } : {}),
            },
          }),
          {},
        );
        return;
      }
      await writeResponse(
        res,
        response,
        mintedSession && response.ok ? { [SESSION_HEADER]: mintedSession } : {},
      );
    } catch (err) {
      if (abort.signal.aborted || res.writableEnded) return;
      options.log.error('mcp request failed', { err });
      if (!res.headersSent)
        sendJson(res, 500, {
          jsonrpc: '2.0',
          error: { code: JSON_RPC.INTERNAL_ERROR, message: 'internal error' },
          id: null,
        });
      else res.end();
    }
  };
}

/**
 * The web `Request` the SDK's handler takes. The body travels as the text that came in (the
 * handler reads the parsed value given beside it): re-serialising it, as `toWebRequest` does
 * with a parsed body, would cost a `JSON.stringify` per request for nothing.
 */
function webRequestOf(req: IncomingMessage, body: string | undefined, signal: AbortSignal): Request {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || name.startsWith(':')) continue;
    if (Array.isArray(value)) for (const item of value) headers.append(name, item);
    else headers.set(name, value);
  }
  const method = (req.method ?? 'GET').toUpperCase();
  return new Request(`http://${req.headers.host ?? 'localhost'}${req.url ?? '/'}`, {
    method,
    headers,
    signal,
    ...(body !== undefined && method !== 'GET' && method !== 'HEAD' ? { body } : {}),
  });
}

/** Handles `notifications/cancelled` (alone or in a batch of only notifications); true if it did. */
function handleCancels(parsed: object, sessionId: string | undefined, options: FrontDoorOptions): boolean {
  const messages = Array.isArray(parsed) ? parsed : [parsed];
  if (messages.length === 0) return false;
  const cancels = messages.filter(
    (m) => isObject(m) && m.method === 'notifications/cancelled' && !('id' in m),
  );
  if (cancels.length !== messages.length) return false;
  for (const m of cancels as { params?: { requestId?: unknown; reason?: unknown } }[]) {
    const requestId = m.params?.requestId;
    if (sessionId && (typeof requestId === 'string' || typeof requestId === 'number')) {
      options.onCancelNotification(
        sessionId,
        requestId,
        typeof m.params?.reason === 'string' ? m.params.reason.slice(0, 200) : 'client',
      );
    }
    // Without a session id the request id alone matches many agents' calls: ignoring is the only safe answer.
  }
  return true;
}

/**
 * The HEADER_MISMATCH of a 2026-07-28 `tools/call` (the envelope's protocol version says so)
 * whose tool declares `x-mcp-header` arguments its `Mcp-Param-*` headers disagree with; else
 * undefined. 2025-era requests predate the headers and are not checked.
 */
function paramHeaderProblem(
  req: IncomingMessage,
  parsed: object,
  declared: ReadonlyMap<string, readonly ParamHeader[]> | undefined,
): ClusterError | undefined {
  if (!declared || declared.size === 0 || !isObject(parsed) || parsed.method !== 'tools/call')
    return undefined;
  const params = parsed.params;
  if (!isObject(params) || typeof params.name !== 'string') return undefined;
  const headers = declared.get(params.name);
  if (!headers) return undefined;
  const meta = isObject(params._meta) ? params._meta : {};
  const version = meta['io.modelcontextprotocol/protocolVersion'] ?? headerValue(req, 'mcp-protocol-version');
  if (typeof version !== 'string' || version < MODERN_REVISION) return undefined;
  // Read as sent: an empty header is a value (an empty string argument), not an absent one.
  return checkParamHeaders(headers, params.arguments, (name) => {
    const value = req.headers[name];
    return Array.isArray(value) ? value.join(', ') : value;
  });
}

/** The first protocol revision with `Mcp-Param-*` headers. */
const MODERN_REVISION = '2026-07-28';

function isInitialize(parsed: unknown): boolean {
  return isObject(parsed) && parsed.method === 'initialize';
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function headerValue(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** The hostname part of a Host header (an IPv6 literal with its brackets), for `ingress.allowedHosts`. */
export function hostnameOf(host: string | undefined): string | undefined {
  if (!host) return undefined;
  if (host.startsWith('[')) return host.slice(0, host.indexOf(']') + 1);
  return host.split(':')[0];
}

/** Whether an Origin header is one of `ingress.allowedOrigins` (an entry without a port allows any port). */
export function originAllowed(origin: string, allowed: string[]): boolean {
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return false;
  }
  return allowed.some((entry) => {
    let a: URL;
    try {
      a = new URL(entry);
    } catch {
      return false;
    }
    if (a.protocol !== url.protocol || a.hostname !== url.hostname) return false;
    return a.port === '' || a.port === url.port;
  });
}

/**
 * How long the rest of a refused request's body is still read and dropped, in ms (10 s). Closing a
 * connection the client is still sending on makes its kernel reset the connection, and a client that
 * has not read the answer by then gets the reset instead (Node 24's fetch does, for a 413 to a large
 * upload); a client still sending after this long has its connection closed.
 */
export const REFUSED_BODY_LINGER_MS = 10_000;

/**
 * Reads and drops what is left of a refused request's body, so the client finishes sending and reads
 * the answer on a connection that stays usable; closes the connection after
 * {@link REFUSED_BODY_LINGER_MS} if the body has not ended by then.
 */
export function discardBody(req: IncomingMessage): void {
  if (req.readableEnded || req.destroyed) return;
  const timer = setTimeout(() => req.socket.destroy(), REFUSED_BODY_LINGER_MS);
  timer.unref();
  const stop = () => clearTimeout(timer);
  req.once('end', stop);
  req.once('close', stop);
  req.resume();
}

/**
 * Reads a request body of at most `limit` bytes: refused on its Content-Length before a byte is
 * read, or counted as it arrives (the rest is then dropped, see {@link discardBody}).
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer | 'too_large' | 'aborted'> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    discardBody(req);
    return Promise.resolve('too_large');
  }
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (part: Buffer) => {
      if (done) return;
      size += part.length;
      if (size > limit) {
        done = true;
        discardBody(req);
        resolve('too_large');
        return;
      }
      parts.push(part);
    });
    req.on('end', () => {
      if (!done) {
        done = true;
        resolve(Buffer.concat(parts));
      }
    });
    req.on('error', () => {
      if (!done) {
        done = true;
        resolve('aborted');
      }
    });
  });
}

/** Headers of an SSE response, as the SDK writes them. */
export const SSE_HEADERS = {
  'content-type': 'text/event-stream',
  'cache-control': 'no-cache, no-transform',
  connection: 'keep-alive',
  'x-accel-buffering': 'no',
};

/**
 * Ends the response to a request its caller withdrew (2025-era `notifications/cancelled`) without a
 * JSON-RPC response, as the MCP spec asks of a cancel's receiver: an SSE stream already open ends
 * after what it carried, otherwise the answer is an empty SSE stream (a 2025 client accepts one for
 * every request; the v1 SDK client reads it to its end and, finding no event ids, does not resume it).
 */
export function withdrawResponse(res: ServerResponse): void {
  if (res.writableEnded || res.destroyed) return;
  if (!res.headersSent) res.writeHead(200, SSE_HEADERS);
  res.end();
}

/**
 * Writes a web `Response` (an auth refusal, the SDK's answer) to `res`, with `extra` headers; a
 * response already ended (a withdrawn request) takes nothing more, and the body is dropped.
 */
export async function writeResponse(
  res: ServerResponse,
  response: Response,
  extra: Record<string, string>,
): Promise<void> {
  if (res.writableEnded) {
    await response.body?.cancel().catch(() => undefined);
    return;
  }
  const headers: Record<string, string> = { ...extra };
  response.headers.forEach((value, key) => {
    headers[key] = value;
  });
  if (!response.body) {
    res.writeHead(response.status, headers);
    res.end();
    return;
  }
  if (!response.headers.get('content-type')?.startsWith('text/event-stream')) {
    // A JSON answer is complete once it exists: sent with a length it leaves in one write, where
    // streaming it takes a write for the chunk and another for the chunked terminator (socket
    // writes were the largest self time of the ingress under the overhead benchmark's profile).
    const body = Buffer.from(await response.arrayBuffer());
    if (res.writableEnded) return;
    headers['content-length'] = String(body.byteLength);
    res.writeHead(response.status, headers);
    res.end(body);
    return;
  }
  res.writeHead(response.status, headers);
  const reader = response.body.getReader();
  const onClose = () => reader.cancel().catch(() => undefined);
  res.on('close', onClose);
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (res.writableEnded) {
        await reader.cancel().catch(() => undefined);
        break;
      }
      if (!res.write(value)) {
        await new Promise<void>((resolve) => {
          res.once('drain', resolve);
          res.once('close', resolve);
        });
      }
    }
  } catch {
    // The client went away mid-stream; the close handler already cancelled the body.
  } finally {
    res.off('close', onClose);
    res.end();
  }
}
