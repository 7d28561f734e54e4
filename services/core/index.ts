/**
 * The kernel of mcp-cluster: the call envelope, the queue and delivery contracts with their
 * in-process implementations (the memory broker, the linked delivery pair), the tool-family
 * contract, configuration, errors, lifecycle, the role server, metrics and logging. It imports no
 * transport library: NATS, BullMQ, gRPC and protobuf implement its contracts in their own folders
 * and the composition root (services/cli) wires them. Everything else imports from here and
 * nowhere deeper (biome.json holds both rules).
 */

export type { CallLogMessage, McpLogLevel } from './call-log.js';
export {
  CALL_LOG_BURST,
  CALL_LOG_PER_SECOND,
  CallLogGate,
  isMcpLogLevel,
  MCP_LOG_LEVELS,
} from './call-log.js';
export type { JsonSchema, ToolDefinition } from './catalog.js';
export { buildCatalog } from './catalog.js';
export type {
  BackendKind,
  ConfigEnv,
  PoolConfig,
  PoolGpu,
  PoolScaling,
  ResolvedConfig,
  ToolConfig,
  ToolSettings,
  ToolTemplate,
} from './config.js';
export { backendsVariable, ENV_OVERRIDES, processId } from './config.js';
export type { SettingRow } from './config-reference.js';
export { configReference } from './config-reference.js';
export type {
  CatalogPrompt,
  CatalogPromptContent,
  CatalogResource,
  CatalogResourceTemplate,
  ContentCatalog,
} from './content-catalog.js';
export { fillPlaceholders, placeholdersOf, templateVariables } from './content-catalog.js';
export type {
  CallSignal,
  ChunkHandler,
  DeliveryChannel,
  DeliveryClient,
  DeliveryClientOptions,
  DeliveryServer,
  DeliveryTransport,
  ServeOptions,
  WorkerLink,
} from './delivery/delivery.js';
export { inProcessDelivery } from './delivery/in-process.js';
export type { ChannelWire, OpenChannel } from './delivery/links.js';
export { DeliveryChannels, IngressLink, WorkerChannel } from './delivery/links.js';
export type { Chunk, ChunkReceived, Order, OrderReceived } from './delivery/messages.js';
export type { Priority, ToolCall } from './envelope.js';
export { encodeArguments, isExpired, newCallId, PRIORITIES, parseArguments } from './envelope.js';
export type { ClusterErrorCode } from './errors.js';
export {
  ClusterError,
  httpStatusOf,
  isProtocolError,
  isRetryable,
  JSON_RPC,
  parseErrorCode,
  retryAfterSeconds,
  toClusterError,
  toGrpcStatus,
  toJsonRpcError,
  toToolErrorResult,
} from './errors.js';
export type {
  BackendKindSpec,
  DefaultTool,
  TemplateSpec,
  ToolFamilies,
  ToolFamily,
} from './family.js';
export { registerFamilies } from './family.js';
export type { CallError, Final, Timing } from './generated/mcp_cluster.js';
export type { JobStore, JobStoreOptions, StoredRecord } from './jobs/job-store.js';
export { assertStoreName, assertStorePrefix } from './jobs/job-store.js';
export { openMemoryJobStore } from './jobs/memory-store.js';
export type { SchemaDialect } from './json-schema.js';
export { ajvFor, JSON_SCHEMA_2020_12, schemaDialect } from './json-schema.js';
export type { LifecycleState, ShutdownSteps, Stoppable } from './lifecycle.js';
export { exitOnSignals, LIFECYCLE_STATES, Lifecycle } from './lifecycle.js';
export type { LogFields, Logger, LogLevel } from './logger.js';
export { createLogger } from './logger.js';
export type { ClusterMetrics } from './metrics.js';
export { clusterMetrics, QUEUE_STATS_TIMEOUT_MS } from './metrics.js';
export type { ParamHeader } from './param-headers.js';
export { checkParamHeaders, paramHeadersOf } from './param-headers.js';
export type {
  Broker,
  BrokerOptions,
  CallConsumer,
  CallQueue,
  CancelBus,
  CancelOrder,
  ConsumeOptions,
  DataLost,
  QueuedCall,
  QueueStats,
} from './queue/call-queue.js';
export {
  BROKER_RECONNECT_GRACE_MS,
  CALL_RETENTION_SLACK_MS,
  callRetentionMs,
  DEFAULT_ACK_WAIT_MS,
  DEFAULT_MAX_DELIVERIES,
} from './queue/call-queue.js';
export { openMemoryBroker } from './queue/memory.js';
export type { QueueLog } from './queue/queue-support.js';
export {
  assertName,
  consumedPriorities,
  encodeCancelOrder,
  messageOf,
  parseCancelOrder,
  queueLog,
  withTimeout,
} from './queue/queue-support.js';
export type {
  AutoscalerRoleEntry,
  BackendStatus,
  BreakerState,
  PoolDecision,
  RoleEntry,
  WorkerRoleEntry,
} from './queue/role-entry.js';
export {
  autoscalerRoleKey,
  endpointOf,
  MAX_ROLE_BACKENDS,
  MAX_ROLE_POOLS,
  MAX_ROLE_TEXT,
  ROLE_ENTRY_TTL_MS,
  ROLE_ENTRY_VERSION,
  ROLE_PUBLISH_INTERVAL_MS,
  readRoleEntry,
  workerRoleKey,
} from './queue/role-entry.js';
export type { RolePublisher } from './queue/role-publisher.js';
export { startRolePublisher } from './queue/role-publisher.js';
export type { HeldFigures, PoolFigures, ReplicaEntry, TenantFigures } from './queue/share-entry.js';
export { ENTRY_VERSION, heldByPool, readEntry, ZERO_TENANT } from './queue/share-entry.js';
export type { ShareLedger } from './queue/share-ledger.js';
export {
  assertReplicaId,
  encodeShareValue,
  isReplicaId,
  MAX_REPLICA_ID_LENGTH,
  MAX_SHARE_TTL_MS,
  MAX_SHARE_VALUE_BYTES,
} from './queue/share-ledger.js';
export type {
  ListenOptions,
  Readiness,
  ReceiveTimeouts,
  RoleRoutesOptions,
  RoleServer,
  RouteHandler,
} from './role-server.js';
export { listenRole, roleRoutes, sendJson, startRoleServer } from './role-server.js';
export type { Resolved, SettingsShape, ToolSettingsOf, ToolSettingsSpec } from './settings.js';
export { duration, resolvedAs, section, size, toolSettings } from './settings.js';
export type { InputMethod, InputRequest, InputRequiredResult, ToolResult } from './tool-result.js';
export {
  finalToJson,
  INPUT_CAPABILITY,
  INPUT_METHODS,
  inputRequired,
  isInputRequired,
  toFinal,
} from './tool-result.js';
export type { MessagingSystem, MessagingTarget, TraceCarrier } from './tracing.js';
export {
  ATTR,
  callAttributes,
  callerTraceCarrier,
  callTracer,
  callTracingOn,
  carrierOf,
  contextOf,
  enableCallTracing,
  markFailed,
  messagingAttributes,
  messagingTargetOf,
  sessionKeyHash,
  TRACER_NAME,
  withTraceHeaders,
} from './tracing.js';
export { parseDurationMs, parseSizeBytes } from './units.js';
