import type { Worker } from 'bullmq';
import { clusterMetrics, type Priority } from '../core/index.js';
import { type JobData, type JobResult, priorityLabel } from './jobs.js';
import { logEvent } from './log.js';

// Failed jobs are the dead-letter set: jobs run with `attempts: 1`, so every failure BullMQ records
// is final (an undecodable envelope, a pickup past `maxDeliveries`, a nack on the last delivery).

/** How long failed jobs are kept: 14 days (in seconds, as BullMQ counts), at most this many. */
export const DEAD_LETTER_RETENTION = { age: 14 * 24 * 3600, count: 100_000 };

/** Logs and counts one dead-lettered call. */
export function recordDeadLetter(
  pool: string,
  priority: Priority | 'unknown',
  callId: string | undefined,
  reason: string,
  deliveries: number,
): void {
  logEvent('warn', 'dead_lettered', { pool, callId, reason, deliveries });
  clusterMetrics().queueDeadLettered.inc({ pool, priority });
}

/** Records every job the worker fails (the consumer records the nacks it fails itself). */
export function watchDeadLetters(worker: Worker<JobData, JobResult, string>, pool: string): void {
  worker.on('failed', (job, err) => {
    if (!job) return;
    recordDeadLetter(pool, priorityLabel(job.priority), job.id, err.message, job.attemptsStarted);
  });
}
