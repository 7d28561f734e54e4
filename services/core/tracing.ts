import { createHash } from 'node:crypto';
import {
  type Attributes,
  type Context,
  context,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import { ATTR_ERROR_TYPE } from '@opentelemetry/semantic-conventions';
import type { Priority, ToolCall } from './envelope.js';

/**
 * Tracing on the call path, written against the OpenTelemetry API only. Until the composition root
 * (services/cli) registers the SDK and calls `enableCallTracing`, the call path checks
 * `callTracingOn()` and starts no span at all (not even the API's no-op ones): a cluster without
 * `OTEL_*` settings pays one boolean test per hop.
 */

let tracingOn = false;

/** Whether the process registered an OpenTelemetry SDK (see `enableCallTracing`). Default false. */
export function callTracingOn(): boolean {
  return tracingOn;
}

/** Turns the call path's spans on; called by the composition root once it registered the SDK. */
export function enableCallTracing(): void {
  tracingOn = true;
}

/** Instrumentation scope of every span mcp-cluster creates. */
export const TRACER_NAME = 'mcp-cluster';

/** The tracer of the call path (the API's no-op tracer until an SDK is registered). */
export function callTracer(): Tracer {
  return trace.getTracer(TRACER_NAME);
}

/**
 * Attribute names. Stable ones come from `@opentelemetry/semantic-conventions`; the messaging,
 * RPC and MCP names are still incubating there, and the package asks users to copy incubating
 * names rather than import them (they may change in a minor release).
 */
export const ATTR = {
  errorType: ATTR_ERROR_TYPE,
  mcpMethod: 'mcp.method.name',
  toolName: 'gen_ai.tool.name',
  messagingSystem: 'messaging.system',
  messagingDestination: 'messaging.destination.name',
  messagingMessageId: 'messaging.message.id',
  messagingOperationType: 'messaging.operation.type',
  messagingOperationName: 'messaging.operation.name',
  rpcSystem: 'rpc.system',
  rpcService: 'rpc.service',
  rpcMethod: 'rpc.method',
  serverAddress: 'server.address',
  serverPort: 'server.port',
  pool: 'mcp_cluster.pool',
  tenant: 'mcp_cluster.tenant',
  /** First 16 hex digits of the SHA-256 of the session key: groups a conversation's calls, reveals nothing. */
  sessionKeyHash: 'mcp_cluster.session_key.hash',
  /** Delivery attempt, 1 for the first: a redelivered call is a new consumer span with a higher attempt. */
  attempt: 'mcp_cluster.attempt',
  /** How the call (or this attempt of it) ended: ok, tool_error, rejected, timeout, cancelled, retried, … */
  outcome: 'mcp_cluster.outcome',
  callId: 'mcp_cluster.call.id',
  worker: 'mcp_cluster.worker.id',
  batchCalls: 'mcp_cluster.batch.calls',
  batchTexts: 'mcp_cluster.batch.texts',
} as const;

/** `messaging.system` of a broker URL: `nats`, `redis` (BullMQ) or `memory`. */
export type MessagingSystem = 'nats' | 'redis' | 'memory';

/** Where a call's message goes on the broker, for the messaging attributes. */
export interface MessagingTarget {
  readonly system: MessagingSystem;
  /** The queue or subject the call of `pool` at `priority` is put on. */
  destinationOf(pool: string, priority: Priority): string;
}

/**
 * The messaging target of the broker at `brokerUrl` under `namespace`: the NATS subject
 * `<ns>.calls.<pool>.<priority>`, the BullMQ queue `calls-<pool>` (or `calls-<pool>.low` for the
 * batch lane), or `<pool>.<priority>` in memory. The names follow services/nats and services/bullmq.
 */
export function messagingTargetOf(brokerUrl: string, namespace: string): MessagingTarget {
  if (brokerUrl.startsWith('nats:') || brokerUrl.startsWith('tls:'))
    return { system: 'nats', destinationOf: (pool, priority) => `${namespace}.calls.${pool}.${priority}` };
  if (brokerUrl.startsWith('redis:') || brokerUrl.startsWith('rediss:'))
    return {
      system: 'redis',
      destinationOf: (pool, priority) => (priority === 'low' ? `calls-${pool}.low` : `calls-${pool}`),
    };
  return { system: 'memory', destinationOf: (pool, priority) => `${pool}.${priority}` };
}

/** The messaging attributes of one operation on a call's message. */
export function messagingAttributes(
  target: MessagingTarget,
  call: ToolCall,
  operation: 'send' | 'process',
): Attributes {
  return {
    [ATTR.messagingSystem]: target.system,
    [ATTR.messagingDestination]: target.destinationOf(call.pool, call.priority),
    [ATTR.messagingMessageId]: call.callId,
    [ATTR.messagingOperationType]: operation,
    [ATTR.messagingOperationName]: operation === 'send' ? 'enqueue' : 'consume',
  };
}

/**
 * What every span of a call carries: tool, pool, tenant and the session key's hash. Never the
 * arguments, the prompt, the raw session key or a credential.
 */
export function callAttributes(call: ToolCall): Attributes {
  return {
    [ATTR.toolName]: call.tool,
    [ATTR.pool]: call.pool,
    [ATTR.tenant]: call.tenant,
    ...(call.sessionKey ? { [ATTR.sessionKeyHash]: sessionKeyHash(call.sessionKey) } : {}),
  };
}

/** First 16 hex digits of the SHA-256 of `sessionKey`. */
export function sessionKeyHash(sessionKey: string): string {
  return createHash('sha256').update(sessionKey).digest('hex').slice(0, 16);
}

/** W3C trace context as the envelope and the MCP `_meta` carry it. */
export interface TraceCarrier {
  traceparent?: string;
  tracestate?: string;
}

/** Longest `traceparent` / `tracestate` taken from a caller (W3C allows 55 and 512 characters). */
const MAX_TRACEPARENT = 64;
const MAX_TRACESTATE = 512;

/**
 * The caller's trace context: `params._meta.traceparent` / `tracestate` (where MCP 2026-07-28
 * puts them) win over the HTTP `traceparent` / `tracestate` headers. Values that are not strings,
 * or are longer than W3C allows, are dropped: a malformed context starts a new trace, never fails
 * the call.
 */
export function callerTraceCarrier(
  meta: Record<string, unknown>,
  headers: { traceparent: string | undefined; tracestate: string | undefined },
): TraceCarrier {
  const fromMeta = typeof meta.traceparent === 'string';
  const traceparent = fromMeta ? (meta.traceparent as string) : headers.traceparent;
  const tracestate = fromMeta
    ? typeof meta.tracestate === 'string'
      ? meta.tracestate
      : undefined
    : headers.tracestate;
  const carrier: TraceCarrier = {};
  if (traceparent && traceparent.length <= MAX_TRACEPARENT) carrier.traceparent = traceparent;
  if (carrier.traceparent && tracestate && tracestate.length <= MAX_TRACESTATE)
    carrier.tracestate = tracestate;
  return carrier;
}

/** The context a carrier names (the root context when tracing is off or the carrier is empty). */
export function contextOf(carrier: Readonly<Record<string, string>> | TraceCarrier): Context {
  if (!carrier.traceparent) return ROOT_CONTEXT;
  return propagation.extract(ROOT_CONTEXT, carrier);
}

/**
 * The W3C headers of `ctx` (`traceparent`, and `tracestate` when set). Empty when tracing is off
 * (the no-op propagator writes nothing).
 */
export function carrierOf(ctx: Context): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  return carrier;
}

/** `headers` with the active context's `traceparent` added, for a request to a backend. */
export function withTraceHeaders(
  headers: Record<string, string> | undefined,
): Record<string, string> | undefined {
  const active = context.active();
  if (!trace.getSpan(active)?.isRecording()) return headers;
  return { ...headers, ...carrierOf(active) };
}

/**
 * Marks `span` failed with `code` (a ClusterError code) as its `error.type` and status message.
 * The error's text stays out: a backend's message may quote the caller's input.
 */
export function markFailed(span: Span, code: string): void {
  if (!span.isRecording()) return;
  span.setAttribute(ATTR.errorType, code);
  span.setStatus({ code: SpanStatusCode.ERROR, message: code });
}
