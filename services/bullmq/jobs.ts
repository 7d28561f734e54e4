import type { Job } from 'bullmq';
import { assertName, type Priority } from '../core/index.js';

// What a call is as a BullMQ job: its queue name, its data, its priority number.

/** What a queued job carries: the protobuf `ToolCall` envelope, base64. */
export interface JobData {
  envelope: string;
}
/** What a settled job stores; a terminated call keeps its reason. */
export type JobResult = { terminated: string } | null;
export type CallJob = Job<JobData, JobResult, string>;

/** BullMQ priorities: lower runs first; 0 ("no priority") would jump every prioritized job. */
export const PRIORITY_NUMBER: Record<Priority, number> = { high: 1, normal: 2, low: 3 };
const NUMBER_PRIORITY = new Map<number, Priority>([
  [1, 'high'],
  [2, 'normal'],
  [3, 'low'],
]);

/** The priority a BullMQ priority number stands for, if it is one mcp-cluster uses. */
export function priorityOf(priority: number | undefined): Priority | undefined {
  return NUMBER_PRIORITY.get(priority ?? 0);
}

/**
 * The priority label of a job: its priority name, or `unknown` for a job some other producer
 * added with a priority mcp-cluster does not use (the label set stays bounded).
 */
export function priorityLabel(priority: number | undefined): Priority | 'unknown' {
  return priorityOf(priority) ?? 'unknown';
}

/** The BullMQ queue that holds the calls of `pool` (under the key prefix `<namespace>`). */
export function queueName(pool: string): string {
  return `calls-${pool}`;
}

/** Throws `INVALID_CONFIG` unless `name` (a pool, the namespace) can be part of a Redis key. */
export function assertRedisName(name: string, what: string): void {
  assertName(name, what, 'Redis keys and BullMQ queues');
}
