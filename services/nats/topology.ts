import {
  AckPolicy,
  type ConsumerConfig,
  type ConsumerInfo,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import {
  CALL_RETENTION_SLACK_MS,
  ClusterError,
  DEFAULT_ACK_WAIT_MS,
  DEFAULT_MAX_DELIVERIES,
  messageOf,
  PRIORITIES,
  type Priority,
} from '../core/index.js';

/** How long JetStream remembers a `Nats-Msg-Id` for de-duplication. */
const DUPLICATE_WINDOW_MS = 120_000;
/** Dead letters kept for inspection. */
const DEAD_MAX_AGE_MS = 14 * 24 * 3600 * 1000;
const DEAD_MAX_MSGS = 100_000;
/**
 * `max_age` of a calls stream created without a configured retention: what `callRetentionMs` gives
 * for the default configuration (batch.completionWindow 24 h, worker.ackWait 30 s).
 */
const DEFAULT_CALL_RETENTION_MS = 24 * 3600 * 1000 + DEFAULT_ACK_WAIT_MS + CALL_RETENTION_SLACK_MS;
/** JetStream API error: a stream with that name exists with another configuration. */
const STREAM_NAME_IN_USE = 10058;
/** Prefix of the JetStream API subjects (no domain is configured). */
const API_PREFIX = '$JS.API';

/**
 * The names and the JetStream objects of one namespace: a work-queue stream `<ns>_calls` holding
 * subjects `<ns>.calls.<pool>.<priority>`, one durable pull consumer `<pool>_<priority>` per pool and
 * priority, and a limits stream `<ns>_dead` for dead letters on `<ns>.dead.<pool>`. Everything is
 * created or updated idempotently, so replicas opening side by side are safe. The stream and consumer
 * names are what the KEDA triggers in `deploy/keda/nats` watch.
 */
export class Topology {
  readonly stream: string;
  readonly deadStream: string;
  /** Pools whose consumers exist (created at open or on first use). */
  private readonly ensuredPools = new Map<string, Promise<void>>();

  /**
   * @param callRetentionMs the calls stream's `max_age` in milliseconds (see `callRetentionMs` in
   * the kernel); undefined: a new stream gets DEFAULT_CALL_RETENTION_MS and an existing one keeps its own.
   */
  constructor(
    readonly jsm: JetStreamManager,
    readonly url: string,
    readonly namespace: string,
    readonly callRetentionMs?: number,
  ) {
    this.stream = `${namespace}_calls`;
    this.deadStream = `${namespace}_dead`;
  }

  /** The subject a call of `pool` at `priority` is published on. */
  subject(pool: string, priority: Priority): string {
    return `${this.namespace}.calls.${pool}.${priority}`;
  }

  /** The durable consumer of `pool` at `priority`. */
  durable(pool: string, priority: Priority): string {
    return `${pool}_${priority}`;
  }

  /** The subject a pull request for the consumer of `pool` at `priority` is published on. */
  pullSubject(pool: string, priority: Priority): string {
    return `${API_PREFIX}.CONSUMER.MSG.NEXT.${this.stream}.${this.durable(pool, priority)}`;
  }

  /** The subject dead letters of `pool` are published on. */
  deadSubject(pool: string): string {
    return `${this.namespace}.dead.${pool}`;
  }

  /**
   * Creates or updates both streams; safe to run from many processes at once. Retention, storage
   * and subjects are fixed once a stream exists (JetStream refuses to change retention or storage);
   * `max_age` may change, so the calls stream takes the configured retention on every open.
   */
  async ensureStreams(): Promise<void> {
    const calls = {
      name: this.stream,
      subjects: [`${this.namespace}.calls.>`],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      duplicate_window: nanos(DUPLICATE_WINDOW_MS),
      // Direct gets let stats() read the oldest waiting message cheaply.
      allow_direct: true,
    };
    // Work-queue retention removes a message when its call is acked, but a broker killed right after
    // acks may bring answered calls back (see removeAnswered), and nothing else would ever remove
    // them: max_age bounds how long anything outlives the longest deadline a call can carry.
    const maxAge = nanos(this.callRetentionMs ?? DEFAULT_CALL_RETENTION_MS);
    await this.upsertStream(
      { ...calls, max_age: maxAge },
      this.callRetentionMs === undefined ? calls : { ...calls, max_age: maxAge },
    );
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

  /** Adds the stream with `config`, or brings an existing one to `update` (default `config`). */
  private async upsertStream(
    config: Partial<StreamConfig> & { name: string },
    update: Partial<StreamConfig> = config,
  ): Promise<void> {
    try {
      await this.jsm.streams.add(config);
    } catch (err) {
      if (!(err instanceof JetStreamApiError && err.code === STREAM_NAME_IN_USE)) throw err;
      try {
        await this.jsm.streams.update(config.name, update);
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

  /** The pools whose consumers this process made sure of. */
  knownPools(): string[] {
    return [...this.ensuredPools.keys()];
  }

  /**
   * Deletes the messages of `pool` at or below their consumer's ack floor and returns how many per
   * priority (priorities with none are left out). In a work-queue stream such a message is an
   * answered call that should be gone: a broker killed (SIGKILL, power loss) soon after acks can
   * come back with the consumer's acks on disk but not the stream's removals of the acked messages.
   * Each subject has exactly one consumer and its ack floor only rises, so no consumer will ever
   * deliver these messages and nothing else removes them; left alone they would sit in the stream
   * (and its byte and message counts) until `max_age`. A pool without consumers, or a broker without
   * the stream, has nothing to remove.
   */
  async removeAnswered(pool: string): Promise<Partial<Record<Priority, number>>> {
    const removed: Partial<Record<Priority, number>> = {};
    // A stream that lost its tail (a store cut short) numbers new calls below a consumer's floor:
    // those were never answered, so a floor past the stream's end is not trusted.
    let lastSeq: number;
    try {
      lastSeq = (await this.jsm.streams.info(this.stream)).state.last_seq;
    } catch (err) {
      if (isLostTopology(err)) return removed;
      throw err;
    }
    for (const priority of PRIORITIES) {
      const subject = this.subject(pool, priority);
      let floor: number;
      try {
        floor = (await this.jsm.consumers.info(this.stream, this.durable(pool, priority))).ack_floor
          .stream_seq;
      } catch (err) {
        if (isLostTopology(err)) continue;
        throw err;
      }
      if (floor === 0 || floor > lastSeq) continue;
      // One direct get tells whether anything lies below the floor, so the usual pass writes nothing.
      const first = await this.jsm.direct.getMessage(this.stream, { seq: 1, next_by_subj: subject });
      if (!first || first.seq > floor) continue;
      const { purged } = await this.jsm.streams.purge(this.stream, { filter: subject, seq: floor + 1 });
      if (purged > 0) removed[priority] = purged;
    }
    return removed;
  }

  /** Forgets that the pool's consumers exist (a broker that lost its store lost them). */
  forgetPool(pool: string): void {
    this.ensuredPools.delete(pool);
  }

  /**
   * Creates the pool's consumers of `priorities` (default all three), or (with `apply`) brings
   * existing ones to this ack wait (milliseconds) and delivery limit: a worker's consume options are
   * the source of truth for the priorities it consumes.
   */
  async upsertConsumers(
    pool: string,
    ackWaitMs: number,
    maxDeliveries: number,
    apply: boolean,
    priorities: readonly Priority[] = PRIORITIES,
  ): Promise<void> {
    for (const priority of priorities) {
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
    // Only a pass over all three proves the pool complete (stats reads every priority's consumer).
    if (PRIORITIES.every((p) => priorities.includes(p))) this.ensuredPools.set(pool, Promise.resolve());
  }
}

/** Whether `err` is a JetStream API error with this code. */
export function isApiError(err: unknown, code: number): boolean {
  return err instanceof JetStreamApiError && err.code === code;
}

/** Whether `err` says the broker lost the stream or a consumer (a restart without its store). */
export function isLostTopology(err: unknown): boolean {
  return (
    isApiError(err, JetStreamApiCodes.ConsumerNotFound) || isApiError(err, JetStreamApiCodes.StreamNotFound)
  );
}

/** The priority a call subject `<ns>.calls.<pool>.<priority>` names, as a metric label (`unknown` when none). */
export function priorityOfSubject(subject: string): string {
  const last = subject.slice(subject.lastIndexOf('.') + 1);
  return (PRIORITIES as readonly string[]).includes(last) ? last : 'unknown';
}
