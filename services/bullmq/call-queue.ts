import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  BROKER_RECONNECT_GRACE_MS,
  type CallConsumer,
  type CallQueue,
  ClusterError,
  type ConsumeOptions,
  type DataLost,
  messageOf,
  PRIORITIES,
  type Priority,
  type QueuedCall,
  type QueueStats,
  type ToolCall,
  withTimeout,
} from '../core/index.js';
import { encodeToolCall } from '../protobuf/index.js';
import { BullmqConsumer } from './consumer.js';
import { DEAD_LETTER_RETENTION } from './dead-letters.js';
import type { RedisEpoch } from './epoch.js';
import {
  assertRedisName,
  type JobData,
  type JobResult,
  LANE_PRIORITIES,
  LANES,
  type Lane,
  laneOf,
  PRIORITY_NUMBER,
  priorityOf,
  queueName,
} from './jobs.js';
import { logEvent } from './log.js';
import {
  awaitReady,
  CLOSE_TIMEOUT_MS,
  COMMAND_TIMEOUT_MS,
  createClient,
  within,
} from './redis-connection.js';

/** BullMQ stores prioritized jobs in one sorted set scored `priority * 2^32 + counter`. */
const PRIORITY_SCORE_STEP = 0x100000000;
/** Most jobs of one list `stats` reads to split wait and active counts by priority. */
const STATS_SCAN_LIMIT = 1_000;

type CallBullQueue = Queue<JobData, JobResult, string>;

/** Pause before an enqueue tries again after its connection dropped, in milliseconds. */
const RETRY_PAUSE_MS = 50;

/** Whether a failed command met a connection that is down rather than a Redis error reply. */
function isConnectionError(err: unknown): boolean {
  return /Stream isn't writeable|Connection is closed|max retries per request|ECONNRESET|ECONNREFUSED|EPIPE/i.test(
    messageOf(err),
  );
}

/**
 * The BullMQ call queue: enqueue, cancel and stats on the producer connection, over the two queues
 * of each pool (high and normal on `calls-<pool>`, low on `calls-<pool>.low`; see `Lane`). See
 * `openBullmqBroker`.
 */
export class BullmqCallQueue implements CallQueue {
  readonly kind = 'bullmq' as const;
  /** BullMQ queues by `<lane>:<pool>`. */
  private readonly queues = new Map<string, CallBullQueue>();
  private readonly consumers = new Set<BullmqConsumer>();
  /** Shared by every worker (BullMQ needs `maxRetriesPerRequest: null` there); each worker adds its own blocking connection. */
  private workerClient?: Redis;
  private closed = false;

  constructor(
    readonly url: string,
    readonly namespace: string,
    private readonly producer: Redis,
    private readonly epoch: RedisEpoch,
  ) {}

  onDataLost(listener: (event: DataLost) => void): () => void {
    return this.epoch.onDataLost(listener);
  }

  /** The BullMQ queue of a pool's lane, created on first use. */
  queueFor(pool: string, lane: Lane): CallBullQueue {
    const key = `${lane}:${pool}`;
    let queue = this.queues.get(key);
    if (!queue) {
      assertRedisName(pool, 'pool');
      queue = new Queue<JobData, JobResult, string>(queueName(pool, lane), {
        connection: this.producer,
        prefix: this.namespace,
      });
      queue.on('error', (err) =>
        logEvent('warn', 'queue_error', { pool, lane, error: messageOf(err) }, `queue:${key}`),
      );
      this.queues.set(key, queue);
    }
    return queue;
  }

  async enqueue(call: ToolCall): Promise<void> {
    this.assertOpen();
    const queue = this.queueFor(call.pool, laneOf(call.priority));
    const data: JobData = { envelope: Buffer.from(encodeToolCall(call)).toString('base64') };
    // A short outage delays the call instead of failing it: wait up to BROKER_RECONNECT_GRACE_MS
    // (from the first try) for the connection, and try again when it dropped under a try. The
    // producer has no offline queue, so nothing is sent while it is down (see PRODUCER_OPTIONS);
    // a try again is safe, as the job id de-duplicates it.
    const until = Date.now() + BROKER_RECONNECT_GRACE_MS;
    for (;;) {
      if (!(await awaitReady(this.producer, Math.max(0, until - Date.now())))) {
        throw new ClusterError(
          'QUEUE_UNAVAILABLE',
          `Redis at ${this.url} is unreachable (no connection for ${BROKER_RECONNECT_GRACE_MS} ms, ${this.producer.status}); call ${call.callId} for pool ${call.pool} was not queued, retry it`,
        );
      }
      // After a reconnect, learn whether Redis lost its data before queueing into it, so the
      // ingress fails the calls that were lost, not this one.
      await this.epoch.verified();
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
        return;
      } catch (err) {
        // The connection went down under the try (ioredis may not have marked it yet: "Stream
        // isn't writeable"): wait for it again while the bound allows.
        if (Date.now() < until && (this.producer.status !== 'ready' || isConnectionError(err))) {
          await sleep(RETRY_PAUSE_MS);
          continue;
        }
        throw new ClusterError(
          'QUEUE_UNAVAILABLE',
          `Redis at ${this.url} did not take call ${call.callId} for pool ${call.pool}: ${messageOf(err)}`,
          { cause: err },
        );
      }
    }
  }

  consume(pool: string, options: ConsumeOptions, handler: (message: QueuedCall) => void): CallConsumer {
    this.assertOpen();
    assertRedisName(pool, 'pool');
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
    try {
      // The caller does not say the call's priority: look in both lanes (a call id is in one).
      for (const lane of LANES) {
        const queue = this.queueFor(pool, lane);
        const state = await queue.getJobState(callId);
        if (state === 'unknown') continue;
        if (state !== 'waiting' && state !== 'prioritized' && state !== 'delayed') return false;
        // Removal refuses a locked job, so a worker that took it meanwhile keeps it (false).
        return (await queue.remove(callId)) === 1;
      }
      return false;
    } catch (err) {
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `Redis at ${this.url} could not cancel call ${callId}: ${messageOf(err)}`,
        { cause: err },
      );
    }
  }

  async stats(pool: string): Promise<QueueStats[]> {
    this.assertOpen();
    try {
      const now = Date.now();
      // The main queue is read for every priority: low calls queued there before an upgrade to
      // two lanes are still waiting (and the high/normal consumer will run them).
      const [main, low] = await Promise.all([
        this.laneFigures(this.queueFor(pool, 'main'), PRIORITIES),
        this.laneFigures(this.queueFor(pool, 'low'), LANE_PRIORITIES.low),
      ]);
      return PRIORITIES.map((priority) => {
        const rows = [main.get(priority), low.get(priority)].filter((r) => r !== undefined);
        const oldest = Math.min(...rows.map((r) => r.oldest));
        return {
          pool,
          priority,
          depth: rows.reduce((n, r) => n + r.depth, 0),
          inFlight: rows.reduce((n, r) => n + r.inFlight, 0),
          oldestAgeMs: Number.isFinite(oldest) ? Math.max(0, now - oldest) : 0,
        };
      });
    } catch (err) {
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `Redis at ${this.url} could not report pool ${pool}: ${messageOf(err)}`,
        { cause: err },
      );
    }
  }

  /**
   * Depth, in-flight and the oldest waiting job's enqueue time (epoch ms, Infinity when none) of
   * `priorities` on one BullMQ queue.
   */
  private async laneFigures(
    queue: CallBullQueue,
    priorities: readonly Priority[],
  ): Promise<Map<Priority, { depth: number; inFlight: number; oldest: number }>> {
    const counts = await queue.getCountsPerPriority(priorities.map((p) => PRIORITY_NUMBER[p]));
    // Stalled jobs come back on the plain wait list whatever their priority, and BullMQ counts
    // active jobs only in total: read those (bounded) jobs' priorities to split them.
    const [waiting, active] = await Promise.all([
      this.jobsOf(queue, 'wait', ['priority', 'timestamp']),
      this.jobsOf(queue, 'active', ['priority']),
    ]);
    const heads = await Promise.all(priorities.map((p) => this.oldestPrioritized(queue, p)));
    const figures = new Map<Priority, { depth: number; inFlight: number; oldest: number }>();
    priorities.forEach((priority, i) => {
      const waitingHere = waiting.filter((job) => job.priority === priority);
      const timestamps = waitingHere.map((job) => job.timestamp).filter((t) => t > 0);
      const head = heads[i];
      if (head !== undefined && head > 0) timestamps.push(head);
      figures.set(priority, {
        depth: (counts[String(PRIORITY_NUMBER[priority])] ?? 0) + waitingHere.length,
        inFlight: active.filter((job) => job.priority === priority).length,
        oldest: Math.min(...timestamps),
      });
    });
    return figures;
  }

  /** Priorities and timestamps of the first jobs of a BullMQ list (`wait`, `active`). */
  private async jobsOf(
    queue: CallBullQueue,
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
      const priority = priorityOf(Number(priorityField));
      if (priority) jobs.push({ priority, timestamp: Number(timestampField ?? 0) });
    }
    return jobs;
  }

  /** Enqueue time of the first (oldest) prioritized job of a priority, if any. */
  private async oldestPrioritized(queue: CallBullQueue, priority: Priority): Promise<number | undefined> {
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

  /**
   * Stops the consumers and closes the queues: within CLOSE_TIMEOUT_MS each while Redis answers,
   * at once (connections dropped, nothing waited on) while it does not.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.consumers].map((c) => c.shutdown()));
    const reachable = this.producer.status === 'ready';
    await Promise.all(
      [...this.queues.values()].map((q) => {
        const closing = q.close().catch(() => undefined);
        return reachable ? within(closing, CLOSE_TIMEOUT_MS) : undefined;
      }),
    );
    this.workerClient?.disconnect();
  }

  private assertOpen(): void {
    if (this.closed) throw new ClusterError('QUEUE_UNAVAILABLE', `the Redis broker at ${this.url} is closed`);
  }
}
