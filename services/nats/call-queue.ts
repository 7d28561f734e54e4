import { JetStreamApiCodes } from '@nats-io/jetstream';
import {
  assertName,
  type CallConsumer,
  type CallQueue,
  ClusterError,
  type ConsumeOptions,
  messageOf,
  PRIORITIES,
  type Priority,
  type QueuedCall,
  type QueueStats,
  type ToolCall,
  withTimeout,
} from '../core/index.js';
import { encodeToolCall } from '../protobuf/index.js';
import { API_TIMEOUT_MS, type NatsLink, RECONNECT_GRACE_MS } from './connection.js';
import { NatsConsumer } from './consumer.js';
import type { DeadLetters } from './dead-letters.js';
import { isNoStream, type PubAck, RequestTimeoutError } from './requests.js';
import { isApiError, isLostTopology, type Topology } from './topology.js';

/** Enqueue receipts (call id → stream sequence) kept for `cancel`. */
const RECEIPTS_MAX = 100_000;
const RECEIPT_TTL_MAX_MS = 24 * 3600 * 1000;
const RECEIPT_TTL_SLACK_MS = 60_000;
/** What pool and consumer names become, for the name check's message. */
const NAMES_USED_FOR = 'NATS subjects and consumers';

interface Receipt {
  seq: number;
  pool: string;
  priority: Priority;
  expiresAtMs: number;
}

/**
 * The JetStream call queue: publishes with the call id as `Nats-Msg-Id` (de-duplication within the
 * stream's duplicate window), cancels a still-queued call by the stream sequence its enqueue
 * returned (a receipt kept by the enqueuing replica), reports figures from consumer info, and
 * starts one {@link NatsConsumer} per `consume`. An enqueue waits up to RECONNECT_GRACE_MS for a
 * lost connection, then fails with QUEUE_UNAVAILABLE naming the URL. It has no `onDataLost`: the
 * streams are on file storage, so a restarted server still has every call it acknowledged.
 */
export class NatsCallQueue implements CallQueue {
  readonly kind = 'nats' as const;
  private readonly receipts = new Map<string, Receipt>();
  private readonly consumers = new Set<NatsConsumer>();
  private closed = false;

  constructor(
    private readonly link: NatsLink,
    private readonly topology: Topology,
    private readonly deadLetters: DeadLetters,
  ) {}

  async enqueue(call: ToolCall): Promise<void> {
    this.assertOpen();
    assertName(call.pool, 'pool', NAMES_USED_FOR);
    const subject = this.topology.subject(call.pool, call.priority);
    const data = encodeToolCall(call);
    await this.link.awaitConnected(RECONNECT_GRACE_MS);
    const { requests } = this.link;
    let ack: PubAck;
    try {
      ack = await requests.publish(subject, data, call.callId);
    } catch (err) {
      // A broker restarted without its store has no stream: the publish finds no responder (or
      // times out). Recreate it and retry once; the message id keeps the retry from duplicating the call.
      if (!(await this.streamLost(err))) throw this.unavailable(call, err);
      try {
        await this.topology.ensureStreams();
        ack = await requests.publish(subject, data, call.callId);
      } catch (retryErr) {
        throw this.unavailable(call, retryErr);
      }
    }
    if (!ack.duplicate) this.remember(call, ack.seq);
  }

  consume(pool: string, options: ConsumeOptions, handler: (message: QueuedCall) => void): CallConsumer {
    this.assertOpen();
    assertName(pool, 'pool', NAMES_USED_FOR);
    if (!Number.isInteger(options.maxInFlight) || options.maxInFlight < 1) {
      throw new ClusterError(
        'INVALID_CONFIG',
        `maxInFlight must be a positive integer, got ${options.maxInFlight}`,
      );
    }
    const consumer = new NatsConsumer(
      {
        link: this.link,
        topology: this.topology,
        deadLetters: this.deadLetters,
        forget: (id) => this.forget(id),
      },
      pool,
      options,
      handler,
    );
    // Kept after stop(): its handler may still hold deliveries that close() must abandon.
    this.consumers.add(consumer);
    return consumer;
  }

  async cancel(callId: string, pool: string): Promise<boolean> {
    this.assertOpen();
    const receipt = this.receipts.get(callId);
    if (!receipt || receipt.pool !== pool) return false;
    this.receipts.delete(callId);
    if (receipt.expiresAtMs < Date.now()) return false;
    const { jsm, stream } = this.topology;
    try {
      const info = await jsm.consumers.info(stream, this.topology.durable(pool, receipt.priority));
      // Consumers deliver in stream order, so a sequence at or below the cursor was delivered.
      if (info.delivered.stream_seq >= receipt.seq) return false;
      return await jsm.streams.deleteMessage(stream, receipt.seq, false);
    } catch (err) {
      if (isApiError(err, JetStreamApiCodes.NoMessageFound)) return false;
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `NATS at ${this.link.url} could not cancel call ${callId}: ${messageOf(err)}`,
        { cause: err },
      );
    }
  }

  async stats(pool: string): Promise<QueueStats[]> {
    this.assertOpen();
    assertName(pool, 'pool', NAMES_USED_FOR);
    const { jsm, stream } = this.topology;
    try {
      await this.topology.ensurePool(pool);
      const now = Date.now();
      return await Promise.all(
        PRIORITIES.map(async (priority): Promise<QueueStats> => {
          const info = await jsm.consumers.info(stream, this.topology.durable(pool, priority));
          let oldestAgeMs = 0;
          if (info.num_pending > 0) {
            const first = await jsm.direct.getMessage(stream, {
              seq: info.delivered.stream_seq + 1,
              next_by_subj: this.topology.subject(pool, priority),
            });
            if (first) oldestAgeMs = Math.max(0, now - first.time.getTime());
          }
          return { pool, priority, depth: info.num_pending, inFlight: info.num_ack_pending, oldestAgeMs };
        }),
      );
    } catch (err) {
      // A broker that lost its store lost the consumers too: create them again next time.
      if (isLostTopology(err)) this.topology.forgetPool(pool);
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `NATS at ${this.link.url} could not report pool ${pool}: ${messageOf(err)}`,
        { cause: err },
      );
    }
  }

  async ready(): Promise<boolean> {
    if (this.closed || !this.link.isConnected) return false;
    try {
      await withTimeout(this.topology.jsm.getAccountInfo(), API_TIMEOUT_MS);
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.consumers].map((c) => c.stop()));
    for (const consumer of this.consumers) consumer.abandonAll();
    this.deadLetters.close();
  }

  /** Drops the enqueue receipt of a settled call. */
  private forget(callId: string): void {
    this.receipts.delete(callId);
  }

  private remember(call: ToolCall, seq: number): void {
    const now = Date.now();
    // A receipt is useless once the call's deadline passed: workers drop expired calls anyway.
    const ttl = Math.min(Math.max(call.deadlineUnixMs - now, 0) + RECEIPT_TTL_SLACK_MS, RECEIPT_TTL_MAX_MS);
    this.receipts.set(call.callId, { seq, pool: call.pool, priority: call.priority, expiresAtMs: now + ttl });
    while (this.receipts.size > RECEIPTS_MAX) {
      const oldest = this.receipts.keys().next();
      if (oldest.done) break;
      this.receipts.delete(oldest.value);
    }
  }

  /** Whether a failed publish may have met a missing stream (and is worth one retry). */
  private async streamLost(err: unknown): Promise<boolean> {
    if (isNoStream(err)) return true;
    if (!this.link.isConnected || !(err instanceof RequestTimeoutError)) return false;
    try {
      await this.topology.jsm.streams.info(this.topology.stream);
      // It exists now, but a consumer loop may just have recreated it: the retry is harmless.
      return true;
    } catch (infoErr) {
      return isApiError(infoErr, JetStreamApiCodes.StreamNotFound);
    }
  }

  private unavailable(call: ToolCall, err: unknown): ClusterError {
    if (err instanceof ClusterError) return err;
    return new ClusterError(
      'QUEUE_UNAVAILABLE',
      `NATS at ${this.link.url} did not take call ${call.callId} for pool ${call.pool}: ${messageOf(err)}`,
      { cause: err },
    );
  }

  private assertOpen(): void {
    if (this.closed)
      throw new ClusterError('QUEUE_UNAVAILABLE', `the NATS broker at ${this.link.url} is closed`);
  }
}
