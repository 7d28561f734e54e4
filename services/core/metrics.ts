import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { LIFECYCLE_STATES, type LifecycleState } from './lifecycle.js';
import type { CallQueue } from './queue/call-queue.js';

/**
 * Every Prometheus metric mcp-cluster exports, on one registry per process (the embedded mode
 * runs ingress and workers in one process, so they share it). Names follow
 * `mcp_cluster_<component>_<what>_<unit>`; labels are bounded: pool, tool, priority, outcome,
 * reason, backend (an endpoint index, not a URL), tenant (those named in `auth.tenants`, the rest
 * as `other`).
 */
export interface ClusterMetrics {
  readonly registry: Registry;
  /**
   * Calls answered by the ingress, by tool, outcome (ok, tool_error, timeout, cancelled, rejected,
   * input_required) and tenant (bounded: see `tenantLabel`).
   */
  ingressCalls: Counter<'tool' | 'outcome' | 'tenant'>;
  /** Wall time from request arrival to answer at the ingress, in seconds. */
  callDuration: Histogram<'tool' | 'outcome'>;
  /** Calls this ingress replica is waiting on. */
  ingressInFlight: Gauge;
  /** HTTP requests refused before reaching the MCP layer (host, origin, body_size, parse, method). */
  ingressRejected: Counter<'reason'>;
  /**
   * Requests refused by authentication, by reason (missing, malformed, expired, not_yet_valid,
   * issuer, audience, signature, algorithm, tenant, unknown_key, scope, keys_unavailable, session).
   */
  authFailures: Counter<'reason'>;
  /** Cancels handled, by how they arrived (disconnect, notification, bus, deadline). */
  ingressCancels: Counter<'source'>;
  /** Calls finished by workers, by pool, tool and outcome. */
  workerCalls: Counter<'pool' | 'tool' | 'outcome'>;
  /** Calls dropped because their deadline passed before dispatch; never run. */
  workerShed: Counter<'pool' | 'priority'>;
  /** Calls whose owning ingress could not be reached; stopped and acked. */
  workerUndeliverable: Counter<'pool'>;
  /** Deliveries with attempt > 1 (the call ran before, on a worker that died or gave it back). */
  workerRedelivered: Counter<'pool' | 'priority'>;
  /** Calls put on the queue by this ingress replica (de-duplicated re-enqueues not counted). */
  queueEnqueued: Counter<'pool' | 'priority'>;
  /** Deliveries taken off the queue by this worker (a redelivery counts again). */
  queueDequeued: Counter<'pool' | 'priority'>;
  /** Calls moved to the dead-letter set after `maxDeliveries` or an undecodable envelope. */
  queueDeadLettered: Counter<'pool' | 'priority'>;
  /**
   * Where a call's time went, per phase (queue, batch, backend, delivery), in seconds; recorded by the
   * ingress from the timing the worker sends with the final chunk.
   */
  callPhase: Histogram<'tool' | 'phase'>;
  /** Calls merged into one backend request (embeddings micro-batches). */
  batchSize: Histogram<'pool' | 'tool'>;
  /** Circuit breaker of one endpoint: 0 closed, 1 half-open, 2 open. */
  backendBreaker: Gauge<'pool' | 'backend'>;
  /**
   * Worker replicas by lifecycle state (starting, running, draining, stopped): each worker sets 1 on its
   * own state and 0 on the others, so a sum over processes counts replicas per state.
   */
  workerReplicas: Gauge<'pool' | 'state'>;
  /** Replicas the autoscaler wants for a pool (the `metrics` provider's output for an external scaler). */
  autoscalerDesired: Gauge<'pool'>;
  /** Replicas the pool is set to, as the autoscaler's provider reports them. */
  autoscalerCurrent: Gauge<'pool'>;
  /** Decisions that changed a pool's replicas, by direction and reason (see `ScalingReason`). */
  autoscalerScaled: Counter<'pool' | 'direction' | 'reason'>;
  /** Time a call waited in the queue before a worker took it, in seconds. */
  queueWait: Histogram<'pool'>;
  /** Time spent in the backend request, in seconds. */
  backendDuration: Histogram<'pool' | 'tool'>;
  /**
   * Sum of the squares of the backend times of `backendDuration`, in s². With its `_sum` and `_count`
   * it gives the variance of the service time, which `mcp-cluster plan` reads for its M/G/c model (a
   * histogram's buckets are too coarse for it).
   */
  backendDurationSquared: Counter<'pool' | 'tool'>;
  /** Requests running on one backend endpoint. */
  backendInFlight: Gauge<'pool' | 'backend'>;
  /** 1 when the endpoint's health probe passes, else 0. */
  backendHealthy: Gauge<'pool' | 'backend'>;
  /** Calls held by this worker (delivered by the queue, not yet settled). */
  workerInFlight: Gauge<'pool'>;
  /** Open delivery streams (on a worker: to ingress replicas; on an ingress: from workers). */
  deliveryStreams: Gauge<'side'>;
  /**
   * Per-tenant admission at the ingress (issue 13, fair share). The tenant label is bounded like
   * `ingressCalls`: `default`, the tenants of `auth.tenants` and of the `tenants` config, else `other`.
   * Calls admitted by the tenant's limits (queued at once, or held at the ingress for its fair-queue quota).
   */
  tenantAdmitted: Counter<'pool' | 'tenant'>;
  /** Calls refused before anything was queued, by reason: rate, concurrency (429), overloaded (503). */
  tenantRejected: Counter<'pool' | 'tenant' | 'reason'>;
  /** Time from enqueue, or from being held at the ingress, to a worker taking the call, in seconds. */
  tenantQueueWait: Histogram<'pool' | 'tenant'>;
  /**
   * Estimated cost of answered calls, in the pool's cost units (inference: tokens, embeddings: texts,
   * diffusion: steps x pixels); shares of its rate are the tenants' served shares.
   */
  tenantCostServed: Counter<'pool' | 'tenant'>;
  /** Calls this ingress replica holds for their tenant's fair-queue quota (not yet queued). */
  tenantHeldCalls: Gauge<'pool' | 'tenant'>;
  /**
   * Failed publishes and reads of the shares ledger (`Broker.shares`), counted by the ingress loop that
   * publishes and reads it; meanwhile the replica enforces limits on its local figures.
   */
  shareLedgerErrors: Counter;
  /** Queue figures, refreshed at scrape time by the processes that hold a queue. */
  queueDepth: Gauge<'pool' | 'priority'>;
  queueInFlight: Gauge<'pool' | 'priority'>;
  queueOldestAge: Gauge<'pool' | 'priority'>;
  /**
   * Sets `queueDepth`, `queueInFlight` and `queueOldestAge` of `pools` from `queue.stats`; a
   * `/metrics` handler calls it before reading the registry. A pool whose figures the broker does
   * not give within {@link QUEUE_STATS_TIMEOUT_MS} keeps its previous values, so a broker outage
   * slows no scrape down.
   */
  refreshQueueGauges(queue: Pick<CallQueue, 'stats'>, pools: readonly string[]): Promise<void>;
  /**
   * Moves one worker of `pool` from lifecycle state `from` (undefined for a new worker) to `to` in
   * `workerReplicas`: a count per state, so several workers of a pool in one process (`up
   * --autoscale`) add up. Every state of the pool is exported, at 0 when no worker is in it.
   */
  moveWorkerState(pool: string, from: LifecycleState | undefined, to: LifecycleState): void;
}

/** How long a scrape waits for one pool's queue figures, in milliseconds. */
export const QUEUE_STATS_TIMEOUT_MS = 2_000;

let shared: ClusterMetrics | undefined;

/** The process's metrics, created on first use with Node's default process metrics. */
export function clusterMetrics(): ClusterMetrics {
  if (shared) return shared;
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'mcp_cluster_process_' });
  const registers = [registry];
  const latency = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
  ];
  const metrics: ClusterMetrics = {
    registry,
    ingressCalls: new Counter({
      name: 'mcp_cluster_ingress_calls_total',
      help: 'Calls answered by the ingress.',
      labelNames: ['tool', 'outcome', 'tenant'],
      registers,
    }),
    callDuration: new Histogram({
      name: 'mcp_cluster_call_duration_seconds',
      help: 'Call time at the ingress, arrival to answer.',
      labelNames: ['tool', 'outcome'],
      buckets: latency,
      registers,
    }),
    ingressInFlight: new Gauge({
      name: 'mcp_cluster_ingress_inflight_calls',
      help: 'Calls this ingress replica waits on.',
      registers,
    }),
    authFailures: new Counter({
      name: 'mcp_cluster_auth_failures_total',
      help: 'Requests refused by authentication, by reason.',
      labelNames: ['reason'],
      registers,
    }),
    ingressRejected: new Counter({
      name: 'mcp_cluster_ingress_rejected_total',
      help: 'HTTP requests refused before the MCP layer.',
      labelNames: ['reason'],
      registers,
    }),
    ingressCancels: new Counter({
      name: 'mcp_cluster_ingress_cancels_total',
      help: 'Cancels handled by the ingress.',
      labelNames: ['source'],
      registers,
    }),
    workerCalls: new Counter({
      name: 'mcp_cluster_worker_calls_total',
      help: 'Calls finished by workers.',
      labelNames: ['pool', 'tool', 'outcome'],
      registers,
    }),
    workerShed: new Counter({
      name: 'mcp_cluster_worker_shed_total',
      help: 'Calls dropped unrun because their deadline passed before dispatch.',
      labelNames: ['pool', 'priority'],
      registers,
    }),
    workerUndeliverable: new Counter({
      name: 'mcp_cluster_worker_undeliverable_total',
      help: 'Calls whose owning ingress replica could not be reached.',
      labelNames: ['pool'],
      registers,
    }),
    workerRedelivered: new Counter({
      name: 'mcp_cluster_worker_redelivered_total',
      help: 'Calls delivered more than once.',
      labelNames: ['pool', 'priority'],
      registers,
    }),
    queueEnqueued: new Counter({
      name: 'mcp_cluster_queue_enqueued_total',
      help: 'Calls put on the queue.',
      labelNames: ['pool', 'priority'],
      registers,
    }),
    queueDequeued: new Counter({
      name: 'mcp_cluster_queue_dequeued_total',
      help: 'Deliveries taken off the queue by workers.',
      labelNames: ['pool', 'priority'],
      registers,
    }),
    queueDeadLettered: new Counter({
      name: 'mcp_cluster_queue_dead_lettered_total',
      help: 'Calls moved to the dead-letter set.',
      labelNames: ['pool', 'priority'],
      registers,
    }),
    callPhase: new Histogram({
      name: 'mcp_cluster_call_phase_seconds',
      help: 'Time of one call spent in each phase: queue, batch, backend, delivery.',
      labelNames: ['tool', 'phase'],
      buckets: latency,
      registers,
    }),
    batchSize: new Histogram({
      name: 'mcp_cluster_batch_size_calls',
      help: 'Calls merged into one backend request.',
      labelNames: ['pool', 'tool'],
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
      registers,
    }),
    backendBreaker: new Gauge({
      name: 'mcp_cluster_backend_breaker_state',
      help: 'Circuit breaker of an endpoint: 0 closed, 1 half-open, 2 open.',
      labelNames: ['pool', 'backend'],
      registers,
    }),
    workerReplicas: new Gauge({
      name: 'mcp_cluster_worker_replicas',
      help: 'Worker replicas by lifecycle state (1 on this process state).',
      labelNames: ['pool', 'state'],
      registers,
    }),
    autoscalerDesired: new Gauge({
      name: 'mcp_cluster_autoscaler_desired_replicas',
      help: 'Replicas the autoscaler wants for a pool.',
      labelNames: ['pool'],
      registers,
    }),
    autoscalerCurrent: new Gauge({
      name: 'mcp_cluster_autoscaler_current_replicas',
      help: 'Replicas a pool is set to, as the scaling provider reports.',
      labelNames: ['pool'],
      registers,
    }),
    autoscalerScaled: new Counter({
      name: 'mcp_cluster_autoscaler_scaled_total',
      help: 'Autoscaler decisions that changed replicas.',
      labelNames: ['pool', 'direction', 'reason'],
      registers,
    }),
    queueWait: new Histogram({
      name: 'mcp_cluster_queue_wait_seconds',
      help: 'Time from enqueue to a worker taking the call.',
      labelNames: ['pool'],
      buckets: latency,
      registers,
    }),
    backendDuration: new Histogram({
      name: 'mcp_cluster_backend_duration_seconds',
      help: 'Time spent in the backend request.',
      labelNames: ['pool', 'tool'],
      buckets: latency,
      registers,
    }),
    backendDurationSquared: new Counter({
      name: 'mcp_cluster_backend_duration_squared_seconds_total',
      help: 'Sum of squared backend request times, s² (the service-time variance, with mcp_cluster_backend_duration_seconds).',
      labelNames: ['pool', 'tool'],
      registers,
    }),
    backendInFlight: new Gauge({
      name: 'mcp_cluster_backend_inflight_requests',
      help: 'Requests running on a backend endpoint.',
      labelNames: ['pool', 'backend'],
      registers,
    }),
    backendHealthy: new Gauge({
      name: 'mcp_cluster_backend_healthy',
      help: '1 when the endpoint passes its health probe.',
      labelNames: ['pool', 'backend'],
      registers,
    }),
    workerInFlight: new Gauge({
      name: 'mcp_cluster_worker_inflight_calls',
      help: 'Calls held by this worker.',
      labelNames: ['pool'],
      registers,
    }),
    deliveryStreams: new Gauge({
      name: 'mcp_cluster_delivery_streams',
      help: 'Open delivery streams.',
      labelNames: ['side'],
      registers,
    }),
    tenantAdmitted: new Counter({
      name: 'mcp_cluster_tenant_admitted_total',
      help: 'Calls admitted by the per-tenant limits at the ingress (queued, or held for the fair-queue quota).',
      labelNames: ['pool', 'tenant'],
      registers,
    }),
    tenantRejected: new Counter({
      name: 'mcp_cluster_tenant_rejected_total',
      help: 'Calls refused at the ingress before queueing, by reason: rate, concurrency, overloaded.',
      labelNames: ['pool', 'tenant', 'reason'],
      registers,
    }),
    tenantQueueWait: new Histogram({
      name: 'mcp_cluster_tenant_queue_wait_seconds',
      help: 'Time from enqueue (or hold at the ingress) to a worker taking the call, in seconds.',
      labelNames: ['pool', 'tenant'],
      buckets: latency,
      registers,
    }),
    tenantCostServed: new Counter({
      name: 'mcp_cluster_tenant_cost_served_total',
      help: 'Estimated cost of answered calls, in cost units (inference tokens, embedding texts, diffusion steps x pixels).',
      labelNames: ['pool', 'tenant'],
      registers,
    }),
    tenantHeldCalls: new Gauge({
      name: 'mcp_cluster_tenant_held_calls',
      help: 'Calls held at this ingress replica for their tenant fair-queue quota, in calls.',
      labelNames: ['pool', 'tenant'],
      registers,
    }),
    shareLedgerErrors: new Counter({
      name: 'mcp_cluster_share_ledger_errors_total',
      help: 'Failed publishes and reads of the shares ledger; limits then use local figures.',
      registers,
    }),
    queueDepth: new Gauge({
      name: 'mcp_cluster_queue_depth',
      help: 'Calls waiting in the queue.',
      labelNames: ['pool', 'priority'],
      registers,
    }),
    queueInFlight: new Gauge({
      name: 'mcp_cluster_queue_inflight',
      help: 'Calls delivered to workers and not yet settled.',
      labelNames: ['pool', 'priority'],
      registers,
    }),
    queueOldestAge: new Gauge({
      name: 'mcp_cluster_queue_oldest_age_seconds',
      help: 'Age of the oldest waiting call.',
      labelNames: ['pool', 'priority'],
      registers,
    }),
    async refreshQueueGauges(queue, pools) {
      await Promise.all(
        pools.map(async (pool) => {
          for (const s of await statsWithin(queue, pool, QUEUE_STATS_TIMEOUT_MS)) {
            const labels = { pool, priority: s.priority };
            metrics.queueDepth.set(labels, s.depth);
            metrics.queueInFlight.set(labels, s.inFlight);
            metrics.queueOldestAge.set(labels, s.oldestAgeMs / 1000);
          }
        }),
      );
    },
    moveWorkerState(pool, from, to) {
      for (const s of LIFECYCLE_STATES) metrics.workerReplicas.inc({ pool, state: s }, 0);
      if (from !== undefined) metrics.workerReplicas.dec({ pool, state: from });
      metrics.workerReplicas.inc({ pool, state: to });
    },
  };
  shared = metrics;
  return metrics;
}

/** A pool's queue figures, or none when the broker fails or is slower than `timeoutMs`. */
async function statsWithin(queue: Pick<CallQueue, 'stats'>, pool: string, timeoutMs: number) {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<[]>((resolve) => {
    timer = setTimeout(() => resolve([]), timeoutMs);
  });
  try {
    return await Promise.race([queue.stats(pool).catch(() => [] as const), late]);
  } finally {
    clearTimeout(timer);
  }
}
