import { randomUUID } from 'node:crypto';
import type { Priority, ToolCall } from './generated/mcp_cluster.js';

/**
 * One `tools/call` as it travels from an ingress replica through the queue to a worker: the
 * `ToolCall` message of `proto/mcp_cluster.proto`, as `npm run gen` writes it (plain types, no
 * protobuf runtime). The queues encode it with `services/protobuf`; the in-process queue passes
 * it as is. `argumentsJson` holds the validated arguments as UTF-8 JSON: the ingress writes them
 * once ({@link encodeArguments}) and the worker parses them once ({@link parseArguments}).
 */
export type { Priority, ToolCall };

/** Every priority, highest first: the order consumers pull in. */
export const PRIORITIES: readonly Priority[] = ['high', 'normal', 'low'];

/** A new call id: a random UUID. */
export function newCallId(): string {
  return randomUUID();
}

/** Whether the call's deadline has passed at `nowMs` (milliseconds since the epoch). */
export function isExpired(call: Pick<ToolCall, 'deadlineUnixMs'>, nowMs = Date.now()): boolean {
  return call.deadlineUnixMs <= nowMs;
}

/** A call's arguments as the envelope carries them: UTF-8 JSON text. */
export function encodeArguments(args: Record<string, unknown>): Uint8Array {
  return Buffer.from(JSON.stringify(args));
}

/**
 * The arguments of a call, parsed from the envelope's JSON (no bytes reads as `{}`). Throws when
 * they are not JSON or not a JSON object: the ingress never sends such a call.
 */
export function parseArguments(argumentsJson: Uint8Array): Record<string, unknown> {
  if (argumentsJson.length === 0) return {};
  const text = Buffer.from(
    argumentsJson.buffer,
    argumentsJson.byteOffset,
    argumentsJson.byteLength,
  ).toString();
  const args: unknown = JSON.parse(text);
  if (typeof args !== 'object' || args === null || Array.isArray(args)) {
    throw new Error('the call arguments are not a JSON object');
  }
  return args as Record<string, unknown>;
}
