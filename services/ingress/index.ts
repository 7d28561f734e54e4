import { randomBytes } from 'node:crypto';
import {
  type Broker,
  buildCatalog,
  clusterMetrics,
  createLogger,
  type DeliveryServer,
  type DeliveryTransport,
  Lifecycle,
  listenRole,
  type ResolvedConfig,
  roleRoutes,
  type Stoppable,
} from '../core/index.js';
import { CallRegistry } from './call-registry.js';
import { createMcpEndpoint } from './mcp-endpoint.js';
import { cancelKeyOf } from './mcp-server.js';
import { SessionIds } from './session-id.js';
import { ToolValidator } from './tool-validator.js';

export { TIMING_META_KEY } from './call-registry.js';
// The front door's parts, for a one-process MCP server built the same way (the benchmark's direct
// baseline) and for the suites that test them alone.
export type { FrontDoorOptions } from './http-server.js';
export { createMcpFrontDoor } from './http-server.js';
export { nestsDeeperThan } from './json-depth.js';
export { cancelKeyOf, requestScope, SESSION_KEY_META_KEY, TIMEOUT_META_KEY } from './mcp-server.js';
export { stampModernResult } from './result-json.js';
export { SessionIds } from './session-id.js';
export { ToolValidator } from './tool-validator.js';

/** A running ingress replica. */
export interface Ingress extends Stoppable {
  /** The MCP endpoint, e.g. `http://127.0.0.1:3000/mcp`. */
  readonly url: string;
  /** Port the HTTP server is bound to. */
  readonly port: number;
  /** The address workers deliver this replica's chunks to (`ToolCall.replyTo`). */
  readonly deliveryAddress: string;
}

/**
 * Starts one stateless ingress replica: MCP Streamable HTTP at `/mcp`, `/healthz`, `/readyz`,
 * `/metrics`, and the delivery server workers answer on, over `delivery` (in-process when the
 * workers share this process, gRPC otherwise). `broker` is shared with other roles in the same
 * process (embedded mode) and is not closed by `shutdown()`.
 */
export async function startIngress(
  config: ResolvedConfig,
  broker: Broker,
  delivery: DeliveryTransport,
): Promise<Ingress> {
  const log = createLogger('ingress');
  const metrics = clusterMetrics();
  const tools = buildCatalog(config.tools);
  const registry = new CallRegistry(broker.queue, log);
  const life = new Lifecycle();

  const deliveryServer: DeliveryServer = await delivery.serve({
    onChunk: (chunk, link) => registry.onChunk(chunk, link),
    onLinkClosed: (link) => registry.onLinkClosed(link),
  });
  const deliveryAddress = deliveryServer.address;

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
    maxJsonDepth: config.ingress.maxJsonDepth,
    sessions,
    accepting: () => life.running,
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

  const pools = [...new Set(tools.map((t) => t.pool))];
  const http = await listenRole(
    roleRoutes({
      lifecycle: life,
      readiness: async () => {
        const brokerReady = await broker.queue.ready().catch(() => false);
        return { ready: brokerReady, broker: brokerReady, delivery: deliveryAddress };
      },
      refreshMetrics: () => metrics.refreshQueueGauges(broker.queue, pools),
      routes: { '/mcp': (req, res) => mcp.serve(req, res) },
      notFoundHint: 'the MCP endpoint is /mcp',
    }),
    {
      host: config.ingress.host,
      port: config.ingress.port,
      portSetting: '--port or ingress.port',
      onError: (err) => log.error('request failed', { err }),
      receiveTimeouts: {
        headersMs: config.ingress.headersTimeoutMs,
        requestMs: config.ingress.requestTimeoutMs,
      },
    },
  );
  http.server.keepAliveTimeout = 65_000;
  const port = http.port;
  life.started();
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
      return life.state;
    },
    shutdown: () => life.shutdown({ drain, close }),
  };

  async function drain(): Promise<void> {
    // Calls already waiting finish within the grace period; new requests get 503.
    const until = Date.now() + config.ingress.drainGraceMs;
    while (registry.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    registry.abortAll();
  }

  async function close(): Promise<void> {
    unsubscribeCancels();
    await mcp.close();
    await http.close();
    await deliveryServer.close();
    metrics.ingressInFlight.set(0);
    log.info('ingress stopped');
  }
}
