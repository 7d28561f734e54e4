import { DelayedError, UnrecoverableError, WaitingError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  type CallConsumer,
  ClusterError,
  type ConsumeOptions,
  DEFAULT_ACK_WAIT_MS,
  DEFAULT_MAX_DELIVERIES,
  messageOf,
  type QueuedCall,
  type ToolCall,
  withTimeout,
} from '../core/index.js';
import { decodeToolCall } from '../protobuf/index.js';
import { DEAD_LETTER_RETENTION, recordDeadLetter, watchDeadLetters } from './dead-letters.js';
import { type CallJob, type JobData, type JobResult, queueName } from './jobs.js';
import { logEvent } from './log.js';
import { CLOSE_TIMEOUT_MS } from './redis-connection.js';

/** Seconds a worker blocks on an empty queue before polling again (an enqueue wakes it at once). */
const DRAIN_DELAY_S = 5;

/**
 * A BullMQ Worker whose processor hands each job to the handler and stays pending until the
 * handler settles it. The settle itself moves the job (completed, delayed, failed), so ack and
 * nack are confirmed by Redis; the processor then rejects with BullMQ's "moved elsewhere"
 * errors so the worker leaves the job alone. Locks are not renewed automatically: like a
 * JetStream ack wait, a job not settled nor `inProgress()`-ed within `ackWaitMs` loses its lock
 * and the stalled-job check (any worker, every quarter ack wait) puts it back in the queue.
 */
export class BullmqConsumer implements CallConsumer {
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
      queueName(pool),
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
    watchDeadLetters(this.worker, pool);
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
            // A job failed by its holder does not reach the worker's `failed` event: record it here.
            const reason = `nacked on delivery ${deliveries} of ${this.maxDeliveries}`;
            await settle(
              'nack',
              () => job.moveToFailed(new UnrecoverableError(reason), token, false),
              moved(),
            );
            recordDeadLetter(this.pool, call.priority, call.callId, reason, deliveries);
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
              { cause: err },
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
