import { randomBytes } from 'node:crypto';
import {
  createServer,
  type Server as HttpServer,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import {
  type Broker,
  buildCatalog,
  ClusterError,
  clusterMetrics,
  createLogger,
  type DeliveryServer,
  type LifecycleState,
  type ResolvedConfig,
  type Stoppable,
  startDeliveryServer,
} from '../core/index.js';
import { CallRegistry } from './call-registry.js';
import { sendJson } from './http-server.js';
import { createMcpEndpoint } from './mcp-endpoint.js';
import { cancelKeyOf } from './mcp-server.js';
import { SessionIds } from './session-id.js';
import { ToolValidator } from './tool-validator.js';

export { TIMING_META_KEY } from './call-registry.js';
export { SESSION_KEY_META_KEY, TIMEOUT_META_KEY } from './mcp-server.js';

/** A running ingress replica. */
export interface Ingress extends Stoppable {
  /** The MCP endpoint, e.g. `http://127.0.0.1:3000/mcp`. */
  readonly url: string;
  /** Port the HTTP server is bound to. */
  readonly port: number;
  /** `host:port` workers deliver this replica's chunks to. */
  readonly deliveryAddress: string;
}

/**
 * Starts one stateless ingress replica: MCP Streamable HTTP at `/mcp`, `/healthz`, `/readyz`,
 * `/metrics`, and the Delivery gRPC server workers answer on. `broker` is shared with other
 * roles in the same process (embedded mode) and is not closed by `shutdown()`.
 */
export async function startIngress(config: ResolvedConfig, broker: Broker): Promise<Ingress> {
  const log = createLogger('ingress');
  const metrics = clusterMetrics();
  const tools = buildCatalog(config.tools);
  const registry = new CallRegistry(broker.queue, log);
  let state: LifecycleState = 'starting';

  const delivery: DeliveryServer = await startDeliveryServer({
    host: config.ingress.deliveryHost,
    port: config.ingress.deliveryPort,
    onChunk: (chunk, link) => registry.onChunk(chunk, link),
    onLinkClosed: (link) => registry.onLinkClosed(link),
  });
  const deliveryAddress = config.ingress.deliveryAdvertise || delivery.address;

  if (!config.ingress.sessionSecret) {
    log.warn(
      'ingress.sessionSecret is empty: using a random secret, so session ids are valid on this replica only; set MCP_CLUSTER_SESSION_SECRET when running several replicas',
    );
  }
  const sessions = new SessionIds(config.ingress.sessionSecret || randomBytes(32).toString('hex'));
  const unsubscribeCancels = await broker.cancels.subscribe((order) => {
    registry.cancelByKey(cancelKeyOf(order.sessionId, order.requestId), order.reason, 'bus');
  });

  const mcp = createMcpEndpoint({
    tools,
    validator: new ToolValidator(tools),
    registry,
    replyTo: () => deliveryAddress,
    maxDeadlineMs: config.ingress.maxDeadlineMs,
    allowedHosts: config.ingress.allowedHosts,
    allowedOrigins: config.ingress.allowedOrigins,
    maxBodyBytes: config.ingress.maxBodyBytes,
    sessions,
    accepting: () => state === 'running',
    log,
    onCancelNotification: (sessionId, requestId, reason) => {
      // The call may be held by this replica or another; try here first, then tell the others.
      const requestIdJson = JSON.stringify(requestId);
      if (registry.cancelByKey(cancelKeyOf(sessionId, requestIdJson), reason, 'notification')) return;
      broker.cancels
        .publish({ sessionId, requestId: requestIdJson, reason })
        .catch((err: unknown) => log.warn('cancel broadcast failed', { err }));
    },
  });

  const route = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    switch (path) {
      case '/mcp':
        return mcp.serve(req, res);
      case '/healthz':
        return sendJson(res, 200, { status: 'ok' });
      case '/readyz': {
        const brokerReady = await broker.queue.ready().catch(() => false);
        const ready = state === 'running' && brokerReady;
        return sendJson(res, ready ? 200 : 503, {
          status: ready ? 'ready' : 'not ready',
          state,
          broker: brokerReady,
          delivery: deliveryAddress,
        });
      }
      case '/metrics':
        return serveMetrics(res, broker, [...new Set(tools.map((t) => t.pool))]);
      default:
        return sendJson(res, 404, { error: `no route ${path}; the MCP endpoint is /mcp` });
    }
  };
  const http: HttpServer = createServer((req, res) => {
    route(req, res).catch((err: unknown) => {
      log.error('request failed', { err });
      if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
    });
  });
  http.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    http.once('error', (err) => {
      reject(
        new ClusterError(
          'INVALID_CONFIG',
          `cannot listen on ${config.ingress.host}:${config.ingress.port} (${(err as NodeJS.ErrnoException).code ?? err.message}); choose another port with --port or ingress.port`,
          { cause: err },
        ),
      );
    });
    http.listen(config.ingress.port, config.ingress.host, () => resolve());
  });
  const address = http.address();
  const port = typeof address === 'object' && address ? address.port : config.ingress.port;
  state = 'running';
  const displayHost = config.ingress.host === '0.0.0.0' ? '127.0.0.1' : config.ingress.host;
  log.info('ingress listening', {
    url: `http://${displayHost}:${port}/mcp`,
    delivery: deliveryAddress,
    broker: broker.url,
  });

  return {
    url: `http://${displayHost}:${port}/mcp`,
    port,
    deliveryAddress,
    get state() {
      return state;
    },
    async shutdown() {
      if (state === 'draining' || state === 'stopped') return;
      state = 'draining';
      // Calls already waiting finish within the grace period; new requests get 503.
      const until = Date.now() + config.ingress.drainGraceMs;
      while (registry.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      registry.abortAll();
      unsubscribeCancels();
      await mcp.close();
      await new Promise<void>((resolve) => {
        http.close(() => resolve());
        http.closeAllConnections();
      });
      await delivery.close();
      metrics.ingressInFlight.set(0);
      state = 'stopped';
      log.info('ingress stopped');
    },
  };
}

async function serveMetrics(res: ServerResponse, broker: Broker, pools: string[]): Promise<void> {
  const metrics = clusterMetrics();
  await metrics.refreshQueueGauges(broker.queue, pools);
  const text = await metrics.registry.metrics();
  res.writeHead(200, { 'content-type': metrics.registry.contentType });
  res.end(text);
}
