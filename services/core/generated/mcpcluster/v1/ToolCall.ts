// Original file: proto/mcp_cluster.proto

import type { Priority as _mcpcluster_v1_Priority, Priority__Output as _mcpcluster_v1_Priority__Output } from '../../mcpcluster/v1/Priority.js';
import type { Long } from '@grpc/proto-loader';

/**
 * One tools/call as it travels through the queue. Immutable once enqueued,
 * except `attempt`, which the queue implementation reports on each delivery.
 */
export interface ToolCall {
  /**
   * Globally unique call id (UUID). Queue de-duplication key and delivery key.
   */
  'callId'?: (string);
  /**
   * MCP tool name, e.g. "generate_text".
   */
  'tool'?: (string);
  /**
   * Worker pool that serves the tool, e.g. "inference".
   */
  'pool'?: (string);
  /**
   * Tool arguments, already validated against the tool's input schema, as JSON.
   */
  'argumentsJson'?: (string);
  /**
   * Tenant the caller belongs to (bounded cardinality; used for fairness and metrics).
   */
  'tenant'?: (string);
  /**
   * Session key for backend affinity (may be empty).
   */
  'sessionKey'?: (string);
  'priority'?: (_mcpcluster_v1_Priority);
  /**
   * Absolute deadline, milliseconds since the Unix epoch. Past it the call is dead.
   */
  'deadlineUnixMs'?: (number | string | Long);
  /**
   * Delivery attempt, 1 for the first delivery.
   */
  'attempt'?: (number);
  /**
   * host:port of the owning ingress replica's Delivery service.
   */
  'replyTo'?: (string);
  /**
   * W3C trace context (traceparent, tracestate) of the caller's request.
   */
  'traceContext'?: ({[key: string]: string});
  /**
   * When the ingress enqueued the call, milliseconds since the Unix epoch.
   */
  'enqueuedUnixMs'?: (number | string | Long);
  /**
   * True when the caller asked for progress notifications.
   */
  'wantsProgress'?: (boolean);
}

/**
 * One tools/call as it travels through the queue. Immutable once enqueued,
 * except `attempt`, which the queue implementation reports on each delivery.
 */
export interface ToolCall__Output {
  /**
   * Globally unique call id (UUID). Queue de-duplication key and delivery key.
   */
  'callId': (string);
  /**
   * MCP tool name, e.g. "generate_text".
   */
  'tool': (string);
  /**
   * Worker pool that serves the tool, e.g. "inference".
   */
  'pool': (string);
  /**
   * Tool arguments, already validated against the tool's input schema, as JSON.
   */
  'argumentsJson': (string);
  /**
   * Tenant the caller belongs to (bounded cardinality; used for fairness and metrics).
   */
  'tenant': (string);
  /**
   * Session key for backend affinity (may be empty).
   */
  'sessionKey': (string);
  'priority': (_mcpcluster_v1_Priority__Output);
  /**
   * Absolute deadline, milliseconds since the Unix epoch. Past it the call is dead.
   */
  'deadlineUnixMs': (number);
  /**
   * Delivery attempt, 1 for the first delivery.
   */
  'attempt': (number);
  /**
   * host:port of the owning ingress replica's Delivery service.
   */
  'replyTo': (string);
  /**
   * W3C trace context (traceparent, tracestate) of the caller's request.
   */
  'traceContext': ({[key: string]: string});
  /**
   * When the ingress enqueued the call, milliseconds since the Unix epoch.
   */
  'enqueuedUnixMs': (number);
  /**
   * True when the caller asked for progress notifications.
   */
  'wantsProgress': (boolean);
}
