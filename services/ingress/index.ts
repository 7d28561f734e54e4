import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  type Broker,
  buildCatalog,
  ClusterError,
  clusterMetrics,
  createLogger,
  type DeliveryServer,
  type DeliveryTransport,
  type JobStore,
  Lifecycle,
  listenRole,
  messagingTargetOf,
  type ParamHeader,
  paramHeadersOf,
  QUEUE_STATS_TIMEOUT_MS,
  type ResolvedConfig,
  roleRoutes,
  type Stoppable,
  sendJson,
  type ToolDefinition,
} from '../core/index.js';
import type { BatchJobs } from '../jobs/index.js';
import { startAdmission } from './admission/index.js';
import { createFrontDoorAuth } from './auth/index.js';
import { createBatchApi } from './batch-api.js';
import { CallRegistry } from './call-registry.js';
import { createCatalogServing } from './content-catalog.js';
import { createFileResources } from './file-resources.js';
import { ClientRequests } from './input-required.js';
import { createMcpEndpoint } from './mcp-endpoint.js';
import { cancelKeyOf } from './mcp-server.js';
import { RequestStates } from './request-state.js';
import { ResultLinks } from './result-links.js';
import { SessionIds } from './session-id.js';
import { createStatusRoutes, StatusSource } from './status/index.js';
import { createMcpTasks } from './tasks.js';
import { ToolValidator } from './tool-validator.js';

export type { IngressAdmission } from './admission/index.js';
export {
  Admission,
  COST_ESTIMATORS,
  costEstimatorOf,
  DEFAULT_FAIR_QUEUE_SIZE,
  ENTRY_TTL_MS,
  fairQueueSizes,
  SPARSE_BURST_CALLS,
  startAdmission,
  startSharePublisher,
  TokenBucket,
} from './admission/index.js';
export type { ApiKeyEntry, CallerIdentity, FrontDoorAuth, NewApiKey } from './auth/index.js';
export { createApiKey, createFrontDoorAuth, isLoopback, keysFileEntry, parseKeysFile } from './auth/index.js';
export type { BatchApiOptions } from './batch-api.js';
export { createBatchApi } from './batch-api.js';
export { TIMING_META_KEY } from './call-registry.js';
// The front door's parts, for a one-process MCP server built the same way (the benchmark's direct
// baseline) and for the suites that test them alone.
export type { FrontDoorOptions } from './http-server.js';
export { createMcpFrontDoor } from './http-server.js';
export { nestsDeeperThan } from './json-depth.js';
export { cancelKeyOf, requestScope, SESSION_KEY_META_KEY, TIMEOUT_META_KEY } from './mcp-server.js';
export { batchObject } from './openai-objects.js';
export { stampModernResult } from './result-json.js';
export { RESULT_URI_PREFIX, ResultLinks } from './result-links.js';
export { SessionIds } from './session-id.js';
export type { AutoscalerView, BackendView, StatusSnapshot, WorkerView } from './status/index.js';
// The status page's figure arithmetic, for the suite that tests it alone.
export { quantileMs, TOOL_WINDOW_MS, ToolWindow } from './status/index.js';
export { ToolValidator } from './tool-validator.js';

/** What an ingress serves beyond the tool calls of its catalog. */
export interface IngressOptions {
  /**
   * The batch engine (`createBatchJobs`), shared with nothing else in the replica; closed by the
   * composition root. Without it the replica serves no batch jobs.
   */
  jobs?: BatchJobs;
  /**
   * The job store on the broker, where large result media are kept when `ingress.resultLinks` is
   * on (see `ResultLinks`); absent: every item inline.
   */
  results?: JobStore;
}

/** A running ingress replica. */
export interface Ingress extends Stoppable {
  /** The MCP endpoint, e.g. `http://127.0.0.1:3000/mcp`. */
  readonly url: string;
  /** Port the HTTP server is bound to. */
  readonly port: number;
  /** The address workers deliver this replica's chunks to (`ToolCall.replyTo`). */
  readonly deliveryAddress: string;
  /**
   * Re-reads what can change without a restart (the API keys file); the ingress command calls it
   * on SIGHUP. False when the file was refused and the keys read before stay in force.
   */
  reloadCredentials(): boolean;
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
  options: IngressOptions = {},
): Promise<Ingress> {
  const log = createLogger('ingress');
  const metrics = clusterMetrics();
  const tools = buildCatalog(config.tools);
  // `embed_batch` and the MCP task methods, when the replica serves batch jobs and the cluster
  // has an embed tool; its scope challenges are those of the default pool's embed tool.
  const tasks = options.jobs
    ? createMcpTasks({
        jobs: options.jobs,
        tools,
        defaultPool: config.batch.pool,
        retentionMs: config.batch.retentionHours * 3_600_000,
        maxDeadlineMs: config.ingress.maxDeadlineMs,
        allows: (tool, scopes) => !auth.enforced || auth.allows(tool, scopes),
        log,
      })
    : undefined;
  // First, so that a configuration that must not serve (no auth on a public address, an
  // unreadable keys file) stops the replica before it listens.
  const auth = createFrontDoorAuth(config, tasks?.tool ? [...tools, tasks.tool] : tools, log);
  const registry = new CallRegistry(broker.queue, log, messagingTargetOf(broker.url, config.namespace));
  const life = new Lifecycle();
  // The tenant label is bounded in every mode: without auth the tenant is a header anyone writes.
  const tenantLabel = tenantLabelOf([...config.auth.tenants, ...Object.keys(config.tenants)]);
  const admission = startAdmission({
    config,
    tools,
    // Shared by every replica on the broker (JetStream KV, a Redis hash, in-process for memory:).
    ledger: broker.shares,
    tenantLabel,
    log,
  });

  const deliveryServer: DeliveryServer = await delivery.serve({
    onChunk: (chunk, link) => registry.onChunk(chunk, link),
    onLinkClosed: (link) => registry.onLinkClosed(link),
  });
  const deliveryAddress = deliveryServer.address;

  if (!config.ingress.sessionSecret) {
    log.warn(
      'ingress.sessionSecret is empty: using a random secret, so session ids and the requestState of calls that ask for input are valid on this replica only; set MCP_CLUSTER_SESSION_SECRET when running several replicas',
    );
  }
  const secret = config.ingress.sessionSecret || randomBytes(32).toString('hex');
  const sessions = new SessionIds(secret);
  // Signed with a key derived from the same secret: a call that asks for input continues at any replica.
  const requestStates = new RequestStates(secret);
  const clientRequests = new ClientRequests();
  const { minSizeBytes, ttlMs } = config.ingress.resultLinks;
  const resultLinks =
    options.results && minSizeBytes > 0
      ? new ResultLinks(options.results, minSizeBytes, ttlMs, log.child({ component: 'result-links' }))
      : undefined;
  resultLinks?.start();
  const unsubscribeCancels = await broker.cancels.subscribe((order) => {
    if (order.answer !== undefined) clientRequests.answer(order.sessionId, order.requestId, order.answer);
    else registry.cancelByKey(cancelKeyOf(order.sessionId, order.requestId), order.reason, 'bus');
  });
  // A broker that lost its data (Redis restarted without persistence) lost the calls queued in
  // it: their callers get a retryable error now rather than a timeout at their deadline.
  const unwatchDataLoss = broker.queue.onDataLost?.((event) => {
    const failed = registry.failQueued(event.reason);
    log.warn('the broker lost its queued calls; failed the waiting ones with a retryable error', {
      broker: event.url,
      reason: event.reason,
      calls: failed,
    });
  });

  const mcp = createMcpEndpoint({
    tools,
    paramHeaders: paramHeadersByTool(tools),
    validator: new ToolValidator(tools),
    registry,
    replyTo: () => deliveryAddress,
    maxDeadlineMs: config.ingress.maxDeadlineMs,
    auth,
    tenantLabel,
    admission,
    // Batch files and linked result media are resources too, read from the job store by any replica.
    catalog: createCatalogServing(config, [
      ...(options.jobs ? [createFileResources(options.jobs)] : []),
      ...(resultLinks ? [resultLinks.source] : []),
    ]),
    ...(resultLinks ? { resultLinks } : {}),
    ...(auth.enforced ? { allows: auth.allows, audit: log.child({ audit: true }) } : {}),
    ...(tasks ? { tasks } : {}),
    allowedHosts: config.ingress.allowedHosts,
    allowedOrigins: config.ingress.allowedOrigins,
    maxBodyBytes: config.ingress.maxBodyBytes,
    maxJsonDepth: config.ingress.maxJsonDepth,
    sessions,
    requestStates,
    accepting: () => life.running,
    log,
    clientRequests,
    onClientAnswer: (sessionId, requestIdJson, answer) => {
      // The request that asked may wait at this replica or another; try here first, then tell the others.
      if (clientRequests.answer(sessionId, requestIdJson, answer)) return;
      broker.cancels
        .publish({ sessionId, requestId: requestIdJson, reason: 'answer', answer })
        .catch((err: unknown) => log.warn('client answer broadcast failed', { err }));
    },
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
  // Figures are gathered when the status page asks, never on the call path.
  const statusPage = config.ingress.statusPage.enabled
    ? createStatusRoutes({
        source: new StatusSource(
          {
            queue: broker.queue,
            metrics,
            pools,
            tools: tasks?.tool ? [...tools, tasks.tool].map((t) => t.name) : tools.map((t) => t.name),
            tenants: () => admission.state.overview(),
            jobs: options.jobs,
            // Every worker and autoscaler of the cluster publishes its status there.
            roles: broker.roles,
            statsTimeoutMs: QUEUE_STATS_TIMEOUT_MS,
          },
          config.ingress.statusPage.refreshIntervalMs,
        ),
        auth,
        scope: config.ingress.statusPage.scope,
        allowedHosts: config.ingress.allowedHosts,
        log,
      })
    : undefined;
  const http = await listenRole(
    roleRoutes({
      lifecycle: life,
      readiness: async () => {
        const brokerReady = await broker.queue.ready().catch(() => false);
        return { ready: brokerReady, broker: brokerReady, delivery: deliveryAddress };
      },
      refreshMetrics: () => metrics.refreshQueueGauges(broker.queue, pools),
      routes: {
        '/mcp': (req, res) => mcp.serve(req, res),
        ...(statusPage ? { '/status': statusPage } : {}),
        ...Object.fromEntries(auth.routes.map((route) => [route.path, metadataRoute(route.body)])),
      },
      // The OpenAI-compatible Files and Batch API subset, behind the same authentication.
      prefixRoutes: {
        ...(statusPage ? { '/status/': statusPage } : {}),
        ...(options.jobs
          ? {
              '/v1/': createBatchApi({
                jobs: options.jobs,
                auth,
                maxUploadBytes: config.batch.maxInputBytes,
                tools,
                defaultPool: config.batch.pool,
                allowedHosts: config.ingress.allowedHosts,
                allowedOrigins: config.ingress.allowedOrigins,
                accepting: () => life.running,
                log,
              }),
            }
          : {}),
      },
      notFoundHint: options.jobs
        ? 'the MCP endpoint is /mcp, the batch API is under /v1/'
        : 'the MCP endpoint is /mcp',
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
    batchJobs: options.jobs !== undefined,
  });

  return {
    url: `http://${displayHost}:${port}/mcp`,
    port,
    deliveryAddress,
    get state() {
      return life.state;
    },
    reloadCredentials: () => auth.reload(),
    shutdown: () => life.shutdown({ drain, close }),
  };

  async function drain(): Promise<void> {
    // Calls already waiting finish within the grace period; new requests get 503.
    const until = Date.now() + config.ingress.drainGraceMs;
    while (registry.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    registry.abortAll();
  }

  async function close(): Promise<void> {
    await admission.stop();
    unsubscribeCancels();
    resultLinks?.stop();
    unwatchDataLoss?.();
    auth.close();
    await mcp.close();
    await http.close();
    await deliveryServer.close();
    metrics.ingressInFlight.set(0);
    log.info('ingress stopped');
  }
}

/**
 * Tenants as metric labels: `default` and those named in `auth.tenants` or under `tenants` as
 * themselves, every other as `other`.
 */
function tenantLabelOf(named: readonly string[]): (tenant: string) => string {
  const known = new Set(['default', ...named]);
  return (tenant) => (known.has(tenant) ? tenant : 'other');
}

/**
 * Serves an RFC 9728 metadata document: GET and HEAD, readable from any origin (browser-based
 * MCP clients discover the authorization server from it).
 */
function metadataRoute(body: unknown): (req: IncomingMessage, res: ServerResponse) => void {
  const json = JSON.stringify(body);
  return (req, res) => {
    const cors = { 'access-control-allow-origin': '*', 'access-control-allow-methods': 'GET, HEAD, OPTIONS' };
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { ...cors, 'access-control-allow-headers': '*' }).end();
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendJson(
        res,
        405,
        { error: 'method_not_allowed', error_description: 'use GET' },
        { allow: 'GET, HEAD, OPTIONS' },
      );
      return;
    }
    res.writeHead(200, {
      ...cors,
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(json),
    });
    res.end(req.method === 'HEAD' ? undefined : json);
  };
}

/**
 * The `x-mcp-header` declarations of each tool that has any (a config schema was checked at load;
 * a template's is checked here, so a bad one stops the ingress at start).
 */
function paramHeadersByTool(tools: readonly ToolDefinition[]): Map<string, ParamHeader[]> {
  const byTool = new Map<string, ParamHeader[]>();
  for (const tool of tools) {
    const declared = paramHeadersOf(tool.inputSchema);
    if (typeof declared === 'string')
      throw new ClusterError('INVALID_CONFIG', `tool ${tool.name}: its input schema's ${declared}`);
    if (declared.length > 0) byTool.set(tool.name, declared);
  }
  return byTool;
}
