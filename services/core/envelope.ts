import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

/** Priority of a call inside its pool; `high` is pulled before `normal`, `normal` before `low`. */
export type Priority = 'high' | 'normal' | 'low';

/** Every priority, highest first: the order consumers pull in. */
export const PRIORITIES: readonly Priority[] = ['high', 'normal', 'low'];

/**
 * One `tools/call` as it travels from an ingress replica through the queue to a worker.
 * Defined on the wire by `ToolCall` in `proto/mcp_cluster.proto`.
 */
export interface ToolCall {
  /** Globally unique id; the queue's de-duplication key and the delivery key. */
  callId: string;
  /** MCP tool name, e.g. `generate_text`. */
  tool: string;
  /** Worker pool serving the tool, e.g. `inference`. */
  pool: string;
  /** Tool arguments, validated against the tool's input schema at the ingress. */
  arguments: Record<string, unknown>;
  /** Tenant of the caller; bounded cardinality. */
  tenant: string;
  /** Key for backend affinity (conversation / MCP session); empty when none. */
  sessionKey: string;
  priority: Priority;
  /** Absolute deadline, milliseconds since the Unix epoch. */
  deadlineUnixMs: number;
  /** Delivery attempt, 1 for the first delivery; set by the queue on each delivery. */
  attempt: number;
  /** `host:port` of the owning ingress replica's Delivery service. */
  replyTo: string;
  /** W3C trace context of the caller's request (`traceparent`, `tracestate`). */
  traceContext: Record<string, string>;
  /** When the ingress enqueued the call, milliseconds since the Unix epoch. */
  enqueuedUnixMs: number;
  /** True when the caller gave a progress token. */
  wantsProgress: boolean;
}

/** A new call id: a random UUID. */
export function newCallId(): string {
  return randomUUID();
}

/** Whether the call's deadline has passed at `nowMs` (milliseconds since the epoch). */
export function isExpired(call: Pick<ToolCall, 'deadlineUnixMs'>, nowMs = Date.now()): boolean {
  return call.deadlineUnixMs <= nowMs;
}

const PROTO_PATH = fileURLToPath(new URL('../../../proto/mcp_cluster.proto', import.meta.url));
const PROTO_PATH_SRC = fileURLToPath(new URL('../../proto/mcp_cluster.proto', import.meta.url));

/** Absolute path of the wire schema, both from `dist/` and from the sources. */
export function protoPath(): string {
  // Compiled code lives one level deeper (dist/services/core) than the sources (services/core).
  return import.meta.url.includes('/dist/') ? PROTO_PATH : PROTO_PATH_SRC;
}

let toolCallType: protobuf.Type | undefined;
function wireType(): protobuf.Type {
  toolCallType ??= protobuf.loadSync(protoPath()).lookupType('mcpcluster.v1.ToolCall');
  return toolCallType;
}

const PRIORITY_TO_WIRE: Record<Priority, number> = { normal: 0, high: 1, low: 2 };
const WIRE_TO_PRIORITY: Priority[] = ['normal', 'high', 'low'];

/** Encodes a call for the queue (protobuf `mcpcluster.v1.ToolCall`). */
export function encodeToolCall(call: ToolCall): Uint8Array {
  return wireType()
    .encode({
      callId: call.callId,
      tool: call.tool,
      pool: call.pool,
      argumentsJson: JSON.stringify(call.arguments),
      tenant: call.tenant,
      sessionKey: call.sessionKey,
      priority: PRIORITY_TO_WIRE[call.priority],
      deadlineUnixMs: call.deadlineUnixMs,
      attempt: call.attempt,
      replyTo: call.replyTo,
      traceContext: call.traceContext,
      enqueuedUnixMs: call.enqueuedUnixMs,
      wantsProgress: call.wantsProgress,
    })
    .finish();
}

/**
 * Decodes a call read from the queue. Throws a `ClusterError('BAD_ENVELOPE')`-worthy `Error`
 * when the bytes are not a ToolCall; callers terminate such messages instead of retrying them.
 */
export function decodeToolCall(bytes: Uint8Array): ToolCall {
  const m = wireType().toObject(wireType().decode(bytes), { longs: Number, defaults: true }) as {
    callId: string;
    tool: string;
    pool: string;
    argumentsJson: string;
    tenant: string;
    sessionKey: string;
    priority: number;
    deadlineUnixMs: number;
    attempt: number;
    replyTo: string;
    traceContext: Record<string, string>;
    enqueuedUnixMs: number;
    wantsProgress: boolean;
  };
  if (!m.callId || !m.tool || !m.pool) throw new Error('envelope lacks call id, tool or pool');
  const args: unknown = m.argumentsJson ? JSON.parse(m.argumentsJson) : {};
  if (typeof args !== 'object' || args === null || Array.isArray(args)) {
    throw new Error('envelope arguments are not a JSON object');
  }
  return {
    callId: m.callId,
    tool: m.tool,
    pool: m.pool,
    arguments: args as Record<string, unknown>,
    tenant: m.tenant,
    sessionKey: m.sessionKey,
    priority: WIRE_TO_PRIORITY[m.priority] ?? 'normal',
    deadlineUnixMs: m.deadlineUnixMs,
    attempt: m.attempt,
    replyTo: m.replyTo,
    traceContext: m.traceContext ?? {},
    enqueuedUnixMs: m.enqueuedUnixMs,
    wantsProgress: m.wantsProgress,
  };
}
