import { createInbox, type Msg, nanos, type Subscription } from '@nats-io/transport-node';
import {
  type CallConsumer,
  type ConsumeOptions,
  consumedPriorities,
  DEFAULT_ACK_WAIT_MS,
  DEFAULT_MAX_DELIVERIES,
  messageOf,
  type Priority,
  type QueuedCall,
  type ToolCall,
} from '../core/index.js';
import { decodeToolCall } from '../protobuf/index.js';
import { API_TIMEOUT_MS, logEvent, type NatsLink } from './connection.js';
import type { DeadLetters } from './dead-letters.js';
import { type DeliveredCallContext, deliveredCall } from './delivered-call.js';
import { PulledMessage } from './pulled-message.js';
import { isLostTopology, type Topology } from './topology.js';

/**
 * Longest expiry of a standing pull, in milliseconds (the ack wait when shorter). An idle consumer
 * re-arms it this often (and, at that moment, probes priorities it only watches), so idling costs a
 * few small requests per minute.
 */
const STANDBY_EXPIRES_MS = 5_000;
/** Shortest standing pull expiry (for short ack waits), in milliseconds. */
const MIN_EXPIRES_MS = 1_000;
/** How often priorities known empty are probed for redeliveries no publish announces, in milliseconds. */
const PROBE_INTERVAL_MS = 5_000;
/** Extra time after a pull's expiry before a silent pull is taken for lost, in milliseconds. */
const PULL_GUARD_MS = 10_000;
/** Most backoff between attempts to recreate a lost stream or consumer, in milliseconds. */
const MAX_BACKOFF_MS = 2_000;
const encoder = new TextEncoder();

/**
 * What the loop knows about a priority's consumer, beyond what its open pulls cover:
 * - `ready`: calls wait there (a delivery said `pending > 0`, its bell rang, or a local nack is due);
 * - `unknown`: nothing known (at start, after a reconnect, or after its own delivery said `pending 0`
 *   while no bell watched it): look before serving anything below it;
 * - `empty`: nothing waits, and a standing pull or an armed bell reports the next publish;
 * - `probe`: known empty, but due for a look that picks up redeliveries (which ring no bell).
 */
type Knowledge = 'ready' | 'unknown' | 'empty' | 'probe';

/**
 * The pull requests of one priority, all answered on one inbox subscription (`<inbox>.<n>` each).
 * Either one look (a `no_wait` pull) or any number of standing pulls are open on it, never both.
 */
interface Lane {
  readonly priority: Priority;
  readonly sub: Subscription;
  readonly prefix: string;
  mode: 'look' | 'standing';
  /** Slots asked for and not yet delivered (or ended by a status). */
  unfilled: number;
  /** When the lane last heard anything (a delivery or a status), for the lost-pull guard. */
  heardAt: number;
  next: number;
}

/** What a consumer needs from the queue that started it. */
export interface ConsumerDeps {
  link: NatsLink;
  topology: Topology;
  deadLetters: DeadLetters;
  /** Drops the enqueue receipt of a settled call. */
  forget(callId: string): void;
}

/**
 * One consume loop over the priority consumers of a pool (`<pool>_high`, `_normal`, `_low`; only
 * those of `ConsumeOptions.priorities` when given), never holding more than `maxInFlight` messages delivered or asked for (`held + reserved`). It makes
 * no consumer-info requests: what it knows about each priority comes free with the traffic.
 *
 * - Standing pulls. When one priority is the only one that may have calls, the whole free room goes
 *   to one pull on it (`batch` = room, expiring after the ack wait, 1-5 s): it looks and waits in one
 *   request, and the next publish is delivered at once. In steady state a call costs its publish, its
 *   delivery on that open pull, the ack and one re-arm of the pull for the freed slot.
 * - Backlog from the delivery itself. Every delivered message carries the consumer's `num_pending` in
 *   its ack subject (`m.info.pending` in the client), so a priority with calls left stays `ready`
 *   without asking the server.
 * - Bells for the others. A priority that is empty and has no standing pull is watched by a one-shot
 *   core subscription on its subject (every publish to a stream subject also reaches core
 *   subscribers); the first publish rings it, marks the priority `ready` and the subscription ends, so
 *   a backlog of big envelopes is not copied to every worker. A bell is armed before the pull that
 *   finds the priority empty, so no publish falls between the look and the bell.
 * - Looks. When more than one priority may have calls, the highest is asked with a `no_wait` pull for
 *   the free room: "what is there now", a look and a pull in one request, answered at once with
 *   messages or a 404/408 status. One look at a time, since what comes next depends on its answer.
 * - Priority switches. A standing pull on a priority that has not filled proves it empty; when work is
 *   `ready` elsewhere and no room is free, such pulls are withdrawn by draining their inbox
 *   subscription (UNSUB, then a PING: the server stops choosing the request at once and whatever it
 *   already sent arrives before the PONG and is handed over), a bell taking over first. So a high call
 *   published while a consumer with one slot works through low calls is the next one it takes, and
 *   low calls still fill whatever room higher priorities leave.
 * - Redeliveries (nacks, expired ack waits) are delivered to standing pulls like any message; local
 *   ones also mark their priority `ready` when due. Those of other consumers on a priority this one
 *   only watches ring no bell: such priorities are probed (looked at) whenever an idle standing pull
 *   expires, and while busy every PROBE_INTERVAL_MS at the next free room.
 *
 * Why not keep standing pulls open on all three priorities: each reserves the slots it asks for until
 * it expires or fills, so with fewer than three free slots that would exceed `maxInFlight` or starve a
 * priority, and giving a slot back after the fact (a nack) counts as a delivery. Why not poll consumer
 * info: it costs requests on every call, which is what this loop is shaped to avoid.
 */
export class NatsConsumer implements CallConsumer {
  private readonly ackWaitMs: number;
  private readonly maxDeliveries: number;
  private readonly maxInFlight: number;
  /** Expiry of this consumer's standing pulls, in milliseconds. */
  private readonly standbyMs: number;
  private held = 0;
  private readonly knowledge: Record<Priority, Knowledge> = {
    high: 'unknown',
    normal: 'unknown',
    low: 'unknown',
  };
  private readonly lanes: Record<Priority, Lane | undefined> = {
    high: undefined,
    normal: undefined,
    low: undefined,
  };
  /** Lanes being withdrawn: their slots stay reserved until the drain ends. */
  private readonly draining = new Set<Lane>();
  private readonly drains = new Set<Promise<void>>();
  private readonly bells: Record<Priority, Subscription | undefined> = {
    high: undefined,
    normal: undefined,
    low: undefined,
  };
  /** When each priority was last seen empty by a pull (for probes). */
  private readonly emptySince: Record<Priority, number> = { high: 0, normal: 0, low: 0 };
  /**
   * The priorities this loop pulls, highest first (`ConsumeOptions.priorities`): it opens pulls,
   * bells and probes on their consumers only, so a loop for `low` and one for `high` + `normal` on
   * the same pool (one worker, two consumers) use disjoint durables and never take each other's calls.
   */
  private readonly priorities: readonly Priority[];
  /** The priority that delivered last: where a standing pull goes when nothing is known to wait. */
  private hint: Priority;
  /** Pull request subjects per priority, and encoded pull bodies by batch (negative: looks). */
  private readonly pullSubjects: Record<Priority, string>;
  private readonly pullBodies = new Map<number, Uint8Array>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly tick: NodeJS.Timeout;
  private readonly live = new Set<() => void>();
  /** What each delivered call settles through (see deliveredCall). */
  private readonly settling: DeliveredCallContext;
  private readonly offReconnect: () => void;
  /** Consumers exist and the loop may pull (false while opening or recovering). */
  private active = false;
  private recovering: Promise<void> | undefined;
  private fillQueued = false;
  private stopped = false;
  private failures = 0;
  private wakeRecovery: (() => void) | undefined;

  constructor(
    private readonly deps: ConsumerDeps,
    private readonly pool: string,
    options: ConsumeOptions,
    private readonly handler: (message: QueuedCall) => void,
  ) {
    this.ackWaitMs = options.ackWaitMs ?? DEFAULT_ACK_WAIT_MS;
    this.maxDeliveries = options.maxDeliveries ?? DEFAULT_MAX_DELIVERIES;
    this.maxInFlight = options.maxInFlight;
    this.priorities = consumedPriorities(options);
    // Interactive traffic is mostly `normal`: idle there when this loop takes it, else on its highest.
    this.hint = this.priorities.includes('normal') ? 'normal' : (this.priorities[0] ?? 'normal');
    // Redeliveries come due an ack wait after a delivery: with a short one, look for them that often.
    this.standbyMs = Math.min(STANDBY_EXPIRES_MS, Math.max(MIN_EXPIRES_MS, this.ackWaitMs));
    this.settling = {
      ...deps,
      pool,
      ackWaitMs: this.ackWaitMs,
      maxDeliveries: this.maxDeliveries,
      released: (abandon) => {
        this.held -= 1;
        this.live.delete(abandon);
        this.schedule();
      },
      dueAgain: (p, afterMs) => this.markDue(p, afterMs),
    };
    const { topology } = deps;
    this.pullSubjects = {
      high: topology.pullSubject(pool, 'high'),
      normal: topology.pullSubject(pool, 'normal'),
      low: topology.pullSubject(pool, 'low'),
    };
    this.offReconnect = deps.link.onReconnect(() => this.restart());
    this.tick = setInterval(() => this.onTick(), Math.min(PROBE_INTERVAL_MS, this.ackWaitMs));
    this.tick.unref();
    void this.recover(undefined);
  }

  async stop(): Promise<void> {
    if (!this.stopped) {
      this.stopped = true;
      this.active = false;
      clearInterval(this.tick);
      for (const timer of this.timers) clearTimeout(timer);
      this.timers.clear();
      this.offReconnect();
      this.wakeRecovery?.();
      for (const p of this.priorities) {
        this.bells[p]?.unsubscribe();
        this.bells[p] = undefined;
        this.withdraw(p);
      }
    }
    await this.recovering;
    // Messages a withdrawn pull already received are handed over before stop() resolves.
    while (this.drains.size > 0) await Promise.all(this.drains);
  }

  /** Forgets unsettled messages at close: the server redelivers them after their ack wait. */
  abandonAll(): void {
    for (const abandon of [...this.live]) abandon();
  }

  private get reserved(): number {
    let n = 0;
    for (const p of this.priorities) n += this.lanes[p]?.unfilled ?? 0;
    for (const lane of this.draining) n += lane.unfilled;
    return n;
  }

  /** Slots of standing pulls on `p` not yet filled: while there are, `p` is covered (and empty). */
  private covered(p: Priority): boolean {
    const lane = this.lanes[p];
    return lane !== undefined && lane.mode === 'standing' && lane.unfilled > 0;
  }

  private looking(): boolean {
    return this.priorities.some((p) => this.lanes[p]?.mode === 'look' && (this.lanes[p]?.unfilled ?? 0) > 0);
  }

  /** Runs `fill` once after the current burst of events (several settles in a tick make one pull). */
  private schedule(): void {
    if (this.fillQueued || this.stopped) return;
    this.fillQueued = true;
    queueMicrotask(() => {
      this.fillQueued = false;
      this.fill();
    });
  }

  /** Puts the free room to work: the decision described in the class comment. */
  private fill(): void {
    if (this.stopped || !this.active || !this.deps.link.isConnected) return;
    const room = this.maxInFlight - this.held - this.reserved;
    if (room <= 0) {
      const waiting = this.priorities.some((p) => this.knowledge[p] === 'ready' && !this.covered(p));
      if (waiting) {
        for (const p of this.priorities) {
          if (this.knowledge[p] !== 'ready' && this.covered(p)) this.withdraw(p, true);
        }
      }
      return;
    }
    if (this.looking()) return;
    const open = this.priorities.filter((p) => !this.covered(p) && this.knowledge[p] !== 'empty');
    const first = open[0];
    if (first === undefined) this.pull(this.hint, room, 'standing');
    else if (open.length === 1 && (this.knowledge[first] === 'ready' || first === this.hint))
      this.pull(first, room, 'standing');
    else this.pull(first, room, 'look');
  }

  private pull(p: Priority, batch: number, mode: 'look' | 'standing'): void {
    const lane = this.laneFor(p);
    if (mode === 'look') {
      // Armed before the pull: a publish after the look's answer still rings.
      this.armBell(p);
      this.knowledge[p] = 'unknown';
    } else {
      this.knowledge[p] = 'empty';
      this.hint = p;
    }
    lane.mode = mode;
    lane.unfilled += batch;
    lane.heardAt = Date.now();
    this.deps.link.nc.publish(this.pullSubjects[p], this.pullRequest(batch, mode), {
      reply: `${lane.prefix}.${lane.next++}`,
    });
    if (mode === 'standing') {
      // The standing pull reports the next publish itself (the server takes it first: same connection).
      this.bells[p]?.unsubscribe();
      this.bells[p] = undefined;
    }
  }

  /** The body of a pull request, encoded once per batch size and mode (a standing pull re-arms with the same one). */
  private pullRequest(batch: number, mode: 'look' | 'standing'): Uint8Array {
    const key = mode === 'look' ? -batch : batch;
    let body = this.pullBodies.get(key);
    if (!body) {
      const request = mode === 'look' ? { batch, no_wait: true } : { batch, expires: nanos(this.standbyMs) };
      body = encoder.encode(JSON.stringify(request));
      this.pullBodies.set(key, body);
    }
    return body;
  }

  private laneFor(p: Priority): Lane {
    const existing = this.lanes[p];
    if (existing) return existing;
    const prefix = createInbox();
    const lane: Lane = {
      priority: p,
      prefix,
      mode: 'standing',
      unfilled: 0,
      heardAt: Date.now(),
      next: 1,
      sub: this.deps.link.nc.subscribe(`${prefix}.*`, {
        callback: (err, msg) => {
          if (err) this.onLaneError(lane, err);
          else this.onLaneMessage(lane, msg);
        },
      }),
    };
    this.lanes[p] = lane;
    return lane;
  }

  private armBell(p: Priority): void {
    if (this.bells[p]) return;
    const bell = this.deps.link.nc.subscribe(this.deps.topology.subject(this.pool, p), {
      max: 1,
      callback: () => {
        if (this.bells[p] !== bell) return;
        this.bells[p] = undefined;
        if (!this.covered(p)) this.knowledge[p] = 'ready';
        this.schedule();
      },
    });
    this.bells[p] = bell;
  }

  /**
   * Withdraws the open pulls of `p` by draining their subscription. Messages already on their way
   * are handed over. `watch` (a priority switch) arms the bell first, so a publish after the
   * withdrawal still rings and `p` counts as empty once the drain ends; without it (stop, reconnect,
   * recovery) what is known about `p` is left to the caller.
   */
  private withdraw(p: Priority, watch = false): void {
    const lane = this.lanes[p];
    if (!lane) return;
    if (watch) this.armBell(p);
    this.lanes[p] = undefined;
    this.draining.add(lane);
    const drained = lane.sub
      .drain()
      .catch(() => undefined)
      .then(() => {
        this.draining.delete(lane);
        lane.unfilled = 0;
        this.drains.delete(drained);
        if (watch) this.settleKnowledge(p);
        this.schedule();
      });
    this.drains.add(drained);
  }

  /** After a pull on `p` ended without filling: empty if something watches it, else unknown. */
  private settleKnowledge(p: Priority): void {
    if (this.knowledge[p] === 'ready') return;
    if (this.covered(p) || this.bells[p]) {
      this.knowledge[p] = 'empty';
      this.emptySince[p] = Date.now();
    } else {
      this.knowledge[p] = 'unknown';
    }
  }

  private onLaneMessage(lane: Lane, msg: Msg): void {
    lane.heardAt = Date.now();
    const m = PulledMessage.from(msg);
    if (m) {
      lane.unfilled = Math.max(0, lane.unfilled - 1);
      const p = lane.priority;
      if (this.lanes[p] === lane || this.draining.has(lane)) {
        if (m.pending > 0) this.knowledge[p] = 'ready';
        else this.settleKnowledge(p);
        this.hint = p;
      }
      this.receive(p, m);
      this.schedule();
      return;
    }
    const code = msg.headers?.code ?? 0;
    if (code === 100) return; // heartbeat
    const left = Number(msg.headers?.get('Nats-Pending-Messages') || Number.NaN);
    if (lane.mode === 'look' || code === 404) {
      // A look ends with its first status: whatever it did not bring is not there.
      lane.unfilled = 0;
    } else if (Number.isFinite(left)) {
      lane.unfilled = Math.max(0, lane.unfilled - left);
      if (code === 408 && lane.unfilled === 0) this.probeWatched();
    } else if (this.lanes[lane.priority] === lane) {
      // A status that does not say what it ended: start the priority's pulls over, looking first.
      this.withdraw(lane.priority);
      this.knowledge[lane.priority] = 'unknown';
    }
    if (code === 409 || code === 503) {
      const description = msg.headers?.description ?? '';
      if (code === 503 || /consumer deleted/i.test(description)) {
        void this.recover(new Error(`pull on ${lane.priority}: ${code} ${description}`));
        return;
      }
      logEvent('warn', 'consumer_pull_ended', { pool: this.pool, code, description }, `pull:${code}`);
    }
    if (this.lanes[lane.priority] === lane) this.settleKnowledge(lane.priority);
    this.schedule();
  }

  private onLaneError(lane: Lane, err: Error): void {
    if (this.lanes[lane.priority] === lane) this.lanes[lane.priority] = undefined;
    lane.unfilled = 0;
    void this.recover(err);
  }

  /** Every PROBE_INTERVAL_MS: due probes, and pulls that went silent past their expiry. */
  private onTick(): void {
    if (this.stopped || !this.active) return;
    const now = Date.now();
    for (const p of this.priorities) {
      const lane = this.lanes[p];
      if (lane && lane.unfilled > 0) {
        const limit = lane.mode === 'look' ? API_TIMEOUT_MS : this.standbyMs + PULL_GUARD_MS;
        if (now - lane.heardAt > limit) {
          // The server never answered (a consumer deleted behind our back drops pulls silently).
          void this.recover(new Error(`the pull on ${p} went unanswered past its expiry`));
          return;
        }
      }
      if (
        this.knowledge[p] === 'empty' &&
        !this.covered(p) &&
        now - this.emptySince[p] >= PROBE_INTERVAL_MS
      ) {
        this.knowledge[p] = 'probe';
      }
    }
    this.schedule();
  }

  /**
   * An idle standing pull expired: look at the priorities only bells watch before re-arming it, for
   * redeliveries of calls other consumers held (they ring no bell).
   */
  private probeWatched(): void {
    for (const p of this.priorities) {
      if (this.knowledge[p] === 'empty' && !this.covered(p)) this.knowledge[p] = 'probe';
    }
  }

  /** After a reconnect: pulls sent before it may be gone, and publishes during it rang no bell. */
  private restart(): void {
    if (this.stopped) return;
    for (const p of this.priorities) {
      this.withdraw(p);
      this.knowledge[p] = 'unknown';
    }
    this.schedule();
  }

  /**
   * Brings the pool's consumers to this consumer's ack wait and delivery limit (creating stream and
   * consumers when the broker lost them), retrying with backoff until it works or stop().
   */
  private recover(cause: unknown): Promise<void> {
    if (this.recovering !== undefined) return this.recovering;
    this.active = false;
    this.recovering = (async () => {
      let err = cause;
      while (!this.stopped) {
        if (err !== undefined) {
          this.failures += 1;
          if (this.failures === 1 || this.failures % 20 === 0) {
            logEvent('warn', 'consumer_pull_failed', {
              pool: this.pool,
              failures: this.failures,
              error: messageOf(err),
            });
          }
          for (const p of this.priorities) {
            this.withdraw(p);
            this.knowledge[p] = 'unknown';
          }
          await new Promise<void>((resolve) => {
            const timer = setTimeout(
              resolve,
              Math.min(250 * 2 ** Math.min(this.failures - 1, 3), MAX_BACKOFF_MS),
            );
            this.wakeRecovery = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          this.wakeRecovery = undefined;
          if (this.stopped) break;
        }
        try {
          if (err !== undefined && isLostTopology(err)) await this.deps.topology.ensureStreams();
          // Only this loop's durables: two loops on one pool may run with different ack waits, and
          // each must not bring the other's consumers to its own.
          await this.deps.topology.upsertConsumers(
            this.pool,
            this.ackWaitMs,
            this.maxDeliveries,
            true,
            this.priorities,
          );
          this.deps.deadLetters.watchMaxDeliveries();
          this.failures = 0;
          this.active = !this.stopped;
          this.schedule();
          return;
        } catch (retryErr) {
          err = retryErr;
          // A broker that lost its store also lost our consumers: recreate them next time.
          if (isLostTopology(retryErr)) await this.deps.topology.ensureStreams().catch(() => undefined);
        }
      }
    })().finally(() => {
      this.recovering = undefined;
    });
    return this.recovering;
  }

  /** Marks `p` ready after `afterMs`, when a call this consumer gave back becomes due again. */
  private markDue(p: Priority, afterMs: number): void {
    if (this.stopped) return;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (!this.covered(p)) this.knowledge[p] = 'ready';
      this.schedule();
    }, afterMs);
    timer.unref();
    this.timers.add(timer);
  }

  private receive(priority: Priority, m: PulledMessage): void {
    let decoded: ToolCall;
    try {
      decoded = decodeToolCall(m.data);
    } catch (err) {
      void this.deps.deadLetters.discardBadEnvelope(m, this.pool, err);
      return;
    }
    const call: ToolCall = { ...decoded, attempt: m.deliveryCount };
    const { message, abandon } = deliveredCall(m, call, priority, this.settling);
    this.held += 1;
    this.live.add(abandon);
    try {
      this.handler(message);
    } catch (err) {
      // The message stays unsettled and comes back after its ack wait.
      logEvent('error', 'handler_threw', { pool: this.pool, callId: call.callId, error: messageOf(err) });
    }
  }
}
