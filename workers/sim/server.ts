/** The HTTP server of the simulated vLLM backend: routing, lifecycle and the failure boundary. */

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseChatRequest, runChatCompletion } from './chat.js';
import { parseEmbeddingsRequest, runEmbeddings } from './embeddings.js';
import { parseJsonObject, readBody, SimRequestError, sendError, sendJson } from './http-io.js';
import { metricsContentType, renderMetrics } from './metrics.js';
import { resolveSimOptions, type SimOptions } from './options.js';
import { createSimState, type SimState, type SimStats, snapshotStats } from './sim-state.js';

/** A running simulated backend. */
export interface SimBackend {
  /** Base URL without a trailing slash, e.g. `http://127.0.0.1:41234`; the OpenAI API is under `/v1`. */
  readonly url: string;
  /** The port actually bound (useful with `port: 0`). */
  readonly port: number;
  /** A snapshot of the counters. */
  stats(): SimStats;
  /**
   * Stops listening and drops every open connection; requests in flight count as aborted.
   * Resolves when the server is closed. Calling it again returns the same promise.
   */
  close(): Promise<void>;
}

/** Methods allowed per route; the route table doubles as the 405 check. */
const routes: Record<string, 'GET' | 'POST'> = {
  '/v1/chat/completions': 'POST',
  '/v1/embeddings': 'POST',
  '/v1/models': 'GET',
  '/health': 'GET',
  '/metrics': 'GET',
  '/sim/stats': 'GET',
};

/** Reads and parses the JSON body; undefined when an answer was already sent or the client left. */
async function readJsonBody(
  state: SimState,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<Record<string, unknown> | undefined> {
  const result = await readBody(req, state.options.maxBodyBytes);
  if (result.kind === 'aborted') return undefined;
  if (result.kind === 'too-large') {
    // Closing the connection spares reading the rest of an upload we are refusing anyway.
    sendError(
      res,
      new SimRequestError(
        413,
        'RequestEntityTooLargeError',
        `request body is larger than this server's limit of ${state.options.maxBodyBytes} bytes`,
        'body',
      ),
      { connection: 'close' },
    );
    return undefined;
  }
  return parseJsonObject(result.body);
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
): Promise<void> {
  const path = (req.url ?? '/').split('?', 1)[0] ?? '/';
  const method = Object.hasOwn(routes, path) ? routes[path] : undefined;
  if (method === undefined) {
    throw new SimRequestError(404, 'NotFoundError', `no route ${JSON.stringify(path)}`);
  }
  if (req.method !== method) {
    sendError(
      res,
      new SimRequestError(405, 'MethodNotAllowedError', `${path} accepts ${method} only, got ${req.method}`),
      { allow: method },
    );
    return;
  }
  switch (path) {
    case '/v1/chat/completions': {
      const body = await readJsonBody(state, req, res);
      if (body === undefined) return;
      await runChatCompletion(state, parseChatRequest(state, body), res, clientGone);
      return;
    }
    case '/v1/embeddings': {
      const body = await readJsonBody(state, req, res);
      if (body === undefined) return;
      await runEmbeddings(state, parseEmbeddingsRequest(state, body), res, clientGone);
      return;
    }
    case '/v1/models':
      sendJson(res, 200, modelList(state));
      return;
    case '/health':
      // vLLM answers its health check with 200 and an empty body.
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
  try {
    await route(state, req, res, clientGone.signal);
  } catch (err) {
    if (err instanceof SimRequestError) {
      sendError(res, err);
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
 * Starts a simulated vLLM server speaking vLLM's OpenAI-compatible HTTP API (chat completions
 * with SSE streaming, embeddings, models, health, Prometheus metrics) with a latency and
 * capacity model. Rejects when an option is invalid or the port cannot be bound.
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
