import { createLogger } from '../logger.js';

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
