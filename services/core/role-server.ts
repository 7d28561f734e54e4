import {
  createServer,
  type Server as HttpServer,
  type IncomingMessage,
  type ServerOptions,
  type ServerResponse,
} from 'node:http';
import { ClusterError } from './errors.js';
import type { LifecycleState } from './lifecycle.js';
import { clusterMetrics } from './metrics.js';

/** Serves one path of a role's HTTP server. */
export type RouteHandler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

/** What a role's `/readyz` reports beyond its state: `ready` false answers 503; the rest is in the body. */
export type Readiness = { ready: boolean } & Record<string, unknown>;

/** The paths every role serves, and what each role adds. */
export interface RoleRoutesOptions {
  /** The role's lifecycle: `/readyz` answers 503 in every state but `running`. */
  lifecycle: { readonly state: LifecycleState };
  /** The role's own readiness (broker reachable, a healthy backend...), checked on each `/readyz`. */
  readiness(): Promise<Readiness>;
  /** Runs before each `/metrics` scrape (e.g. reading queue depths into gauges). */
  refreshMetrics?(): Promise<void>;
  /** Further paths of this role (`/mcp` on the ingress, `/status` on the autoscaler). */
  routes?: Record<string, RouteHandler>;
  /**
   * Paths served by prefix, tried after `routes`: `'/v1/'` serves every path under it (the
   * OpenAI-compatible batch API on the ingress). Each prefix ends with `/`.
   */
  prefixRoutes?: Record<string, RouteHandler>;
  /** Appended to the 404 message, e.g. `the MCP endpoint is /mcp`. */
  notFoundHint?: string;
}

/**
 * The request handler of a role: `/healthz` (200 while the process serves), `/readyz` (200 when
 * running and ready, else 503; JSON body `{ status, state, ...readiness }`), `/metrics` (the
 * process's Prometheus registry, refreshed first), the role's own routes, and a JSON 404 for the rest.
 */
export function roleRoutes(options: RoleRoutesOptions): RouteHandler {
  const metrics = clusterMetrics();
  return async (req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const own = options.routes?.[path];
    if (own) return own(req, res);
    for (const [prefix, handler] of Object.entries(options.prefixRoutes ?? {})) {
      if (path.startsWith(prefix)) return handler(req, res);
    }
    switch (path) {
      case '/healthz':
        return sendJson(res, 200, { status: 'ok' });
      case '/readyz': {
        const { ready, ...details } = await options.readiness().catch(() => ({ ready: false }));
        const state = options.lifecycle.state;
        const ok = state === 'running' && ready;
        return sendJson(res, ok ? 200 : 503, { status: ok ? 'ready' : 'not ready', state, ...details });
      }
      case '/metrics': {
        try {
          await options.refreshMetrics?.();
          const text = await metrics.registry.metrics();
          res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text);
        } catch {
          res.writeHead(500).end();
        }
        return;
      }
      default: {
        const hint = options.notFoundHint ? `; ${options.notFoundHint}` : '';
        return sendJson(res, 404, { error: `no route ${path}${hint}` });
      }
    }
  };
}

/** Where and how a role's HTTP server listens. */
export interface ListenOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Named in the INVALID_CONFIG error of a busy port, e.g. `--port or worker.port`. */
  portSetting: string;
  /** Called when a handler throws: the request gets a JSON 500 if nothing was sent yet. */
  onError?(err: unknown): void;
  /** How long a client may take to send a request; absent: Node's defaults (60 s, 300 s). */
  receiveTimeouts?: ReceiveTimeouts;
}

/**
 * Bounds on receiving one request, in milliseconds (Node's `headersTimeout` and `requestTimeout`).
 * Past either the client gets 408 and its connection is closed. Node counts only the receiving:
 * once the request is complete, a response may stream for as long as it takes.
 */
export interface ReceiveTimeouts {
  /** From the request's first byte to the end of its headers. At most `requestMs`. */
  headersMs: number;
  /** From the request's first byte to the end of its body. */
  requestMs: number;
}

/** Longest pause between Node's checks of the timeouts: its default. */
const MAX_TIMEOUT_CHECK_MS = 30_000;
/** Shortest pause between them: each check walks the server's connections. */
const MIN_TIMEOUT_CHECK_MS = 50;

/**
 * Node's `http.createServer` options for `timeouts`. Node checks them on an interval (30 s by
 * default, whatever the timeouts); checking four times per shortest timeout cuts a client off at
 * most a quarter of that timeout late.
 */
function serverOptions(timeouts: ReceiveTimeouts | undefined): ServerOptions {
  if (!timeouts) return {};
  const interval = Math.floor(Math.min(timeouts.headersMs, timeouts.requestMs) / 4);
  return {
    headersTimeout: timeouts.headersMs,
    requestTimeout: timeouts.requestMs,
    connectionsCheckingInterval: Math.min(MAX_TIMEOUT_CHECK_MS, Math.max(MIN_TIMEOUT_CHECK_MS, interval)),
  };
}

/** A role's listening HTTP server. */
export interface RoleServer {
  readonly server: HttpServer;
  /** The bound port (the chosen one when `port` was 0). */
  readonly port: number;
  /** `http://host:port`, an IPv6 host in brackets. */
  readonly url: string;
  /** Stops listening and closes every connection, keep-alive ones included. */
  close(): Promise<void>;
}

/**
 * Listens with `handler` on `options.host:port`.
 * @throws ClusterError('INVALID_CONFIG') naming the address and the setting when the port is taken
 *   or not allowed.
 */
export async function listenRole(handler: RouteHandler, options: ListenOptions): Promise<RoleServer> {
  const server = createServer(serverOptions(options.receiveTimeouts), (req, res) => {
    Promise.resolve()
      .then(() => handler(req, res))
      .catch((err: unknown) => {
        options.onError?.(err);
        if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
        else res.end();
      });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        new ClusterError(
          'INVALID_CONFIG',
          `cannot listen on ${options.host}:${options.port} (${err.code ?? err.message}); choose another port with ${options.portSetting}`,
          { cause: err },
        ),
      );
    });
    server.listen(options.port, options.host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  return {
    server,
    port,
    url: `http://${host}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Listens with {@link roleRoutes}: the health, readiness and metrics server of a worker or autoscaler. */
export function startRoleServer(options: RoleRoutesOptions & ListenOptions): Promise<RoleServer> {
  return listenRole(roleRoutes(options), options);
}

/** Writes `body` as a JSON answer with `status` (and any extra `headers`), in one write. */
export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}
