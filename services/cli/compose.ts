import {
  type Broker,
  ClusterError,
  callRetentionMs,
  createLogger,
  type DeliveryTransport,
  inProcessDelivery,
  type JobStore,
  type ResolvedConfig,
} from '../core/index.js';
import { grpcDelivery } from '../grpc/index.js';
import { type BatchJobs, batchJobDelivery, createBatchJobs } from '../jobs/index.js';
import { brokerChosen, type ConfigFlags } from './args.js';
import { brokerScheme, openBroker, openJobStore } from './brokers.js';

// What the composition root wires into the roles (the tool families are in families.ts): the transports calls
// travel on (the broker, and the delivery transport results come back on).

/**
 * Opens the broker of `config.brokerUrl` with the queues of every configured pool, keeping a call's
 * message as long as the longest deadline a call can carry allows: an interactive call's deadline is
 * capped by `ingress.maxDeadline`, a batch chunk's is its job's completion window (at most
 * `batch.completionWindow`).
 */
export function brokerFor(config: ResolvedConfig): Promise<Broker> {
  return openBroker({
    url: config.brokerUrl,
    namespace: config.namespace,
    pools: Object.keys(config.pools),
    callRetentionMs: callRetentionMs(
      Math.max(config.ingress.maxDeadlineMs, config.batch.completionWindowMs),
      config.worker.ackWaitMs,
    ),
  });
}

/** Opens the batch-job store that goes with `config.brokerUrl` (see `openJobStore`). */
export function jobStoreFor(config: ResolvedConfig): Promise<JobStore> {
  return openJobStore({
    url: config.brokerUrl,
    namespace: config.namespace,
    ...(config.batch.directory ? { directory: config.batch.directory } : {}),
  });
}

/** The batch engine an ingress serves jobs with, over the broker's queue and job store. */
export function batchJobsFor(
  config: ResolvedConfig,
  broker: Broker,
  store: JobStore,
): BatchJobs & { close(): Promise<void> } {
  return createBatchJobs({ store, queue: broker.queue, config, log: createLogger('batch') });
}

/** A worker's delivery: `transport` for calls from an ingress, the job store for batch chunks. */
export function workerDeliveryFor(transport: DeliveryTransport, store: JobStore): DeliveryTransport {
  return batchJobDelivery(transport, store, createLogger('batch'));
}

/**
 * How workers answer the ingress: in-process for `up` on the memory queue, where no other process
 * can take a call; gRPC otherwise (separate processes, or `up` on a broker other processes share,
 * whose calls may be answered by or for them). The gRPC server listens on `ingress.delivery`.
 */
export function deliveryFor(config: ResolvedConfig, oneProcess: boolean): DeliveryTransport {
  if (oneProcess && brokerScheme(config.brokerUrl) === 'memory') return inProcessDelivery();
  return grpcDelivery({
    host: config.ingress.deliveryHost,
    port: config.ingress.deliveryPort,
    advertise: config.ingress.deliveryAdvertise,
  });
}

/**
 * A role in its own process (`ingress`, `worker`) shares its queue with the others through a broker.
 * Left at its `memory:` default, the queue would live in this process alone: an ingress would report
 * ready and accept calls no worker ever sees (each timing out at its deadline), a worker would wait
 * for calls no ingress can send. So a broker must be chosen; an explicit `memory:` is taken as meant
 * (a single process under test).
 * @throws ClusterError('INVALID_CONFIG') naming `--broker` and `MCP_CLUSTER_BROKER_URL`.
 */
export function requireSharedBroker(role: 'ingress' | 'worker', values: ConfigFlags): void {
  if (brokerChosen(values)) return;
  throw new ClusterError(
    'INVALID_CONFIG',
    `mcp-cluster ${role} runs in its own process and shares its queue with the other roles through a broker, ` +
      'but none is configured (the default, "memory:", is a queue inside this process only); ' +
      'pass --broker nats://host:4222 or redis://host:6379, set MCP_CLUSTER_BROKER_URL, or set broker.url in --config; ' +
      'to run everything in one process use `mcp-cluster up`',
  );
}
