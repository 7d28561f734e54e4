import { PRIORITIES, type Priority } from '../envelope.js';
import { ClusterError } from '../errors.js';
import { createLogger } from '../logger.js';
import type { CancelOrder, ConsumeOptions } from './call-queue.js';

/** Rejects with a timeout error when `promise` has not settled within `ms` milliseconds. */
export function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/** The message of a thrown value. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Repeated events of one source are logged at most every this many milliseconds (an outage repeats them). */
const LOG_EVERY_MS = 5_000;

/** Logs a queue event; `throttleKey` rate-limits a noisy source such as reconnect errors. */
export type QueueLog = (
  level: 'info' | 'warn' | 'error',
  event: string,
  fields: Record<string, unknown>,
  throttleKey?: string,
) => void;

/** The event log of a queue implementation, as JSON lines through the cluster logger. */
export function queueLog(component: string): QueueLog {
  const log = createLogger(component);
  const lastLogged = new Map<string, number>();
  return (level, event, fields, throttleKey) => {
    if (throttleKey) {
      const now = Date.now();
      if (now - (lastLogged.get(throttleKey) ?? 0) < LOG_EVERY_MS) return;
      lastLogged.set(throttleKey, now);
    }
    log[level](event, fields);
  };
}

/** Names that become parts of stream names, subjects, consumer names, queue names and keys. */
const NAME_PATTERN = /^[A-Za-z0-9_-]+$/;

/**
 * Throws `ClusterError('INVALID_CONFIG')` unless `name` holds only letters, digits, `_` and `-`.
 * `what` says what the name is (`pool`, `broker namespace`); `usedFor` what it becomes
 * (`NATS subjects and consumers`, `Redis keys and BullMQ queues`).
 */
export function assertName(name: string, what: string, usedFor: string): void {
  if (!NAME_PATTERN.test(name)) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `${what} "${name}" may hold only letters, digits, "_" and "-" (it names ${usedFor})`,
    );
  }
}

/** A cancel order as it travels on a cancel bus: JSON text. */
export function encodeCancelOrder(order: CancelOrder): string {
  return JSON.stringify({
    sessionId: order.sessionId,
    requestId: order.requestId,
    reason: order.reason,
    ...(order.answer !== undefined ? { answer: order.answer } : {}),
  });
}

/** Parses a cancel order read from a cancel bus, or `undefined` when the payload is not one. */
export function parseCancelOrder(text: string): CancelOrder | undefined {
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value !== 'object' || value === null) return undefined;
    const { sessionId, requestId, reason, answer } = value as Record<string, unknown>;
    if (typeof sessionId !== 'string' || typeof requestId !== 'string' || typeof reason !== 'string')
      return undefined;
    if (answer !== undefined && typeof answer !== 'string') return undefined;
    return { sessionId, requestId, reason, ...(answer !== undefined ? { answer } : {}) };
  } catch {
    return undefined;
  }
}

/**
 * The priorities a consumer takes (`ConsumeOptions.priorities`), highest first and each once
 * whatever order the caller gave; all three when none are given. Throws
 * `ClusterError('INVALID_CONFIG')` for an empty list or a name that is not a priority, so a typo
 * never leaves a consumer silently taking nothing.
 */
export function consumedPriorities(options: ConsumeOptions): readonly Priority[] {
  const asked = options.priorities;
  if (asked === undefined) return PRIORITIES;
  for (const p of asked) {
    if (!PRIORITIES.includes(p)) {
      throw new ClusterError(
        'INVALID_CONFIG',
        `unknown priority "${String(p)}" in the consumer's priorities`,
      );
    }
  }
  const chosen = PRIORITIES.filter((p) => asked.includes(p));
  if (chosen.length === 0) {
    throw new ClusterError('INVALID_CONFIG', 'a consumer must take at least one priority');
  }
  return chosen;
}
