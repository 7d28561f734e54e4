/** The HTTP server of the simulated vLLM backend: routing, lifecycle and the failure boundary. */

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseChatRequest, runChatCompletion } from './chat.js';
import { parseEmbeddingsRequest, runEmbeddings } from './embeddings.js';
import {
  answerWithFailure,
  type FailureWire,
  failureProblem,
  type SimFailureMode,
  type SimFailureState,
} from './failures.js';
import { badRequest, parseJsonObject, readBody, SimRequestError, sendError, sendJson } from './http-io.js';
import { metricsContentType, renderMetrics } from './metrics.js';
import { resolveSimOptions, type SimOptions } from './options.js';
import {
  createSimState,
  type RecordedRequest,
  recordRequest,
  type SimState,
  type SimStats,
  snapshotStats,
} from './sim-state.js';
import { parseTeiEmbedRequest, runTeiEmbed, sendTeiError, TeiError, teiInfo } from './tei.js';

/** A running simulated backend. */
export interface SimBackend {
  /** Base URL without a trailing slash, e.g. `http://127.0.0.1:41234`; the OpenAI API is under `/v1`. */
  readonly url: string;
  /** The port actually bound (useful with `port: 0`). */
  readonly port: number;
  /** A snapshot of the counters. */
  stats(): SimStats;
  /** The last requests received (not those under `/sim/`), with their headers; also `GET /sim/requests`. */
  recentRequests(): RecordedRequest[];
  /**
   * Injects failures for tests (the same as `POST /sim/fail {mode, count}`): `mode` applies to
   * the next `count` inference requests (chat completions, `/v1/embeddings`, TEI `/embed`), or
   * for `health-down` to the next `count` `GET /health`, then reverts to `none`; without
   * `count` it applies until changed. Returns the failure now in force. Throws an Error for an
   * unknown mode or a count that is not an integer >= 1.
   */
  setFailure(mode: SimFailureMode, count?: number): SimFailureState;
  /**
   * Stops listening and drops every open connection; requests in flight count as aborted.
   * Resolves when the server is closed. Calling it again returns the same promise.
   */
  close(): Promise<void>;
}

type Method = 'GET' | 'POST';

/** Methods allowed per route; the route table doubles as the 405 check. */
const routes: Record<string, readonly Method[]> = {
  '/v1/chat/completions': ['POST'],
  '/v1/embeddings': ['POST'],
  '/v1/models': ['GET'],
  '/embed': ['POST'],
  '/info': ['GET'],
  '/health': ['GET'],
  '/metrics': ['GET'],
  '/sim/stats': ['GET'],
  '/sim/fail': ['GET', 'POST'],
  '/sim/requests': ['GET'],
};

/**
 * Reads the whole body; undefined when an answer was already sent (413, in the endpoint's own
 * error format) or the client left.
 */
async function readRequestBody(
  state: SimState,
  req: IncomingMessage,
  res: ServerResponse,
  wire: 'openai' | 'tei',
): Promise<Buffer | undefined> {
  const result = await readBody(req, state.options.maxBodyBytes);
  if (result.kind === 'aborted') return undefined;
  if (result.kind === 'too-large') {
    const message = `request body is larger than this server's limit of ${state.options.maxBodyBytes} bytes`;
    // Closing the connection spares reading the rest of an upload we are refusing anyway.
    if (wire === 'tei') {
      sendTeiError(res, new TeiError(413, 'Validation', message), { connection: 'close' });
    } else {
      sendError(res, new SimRequestError(413, 'RequestEntityTooLargeError', message, 'body'), {
        connection: 'close',
      });
    }
    return undefined;
  }
  return result.body;
}

/** Whether a body asks for a stream (`"stream": true`); false when it is not even JSON. */
function asksForStream(body: Buffer): boolean {
  try {
    const value: unknown = JSON.parse(body.toString('utf8'));
    return typeof value === 'object' && value !== null && (value as { stream?: unknown }).stream === true;
  } catch {
    return false;
  }
}

/** Answers with the injected failure if one applies to this request; true when it did. */
async function injectedFailure(
  state: SimState,
  wire: FailureWire,
  body: Buffer,
  res: ServerResponse,
  clientGone: AbortSignal,
): Promise<boolean> {
  const mode = state.failures.takeForRequest();
  if (mode === undefined) return false;
  state.counters.failuresInjected++;
  await answerWithFailure(mode, wire, wire === 'chat' && asksForStream(body), res, clientGone);
  return true;
}

function modelList(state: SimState) {
  const created = Math.floor(Date.now() / 1000);
  const entry = (id: string) => ({ id, object: 'model', created, owned_by: 'vllm', root: id, parent: null });
  return { object: 'list', data: [entry(state.options.model), entry(state.options.embeddingModel)] };
}

async function route(
  state: SimState,
  req: IncomingMessage,
  res: ServerResponse,
  clientGone: AbortSignal,
  record: RecordedRequest | undefined,
): Promise<void> {
  const path = (req.url ?? '/').split('?', 1)[0] ?? '/';
  const methods = Object.hasOwn(routes, path) ? routes[path] : undefined;
  if (methods === undefined) {
    throw new SimRequestError(404, 'NotFoundError', `no route ${JSON.stringify(path)}`);
  }
  if (!methods.includes(req.method as Method)) {
    sendError(
      res,
      new SimRequestError(
        405,
        'MethodNotAllowedError',
        `${path} accepts ${methods.join(', ')} only, got ${req.method}`,
      ),
      { allow: methods.join(', ') },
    );
    return;
  }
  switch (path) {
    case '/v1/chat/completions': {
      const body = await readRequestBody(state, req, res, 'openai');
      if (body === undefined || (await injectedFailure(state, 'chat', body, res, clientGone))) return;
      const request = parseChatRequest(state, parseJsonObject(body));
      if (record)
        record.chat = {
          user: request.user,
          maxTokens: request.requestedMaxTokens,
          promptTokens: request.promptTokens,
        };
      await runChatCompletion(state, request, res, clientGone);
      return;
    }
    case '/v1/embeddings': {
      const body = await readRequestBody(state, req, res, 'openai');
      if (body === undefined || (await injectedFailure(state, 'embeddings', body, res, clientGone))) return;
      await runEmbeddings(state, parseEmbeddingsRequest(state, parseJsonObject(body)), res, clientGone);
      return;
    }
    case '/embed': {
      const body = await readRequestBody(state, req, res, 'tei');
      if (body === undefined || (await injectedFailure(state, 'tei', body, res, clientGone))) return;
      await runTeiEmbed(state, parseTeiEmbedRequest(state, body), res, clientGone);
      return;
    }
    case '/info':
      sendJson(res, 200, teiInfo(state));
      return;
    case '/v1/models':
      sendJson(res, 200, modelList(state));
      return;
    case '/health':
      if (state.failures.takeForHealth()) {
        state.counters.failuresInjected++;
        // TEI's unhealthy answer; vLLM answers its failed health check with a bare 503.
        sendJson(res, 503, { error: 'unhealthy', error_type: 'Unhealthy' });
        return;
      }
      // vLLM and TEI answer a good health check with 200 and an empty body.
      res.writeHead(200, { 'content-length': '0' });
      res.end();
      return;
    case '/metrics': {
      const text = renderMetrics(state);
      res.writeHead(200, {
        'content-type': metricsContentType,
        'content-length': String(Buffer.byteLength(text)),
      });
      res.end(text);
      return;
    }
    case '/sim/stats':
      sendJson(res, 200, snapshotStats(state));
      return;
    case '/sim/requests':
      sendJson(res, 200, { requests: state.recentRequests });
      return;
    case '/sim/fail': {
      if (req.method === 'GET') {
        sendJson(res, 200, state.failures.state);
        return;
      }
      const body = await readRequestBody(state, req, res, 'openai');
      if (body === undefined) return;
      const json = parseJsonObject(body);
      const problem = failureProblem(json.mode, json.count);
      if (problem) throw badRequest(problem.param, problem.message);
      sendJson(res, 200, state.failures.set(json.mode as SimFailureMode, json.count as number | undefined));
      return;
    }
    default:
      throw new SimRequestError(404, 'NotFoundError', `no route ${JSON.stringify(path)}`);
  }
}

async function handleRequest(state: SimState, req: IncomingMessage, res: ServerResponse): Promise<void> {
  // Aborts when the connection closes before the response ended: the client left, so any
  // waiting or generation for it stops and its slot is freed.
  const clientGone = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) clientGone.abort();
  });
  const path = (req.url ?? '/').split('?', 1)[0] ?? '/';
  const record = path.startsWith('/sim/')
    ? undefined
    : recordRequest(state, { method: req.method ?? '', path, headers: { ...req.headers } });
  try {
    await route(state, req, res, clientGone.signal, record);
  } catch (err) {
    if (err instanceof SimRequestError) {
      sendError(res, err);
      return;
    }
    if (err instanceof TeiError) {
      sendTeiError(res, err);
      return;
    }
    // A bug in the simulation must not take the server down: report it and answer 500.
    process.stderr.write(
      `${JSON.stringify({ sim: 'internal-error', error: err instanceof Error ? err.stack : String(err) })}\n`,
    );
    if (res.headersSent) res.destroy();
    else
      sendError(
        res,
        new SimRequestError(500, 'InternalServerError', 'internal error in the simulated backend'),
      );
  }
}

function urlHost(host: string): string {
  // A wildcard bind address is not a destination; loopback reaches the same server.
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}

/**
 * Starts a simulated GPU server speaking vLLM's OpenAI-compatible HTTP API (chat completions
 * with SSE streaming, embeddings, models, health, Prometheus metrics) and TEI's embeddings API
 * (`/embed`, `/info`) with a latency and capacity model: continuous batching, a per-session
 * prefix cache, one embeddings batch at a time, and failure injection for tests. Rejects when
 * an option is invalid or the port cannot be bound.
 */
export async function startSimBackend(input: Partial<SimOptions> = {}): Promise<SimBackend> {
  const options = resolveSimOptions(input);
  const state = createSimState(options);
  const server = createServer((req, res) => {
    void handleRequest(state, req, res);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  let closing: Promise<void> | undefined;
  return {
    url: `http://${urlHost(options.host)}:${port}`,
    port,
    stats: () => snapshotStats(state),
    recentRequests: () => [...state.recentRequests],
    setFailure: (mode, count) => state.failures.set(mode, count),
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Streams in flight would keep close() waiting until they end; drop them instead.
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
