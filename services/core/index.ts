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
export { encodeArguments, isExpired, newCallId, PRIORITIES, parseArguments } from './envelope.js';
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
export type {
  CallError,
  Chunk,
  /** A chunk as a delivery transport hands it over: the same type as the one sent. */
  Chunk as ChunkReceived,
  Final,
  Order,
  Timing,
} from './generated/mcp_cluster.js';
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
export { brokerScheme, openBroker } from './queue/open-broker.js';
export type { ToolResult } from './tool-result.js';
export { finalToJson, toFinal } from './tool-result.js';
export { parseDurationMs, parseSizeBytes } from './units.js';
