import {
  AckPolicy,
  type Consumer,
  type ConsumerConfig,
  type ConsumerInfo,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstreamManager,
  type PubAck,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from '@nats-io/jetstream';
import { connect, headers, type NatsConnection, nanos, type Subscription } from '@nats-io/transport-node';
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

const logEvent = queueLog('queue.nats');

/** How long JetStream remembers a `Nats-Msg-Id` for de-duplication. */
const DUPLICATE_WINDOW_MS = 120_000;
/** Timeout of JetStream API calls, publishes and confirmed acks. */
const API_TIMEOUT_MS = 5_000;
/** Timeout of the initial TCP/NATS handshake; the open must fail fast on a dead URL. */
const CONNECT_TIMEOUT_MS = 3_000;
/** Pause between reconnect attempts after a broker restart. */
const RECONNECT_WAIT_MS = 250;
/** How long an enqueue waits for a dropped connection to come back before failing. */
const RECONNECT_GRACE_MS = 3_000;
/**
 * Expiry of every pull request. The client library's minimum: a pull that finds fewer
 * messages than it asked for holds its reserved in-flight slots this long.
 */
const PULL_EXPIRES_MS = 1_000;
/**
 * Expiry of a standing pull: while a consumer has room and no backlog it keeps one pull of one
 * message open on every priority, so a publish is delivered at once, with no look or pull request
 * on the call's path. Re-armed when it expires (a few small requests per minute while idle).
 */
const STANDBY_EXPIRES_MS = 5_000;
/** Extra time after a pull's expiry before the loop gives up on a wedged pull. */
const PULL_GUARD_MS = 10_000;
/** While idle, how often the loop looks at the consumers even without a doorbell. */
const IDLE_RECHECK_MS = 5_000;
/**
 * While other consumers hold unacknowledged messages of a priority, how often (at most; the ack
 * wait when shorter) an idle loop pulls blindly to pick up ones that became due for redelivery
 * (nacked or expired elsewhere); JetStream does not count those in `num_pending`.
 */
const PROBE_INTERVAL_MS = 2_000;
/** Dead letters kept for inspection. */
const DEAD_MAX_AGE_MS = 14 * 24 * 3600 * 1000;
const DEAD_MAX_MSGS = 100_000;
/** Enqueue receipts (call id → stream sequence) kept for `cancel`. */
const RECEIPTS_MAX = 100_000;
const RECEIPT_TTL_MAX_MS = 24 * 3600 * 1000;
const RECEIPT_TTL_SLACK_MS = 60_000;
/** Names that become parts of stream names, subjects and durable consumer names. */
const NAME_PATTERN = /^[A-Za-z0-9_-]+$/;
/** JetStream API error: a stream with that name exists with another configuration. */
const STREAM_NAME_IN_USE = 10058;

/**
 * Opens the NATS JetStream broker: a work-queue stream `<ns>_calls` holding subjects
 * `<ns>.calls.<pool>.<priority>`, one durable pull consumer per pool and priority, a limits
 * stream `<ns>_dead` for dead letters on `<ns>.dead.<pool>`, and cancel orders on the core
 * subject `<ns>.cancels`. Creates or updates streams idempotently, so concurrent opens are safe.
 * Rejects with `ClusterError('QUEUE_UNAVAILABLE')` naming the URL when the broker cannot be
 * reached or has no JetStream; the connection then reconnects by itself for its whole life.
 */
export async function openNatsBroker(options: BrokerOptions): Promise<Broker> {
  const namespace = options.namespace;
  if (!NAME_PATTERN.test(namespace)) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `broker namespace "${namespace}" may hold only letters, digits, "_" and "-" (it names NATS streams)`,
    );
  }
  for (const pool of options.pools) assertName(pool, 'pool');

  let nc: NatsConnection;
  try {
    nc = await connect({
      servers: options.url.split(',').map((s) => s.trim()),
      name: `mcp-cluster:${namespace}`,
      timeout: CONNECT_TIMEOUT_MS,
      maxReconnectAttempts: -1,
      reconnectTimeWait: RECONNECT_WAIT_MS,
    });
  } catch (err) {
    throw new ClusterError(
      'QUEUE_UNAVAILABLE',
      `cannot connect to NATS at ${options.url}: ${messageOf(err)}`,
      {
        cause: err,
      },
    );
  }

  try {
    const jsm = await jetstreamManager(nc, { timeout: API_TIMEOUT_MS });
    const queue = new NatsCallQueue(nc, jsm, options.url, namespace);
    await queue.ensureStreams();
    for (const pool of options.pools) await queue.ensurePool(pool);
    const cancels = new NatsCancelBus(queue, `${namespace}.cancels`);
    let closing: Promise<void> | undefined;
    return {
      url: options.url,
      queue,
      cancels,
      close: () => {
        closing ??= (async () => {
          await queue.close();
          await cancels.close();
          await closeConnection(nc);
        })();
        return closing;
      },
    };
  } catch (err) {
    await nc.close().catch(() => undefined);
    if (err instanceof ClusterError) throw err;
    throw new ClusterError(
      'QUEUE_UNAVAILABLE',
      `NATS at ${options.url} has no usable JetStream: ${messageOf(err)}`,
      { cause: err },
    );
  }
}

interface Receipt {
  seq: number;
  pool: string;
  priority: Priority;
  expiresAtMs: number;
}

type ConsumerHandles = Record<Priority, Consumer>;

/** The JetStream call queue. See {@link openNatsBroker}. */
class NatsCallQueue implements CallQueue {
  readonly kind = 'nats' as const;
  readonly js: JetStreamClient;
  readonly stream: string;
  readonly deadStream: string;
  /** Envelopes that could not be decoded and were dead-lettered, for tests and metrics. */
  badEnvelopes = 0;
  private readonly receipts = new Map<string, Receipt>();
  private readonly consumers = new Set<NatsConsumer>();
  /** Pools whose consumers exist (created at open or on first use). */
  private readonly ensuredPools = new Map<string, Promise<void>>();
  private advisories?: Subscription;
  private connected = true;
  private readonly reconnectWaiters = new Set<() => void>();
  private closed = false;

  constructor(
    readonly nc: NatsConnection,
    readonly jsm: JetStreamManager,
    readonly url: string,
    readonly namespace: string,
  ) {
    this.js = jsm.jetstream();
    this.stream = `${namespace}_calls`;
    this.deadStream = `${namespace}_dead`;
    void this.watchStatus();
  }

  /** Whether the connection is up; requests sent while it is down are lost by the client. */
  get isConnected(): boolean {
    return this.connected && !this.nc.isClosed();
  }

  /**
   * Waits up to `ms` for a lost connection to come back, so a short broker blip delays an
   * enqueue instead of failing it. Rejects with QUEUE_UNAVAILABLE when it does not.
   */
  async awaitConnected(ms: number): Promise<void> {
    if (this.isConnected) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.reconnectWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.reconnectWaiters.add(done);
    });
    if (!this.isConnected) {
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `the connection to NATS at ${this.url} is down (reconnecting)`,
      );
    }
  }

  subject(pool: string, priority: Priority): string {
    return `${this.namespace}.calls.${pool}.${priority}`;
  }

  durable(pool: string, priority: Priority): string {
    return `${pool}_${priority}`;
  }

  private async watchStatus(): Promise<void> {
    for await (const status of this.nc.status()) {
      if (status.type === 'disconnect') {
        this.connected = false;
        logEvent('warn', 'nats_disconnected', { url: this.url });
      } else if (status.type === 'reconnect') {
        this.connected = true;
        logEvent('info', 'nats_reconnected', { url: this.url });
        for (const resume of this.reconnectWaiters) resume();
        this.reconnectWaiters.clear();
        for (const consumer of this.consumers) consumer.wake();
      }
    }
  }

  /** Creates or updates both streams; safe to run from many processes at once. */
  async ensureStreams(): Promise<void> {
    await this.upsertStream({
      name: this.stream,
      subjects: [`${this.namespace}.calls.>`],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      duplicate_window: nanos(DUPLICATE_WINDOW_MS),
      // Direct gets let stats() read the oldest waiting message cheaply.
      allow_direct: true,
    });
    await this.upsertStream({
      name: this.deadStream,
      subjects: [`${this.namespace}.dead.>`],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      max_age: nanos(DEAD_MAX_AGE_MS),
      max_msgs: DEAD_MAX_MSGS,
      duplicate_window: nanos(DUPLICATE_WINDOW_MS),
    });
  }

  private async upsertStream(config: Partial<StreamConfig> & { name: string }): Promise<void> {
    try {
      await this.jsm.streams.add(config);
    } catch (err) {
      if (!(err instanceof JetStreamApiError && err.code === STREAM_NAME_IN_USE)) throw err;
      try {
        await this.jsm.streams.update(config.name, config);
      } catch (updateErr) {
        throw new ClusterError(
          'QUEUE_UNAVAILABLE',
          `NATS stream ${config.name} at ${this.url} exists with a configuration that cannot be changed to ` +
            `the one mcp-cluster needs (${messageOf(updateErr)}); delete the stream or use another namespace`,
          { cause: updateErr },
        );
      }
    }
  }

  /** Makes sure the pool's consumers exist, without changing existing ones (first caller wins). */
  ensurePool(pool: string): Promise<void> {
    let ensured = this.ensuredPools.get(pool);
    if (!ensured) {
      ensured = this.upsertConsumers(pool, DEFAULT_ACK_WAIT_MS, DEFAULT_MAX_DELIVERIES, false);
      ensured.catch(() => this.ensuredPools.delete(pool));
      this.ensuredPools.set(pool, ensured);
    }
    return ensured;
  }

  /**
   * Creates the pool's three consumers, or (with `apply`) brings existing ones to this
   * ack wait and delivery limit: a worker's consume options are the source of truth.
   */
  async upsertConsumers(
    pool: string,
    ackWaitMs: number,
    maxDeliveries: number,
    apply: boolean,
  ): Promise<void> {
    for (const priority of PRIORITIES) {
      const durable = this.durable(pool, priority);
      const config: Partial<ConsumerConfig> = {
        durable_name: durable,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        filter_subject: this.subject(pool, priority),
        ack_wait: nanos(ackWaitMs),
        max_deliver: maxDeliveries,
        // In-flight is bounded per consumer process (maxInFlight), not across the cluster.
        max_ack_pending: -1,
      };
      let existing: ConsumerInfo | undefined;
      try {
        existing = await this.jsm.consumers.info(this.stream, durable);
      } catch (err) {
        if (!isApiError(err, JetStreamApiCodes.ConsumerNotFound)) throw err;
      }
      if (!existing) {
        try {
          await this.jsm.consumers.add(this.stream, config);
          continue;
        } catch (err) {
          // Another process created it between our look and our add; fall through to compare.
          existing = await this.jsm.consumers.info(this.stream, durable).catch(() => {
            throw err;
          });
        }
      }
      if (
        apply &&
        (existing.config.ack_wait !== config.ack_wait || existing.config.max_deliver !== config.max_deliver)
      ) {
        await this.jsm.consumers.update(this.stream, durable, {
          ack_wait: config.ack_wait,
          max_deliver: config.max_deliver,
        });
      }
    }
    this.ensuredPools.set(pool, Promise.resolve());
  }

  /** @internal Bound handles on the pool's consumers, after applying the consume options. */
  async openConsumers(pool: string, ackWaitMs: number, maxDeliveries: number): Promise<ConsumerHandles> {
    await this.upsertConsumers(pool, ackWaitMs, maxDeliveries, true);
    this.watchMaxDeliveries();
    const [high, normal, low] = await Promise.all(
      PRIORITIES.map((p) => this.js.consumers.get(this.stream, this.durable(pool, p))),
    );
    if (!high || !normal || !low) throw new Error(`consumers of pool ${pool} are missing`);
    return { high, normal, low };
  }

  async enqueue(call: ToolCall): Promise<void> {
    this.assertOpen();
    assertName(call.pool, 'pool');
    const subject = this.subject(call.pool, call.priority);
    const data = encodeToolCall(call);
    await this.awaitConnected(RECONNECT_GRACE_MS);
    let ack: PubAck;
    try {
      ack = await this.js.publish(subject, data, { msgID: call.callId, timeout: API_TIMEOUT_MS });
    } catch (err) {
      // A broker restarted without its store has no stream: the publish finds no responder (or
      // times out when a consumer's doorbell listens on the subject). Recreate it and retry
      // once; the message id keeps the retry from duplicating the call.
      if (!(await this.streamLost(err))) throw this.unavailable(call, err);
      try {
        await this.ensureStreams();
        ack = await this.js.publish(subject, data, { msgID: call.callId, timeout: API_TIMEOUT_MS });
      } catch (retryErr) {
        throw this.unavailable(call, retryErr);
      }
    }
    if (!ack.duplicate) this.remember(call, ack.seq);
  }

  /** Whether a failed publish may have met a missing stream (and is worth one retry). */
  private async streamLost(err: unknown): Promise<boolean> {
    if (err instanceof Error && err.name === 'JetStreamNotEnabled') return true;
    if (!this.isConnected || !(err instanceof Error && err.name === 'TimeoutError')) return false;
    try {
      await this.jsm.streams.info(this.stream);
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
      `NATS at ${this.url} did not take call ${call.callId} for pool ${call.pool}: ${messageOf(err)}`,
      { cause: err },
    );
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

  /**
   * @internal Sends a settle once the connection is up (the client loses what it sends while
   * down) and waits, bounded, for the server to have it.
   */
  async confirm(what: string, callId: string, op: () => Promise<unknown>): Promise<void> {
    try {
      await this.awaitConnected(RECONNECT_GRACE_MS);
      await withTimeout(op(), API_TIMEOUT_MS);
    } catch (err) {
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `NATS at ${this.url} did not confirm the ${what} of call ${callId}: ${messageOf(err)}`,
        { cause: err },
      );
    }
  }

  /** @internal Drops the enqueue receipt of a settled call. */
  forget(callId: string): void {
    this.receipts.delete(callId);
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
    const consumer = new NatsConsumer(this, pool, options, handler);
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
    try {
      const info = await this.jsm.consumers.info(this.stream, this.durable(pool, receipt.priority));
      // Consumers deliver in stream order, so a sequence at or below the cursor was delivered.
      if (info.delivered.stream_seq >= receipt.seq) return false;
      return await this.jsm.streams.deleteMessage(this.stream, receipt.seq, false);
    } catch (err) {
      if (isApiError(err, JetStreamApiCodes.NoMessageFound)) return false;
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `NATS at ${this.url} could not cancel call ${callId}: ${messageOf(err)}`,
        {
          cause: err,
        },
      );
    }
  }

  async stats(pool: string): Promise<QueueStats[]> {
    this.assertOpen();
    assertName(pool, 'pool');
    try {
      await this.ensurePool(pool);
      const now = Date.now();
      return await Promise.all(
        PRIORITIES.map(async (priority): Promise<QueueStats> => {
          const info = await this.jsm.consumers.info(this.stream, this.durable(pool, priority));
          let oldestAgeMs = 0;
          if (info.num_pending > 0) {
            const first = await this.jsm.direct.getMessage(this.stream, {
              seq: info.delivered.stream_seq + 1,
              next_by_subj: this.subject(pool, priority),
            });
            if (first) oldestAgeMs = Math.max(0, now - first.time.getTime());
          }
          return { pool, priority, depth: info.num_pending, inFlight: info.num_ack_pending, oldestAgeMs };
        }),
      );
    } catch (err) {
      // A broker that lost its store lost the consumers too: create them again next time.
      if (
        isApiError(err, JetStreamApiCodes.ConsumerNotFound) ||
        isApiError(err, JetStreamApiCodes.StreamNotFound)
      ) {
        this.ensuredPools.delete(pool);
      }
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `NATS at ${this.url} could not report pool ${pool}: ${messageOf(err)}`,
        {
          cause: err,
        },
      );
    }
  }

  async ready(): Promise<boolean> {
    if (this.closed || this.nc.isClosed() || !this.connected) return false;
    try {
      await withTimeout(this.jsm.getAccountInfo(), API_TIMEOUT_MS);
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
    this.advisories?.unsubscribe();
  }

  private assertOpen(): void {
    if (this.closed) throw new ClusterError('QUEUE_UNAVAILABLE', `the NATS broker at ${this.url} is closed`);
  }

  /**
   * Terminates a message. nats-server before 2.10 ignores a `+TERM` that carries a reason (the
   * message would come back after its ack wait), so the reason is only sent to newer servers.
   */
  terminate(m: JsMsg, reason: string): void {
    const [major = 0, minor = 0] = (this.nc.info?.version ?? '0.0').split('.').map(Number);
    if (major > 2 || (major === 2 && minor >= 10)) m.term(reason);
    else m.term();
  }

  /**
   * Publishes a message's raw envelope to `<ns>.dead.<pool>` and terminates it. Used when the
   * last delivery is nacked or expires, and for envelopes that cannot be decoded.
   */
  async deadLetter(
    m: JsMsg,
    pool: string,
    callId: string | undefined,
    reason: string,
    removeFromStream: boolean,
  ) {
    await this.publishDead(
      m.subject,
      pool,
      m.data,
      callId ?? `seq-${m.seq}`,
      reason,
      m.info.deliveryCount,
      m.seq,
    );
    this.terminate(m, reason);
    if (removeFromStream) {
      // After the final ack wait the server may already have given up on the message, which
      // then stays in the work queue; deleting it keeps the stream and its figures clean.
      await this.jsm.streams.deleteMessage(this.stream, m.seq, false).catch(() => false);
    }
    await withTimeout(this.nc.flush(), API_TIMEOUT_MS).catch(() => undefined);
  }

  private async publishDead(
    subject: string,
    pool: string,
    data: Uint8Array,
    id: string,
    reason: string,
    deliveries: number,
    seq: number,
  ): Promise<void> {
    const h = headers();
    h.set('Mcp-Dead-Reason', reason.replace(/[^\x20-\x7e]/g, ' '));
    h.set('Mcp-Deliveries', String(deliveries));
    h.set('Mcp-Stream-Seq', String(seq));
    try {
      await this.js.publish(`${this.namespace}.dead.${pool}`, data, {
        msgID: id,
        headers: h,
        timeout: API_TIMEOUT_MS,
      });
    } catch (err) {
      logEvent('error', 'dead_letter_failed', { pool, id, reason, error: messageOf(err) });
    }
    logEvent('warn', 'dead_lettered', { pool, id, reason, deliveries });
    clusterMetrics().queueDeadLettered.inc({ pool, priority: priorityOfSubject(subject) });
  }

  /** @internal Terminates a message whose envelope does not decode; it never reaches a handler. */
  async discardBadEnvelope(m: JsMsg, pool: string, err: unknown): Promise<void> {
    this.badEnvelopes += 1;
    logEvent('error', 'bad_envelope', {
      code: 'BAD_ENVELOPE',
      pool,
      seq: m.seq,
      deliveries: m.info.deliveryCount,
      error: messageOf(err),
      count: this.badEnvelopes,
    });
    await this.deadLetter(m, pool, undefined, `BAD_ENVELOPE: ${messageOf(err)}`, false);
  }

  /**
   * A worker that died holding a message on its last delivery never nacks it: the server then
   * announces the exhausted message and leaves it in the stream. One consuming process (queue
   * group) dead-letters and removes it.
   */
  private watchMaxDeliveries(): void {
    if (this.advisories) return;
    this.advisories = this.nc.subscribe(`$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${this.stream}.*`, {
      queue: `${this.namespace}_dead_letters`,
      callback: (err, msg) => {
        if (err) return;
        let advisory: { stream_seq?: unknown; deliveries?: unknown };
        try {
          advisory = JSON.parse(msg.string()) as typeof advisory;
        } catch {
          return;
        }
        const { stream_seq: seq, deliveries } = advisory;
        if (typeof seq === 'number')
          void this.deadLetterOrphan(seq, typeof deliveries === 'number' ? deliveries : 0);
      },
    });
  }

  private async deadLetterOrphan(seq: number, deliveries: number): Promise<void> {
    try {
      const stored = await this.jsm.streams.getMessage(this.stream, { seq });
      if (!stored) return;
      const pool = stored.subject.split('.')[2] ?? 'unknown';
      let id = `seq-${seq}`;
      try {
        id = decodeToolCall(stored.data).callId;
      } catch {
        // kept under its sequence number
      }
      await this.publishDead(
        stored.subject,
        pool,
        stored.data,
        id,
        'delivery limit reached without a settle',
        deliveries,
        seq,
      );
      await this.jsm.streams.deleteMessage(this.stream, seq, false);
    } catch (err) {
      if (isApiError(err, JetStreamApiCodes.NoMessageFound)) return;
      logEvent('error', 'dead_letter_failed', { seq, error: messageOf(err) });
    }
  }
}

/**
 * One consume loop over the three priority consumers of a pool, never holding more than
 * `maxInFlight` messages delivered or asked for (`held + reserved`). Each turn it looks at the
 * consumers (one info request each) and pulls from the highest priority that has messages waiting,
 * never asking for more than the free slots.
 *
 * When nothing waits, it keeps a standing pull of one message open on every priority (each holds one
 * reserved slot), so the next publish is delivered at once with no look or pull request on the call's
 * path, and an idle worker costs a few small requests per minute. Without room for three standing
 * pulls (`maxInFlight` below 3, or a nearly full worker) it arms a one-shot "doorbell" core
 * subscription on the pool's subjects instead (every publish to a stream subject is also seen by core
 * subscribers) and sleeps until a publish, a local event or a recheck timer.
 *
 * Why not block in pulls while busy: a pull request reserves the slots it asks for until it expires,
 * so blocking on three consumers at once would either exceed maxInFlight or break priority order.
 * Redeliveries (nacks, expired ack waits) are not in `num_pending`: standing pulls receive them when
 * due; otherwise local ones schedule a short pull when due, and while other holders keep
 * unacknowledged messages of a priority the loop pulls blindly now and then to pick up theirs.
 */
class NatsConsumer implements CallConsumer {
  readonly finished: Promise<void>;
  private readonly ackWaitMs: number;
  private readonly maxDeliveries: number;
  private readonly maxInFlight: number;
  private readonly probeIntervalMs: number;
  private held = 0;
  private readonly heldBy: Record<Priority, number> = { high: 0, normal: 0, low: 0 };
  /** Slots asked for by open pulls and not yet delivered. */
  private reserved = 0;
  /** Open standing pulls per priority. */
  private readonly open: Record<Priority, number> = { high: 0, normal: 0, low: 0 };
  /** A failure of a pull running beside the loop, rethrown by the loop for its backoff. */
  private pullError: unknown;
  private readonly pullTasks = new Set<Promise<void>>();
  /** When a blind pull on a priority is due (a nacked or expired message should be back). */
  private readonly dueAt: Record<Priority, number> = { high: Infinity, normal: Infinity, low: Infinity };
  /**
   * Since when other holders have had unacknowledged messages of a priority (0: not now). Only
   * a state that lasts a probe interval triggers a blind pull; acks in flight come and go.
   */
  private readonly othersHoldSince: Record<Priority, number> = { high: 0, normal: 0, low: 0 };
  private readonly lastProbeAt: Record<Priority, number> = { high: 0, normal: 0, low: 0 };
  /** Pull requests outstanding, closed at stop() so it does not wait for their expiry. */
  private readonly pulls = new Set<{ close(): Promise<unknown> }>();
  private readonly live = new Set<() => void>();
  private readonly signal = new Signal();
  private stopped = false;
  private failures = 0;

  constructor(
    private readonly queue: NatsCallQueue,
    private readonly pool: string,
    options: ConsumeOptions,
    private readonly handler: (message: QueuedCall) => void,
  ) {
    this.ackWaitMs = options.ackWaitMs ?? DEFAULT_ACK_WAIT_MS;
    this.maxDeliveries = options.maxDeliveries ?? DEFAULT_MAX_DELIVERIES;
    this.maxInFlight = options.maxInFlight;
    // A short ack wait means quick redeliveries: look for them at least that often.
    this.probeIntervalMs = Math.min(PROBE_INTERVAL_MS, this.ackWaitMs);
    this.finished = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.signal.notify();
    // The server drops a pull request once its inbox loses interest; messages that already
    // arrived are still yielded (and handed over) before the pull ends.
    for (const pull of this.pulls) void pull.close();
    await this.finished;
    // Messages a closing pull already received are still handed over before stop() resolves.
    await Promise.all(this.pullTasks);
  }

  /** Wakes an idle loop (after a reconnect). */
  wake(): void {
    this.signal.notify();
  }

  /** Forgets unsettled messages at close: the server redelivers them after their ack wait. */
  abandonAll(): void {
    for (const abandon of [...this.live]) abandon();
  }

  private async run(): Promise<void> {
    let handles: ConsumerHandles | undefined;
    while (!this.stopped) {
      try {
        handles ??= await this.queue.openConsumers(this.pool, this.ackWaitMs, this.maxDeliveries);
        await this.turn(handles);
        this.failures = 0;
      } catch (err) {
        if (this.stopped) break;
        this.failures += 1;
        // A broker that lost its store also lost our consumers: recreate them next turn.
        if (
          isApiError(err, JetStreamApiCodes.ConsumerNotFound) ||
          isApiError(err, JetStreamApiCodes.StreamNotFound)
        ) {
          handles = undefined;
          await this.queue.ensureStreams().catch(() => undefined);
        }
        if (this.failures === 1 || this.failures % 20 === 0) {
          logEvent('warn', 'consumer_pull_failed', {
            pool: this.pool,
            failures: this.failures,
            error: messageOf(err),
          });
        }
        await this.signal.wait(Math.min(250 * 2 ** Math.min(this.failures - 1, 3), 2_000));
      }
    }
  }

  private async turn(handles: ConsumerHandles): Promise<void> {
    if (this.pullError !== undefined) {
      const err = this.pullError;
      this.pullError = undefined;
      throw err;
    }
    if (!this.queue.isConnected || this.held + this.reserved >= this.maxInFlight) {
      // Requests sent while disconnected are lost; the reconnect (or a settle) wakes us.
      await this.signal.wait(IDLE_RECHECK_MS);
      return;
    }
    const room = this.maxInFlight - this.held - this.reserved;
    const infos = await this.infos(handles);
    if (this.stopped) return;
    const backlog = PRIORITIES.find((p) => infos[p].num_pending > 0);
    if (backlog) {
      await this.pull(handles, backlog, Math.min(room, infos[backlog].num_pending));
      return;
    }
    const now = Date.now();
    for (const p of PRIORITIES) {
      if (infos[p].num_ack_pending > this.heldBy[p]) {
        this.othersHoldSince[p] ||= now;
        const probeAt = Math.max(this.othersHoldSince[p], this.lastProbeAt[p]) + this.probeIntervalMs;
        this.dueAt[p] = Math.min(this.dueAt[p], probeAt);
      } else {
        this.othersHoldSince[p] = 0;
      }
    }
    const due = PRIORITIES.filter((p) => this.dueAt[p] <= now).slice(0, room);
    if (due.length > 0) {
      for (const p of due) {
        this.dueAt[p] = Infinity;
        this.lastProbeAt[p] = now;
      }
      await Promise.all(due.map((p) => this.pull(handles, p, 1)));
      return;
    }
    await this.idle(handles, room);
  }

  /**
   * Opens a pull of up to `batch` messages that runs beside the loop; its slots are reserved until
   * they are delivered or the pull ends. Wakes the loop on every delivery and at the end.
   */
  private startPull(handles: ConsumerHandles, priority: Priority, batch: number, expires: number): void {
    if (this.stopped) return;
    this.reserved += batch;
    this.open[priority] += 1;
    let delivered = 0;
    const task = (async () => {
      try {
        const messages = await handles[priority].fetch({ max_messages: batch, expires });
        this.pulls.add(messages);
        if (this.stopped) void messages.close();
        const guard = setTimeout(() => void messages.close(), expires + PULL_GUARD_MS);
        try {
          for await (const m of messages) {
            delivered += 1;
            this.reserved -= 1;
            this.receive(priority, m);
            this.signal.notify();
          }
        } finally {
          this.pulls.delete(messages);
          clearTimeout(guard);
        }
      } catch (err) {
        if (!this.stopped) this.pullError ??= err;
      } finally {
        this.reserved -= batch - delivered;
        this.open[priority] -= 1;
        this.signal.notify();
      }
    })();
    this.pullTasks.add(task);
    void task.finally(() => this.pullTasks.delete(task));
  }

  private async infos(handles: ConsumerHandles): Promise<Record<Priority, ConsumerInfo>> {
    const [high, normal, low] = await Promise.all(PRIORITIES.map((p) => handles[p].info(false)));
    if (!high || !normal || !low) throw new Error('consumer info missing');
    return { high, normal, low };
  }

  private async idle(handles: ConsumerHandles, room: number): Promise<void> {
    const unarmed = PRIORITIES.filter((p) => this.open[p] === 0);
    if (room >= unarmed.length) {
      for (const p of unarmed) this.startPull(handles, p, 1, STANDBY_EXPIRES_MS);
      // A delivery, a pull's end or a settle wakes the loop for a fresh look.
      await this.signal.wait(IDLE_RECHECK_MS);
      return;
    }
    const nc = this.queue.nc;
    const doorbell = nc.subscribe(`${this.queue.namespace}.calls.${this.pool}.*`, { max: 1 });
    try {
      // Arm first, then look again: a publish between the last look and the arming still rings.
      await withTimeout(nc.flush(), API_TIMEOUT_MS);
      const infos = await this.infos(handles);
      if (this.stopped || PRIORITIES.some((p) => infos[p].num_pending > 0)) return;
      const nextDue = Math.min(this.dueAt.high, this.dueAt.normal, this.dueAt.low) - Date.now();
      await this.signal.wait(Math.max(0, Math.min(IDLE_RECHECK_MS, nextDue)), firstMessage(doorbell));
    } finally {
      doorbell.unsubscribe();
    }
  }

  private async pull(handles: ConsumerHandles, priority: Priority, batch: number): Promise<void> {
    if (this.stopped) return;
    const messages = await handles[priority].fetch({ max_messages: batch, expires: PULL_EXPIRES_MS });
    this.pulls.add(messages);
    if (this.stopped) void messages.close();
    const guard = setTimeout(() => void messages.close(), PULL_EXPIRES_MS + PULL_GUARD_MS);
    try {
      for await (const m of messages) this.receive(priority, m);
    } finally {
      this.pulls.delete(messages);
      clearTimeout(guard);
    }
  }

  private receive(priority: Priority, m: JsMsg): void {
    let decoded: ToolCall;
    try {
      decoded = decodeToolCall(m.data);
    } catch (err) {
      void this.queue.discardBadEnvelope(m, this.pool, err);
      return;
    }
    const deliveries = m.info.deliveryCount;
    const call: ToolCall = { ...decoded, attempt: deliveries };
    const lastDelivery = deliveries >= this.maxDeliveries;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;

    const release = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      this.held -= 1;
      this.heldBy[priority] -= 1;
      this.live.delete(abandon);
      this.signal.notify();
      return true;
    };
    const abandon = () => {
      release();
    };
    const expire = () => {
      if (!release()) return;
      if (lastDelivery) {
        void this.queue.deadLetter(
          m,
          this.pool,
          call.callId,
          `ack wait expired on delivery ${deliveries}`,
          true,
        );
      } else {
        // The server redelivers it now; pull it back (here or elsewhere) without waiting for a probe.
        this.markDue(priority, 0);
      }
    };
    const arm = () => {
      timer = setTimeout(expire, this.ackWaitMs);
      timer.unref();
    };

    const message: QueuedCall = {
      call,
      ack: async () => {
        if (!release()) return;
        this.queue.forget(call.callId);
        await this.queue.confirm('ack', call.callId, () => m.ackAck({ timeout: API_TIMEOUT_MS }));
      },
      nack: async (delayMs = 0) => {
        if (!release()) return;
        if (lastDelivery) {
          this.queue.forget(call.callId);
          await this.queue.deadLetter(m, this.pool, call.callId, `nacked on delivery ${deliveries}`, false);
          return;
        }
        this.markDue(priority, Math.max(0, delayMs));
        await this.queue.confirm('nack', call.callId, () => {
          m.nak(delayMs > 0 ? delayMs : undefined);
          return this.queue.nc.flush();
        });
      },
      inProgress: async () => {
        if (settled) return;
        clearTimeout(timer);
        arm();
        await this.queue.confirm('inProgress', call.callId, () => {
          m.working();
          return this.queue.nc.flush();
        });
      },
      term: async (reason: string) => {
        if (!release()) return;
        this.queue.forget(call.callId);
        await this.queue.confirm('term', call.callId, () => {
          this.queue.terminate(m, reason);
          return this.queue.nc.flush();
        });
      },
    };

    this.held += 1;
    this.heldBy[priority] += 1;
    this.live.add(abandon);
    arm();
    try {
      this.handler(message);
    } catch (err) {
      // The message stays unsettled and comes back after its ack wait.
      logEvent('error', 'handler_threw', { pool: this.pool, callId: call.callId, error: messageOf(err) });
    }
  }

  private markDue(priority: Priority, afterMs: number): void {
    if (this.stopped) return;
    this.dueAt[priority] = Math.min(this.dueAt[priority], Date.now() + afterMs);
    this.signal.notify();
  }
}

/** Cancel orders on the core subject `<ns>.cancels`: at-most-once, to every subscribed replica. */
class NatsCancelBus implements CancelBus {
  private readonly subscriptions = new Set<Subscription>();

  private readonly nc: NatsConnection;

  constructor(
    private readonly queue: NatsCallQueue,
    private readonly subject: string,
  ) {
    this.nc = queue.nc;
  }

  async publish(order: CancelOrder): Promise<void> {
    try {
      await this.queue.awaitConnected(RECONNECT_GRACE_MS);
      this.nc.publish(this.subject, JSON.stringify(order));
      await withTimeout(this.nc.flush(), API_TIMEOUT_MS);
    } catch (err) {
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `NATS at ${this.queue.url} did not take a cancel order: ${messageOf(err)}`,
        {
          cause: err,
        },
      );
    }
  }

  async subscribe(listener: (order: CancelOrder) => void): Promise<() => void> {
    const sub = this.nc.subscribe(this.subject, {
      callback: (err, msg) => {
        if (err) return;
        const order = parseCancelOrder(msg.string());
        if (!order) {
          logEvent('warn', 'bad_cancel_order', { subject: this.subject });
          return;
        }
        try {
          listener(order);
        } catch (listenerErr) {
          logEvent('error', 'cancel_listener_threw', { error: messageOf(listenerErr) });
        }
      },
    });
    this.subscriptions.add(sub);
    // Orders published after subscribe() resolves must reach this listener; while disconnected
    // the client re-subscribes on reconnect, so a failed flush is not an error here.
    await withTimeout(this.nc.flush(), API_TIMEOUT_MS).catch(() => undefined);
    return () => {
      this.subscriptions.delete(sub);
      sub.unsubscribe();
    };
  }

  async close(): Promise<void> {
    for (const sub of this.subscriptions) sub.unsubscribe();
    this.subscriptions.clear();
  }
}

/** A wake-up flag for one waiting loop: a notify before the wait is not lost. */
class Signal {
  private pending = false;
  private waiter: (() => void) | undefined;

  notify(): void {
    this.pending = true;
    this.waiter?.();
  }

  /** Resolves on notify, after `ms`, or when `also` settles, whichever comes first. */
  async wait(ms: number, also?: Promise<unknown>): Promise<void> {
    if (this.pending) {
      this.pending = false;
      return;
    }
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        // `also` may settle long after this wait ended; it must not unhook a later waiter.
        if (this.waiter === done) this.waiter = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiter = done;
      also?.then(done, done);
    });
    this.pending = false;
  }
}

function firstMessage(sub: Subscription): Promise<void> {
  return (async () => {
    for await (const _ of sub) return;
  })();
}

/** Parses a cancel order, or `undefined` when the payload is not one. */
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

async function closeConnection(nc: NatsConnection): Promise<void> {
  if (nc.isClosed()) return;
  try {
    await withTimeout(nc.drain(), API_TIMEOUT_MS);
  } catch {
    await nc.close().catch(() => undefined);
  }
}

/** The priority a call subject `<ns>.calls.<pool>.<priority>` names, as a metric label (`unknown` when none). */
function priorityOfSubject(subject: string): string {
  const last = subject.slice(subject.lastIndexOf('.') + 1);
  return (PRIORITIES as readonly string[]).includes(last) ? last : 'unknown';
}

function assertName(name: string, what: string): void {
  if (!NAME_PATTERN.test(name)) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `${what} name "${name}" may hold only letters, digits, "_" and "-" (it names NATS subjects and consumers)`,
    );
  }
}

function isApiError(err: unknown, code: number): boolean {
  return err instanceof JetStreamApiError && err.code === code;
}
