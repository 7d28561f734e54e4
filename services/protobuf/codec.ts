import type { Chunk, Order, ToolCall } from '../core/index.js';
import { wireTypes } from './schema.js';

// Messages are encoded from the plain objects of the generated types and decoded into
// protobufjs message instances (their unset fields read as defaults from the prototype; a
// oneof's name reads which member is set). No `fromObject`/`toObject` conversions: they copy
// every field of every message on the hot path.

const NO_BYTES = Buffer.alloc(0);

/** The envelope's fields as the protobuf encoder takes them (the enum as its number). */
type WireToolCall = Omit<ToolCall, 'priority'> & { priority: number };

/** Encodes a call for the queue (protobuf `mcpcluster.v1.ToolCall`). */
export function encodeToolCall(call: ToolCall): Uint8Array {
  const wire: WireToolCall = { ...call, priority: wireTypes().priorityNumber[call.priority] ?? 0 };
  return wireTypes().toolCall.encode(wire).finish();
}

/**
 * Decodes a call read from the queue into a plain `ToolCall` (the queues spread it). Throws when
 * the bytes are not a ToolCall or lack a call id, tool or pool; callers terminate such messages
 * instead of retrying them. The arguments stay JSON bytes: the worker parses them once.
 */
export function decodeToolCall(bytes: Uint8Array): ToolCall {
  const m = wireTypes().toolCall.decode(bytes) as unknown as WireToolCall;
  if (!m.callId || !m.tool || !m.pool) throw new Error('envelope lacks call id, tool or pool');
  return {
    callId: m.callId,
    tool: m.tool,
    pool: m.pool,
    // A Buffer (a view, not a copy) whatever the input was, as `encodeArguments` makes them; an
    // absent field reads as a shared empty array from the prototype, not as bytes.
    argumentsJson: m.argumentsJson.length > 0 ? asBuffer(m.argumentsJson) : NO_BYTES,
    tenant: m.tenant,
    sessionKey: m.sessionKey,
    priority: wireTypes().priorityName[m.priority] ?? 'normal',
    deadlineUnixMs: m.deadlineUnixMs,
    attempt: m.attempt,
    replyTo: m.replyTo,
    traceContext: m.traceContext,
    enqueuedUnixMs: m.enqueuedUnixMs,
    wantsProgress: m.wantsProgress,
    principal: m.principal,
    scopes: m.scopes,
    // Absent in envelopes from before call logging (and when the caller asked for no logs).
    ...(m.logLevel ? { logLevel: m.logLevel } : {}),
    // Absent on a call's first round and in envelopes from before multi-round-trip input.
    ...(m.inputResponsesJson ? { inputResponsesJson: m.inputResponsesJson } : {}),
    ...(m.requestState ? { requestState: m.requestState } : {}),
    ...(m.clientCapabilitiesJson ? { clientCapabilitiesJson: m.clientCapabilitiesJson } : {}),
  };
}

/** A protobufjs `finish()` result as the Buffer gRPC wants (it already is one on Node). */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Encodes a delivery chunk (worker -> ingress). */
export function serializeChunk(chunk: Chunk): Buffer {
  return asBuffer(wireTypes().chunk.encode(chunk).finish());
}

/** Decodes a delivery chunk; `body` names the member that is set. Throws on bytes that are not a Chunk. */
export function deserializeChunk(bytes: Uint8Array): Chunk {
  return wireTypes().chunk.decode(bytes) as unknown as Chunk;
}

/** Encodes a delivery order (ingress -> worker). */
export function serializeOrder(order: Order): Buffer {
  return asBuffer(wireTypes().order.encode(order).finish());
}

/** Decodes a delivery order; `body` names the member that is set. Throws on bytes that are not an Order. */
export function deserializeOrder(bytes: Uint8Array): Order {
  return wireTypes().order.decode(bytes) as unknown as Order;
}
