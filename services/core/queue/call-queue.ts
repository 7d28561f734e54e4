import type { Priority, ToolCall } from '../envelope.js';
import type { ShareLedger } from './share-ledger.js';

/**
 * The queue of calls, partitioned by pool and priority. One contract, three implementations
 * (`nats://` JetStream, `redis://` BullMQ, `memory:` in-process), chosen by the broker URL.
 * The contract suite in `test/queue-contract.test.ts` runs unchanged against all three.
 *
 * Delivery is at-least-once: a message is redelivered until the consumer acks or terminates it,
 * or until `maxDeliveries` is reached (then it is dead-lettered). A consumer acks only after the
 * owning ingress confirmed the final chunk, or when the call is known dead.
 */
export interface CallQueue {
  /** Which implementation this is. */
  readonly kind: 'nats' | 'bullmq' | 'memory';

  /**
   * Puts a call on its pool and priority partition (`<namespace>.calls.<pool>.<priority>` on NATS). Idempotent by `call.callId`: enqueuing the
   * same id again while the first is queued or running is a no-op (de-duplication).
   * Rejects with `ClusterError('QUEUE_UNAVAILABLE')` when the broker cannot take it.
   */
  enqueue(call: ToolCall): Promise<void>;

  /**
   * Starts pulling calls of one pool, highest priority first, with at most
   * `options.maxInFlight` messages delivered to `handler` and not yet settled.
   * The handler must settle every message exactly once (ack, nack or term).
   */
  consume(pool: string, options: ConsumeOptions, handler: (message: QueuedCall) => void): CallConsumer;

  /**
   * Removes a call that is still waiting in the queue, so no worker will run it.
   * Resolves `true` when it was removed, `false` when it was not queued (already delivered,
   * finished or unknown). Called by the replica that enqueued the call.
   */
  cancel(callId: string, pool: string): Promise<boolean>;

  /** Depth, in-flight and oldest age per pool and priority, for metrics and the autoscaler. */
  stats(pool: string): Promise<QueueStats[]>;

  /** Resolves once the broker connection is usable (used by `/readyz`). */
  ready(): Promise<boolean>;

  /**
   * Registers a listener told when the broker is found to have lost its data (every queued call
   * with it), e.g. a Redis without persistence that restarted; returns a function that removes it.
   * The ingress fails at once, with a retryable error, the calls it waits on that no worker has
   * accepted yet. Optional: a broker that cannot lose acknowledged calls (NATS JetStream on file
   * storage, the in-process memory queue) does not implement it, and it never fires there.
   */
  onDataLost?(listener: (event: DataLost) => void): () => void;

  /**
   * Closes the connection. Consumers stop; unsettled messages return to the queue. Bounded: a
   * broker that cannot be reached is given up on within a few seconds, never waited on.
   */
  close(): Promise<void>;
}

/** What {@link CallQueue.onDataLost} reports. */
export interface DataLost {
  /** The broker URL. */
  url: string;
  /** Why the data is taken as lost, for logs (e.g. "the epoch key is missing"). */
  reason: string;
}

/**
 * How long an enqueue or a settle (ack, nack, term) waits for a lost broker connection to come
 * back before failing with `QUEUE_UNAVAILABLE`, in milliseconds: the same on every broker, so a
 * broker restart shorter than this delays calls instead of failing them. A settle that fails is
 * abandoned: the broker redelivers the call later (at-least-once).
 */
export const BROKER_RECONNECT_GRACE_MS = 3_000;

/** Default `ConsumeOptions.ackWaitMs`, in milliseconds. */
export const DEFAULT_ACK_WAIT_MS = 30_000;
/** Default `ConsumeOptions.maxDeliveries`. */
export const DEFAULT_MAX_DELIVERIES = 5;

/** Options of one consumer. */
export interface ConsumeOptions {
  /** Most messages delivered and not yet settled at once (a positive integer). */
  maxInFlight: number;
  /**
   * How long a delivered message may go without ack, nack, term or `inProgress()` before the
   * broker redelivers it to another consumer, in milliseconds. Default 30 000.
   */
  ackWaitMs?: number;
  /** Deliveries after which a message is dead-lettered instead of redelivered. Default 5. */
  maxDeliveries?: number;
  /**
   * The priorities this consumer takes, highest first among them; default all three. A worker
   * runs one consumer for `high` and `normal` and another, with a small `maxInFlight`, for `low`
   * (batch chunks), so batch work never fills the room interactive calls need.
   */
  priorities?: readonly Priority[];
}

/** A handle on a running consumer. */
export interface CallConsumer {
  /**
   * Stops pulling new messages. Messages already delivered stay with the handler, which
   * still settles them (drain). Resolves once no more messages will be delivered.
   */
  stop(): Promise<void>;
}

/** A call delivered to a consumer, with the operations that settle it. */
export interface QueuedCall {
  /** The decoded call; `call.attempt` is the delivery count (1 on first delivery). */
  readonly call: ToolCall;
  /** Done: remove the message for good. */
  ack(): Promise<void>;
  /** Give the message back to be redelivered after `delayMs` (default 0). Counts as a delivery. */
  nack(delayMs?: number): Promise<void>;
  /** Still working: extend the ack deadline by another `ackWaitMs`. */
  inProgress(): Promise<void>;
  /** Never redeliver: the call is dead (expired, cancelled, undeliverable, bad envelope). */
  term(reason: string): Promise<void>;
}

/** Queue figures of one pool at one priority. */
export interface QueueStats {
  pool: string;
  priority: Priority;
  /** Messages waiting to be delivered. */
  depth: number;
  /** Messages delivered and not yet settled. */
  inFlight: number;
  /** Age of the oldest waiting message in milliseconds, 0 when none waits. */
  oldestAgeMs: number;
}

/**
 * Cancel orders broadcast to every ingress replica: a 2025-era `notifications/cancelled` may
 * land on any replica, and only the replica that holds the request can act on it.
 * Best-effort, at-most-once (core NATS, Redis pub/sub, in-process events).
 */
export interface CancelBus {
  /** Sends the order to every subscribed replica (including this one). */
  publish(order: CancelOrder): Promise<void>;
  /** Registers a listener; returns a function that removes it. */
  subscribe(listener: (order: CancelOrder) => void): Promise<() => void>;
  close(): Promise<void>;
}

/**
 * Identifies a call by who asked for it: the signed MCP session id and the JSON-RPC request id.
 * The bus carries one other message of a 2025-era session that may reach any replica: a client's
 * answer to a server-to-client request (elicitation, sampling, roots), with `answer` set and
 * `requestId` naming the server's request.
 */
export interface CancelOrder {
  sessionId: string;
  /** The JSON-RPC request id in its JSON form (`1` and `"1"` are different ids). */
  requestId: string;
  reason: string;
  /** Set on a client's answer instead of a cancel: `{"result":...}` or `{"error":...}` as JSON text. */
  answer?: string;
}

/**
 * What a broker URL opens: the call queue, the cancel bus and the two soft-state ledgers (shares,
 * roles) on the same connection(s).
 */
export interface Broker {
  readonly url: string;
  readonly queue: CallQueue;
  readonly cancels: CancelBus;
  /**
   * The ingress replicas' shares ledger (per-tenant limits and fair queueing across replicas). It
   * uses the broker's connection and sets nothing up until first used, so roles that never touch
   * it (workers, the autoscaler) pay nothing for it. Closed by `close`.
   */
  readonly shares: ShareLedger;
  /**
   * The roles ledger: the same contract as `shares`, in a bucket of its own (NATS KV
   * `<namespace>_roles`, Redis hash `<namespace>:roles`), where each worker publishes its state and
   * backends and the autoscaler its last decisions (entries of `role-entry.ts`), for the ingress's
   * status page. Nothing is set up until first used; closed by `close`.
   */
  readonly roles: ShareLedger;
  close(): Promise<void>;
}

/** Broker settings resolved from config. */
export interface BrokerOptions {
  /** `nats://host:port`, `redis://host:port[/db]` or `memory:`. */
  url: string;
  /**
   * Prefix of every stream, subject, queue and key this cluster creates, so several clusters
   * (or test runs) can share one broker. Default `mcp`.
   */
  namespace: string;
  /** Pools this process may consume or enqueue for (used to create streams/consumers up front). */
  pools: string[];
  /**
   * How long the broker may keep a call's message before dropping it unread, in milliseconds (NATS:
   * the calls stream's `max_age`, set on create and brought to this value when a process opens the
   * broker); see {@link callRetentionMs}. Absent: a new stream gets the retention of the default
   * configuration and an existing one keeps its own. BullMQ and memory ignore it.
   */
  callRetentionMs?: number;
}

/** Slack on top of the longest deadline and one ack wait in {@link callRetentionMs}: 5 minutes. */
export const CALL_RETENTION_SLACK_MS = 5 * 60_000;

/**
 * How long a queued call's message is worth keeping, in milliseconds: the longest deadline a call
 * can carry (`longestDeadlineMs`: an interactive call's is capped by `ingress.maxDeadline`, a batch
 * chunk's is its job's completion window), plus one ack wait (`ackWaitMs`) and
 * {@link CALL_RETENTION_SLACK_MS}. Past its deadline a call is worth nothing (a worker drops it as
 * shed), so a broker may then drop the message; the ack wait leaves room for the redelivery of a
 * call whose worker died at its deadline, so a worker still sees it and counts it shed rather than
 * it vanishing, and the slack covers clock skew between the ingress that stamps the deadline and the
 * broker that stamps the message. It bounds how long anything the broker holds by mistake (answered
 * calls a crashed broker brought back) can linger.
 */
export function callRetentionMs(longestDeadlineMs: number, ackWaitMs: number): number {
  return longestDeadlineMs + ackWaitMs + CALL_RETENTION_SLACK_MS;
}
