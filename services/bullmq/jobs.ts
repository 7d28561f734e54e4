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

/**
 * The two BullMQ queues of a pool. A BullMQ Worker takes whatever its queue holds, highest job
 * priority first, and cannot be told to leave a priority alone; so calls that a worker consumes
 * under a budget of their own (low: batch chunks, see `ConsumeOptions.priorities`) live on a queue
 * of their own, and a consumer opens a Worker per queue its priorities touch.
 * - `main`: high and normal calls (job priorities 1 and 2);
 * - `low`: low calls (job priority 3, kept so labels and figures read the same on both).
 */
export type Lane = 'main' | 'low';
/** Both lanes, the higher first: the order a consumer spanning both looks in. */
export const LANES: readonly Lane[] = ['main', 'low'];
/** The priorities each lane's queue holds. */
export const LANE_PRIORITIES: Record<Lane, readonly Priority[]> = { main: ['high', 'normal'], low: ['low'] };

/** The lane (queue) calls of `priority` are enqueued on. */
export function laneOf(priority: Priority): Lane {
  return priority === 'low' ? 'low' : 'main';
}

/**
 * The BullMQ queue that holds the calls of `pool` on `lane` (under the key prefix `<namespace>`):
 * `calls-<pool>` (high and normal: the name every release used, so calls queued before an upgrade
 * are still found) and `calls-<pool>.low`. A pool name cannot hold a `.`, so no pool's main queue
 * can be another pool's low one (`-` could: pool `a-low`).
 */
export function queueName(pool: string, lane: Lane = 'main'): string {
  return lane === 'main' ? `calls-${pool}` : `calls-${pool}.low`;
}

/** Throws `INVALID_CONFIG` unless `name` (a pool, the namespace) can be part of a Redis key. */
export function assertRedisName(name: string, what: string): void {
  assertName(name, what, 'Redis keys and BullMQ queues');
}
