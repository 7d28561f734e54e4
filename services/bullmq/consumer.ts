import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  BROKER_RECONNECT_GRACE_MS,
  type CallConsumer,
  ClusterError,
  type ConsumeOptions,
  consumedPriorities,
  DEFAULT_ACK_WAIT_MS,
  DEFAULT_MAX_DELIVERIES,
  messageOf,
  type QueuedCall,
  type ToolCall,
  withTimeout,
} from '../core/index.js';
import { decodeToolCall } from '../protobuf/index.js';
import { DEAD_LETTER_RETENTION, recordDeadLetter, watchDeadLetters } from './dead-letters.js';
import {
  type CallJob,
  type JobData,
  type JobResult,
  LANE_PRIORITIES,
  LANES,
  type Lane,
  priorityLabel,
  queueName,
} from './jobs.js';
import { logEvent } from './log.js';
import { awaitReady, CLOSE_TIMEOUT_MS, COMMAND_TIMEOUT_MS, within } from './redis-connection.js';

/** Longest wait for new work before looking again, in seconds (a publish wakes the consumer at once). */
const DRAIN_DELAY_S = 5;
/** Shortest wait for new work, in seconds (0 would block forever). */
const MIN_WAIT_S = 0.01;
/** Most backoff between attempts after Redis failed the loop, in milliseconds. */
const MAX_BACKOFF_MS = 2_000;

/** One BullMQ queue a consumer takes calls from, with the Worker that fetches and settles them. */
interface LaneState {
  readonly lane: Lane;
  readonly worker: Worker<JobData, JobResult, string>;
  /** BullMQ's wake-up key of the queue: a sorted set that gets a member when a job becomes ready. */
  readonly marker: string;
  /** When a delayed job of this queue (a nack with a delay) comes due, epoch ms; Infinity when none is known. */
  dueAt: number;
}

/**
 * One consumer over the BullMQ queues its priorities touch (`calls-<pool>` for high and normal,
 * `calls-<pool>.low` for low; see {@link Lane}), with one `maxInFlight` budget across them.
 *
 * Why not one processing Worker per queue: a Worker's concurrency is its own, so two of them either
 * split the budget (a consumer of all three priorities with `maxInFlight` 1 could not run low calls
 * at all, or would hold two calls) or each take the full budget (up to twice `maxInFlight`), and
 * neither keeps "high before normal before low" across the queues. So the Workers run in BullMQ's
 * manual mode (no processor): this loop fetches one job at a time, while a slot is free, from the
 * first queue (in priority order) that has one, and sleeps on both queues' wake-up markers (one
 * `BZPOPMIN` over both keys on a connection of its own) when all are empty. A worker runs one
 * consumer for `high` + `normal` and one for `low`: each then has one queue and its own budget.
 *
 * A handler settles each job, which moves it (completed, delayed, failed), so ack and nack are
 * confirmed by Redis. Locks are not renewed automatically: like a JetStream ack wait, a job not
 * settled nor `inProgress()`-ed within `ackWaitMs` loses its lock and the stalled-job check (any
 * consumer, every quarter ack wait) puts it back in the queue. Every pickup counts as a delivery;
 * the one past `maxDeliveries` fails the job (a dead letter).
 *
 * Popping a marker is what BullMQ's own Workers do before fetching; a marker this loop popped for a
 * queue it then found no room for leaves other consumers of that queue to find the job at their
 * next look (at most DRAIN_DELAY_S later), or this one as soon as a slot frees.
 */
export class BullmqConsumer implements CallConsumer {
  private readonly lanes: LaneState[];
  /** The blocking connection the loop sleeps on (a blocked command would hold up any other). */
  private readonly waker: Redis;
  private readonly ackWaitMs: number;
  private readonly maxDeliveries: number;
  private readonly maxInFlight: number;
  /** Jobs delivered to the handler and not yet settled (nor abandoned). */
  private held = 0;
  private tokens = 0;
  private readonly tokenPrefix = randomUUID();
  /** Abandons each delivery still with the handler (used at close). */
  private readonly live = new Set<() => void>();
  /** Wakes the loop waiting for a free slot. */
  private roomFreed: (() => void) | undefined;
  /** Wakes the stop that waits for the handler to settle what it holds. */
  private drained: (() => void) | undefined;
  private readonly loop: Promise<void>;
  private stopped = false;
  private closing?: Promise<void>;

  constructor(
    private readonly connection: Redis,
    namespace: string,
    private readonly pool: string,
    options: ConsumeOptions,
    private readonly handler: (message: QueuedCall) => void,
  ) {
    this.ackWaitMs = options.ackWaitMs ?? DEFAULT_ACK_WAIT_MS;
    this.maxDeliveries = options.maxDeliveries ?? DEFAULT_MAX_DELIVERIES;
    this.maxInFlight = options.maxInFlight;
    const priorities = consumedPriorities(options);
    this.lanes = LANES.filter((lane) => LANE_PRIORITIES[lane].some((p) => priorities.includes(p))).map(
      (lane) => {
        const worker = new Worker<JobData, JobResult, string>(queueName(pool, lane), null, {
          connection,
          prefix: namespace,
          autorun: false,
          lockDuration: this.ackWaitMs,
          skipLockRenewal: true,
          stalledInterval: Math.max(100, Math.floor(this.ackWaitMs / 4)),
          maxStalledCount: this.maxDeliveries,
          removeOnFail: DEAD_LETTER_RETENTION,
        });
        worker.on('error', (err) =>
          logEvent('warn', 'worker_error', { pool, lane, error: messageOf(err) }, `worker:${pool}:${lane}`),
        );
        watchDeadLetters(worker, pool);
        // Manual mode runs no stalled-job check of its own: start it, or lapsed locks would stay active.
        void worker.startStalledCheckTimer().catch((err: unknown) => {
          logEvent('warn', 'stalled_check_failed', { pool, lane, error: messageOf(err) });
        });
        return { lane, worker, marker: worker.keys.marker ?? '', dueAt: Number.POSITIVE_INFINITY };
      },
    );
    this.waker = connection.duplicate();
    this.waker.on('error', (err: Error) =>
      logEvent('warn', 'waker_error', { pool, error: messageOf(err) }, `waker:${pool}`),
    );
    this.loop = this.run();
  }

  /**
   * Stops fetching. Resolves once the loop ended, or at once while Redis is unreachable: a fetch
   * waiting for the connection then puts back the job it gets (the loop checks `stopped`), so no
   * job reaches the handler after this resolves either way.
   */
  async stop(): Promise<void> {
    if (!this.stopped) {
      this.stopped = true;
      // Interrupts a BZPOPMIN in progress; a fetch in progress still returns and its job goes back.
      this.waker.disconnect();
      this.roomFreed?.();
      // The workers close once the handler has settled what it holds (settles go through them).
      this.closing = (async () => {
        await this.loop;
        if (this.held > 0) await new Promise<void>((resolve) => (this.drained = resolve));
        await this.closeWorkers();
      })();
    }
    if (this.connection.status === 'ready') await within(this.loop, COMMAND_TIMEOUT_MS);
  }

  /**
   * Stops, forgets unsettled jobs (their locks lapse and they are redelivered), closes the workers:
   * within CLOSE_TIMEOUT_MS while Redis answers, at once while it does not.
   */
  async shutdown(): Promise<void> {
    await this.stop();
    for (const abandon of [...this.live]) abandon();
    const closing = this.closing ?? Promise.resolve();
    if (this.connection.status === 'ready') {
      try {
        await withTimeout(closing, CLOSE_TIMEOUT_MS);
        return;
      } catch {
        // Fall through: drop the connections.
      }
    }
    // Worker.close(true) would return the graceful close already in progress, which waits on
    // Redis for as long as it is gone (the worker connection never times a command out): drop
    // the connections instead; what they had pending fails and the close in progress ends.
    // Not awaited: a disconnect first waits for the connection's setup, which waits for Redis.
    this.waker.disconnect();
    for (const l of this.lanes) l.worker.disconnect().catch(() => undefined);
  }

  private async closeWorkers(): Promise<void> {
    await Promise.all(
      this.lanes.map((l) =>
        l.worker.close().catch((err: unknown) => {
          logEvent('warn', 'worker_close_failed', { pool: this.pool, lane: l.lane, error: messageOf(err) });
        }),
      ),
    );
  }

  /**
   * Runs one command of a settle: waits up to BROKER_RECONNECT_GRACE_MS for a lost connection,
   * then up to COMMAND_TIMEOUT_MS for the answer. The worker connection queues commands while
   * Redis is down (BullMQ needs it so): one that times out here may still run after a reconnect,
   * which is harmless: it carries this delivery's lock token, so Redis refuses it once the job was
   * redelivered, and otherwise it does what was asked.
   */
  private async bounded<T>(command: () => Promise<T>): Promise<T> {
    if (!(await awaitReady(this.connection, BROKER_RECONNECT_GRACE_MS))) {
      throw new Error(`no connection to Redis for ${BROKER_RECONNECT_GRACE_MS} ms`);
    }
    return withTimeout(command(), COMMAND_TIMEOUT_MS);
  }

  /** Fetches while a slot is free, sleeps on the markers while every queue is empty, until stop(). */
  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      try {
        if (this.held >= this.maxInFlight) {
          await new Promise<void>((resolve) => (this.roomFreed = resolve));
          this.roomFreed = undefined;
          continue;
        }
        if (!(await this.fetchOne())) await this.waitForWork();
        failures = 0;
      } catch (err) {
        if (this.stopped) break;
        failures += 1;
        logEvent(
          'warn',
          'consumer_fetch_failed',
          { pool: this.pool, failures, error: messageOf(err) },
          `fetch:${this.pool}`,
        );
        await sleep(Math.min(100 * 2 ** Math.min(failures - 1, 5), MAX_BACKOFF_MS));
      }
    }
  }

  /** Takes one job from the first queue, in priority order, that has one; false when all are empty. */
  private async fetchOne(): Promise<boolean> {
    for (const lane of this.lanes) {
      const token = `${this.tokenPrefix}:${this.tokens++}`;
      const job = await lane.worker.getNextJob(token, { block: false });
      if (!job) continue;
      if (this.stopped) {
        // Fetched while stopping: put it back for another consumer.
        await job.moveToWait(token).catch(() => 0);
        return true;
      }
      await this.deliver(job, token);
      return true;
    }
    return false;
  }

  /**
   * Sleeps until a queue's marker says a job is ready, a delayed job comes due or DRAIN_DELAY_S
   * passed (a look then finds what no marker announced, such as a job a stalled check put back).
   */
  private async waitForWork(): Promise<void> {
    const now = Date.now();
    let until = now + DRAIN_DELAY_S * 1000;
    for (const lane of this.lanes) {
      // A due time that passed was served by the fetch that just ran (which promotes due jobs).
      if (lane.dueAt <= now) lane.dueAt = Number.POSITIVE_INFINITY;
      until = Math.min(until, lane.dueAt);
    }
    const timeoutS = Math.max(MIN_WAIT_S, (until - now) / 1000);
    const reply = await this.waker.bzpopmin(...this.lanes.map((l) => l.marker), timeoutS);
    if (!reply) return;
    const [key, , score] = reply;
    const lane = this.lanes.find((l) => l.marker === key);
    // A marker scored in the future announces a delayed job (a nack with a delay): look then.
    const at = Number(score);
    if (lane && at > Date.now()) lane.dueAt = Math.min(lane.dueAt, at);
  }

  private async deliver(job: CallJob, token: string): Promise<void> {
    const deliveries = Math.max(1, job.attemptsStarted);
    if (deliveries > this.maxDeliveries) {
      // What BullMQ's processing loop does with maxStartedAttempts (which manual mode skips).
      const reason = `delivery ${deliveries} past the limit of ${this.maxDeliveries}`;
      await job.moveToFailed(new UnrecoverableError(reason), token, false);
      recordDeadLetter(this.pool, priorityLabel(job.priority), job.id, reason, deliveries);
      return;
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
      // UnrecoverableError: failed at once (dead letter), never retried.
      const reason = `BAD_ENVELOPE: ${messageOf(err)}`;
      await job.moveToFailed(new UnrecoverableError(reason), token, false);
      recordDeadLetter(this.pool, priorityLabel(job.priority), job.id, reason, deliveries);
      return;
    }
    const call: ToolCall = { ...decoded, attempt: deliveries };
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const release = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      this.live.delete(abandon);
      this.held -= 1;
      this.roomFreed?.();
      if (this.held === 0) this.drained?.();
      return true;
    };
    // The job is left active without a lock; the stalled check requeues it (or, past the
    // delivery limit, the next pickup fails it).
    const abandon = () => void release();
    const arm = () => {
      timer = setTimeout(abandon, this.ackWaitMs);
      timer.unref();
    };
    /** Runs a settle that moves the job; one Redis did not confirm is left for stalled-job recovery. */
    const settle = async (what: string, move: () => Promise<unknown>): Promise<void> => {
      try {
        await this.bounded(move);
      } catch (err) {
        throw new ClusterError(
          'QUEUE_UNAVAILABLE',
          `Redis did not confirm the ${what} of call ${call.callId} (it will be redelivered): ${messageOf(err)}`,
          { cause: err },
        );
      }
    };

    const message: QueuedCall = {
      call,
      ack: async () => {
        if (!release()) return;
        await settle('ack', () => job.moveToCompleted(null, token, false));
      },
      nack: async (delayMs = 0) => {
        if (!release()) return;
        if (deliveries >= this.maxDeliveries) {
          // A job failed by its holder does not reach the worker's `failed` event: record it here.
          const reason = `nacked on delivery ${deliveries} of ${this.maxDeliveries}`;
          await settle('nack', () => job.moveToFailed(new UnrecoverableError(reason), token, false));
          recordDeadLetter(this.pool, call.priority, call.callId, reason, deliveries);
          return;
        }
        await settle('nack', () => job.moveToDelayed(Date.now() + Math.max(0, delayMs), token));
      },
      inProgress: async () => {
        if (settled) return;
        clearTimeout(timer);
        arm();
        let extended: number;
        try {
          extended = await this.bounded(() => job.extendLock(token, this.ackWaitMs));
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
        await settle('term', () => job.moveToCompleted({ terminated: reason }, token, false));
      },
    };
    this.held += 1;
    this.live.add(abandon);
    arm();
    try {
      this.handler(message);
    } catch (err) {
      logEvent('error', 'handler_threw', { pool: this.pool, callId: call.callId, error: messageOf(err) });
    }
  }
}
