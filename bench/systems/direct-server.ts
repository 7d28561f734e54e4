import { randomBytes } from 'node:crypto';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  type CallToolResult,
  createMcpHandler,
  ProtocolError,
  ProtocolErrorCode,
  Server,
} from '@modelcontextprotocol/server';
import {
  buildCatalog,
  ClusterError,
  createLogger,
  sendJson,
  toToolErrorResult,
} from '../../services/core/index.js';
import {
  cancelKeyOf,
  createFrontDoorAuth,
  createMcpFrontDoor,
  requestScope,
  SESSION_KEY_META_KEY,
  SessionIds,
  ToolValidator,
} from '../../services/ingress/index.js';
import { benchConfig } from './config.js';
import { isMain, serveFromArgs } from './entry.js';
import { type LocalTools, localTools } from './local-tools.js';

// The `direct` system: one process, the MCP TypeScript SDK v2's stateless handler with legacy
// support behind the same HTTP front door as the cluster's ingress (Host/Origin checks, body
// limit, signed 2025 session ids, 2025 cancels), the same catalog and argument validation, and
// tools that call the backend themselves with the workers' adapters. What it lacks against the
// cluster is exactly the distribution: no queue, no worker process, no delivery stream.
//
//   node dist/bench/systems/direct-server.js --port 0 --backend http://127.0.0.1:8000
//
// prints one JSON line `{"role":"direct","url":"http://127.0.0.1:<port>/mcp","pid":N}` once it
// listens, and exits on SIGTERM/SIGINT (and, with --exit-with-stdin, when its stdin closes).

/** A running direct server. */
export interface DirectServer {
  readonly url: string;
  close(): Promise<void>;
}

/** Starts the direct server on `host:port` (0: a free port) against `backendUrl`. */
export async function startDirectServer(options: {
  backendUrl: string;
  port?: number;
  host?: string;
}): Promise<DirectServer> {
  const host = options.host ?? '127.0.0.1';
  const config = benchConfig({ backendUrl: options.backendUrl });
  const tools = localTools(config);
  const log = createLogger('direct');
  const cancels = new Map<string, AbortController>();

  const handler = createMcpHandler(serverFactory(tools, cancels), {
    legacy: 'stateless',
    maxRequestBodySize: config.ingress.maxBodyBytes,
    onerror: (err) => log.debug('mcp handler error', { err }),
  });
  const mcp = createMcpFrontDoor({
    allowedHosts: config.ingress.allowedHosts,
    allowedOrigins: config.ingress.allowedOrigins,
    maxBodyBytes: config.ingress.maxBodyBytes,
    maxJsonDepth: config.ingress.maxJsonDepth,
    sessions: new SessionIds(randomBytes(16).toString('hex')),
    // Mode none, as the cluster it is compared with runs in the benchmark.
    auth: createFrontDoorAuth(config, buildCatalog(config.tools), log),
    handler,
    accepting: () => true,
    log,
    onCancelNotification: (sessionId, requestId, reason) => {
      cancels.get(cancelKeyOf(sessionId, JSON.stringify(requestId)))?.abort(reason);
    },
  });
  const http: HttpServer = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/mcp') {
      sendJson(res, path === '/healthz' ? 200 : 404, { status: path === '/healthz' ? 'ok' : 'no route' });
      return;
    }
    mcp(req, res).catch((err: unknown) => {
      log.error('request failed', { err });
      if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
    });
  });
  http.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(options.port ?? 0, host, () => resolve());
  });
  const port = (http.address() as AddressInfo).port;
  return {
    url: `http://${host}:${port}/mcp`,
    async close() {
      await handler.close();
      await new Promise<void>((resolve) => {
        http.close(() => resolve());
        http.closeAllConnections();
      });
    },
  };
}

/** The per-request MCP server: the catalog, validation, and the call run right here. */
function serverFactory(tools: LocalTools, cancels: Map<string, AbortController>): () => Server {
  const validator = new ToolValidator(tools.definitions);
  const listing = {
    tools: tools.definitions.map((t) => ({
      name: t.name,
      description: t.description,
      inputSchema: t.inputSchema,
      ...(t.outputSchema ? { outputSchema: t.outputSchema } : {}),
    })),
  };
  const names = tools.definitions.map((t) => t.name);
  return () => {
    const server = new Server(
      { name: 'bench-direct', version: '0.1.0' },
      { capabilities: { tools: { listChanged: false } } },
    );
    server.setRequestHandler('tools/list', () => listing as never);
    server.setRequestHandler('tools/call', async (request, ctx) => {
      const name = request.params.name;
      if (!tools.config(name)) {
        throw new ProtocolError(
          ProtocolErrorCode.InvalidParams,
          `unknown tool "${name}"; this server serves ${names.join(', ')}`,
        );
      }
      const args = { ...(request.params.arguments ?? {}) } as Record<string, unknown>;
      const problem = validator.check(name, args);
      if (problem) return toToolErrorResult(new ClusterError('INVALID_ARGUMENTS', problem)) as CallToolResult;

      const scope = requestScope.getStore();
      const meta = (ctx.mcpReq._meta ?? {}) as Record<string, unknown>;
      const progressToken = meta.progressToken as string | number | undefined;
      const cancel = new AbortController();
      const cancelKey = scope?.sessionId
        ? cancelKeyOf(scope.sessionId, JSON.stringify(ctx.mcpReq.id))
        : undefined;
      if (cancelKey) cancels.set(cancelKey, cancel);
      const signals = [cancel.signal, ctx.mcpReq.signal, ...(scope ? [scope.signal] : [])];
      const fromMeta = meta[SESSION_KEY_META_KEY];
      try {
        return (await tools.run(name, args, {
          signal: AbortSignal.any(signals),
          sessionKey:
            typeof fromMeta === 'string' && fromMeta !== ''
              ? fromMeta.slice(0, 256)
              : (scope?.sessionKeyHeader ?? scope?.sessionId ?? ''),
          ...(progressToken !== undefined
            ? {
                onProgress: (p) => {
                  ctx.mcpReq
                    .notify({ method: 'notifications/progress', params: { progressToken, ...p } })
                    .catch(() => undefined);
                },
              }
            : {}),
        })) as CallToolResult;
      } finally {
        if (cancelKey && cancels.get(cancelKey) === cancel) cancels.delete(cancelKey);
      }
    });
    return server;
  };
}

if (isMain(import.meta.url)) serveFromArgs('direct', startDirectServer);
