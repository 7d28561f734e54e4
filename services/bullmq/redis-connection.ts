import { Redis, type RedisOptions } from 'ioredis';
import { ClusterError, messageOf, withTimeout } from '../core/index.js';
import { logEvent } from './log.js';

/** TCP connect timeout of every Redis connection, in milliseconds. */
const CONNECT_TIMEOUT_MS = 3_000;
/** How long opening the broker waits for Redis before rejecting, in milliseconds. */
const OPEN_TIMEOUT_MS = 5_000;
/** Timeout of one enqueue, publish or ready probe, in milliseconds. */
export const COMMAND_TIMEOUT_MS = 5_000;
/** How long `close` waits for a queue or a worker before forcing it shut, in milliseconds. */
export const CLOSE_TIMEOUT_MS = 5_000;
/**
 * Options of the producer connection (enqueue, cancel, stats, cancel orders, the epoch). No offline
 * queue and no resend of unanswered commands after a reconnect: a command is written to a live
 * connection once or rejected at once, so a call whose enqueue the caller was told failed is never
 * queued later by a command that waited in the client (a ghost call). An enqueue waits for the
 * connection itself instead (`awaitReady`, BROKER_RECONNECT_GRACE_MS).
 */
export const PRODUCER_OPTIONS: RedisOptions = {
  enableOfflineQueue: false,
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 0,
};

/**
 * A Redis connection that reconnects forever and logs its errors (throttled) under `role`
 * (`producer`, `worker`, `subscriber`). Lazy unless `extra` says otherwise.
 */
export function createClient(url: string, role: string, extra: RedisOptions): Redis {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: CONNECT_TIMEOUT_MS,
    // Reconnect forever, quickly: a restarted Redis is back within a second.
    retryStrategy: (times: number) => Math.min(100 * times, 1_000),
    ...extra,
  });
  client.on('error', (err: Error) =>
    logEvent('warn', 'redis_connection_error', { role, url, error: err.message }, `redis:${role}`),
  );
  return client;
}

/**
 * Waits up to `ms` milliseconds for `client` to be connected and ready; resolves whether it is.
 * Never waits on a client that was closed.
 */
export function awaitReady(client: Redis, ms: number): Promise<boolean> {
  if (client.status === 'ready') return Promise.resolve(true);
  if (client.status === 'end') return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      client.off('ready', done);
      resolve(client.status === 'ready');
    };
    const timer = setTimeout(done, ms);
    client.on('ready', done);
  });
}

/** Resolves once `promise` settled or `ms` milliseconds passed, whichever comes first; never rejects. */
export async function within(promise: Promise<unknown>, ms: number): Promise<void> {
  await withTimeout(promise, ms).catch(() => undefined);
}

/**
 * Connects a lazy client; rejects with `ClusterError('QUEUE_UNAVAILABLE')` naming the URL and
 * the connection's own error when Redis cannot be reached within a few seconds.
 */
export async function connectOrFail(client: Redis, url: string): Promise<void> {
  let lastError: Error | undefined;
  const remember = (err: Error) => {
    lastError = err;
  };
  client.on('error', remember);
  try {
    await withTimeout(client.connect(), OPEN_TIMEOUT_MS);
  } catch (err) {
    client.disconnect();
    const reason = lastError?.message ?? messageOf(err);
    throw new ClusterError('QUEUE_UNAVAILABLE', `cannot connect to Redis at ${url}: ${reason}`, {
      cause: lastError ?? err,
    });
  } finally {
    client.off('error', remember);
  }
}
