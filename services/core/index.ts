/**
 * The shared kernel of mcp-cluster: the call envelope, configuration, errors, the queue and
 * delivery contracts with their implementations, metrics, logging and lifecycle.
 * Ingress, workers, autoscaler and CLI import from here and nowhere deeper.
 */

export type { JsonSchema, ToolDefinition } from './catalog.js';
export { buildCatalog, inputSchemaFor, outputSchemaFor } from './catalog.js';
export type {
  BackendKind,
  PoolConfig,
  PoolGpu,
  PoolScaling,
  ResolvedConfig,
  ToolConfig,
  ToolTemplate,
} from './config.js';
export {
  BACKEND_KINDS,
  DEFAULT_ENDPOINT_CONCURRENCY,
  ENV_OVERRIDES,
  loadConfig,
  processId,
  resolveConfig,
  TEMPLATE_BACKENDS,
  TOOL_TEMPLATES,
} from './config.js';
export type { CallSignal, DeliveryChannel } from './delivery/delivery-client.js';
export { DeliveryClient } from './delivery/delivery-client.js';
export type { ChunkHandler, DeliveryServer, WorkerLink } from './delivery/delivery-server.js';
export { startDeliveryServer } from './delivery/delivery-server.js';
export type { Priority, ToolCall } from './envelope.js';
export { decodeToolCall, encodeToolCall, isExpired, newCallId, PRIORITIES } from './envelope.js';
export type { ClusterErrorCode } from './errors.js';
export {
  ClusterError,
  isProtocolError,
  isRetryable,
  JSON_RPC,
  parseErrorCode,
  toClusterError,
  toGrpcStatus,
  toJsonRpcError,
  toToolErrorResult,
} from './errors.js';
export type { Chunk, Chunk__Output as ChunkReceived } from './generated/mcpcluster/v1/Chunk.js';
export type { Order } from './generated/mcpcluster/v1/Order.js';
export type { LifecycleState, Stoppable } from './lifecycle.js';
export { exitOnSignals } from './lifecycle.js';
export type { LogFields, Logger, LogLevel } from './logger.js';
export { createLogger } from './logger.js';
export type { ClusterMetrics } from './metrics.js';
export { clusterMetrics } from './metrics.js';
export type {
  Broker,
  BrokerOptions,
  CallConsumer,
  CallQueue,
  CancelBus,
  CancelOrder,
  ConsumeOptions,
  QueuedCall,
  QueueStats,
} from './queue/call-queue.js';
export { DEFAULT_ACK_WAIT_MS, DEFAULT_MAX_DELIVERIES } from './queue/call-queue.js';
export { brokerScheme, openBroker } from './queue/open-broker.js';
export type { QueueLog } from './queue/queue-support.js';
export {
  assertName,
  encodeCancelOrder,
  messageOf,
  parseCancelOrder,
  queueLog,
  withTimeout,
} from './queue/queue-support.js';
export { parseDurationMs, parseSizeBytes } from './units.js';
