import { DelayedError, type Job, Queue, UnrecoverableError, WaitingError, Worker } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';
import { decodeToolCall, encodeToolCall } from '../../protobuf/index.js';
import { PRIORITIES, type Priority, type ToolCall } from '../envelope.js';
import { ClusterError } from '../errors.js';
import { clusterMetrics } from '../metrics.js';
import type {
  Broker,
  BrokerOptions,
  CallConsumer,
  CallQueue,
  CancelBus,
  CancelOrder,
  ConsumeOptions,
  QueuedCall,
  QueueStats,
} from './call-queue.js';
import { DEFAULT_ACK_WAIT_MS, DEFAULT_MAX_DELIVERIES } from './call-queue.js';
import { messageOf, queueLog, withTimeout } from './queue-support.js';

const logEvent = queueLog('queue.bullmq');

/** BullMQ priorities: lower runs first; 0 ("no priority") would jump every prioritized job. */
const PRIORITY_NUMBER: Record<Priority, number> = { high: 1, normal: 2, low: 3 };
const NUMBER_PRIORITY = new Map<number, Priority>([
  [1, 'high'],
  [2, 'normal'],
  [3, 'low'],
]);
/** BullMQ stores prioritized jobs in one sorted set scored `priority * 2^32 + counter`. */
const PRIORITY_SCORE_STEP = 0x100000000;
/** TCP connect timeout of every Redis connection. */
const CONNECT_TIMEOUT_MS = 3_000;
/** How long `open` waits for Redis before rejecting. */
const OPEN_TIMEOUT_MS = 5_000;
/** Timeout of one enqueue, publish or ready probe. */
const COMMAND_TIMEOUT_MS = 5_000;
/** How long `close` waits for a worker before forcing it shut. */
const CLOSE_TIMEOUT_MS = 5_000;
/**
 * Redis commands a producer connection retries across reconnects before failing, so enqueue
 * reports QUEUE_UNAVAILABLE in about a second instead of hanging through an outage.
 */
const PRODUCER_RETRIES_PER_REQUEST = 3;
/** Seconds a worker blocks on an empty queue before polling again. */
const DRAIN_DELAY_S = 5;
/** Failed jobs are the dead-letter set: kept 14 days (seconds, as BullMQ counts), at most this many. */
const DEAD_LETTER_RETENTION = { age: 14 * 24 * 3600, count: 100_000 };
/** Most jobs of one list `stats` reads to split wait and active counts by priority. */
const STATS_SCAN_LIMIT = 1_000;
/** Names that become parts of Redis keys and BullMQ queue names. */
const NAME_PATTERN = /^[A-Za-z0-9_-]+$/;

/** What a queued job carries: the protobuf `ToolCall` envelope, base64. */
interface JobData {
  envelope: string;
}
/** What a settled job stores; a terminated call keeps its reason. */
type JobResult = { terminated: string } | null;
type CallJob = Job<JobData, JobResult, string>;

/**
 * Opens the BullMQ broker on Redis: one queue `calls-<pool>` per pool under the key prefix
 * `<namespace>`, job id = call id, failed jobs as the dead-letter set, and cancel orders on
 * the pub/sub channel `<namespace>:cancels`. Rejects with `ClusterError('QUEUE_UNAVAILABLE')`
 * naming the URL when Redis cannot be reached within a few seconds; afterwards every
 * connection reconnects by itself.
 */
export async function openBullmqBroker(options: BrokerOptions): Promise<Broker> {
  assertName(options.namespace, 'broker namespace');
  for (const pool of options.pools) assertName(pool, 'pool');
  const producer = createClient(options.url, 'producer', {
    maxRetriesPerRequest: PRODUCER_RETRIES_PER_REQUEST,
  });
  await connectOrFail(producer, options.url);
  const queue = new BullmqCallQueue(options.url, options.namespace, producer);
  for (const pool of options.pools) queue.queueFor(pool);
  const cancels = new RedisCancelBus(options.url, `${options.namespace}:cancels`, producer);
  let closing: Promise<void> | undefined;
  return {
    url: options.url,
    queue,
    cancels,
    close: () => {
      closing ??= (async () => {
        await queue.close();
        await cancels.close();
        producer.disconnect();
      })();
      return closing;
    },
  };
}

/** The BullMQ call queue. See {@link openBullmqBroker}. */
class BullmqCallQueue implements CallQueue {
  readonly kind = 'bullmq' as const;
  private readonly queues = new Map<string, Queue<JobData, JobResult, string>>();
  private readonly consumers = new Set<BullmqConsumer>();
  /** Shared by every worker (BullMQ needs `maxRetriesPerRequest: null` there); each worker adds its own blocking connection. */
  private workerClient?: Redis;
  private closed = false;

  constructor(
    readonly url: string,
    readonly namespace: string,
    private readonly producer: Redis,
  ) {}

  /** The BullMQ queue of a pool, created on first use. */
  queueFor(pool: string): Queue<JobData, JobResult, string> {
    let queue = this.queues.get(pool);
    if (!queue) {
      assertName(pool, 'pool');
      queue = new Queue<JobData, JobResult, string>(`calls-${pool}`, {
        connection: this.producer,
        prefix: this.namespace,
      });
      queue.on('error', (err) =>
        logEvent('warn', 'queue_error', { pool, error: messageOf(err) }, `queue:${pool}`),
      );
      this.queues.set(pool, queue);
    }
    return queue;
  }

  async enqueue(call: ToolCall): Promise<void> {
    this.assertOpen();
    const queue = this.queueFor(call.pool);
    const data: JobData = { envelope: Buffer.from(encodeToolCall(call)).toString('base64') };
    try {
      // Adding an id that exists (queued, running or dead) is a no-op in BullMQ: de-duplication.
      await withTimeout(
        queue.add(call.tool || 'call', data, {
          jobId: call.callId,
          priority: PRIORITY_NUMBER[call.priority],
          attempts: 1,
          removeOnComplete: true,
          removeOnFail: DEAD_LETTER_RETENTION,
        }),
        COMMAND_TIMEOUT_MS,
      );
    } catch (err) {
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `Redis at ${this.url} did not take call ${call.callId} for pool ${call.pool}: ${messageOf(err)}`,
        { cause: err },
      );
    }
  }

  consume(pool: string, options: ConsumeOptions, handler: (message: QueuedCall) => void): CallConsumer {
    this.assertOpen();
    assertName(pool, 'pool');
    if (!Number.isInteger(options.maxInFlight) || options.maxInFlight < 1) {
      throw new ClusterError(
        'INVALID_CONFIG',
        `maxInFlight must be a positive integer, got ${options.maxInFlight}`,
      );
    }
    this.workerClient ??= createClient(this.url, 'worker', {
      maxRetriesPerRequest: null,
      lazyConnect: false,
    });
    const consumer = new BullmqConsumer(this.workerClient, this.namespace, pool, options, handler);
    this.consumers.add(consumer);
    return consumer;
  }

  async cancel(callId: string, pool: string): Promise<boolean> {
    this.assertOpen();
    const queue = this.queueFor(pool);
    try {
      const state = await queue.getJobState(callId);
      if (state !== 'waiting' && state !== 'prioritized' && state !== 'delayed') return false;
      // Removal refuses a locked job, so a worker that took it meanwhile keeps it (false).
      return (await queue.remove(callId)) === 1;
    } catch (err) {
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `Redis at ${this.url} could not cancel call ${callId}: ${messageOf(err)}`,
        {
          cause: err,
        },
      );
    }
  }

  async stats(pool: string): Promise<QueueStats[]> {
    this.assertOpen();
    const queue = this.queueFor(pool);
    try {
      const now = Date.now();
      const counts = await queue.getCountsPerPriority(PRIORITIES.map((p) => PRIORITY_NUMBER[p]));
      // Stalled jobs come back on the plain wait list whatever their priority, and BullMQ counts
      // active jobs only in total: read those (bounded) jobs' priorities to split them.
      const [waiting, active] = await Promise.all([
        this.jobsOf(queue, 'wait', ['priority', 'timestamp']),
        this.jobsOf(queue, 'active', ['priority']),
      ]);
      const heads = await Promise.all(PRIORITIES.map((p) => this.oldestPrioritized(queue, p)));
      return PRIORITIES.map((priority, i) => {
        const waitingHere = waiting.filter((job) => job.priority === priority);
        const timestamps = waitingHere.map((job) => job.timestamp).filter((t) => t > 0);
        const head = heads[i];
        if (head !== undefined && head > 0) timestamps.push(head);
        const oldest = timestamps.length > 0 ? Math.min(...timestamps) : undefined;
        return {
          pool,
          priority,
          depth: (counts[String(PRIORITY_NUMBER[priority])] ?? 0) + waitingHere.length,
          inFlight: active.filter((job) => job.priority === priority).length,
          oldestAgeMs: oldest === undefined ? 0 : Math.max(0, now - oldest),
        };
      });
    } catch (err) {
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `Redis at ${this.url} could not report pool ${pool}: ${messageOf(err)}`,
        {
          cause: err,
        },
      );
    }
  }

  /** Priorities and timestamps of the first jobs of a BullMQ list (`wait`, `active`). */
  private async jobsOf(
    queue: Queue<JobData, JobResult, string>,
    list: 'wait' | 'active',
    fields: ('priority' | 'timestamp')[],
  ): Promise<{ priority: Priority; timestamp: number }[]> {
    const ids = (await this.producer.lrange(queue.toKey(list), 0, STATS_SCAN_LIMIT - 1)).filter(
      // Old BullMQ versions left "0:<n>" markers in the wait list.
      (id) => !id.startsWith('0:'),
    );
    if (ids.length === 0) return [];
    const pipeline = this.producer.pipeline();
    for (const id of ids) pipeline.hmget(queue.toKey(id), ...fields);
    const replies = (await pipeline.exec()) ?? [];
    const jobs: { priority: Priority; timestamp: number }[] = [];
    for (const [err, value] of replies) {
      if (err || !Array.isArray(value)) continue;
      const [priorityField, timestampField] = value as (string | null)[];
      const priority = NUMBER_PRIORITY.get(Number(priorityField));
      if (priority) jobs.push({ priority, timestamp: Number(timestampField ?? 0) });
    }
    return jobs;
  }

  /** Enqueue time of the first (oldest) prioritized job of a priority, if any. */
  private async oldestPrioritized(
    queue: Queue<JobData, JobResult, string>,
    priority: Priority,
  ): Promise<number | undefined> {
    const n = PRIORITY_NUMBER[priority];
    const [id] = await this.producer.zrangebyscore(
      queue.toKey('prioritized'),
      n * PRIORITY_SCORE_STEP,
      (n + 1) * PRIORITY_SCORE_STEP - 1,
      'LIMIT',
      0,
      1,
    );
    if (!id) return undefined;
    const timestamp = await this.producer.hget(queue.toKey(id), 'timestamp');
    return timestamp ? Number(timestamp) : undefined;
  }

  async ready(): Promise<boolean> {
    if (this.closed || this.producer.status !== 'ready') return false;
    try {
      return (await withTimeout(this.producer.ping(), COMMAND_TIMEOUT_MS)) === 'PONG';
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.consumers].map((c) => c.shutdown()));
    await Promise.all(
      [...this.queues.values()].map((q) => withTimeout(q.close(), CLOSE_TIMEOUT_MS).catch(() => undefined)),
    );
    this.workerClient?.disconnect();
  }

  private assertOpen(): void {
    if (this.closed) throw new ClusterError('QUEUE_UNAVAILABLE', `the Redis broker at ${this.url} is closed`);
  }
}

/**
 * A BullMQ Worker whose processor hands each job to the handler and stays pending until the
 * handler settles it. The settle itself moves the job (completed, delayed, failed), so ack and
 * nack are confirmed by Redis; the processor then rejects with BullMQ's "moved elsewhere"
 * errors so the worker leaves the job alone. Locks are not renewed automatically: like a
 * JetStream ack wait, a job not settled nor `inProgress()`-ed within `ackWaitMs` loses its lock
 * and the stalled-job check (any worker, every quarter ack wait) puts it back in the queue.
 */
class BullmqConsumer implements CallConsumer {
  private readonly worker: Worker<JobData, JobResult, string>;
  private readonly ackWaitMs: number;
  private readonly maxDeliveries: number;
  /** Abandons each delivery still with the handler (used at close). */
  private readonly live = new Set<() => void>();
  private stopped = false;
  private closing?: Promise<void>;

  constructor(
    connection: Redis,
    namespace: string,
    private readonly pool: string,
    options: ConsumeOptions,
    private readonly handler: (message: QueuedCall) => void,
  ) {
    this.ackWaitMs = options.ackWaitMs ?? DEFAULT_ACK_WAIT_MS;
    this.maxDeliveries = options.maxDeliveries ?? DEFAULT_MAX_DELIVERIES;
    this.worker = new Worker<JobData, JobResult, string>(
      `calls-${pool}`,
      (job, token) => this.process(job, token),
      {
        connection,
        prefix: namespace,
        concurrency: options.maxInFlight,
        lockDuration: this.ackWaitMs,
        skipLockRenewal: true,
        stalledInterval: Math.max(100, Math.floor(this.ackWaitMs / 4)),
        // Every pickup counts as a delivery; the one past the limit fails the job (dead letter).
        maxStartedAttempts: this.maxDeliveries,
        maxStalledCount: this.maxDeliveries,
        drainDelay: DRAIN_DELAY_S,
        removeOnFail: DEAD_LETTER_RETENTION,
      },
    );
    this.worker.on('error', (err) =>
      logEvent('warn', 'worker_error', { pool, error: messageOf(err) }, `worker:${pool}`),
    );
    // Jobs run with `attempts: 1`, so every failure the worker records is a dead letter: an
    // undecodable envelope, or a pickup past `maxDeliveries` (a nack past it is counted below).
    this.worker.on('failed', (job, err) => {
      if (!job) return;
      logEvent('warn', 'dead_lettered', {
        pool,
        callId: job.id,
        reason: err.message,
        deliveries: job.attemptsStarted,
      });
      clusterMetrics().queueDeadLettered.inc({ pool, priority: priorityLabel(job.priority) });
    });
  }

  async stop(): Promise<void> {
    // From here on the processor gives every job back, so nothing more reaches the handler;
    // the worker finishes closing once the handler has settled what it holds.
    this.stopped = true;
    this.closing ??= this.worker.close().catch((err: unknown) => {
      logEvent('warn', 'worker_close_failed', { pool: this.pool, error: messageOf(err) });
    });
  }

  /** Stops, forgets unsettled jobs (their locks lapse and they are redelivered), closes the worker. */
  async shutdown(): Promise<void> {
    await this.stop();
    for (const abandon of [...this.live]) abandon();
    try {
      await withTimeout(this.closing ?? Promise.resolve(), CLOSE_TIMEOUT_MS);
    } catch {
      await this.worker.close(true).catch(() => undefined);
    }
  }

  private async process(job: CallJob, token: string | undefined): Promise<JobResult> {
    if (!token) throw new Error('BullMQ handed over a job without a lock token');
    if (this.stopped) {
      // Fetched while stopping: put it back for another consumer.
      await job.moveToWait(token).catch(() => 0);
      throw new WaitingError();
    }
    let decoded: ToolCall;
    try {
      if (typeof job.data?.envelope !== 'string') throw new Error('job data has no envelope');
      decoded = decodeToolCall(Buffer.from(job.data.envelope, 'base64'));
    } catch (err) {
      logEvent('error', 'bad_envelope', {
        code: 'BAD_ENVELOPE',
        pool: this.pool,
        jobId: job.id,
        error: messageOf(err),
      });
      // UnrecoverableError: the worker fails the job at once (dead letter), never retries it.
      throw new UnrecoverableError(`BAD_ENVELOPE: ${messageOf(err)}`);
    }
    const deliveries = Math.max(1, job.attemptsStarted);
    const call: ToolCall = { ...decoded, attempt: deliveries };
    return new Promise<JobResult>((_, reject) => {
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const release = (): boolean => {
        if (settled) return false;
        settled = true;
        clearTimeout(timer);
        this.live.delete(abandon);
        return true;
      };
      // The job is left active without a lock; the stalled check requeues it (or, past the
      // delivery limit, the next pickup fails it).
      const abandon = () => {
        if (release()) reject(new WaitingError('mcp-cluster: left for stalled-job recovery'));
      };
      const arm = () => {
        timer = setTimeout(abandon, this.ackWaitMs);
        timer.unref();
      };
      /** Runs a settle that moves the job, then frees the worker slot. */
      const settle = async (what: string, move: () => Promise<unknown>, done: Error): Promise<void> => {
        try {
          await move();
        } catch (err) {
          reject(new WaitingError('mcp-cluster: settle failed, left for stalled-job recovery'));
          throw new ClusterError(
            'QUEUE_UNAVAILABLE',
            `Redis did not confirm the ${what} of call ${call.callId}: ${messageOf(err)}`,
            { cause: err },
          );
        }
        reject(done);
      };
      const moved = () => new WaitingError('mcp-cluster: settled by the handler');

      const message: QueuedCall = {
        call,
        ack: async () => {
          if (!release()) return;
          await settle('ack', () => job.moveToCompleted(null, token, false), moved());
        },
        nack: async (delayMs = 0) => {
          if (!release()) return;
          if (deliveries >= this.maxDeliveries) {
            const reason = `nacked on delivery ${deliveries} of ${this.maxDeliveries}`;
            await settle(
              'nack',
              () => job.moveToFailed(new UnrecoverableError(reason), token, false),
              moved(),
            );
            logEvent('warn', 'dead_lettered', { pool: this.pool, callId: call.callId, reason, deliveries });
            clusterMetrics().queueDeadLettered.inc({ pool: this.pool, priority: call.priority });
            return;
          }
          await settle(
            'nack',
            () => job.moveToDelayed(Date.now() + Math.max(0, delayMs), token),
            new DelayedError(),
          );
        },
        inProgress: async () => {
          if (settled) return;
          clearTimeout(timer);
          arm();
          let extended: number;
          try {
            extended = await job.extendLock(token, this.ackWaitMs);
          } catch (err) {
            throw new ClusterError(
              'QUEUE_UNAVAILABLE',
              `Redis did not extend call ${call.callId}: ${messageOf(err)}`,
              {
                cause: err,
              },
            );
          }
          if (!extended) {
            throw new ClusterError(
              'QUEUE_UNAVAILABLE',
              `call ${call.callId} lost its lock; it will be redelivered`,
            );
          }
        },
        term: async (reason: string) => {
          if (!release()) return;
          await settle('term', () => job.moveToCompleted({ terminated: reason }, token, false), moved());
        },
      };
      this.live.add(abandon);
      arm();
      try {
        this.handler(message);
      } catch (err) {
        logEvent('error', 'handler_threw', { pool: this.pool, callId: call.callId, error: messageOf(err) });
      }
    });
  }
}

/** Cancel orders on the Redis pub/sub channel `<namespace>:cancels`, over a dedicated subscriber connection. */
class RedisCancelBus implements CancelBus {
  private readonly listeners = new Set<(order: CancelOrder) => void>();
  private subscriber?: Promise<Redis>;

  constructor(
    private readonly url: string,
    private readonly channel: string,
    private readonly publisher: Redis,
  ) {}

  async publish(order: CancelOrder): Promise<void> {
    try {
      await withTimeout(this.publisher.publish(this.channel, JSON.stringify(order)), COMMAND_TIMEOUT_MS);
    } catch (err) {
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `Redis at ${this.url} did not take a cancel order: ${messageOf(err)}`,
        {
          cause: err,
        },
      );
    }
  }

  async subscribe(listener: (order: CancelOrder) => void): Promise<() => void> {
    this.subscriber ??= this.connectSubscriber();
    try {
      await this.subscriber;
    } catch (err) {
      this.subscriber = undefined;
      throw err;
    }
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  private async connectSubscriber(): Promise<Redis> {
    const client = createClient(this.url, 'subscriber', { maxRetriesPerRequest: null });
    await connectOrFail(client, this.url);
    client.on('message', (channel: string, text: string) => {
      if (channel !== this.channel) return;
      const order = parseCancelOrder(text);
      if (!order) {
        logEvent('warn', 'bad_cancel_order', { channel });
        return;
      }
      for (const listener of this.listeners) {
        try {
          listener(order);
        } catch (err) {
          logEvent('error', 'cancel_listener_threw', { error: messageOf(err) });
        }
      }
    });
    // Resolves once Redis confirmed the subscription; ioredis re-subscribes after reconnects.
    await client.subscribe(this.channel);
    return client;
  }

  async close(): Promise<void> {
    this.listeners.clear();
    const subscriber = this.subscriber;
    this.subscriber = undefined;
    if (subscriber) (await subscriber.catch(() => undefined))?.disconnect();
  }
}

function createClient(url: string, role: string, extra: RedisOptions): Redis {
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

async function connectOrFail(client: Redis, url: string): Promise<void> {
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

function parseCancelOrder(text: string): CancelOrder | undefined {
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value !== 'object' || value === null) return undefined;
    const { sessionId, requestId, reason } = value as Record<string, unknown>;
    if (typeof sessionId !== 'string' || typeof requestId !== 'string' || typeof reason !== 'string')
      return undefined;
    return { sessionId, requestId, reason };
  } catch {
    return undefined;
  }
}

/**
 * The priority label of a job: its priority name, or `unknown` for a job some other producer
 * added with a priority mcp-cluster does not use (the label set stays bounded).
 */
function priorityLabel(priority: number | undefined): Priority | 'unknown' {
  return NUMBER_PRIORITY.get(priority ?? 0) ?? 'unknown';
}

function assertName(name: string, what: string): void {
  if (!NAME_PATTERN.test(name)) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `${what} "${name}" may hold only letters, digits, "_" and "-" (it names Redis keys and BullMQ queues)`,
    );
  }
}
