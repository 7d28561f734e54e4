import {
  ClusterError,
  clusterMetrics,
  ENTRY_VERSION,
  type PoolFigures,
  type ReplicaEntry,
  readEntry,
  type TenantFigures,
} from '../../core/index.js';
import {
  newPoolState,
  nextHeld,
  oldestHeldMs,
  type PoolLimits,
  type PoolState,
  stamp,
  startTag,
  type TenantOverview,
  type TenantState,
  tenantOverview,
  waitingCalls,
  zeroFigures,
} from './state.js';
import { Ticket, type TicketOwner } from './ticket.js';
import { TokenBucket } from './token-bucket.js';

export type { PoolLimits, TenantOverview } from './state.js';

/** A tenant's settings (config `tenants.<name>`). */
export interface TenantSettings {
  weight: number;
  limits: Readonly<Record<string, PoolLimits>>;
}

export interface AdmissionOptions {
  /** Tenants by name; `default` applies to every tenant not named. */
  tenants: Readonly<Record<string, TenantSettings>>;
  /** Fair queue size of each pool, in its cost units (0: fair queueing off). */
  fairQueueSizes: Readonly<Record<string, number>>;
  /** A tenant as a (bounded) metric label. */
  tenantLabel: (tenant: string) => string;
  /** Milliseconds since the epoch; injected by the unit tests. Default `Date.now`. */
  now?: () => number;
}

/** What the admission decides for one call. */
export interface AdmitRequest {
  tenant: string;
  pool: string;
  /** Estimated cost in the pool's units (see cost.ts). */
  cost: number;
  deadlineUnixMs: number;
}

/** Averaging time of a tenant's demand rate (calls/s asked), in ms. */
export const DEMAND_TAU_MS = 2_000;
/** Averaging time of a pool's service rate (cost/s of calls workers finished), in ms. */
export const SERVICE_TAU_MS = 10_000;
/** Calls that must have finished before a pool's service rate counts as known. */
export const MIN_MEASURED_CALLS = 4;
/**
 * Demand (calls/s) every replica is credited with when the rate limit is split by demand share, so
 * a replica that saw no demand yet still refills its bucket a little and the shares sum to 1.
 */
const DEMAND_FLOOR_PER_S = 0.1;
/**
 * How much work the pool's fair queue holds, in milliseconds of the pool's service rate: long
 * enough to cover the refill (a worker takes a call, its `accepted` chunk reaches the owning
 * replica, which queues the next), short enough that a held call is soon in fair order.
 */
export const FAIR_ROOM_MS = 500;

/**
 * Calls a tenant under its share may send at once and still skip the hold (queued at high): a few
 * agents answering at the same moment. A flooding tenant gets this many once, then holds calls,
 * and a tenant holding calls is never sparse.
 */
export const SPARSE_BURST_CALLS = 4;

/** Retry-After of a refusal for concurrency: when a call ends is unknown; 1 s is the header's granularity. */
export const CONCURRENCY_RETRY_MS = 1_000;

/**
 * The admission layer's state and decisions, on an injected clock and with no I/O: the ingress
 * runs one per replica and feeds it the ledger's entries (see publisher.ts).
 *
 * Per call, in order, all synchronous (no await, no broker round trip):
 * 1. concurrency: the tenant's calls admitted and not answered, here plus at the other replicas
 *    (as last published), must stay below its cap; else RATE_LIMITED (limit `concurrency`);
 * 2. rate: a token from this replica's bucket for the tenant and pool, whose refill and size are
 *    the tenant's rate and burst times this replica's share of the tenant's demand; else
 *    RATE_LIMITED (limit `rate`) with the time until the next token;
 * 3. shedding: the pool's expected queue wait (queued cost ahead, all tenants, plus this tenant's
 *    held cost, over the pool's measured service rate in cost/s) must not exceed the call's
 *    remaining deadline; else OVERLOADED with the time the backlog needs to shrink enough. No
 *    shedding while the service rate is unknown (see `measure`);
 * 4. sparse: a tenant under its share (start tags, see `admit`) holding nothing skips the hold and
 *    its call is queued at `high`;
 * 5. fair hold: when the pool's fair queue has no room for the call (about FAIR_ROOM_MS of work,
 *    this replica's part of it), or the tenant's queued cost (all replicas) would pass its quota
 *    (`fairQueue.size x weight / sum of the weights of tenants with work waiting`), or it already
 *    has calls held, the call waits here in the tenant's FIFO; held calls leave in start-time fair
 *    queueing order (`pump`). A tenant with nothing queued always gets one call in, so a call
 *    costing more than the room is not held forever.
 * A refused call counts in no figure but the demand; a token is taken only when the call passed
 * the concurrency and shedding checks too.
 */
export class Admission implements TicketOwner {
  private readonly pools = new Map<string, PoolState>();
  private readonly now: () => number;
  private readonly metrics = clusterMetrics();
  private lastTickMs: number;
  /** Whether the last ledger read succeeded; false: every figure is this replica's own. */
  private ledgerUp = true;
  /** Replicas live in the last successful read (this one included), at least 1. */
  private replicas = 1;

  constructor(private readonly options: AdmissionOptions) {
    this.now = options.now ?? Date.now;
    this.lastTickMs = this.now();
    for (const [name, size] of Object.entries(options.fairQueueSizes)) {
      this.pools.set(name, newPoolState(name, size));
    }
  }

  /** Whether the replica reads the other replicas' figures (false during a ledger outage). */
  get sharing(): boolean {
    return this.ledgerUp;
  }

  /**
   * Admits `request` or refuses it. Admitted: a ticket the call registry follows the call with
   * (`held` when it waits for its tenant's fair share). Refused: a ClusterError RATE_LIMITED or
   * OVERLOADED whose `retryAfterMs` says when to retry. A pool without state (not configured)
   * admits everything.
   */
  admit(request: AdmitRequest): ClusterError | Ticket {
    const pool = this.pools.get(request.pool);
    if (!pool) return new Ticket(this, undefined, request.cost, this.now());
    const t = this.tenantState(pool, request.tenant);
    const now = this.now();
    t.demandCount += 1;
    const limits = t.limits;
    if (limits?.concurrency !== undefined) {
      const cap = this.ledgerUp
        ? limits.concurrency - t.others.inFlight
        : Math.max(1, Math.floor(limits.concurrency / this.replicas));
      if (t.inFlight >= cap) {
        return this.refuse(
          t,
          'concurrency',
          new ClusterError(
            'RATE_LIMITED',
            `tenant "${t.tenant}" is at its concurrency limit of ${limits.concurrency} calls in flight on pool "${pool.name}"; retry after ${CONCURRENCY_RETRY_MS} ms, when one of its calls has ended`,
            { retryAfterMs: CONCURRENCY_RETRY_MS },
          ),
        );
      }
    }
    if (t.bucket && !t.bucket.has(now)) {
      const waitMs = Math.ceil(t.bucket.msUntilToken(now));
      return this.refuse(
        t,
        'rate',
        new ClusterError(
          'RATE_LIMITED',
          `tenant "${t.tenant}" is over its rate limit of ${limits?.rate} calls/s (burst ${this.burstOf(limits)}) on pool "${pool.name}"; retry after ${waitMs} ms`,
          { retryAfterMs: waitMs },
        ),
      );
    }
    const shed = this.expectedWait(pool, t);
    if (shed !== undefined) {
      const remainingMs = request.deadlineUnixMs - now;
      if (shed > remainingMs) {
        const retryMs = Math.max(1_000, Math.ceil(shed - remainingMs));
        return this.refuse(
          t,
          'overloaded',
          new ClusterError(
            'OVERLOADED',
            `pool "${pool.name}" is overloaded: the expected queue wait is ${Math.round(shed)} ms, above the call's remaining deadline of ${Math.max(0, remainingMs)} ms; retry after ${retryMs} ms or with a longer deadline`,
            { retryAfterMs: retryMs },
          ),
        );
      }
    }
    t.bucket?.take(now);
    t.inFlight += 1;
    this.metrics.tenantAdmitted.inc({ pool: pool.name, tenant: t.label });
    const ticket = new Ticket(this, t, request.cost, now);
    // A tenant under its share (start-time fair queueing: its virtual finish runs ahead of the
    // pool's virtual time by no more than SPARSE_BURST_CALLS such calls, so it has used no more
    // than its share lately; an agent team's few calls at once keep it) with nothing held here
    // and nothing waiting at other replicas is sparse: its call skips the hold and is queued at
    // high, so it waits for a free slot, not behind the backlog of a tenant that floods (whose
    // finish runs ahead of the pool's virtual time with every call it sends). Only while the pool
    // is contended (calls held somewhere): otherwise the queue is short anyway and every call
    // stays at its own priority.
    const contended = pool.heldTenants.size > 0 || (this.ledgerUp && pool.othersHeldCost > 0);
    const waitingElsewhere = waitingCalls(t, this.ledgerUp) - waitingCalls(t, false);
    const sparse =
      pool.fairSize > 0 &&
      contended &&
      t.heldCalls === 0 &&
      waitingElsewhere === 0 &&
      startTag(t) + request.cost / t.weight <= pool.vtime + (SPARSE_BURST_CALLS * request.cost) / t.weight;
    if (pool.fairSize > 0 && !sparse && (t.heldCalls > 0 || this.mustWait(t, request.cost))) {
      ticket.state = 'held';
      t.held.push(ticket);
      t.heldCalls += 1;
      t.heldCost += request.cost;
      pool.heldTenants.add(t);
      this.metrics.tenantHeldCalls.inc({ pool: pool.name, tenant: t.label });
    } else {
      ticket.sparse = sparse;
      // A sparse call moves its tenant's finish, never the pool's virtual time: that advances with
      // the backlog's releases only, so a flood cannot pass itself off as sparse call after call.
      if (sparse) t.finish = startTag(t) + ticket.cost / t.weight;
      else if (pool.fairSize > 0) stamp(t, ticket.cost);
      this.toQueued(t, ticket);
    }
    return ticket;
  }

  /**
   * The pool's expected queue wait for a new call of `t`, in ms; undefined while the service rate
   * is unknown. Ahead of it: every tenant's queued cost and `t`'s own held cost.
   */
  private expectedWait(pool: PoolState, t: TenantState): number | undefined {
    const costPerS = pool.costPerS + (this.ledgerUp ? pool.othersCostPerS : 0);
    if (costPerS <= 0) return undefined;
    const ahead =
      pool.queuedCost + t.heldCost + (this.ledgerUp ? pool.othersQueuedCost + t.others.heldCost : 0);
    return (ahead / costPerS) * 1000;
  }

  /** `t`'s quota of its pool's fair queue, in cost units. */
  quotaOf(pool: string, tenant: string): number {
    const p = this.pools.get(pool);
    return p ? this.quota(this.tenantState(p, tenant)) : Number.POSITIVE_INFINITY;
  }

  /**
   * `t`'s quota: the fair-queue size shared by the weights of the tenants with work waiting (queued
   * or held, at any replica). Only a bound across replicas: the fair order itself comes from the
   * start tags, and the room (half the size at most) runs out before the quotas do.
   */
  private quota(t: TenantState): number {
    let weights = t.weight;
    for (const other of t.pool.tenants.values()) {
      if (other !== t && waitingCalls(other, this.ledgerUp) > 0) weights += other.weight;
    }
    return (t.pool.fairSize * t.weight) / weights;
  }

  /**
   * Whether a call of `cost` must wait here: its tenant has something queued (a tenant with
   * nothing queued always gets one call in, so a call costing more than any room is not held
   * forever), and either the pool's fair queue (its queued cost, all replicas) has no room for
   * it or it would take the tenant past its quota.
   */
  private mustWait(t: TenantState, cost: number): boolean {
    const anyQueued = t.queuedCalls > 0 || (this.ledgerUp && t.others.queuedCalls > 0);
    return anyQueued && (!this.poolHasRoom(t.pool, cost) || this.overQuota(t, cost));
  }

  /**
   * Whether the pool's fair queue has room for `cost`. The room is at most half the fair-queue size,
   * the quotas together the whole size: on one replica the shared room runs out first, so the order
   * of release (start-time fair queueing, see `pump`) decides who is served, by weight and cost.
   * The quotas bound what one tenant can put ahead of others when replicas see different tenants.
   */
  private poolHasRoom(pool: PoolState, cost: number): boolean {
    if (pool.queuedCost === 0) return true;
    // Each replica fills its part of the room, in proportion to the work it has waiting (queued
    // and held): the replicas' figures are up to one publish old, so filling the whole room from
    // each would put several rooms in the queue, in arrival order rather than fair order.
    let held = 0;
    for (const t of pool.heldTenants) held += t.heldCost;
    const mine = pool.queuedCost + held + cost;
    const others = this.ledgerUp ? pool.othersQueuedCost + pool.othersHeldCost : 0;
    return pool.queuedCost + cost <= (this.room(pool) * mine) / (mine + others);
  }

  /**
   * The pool's fair queue room, in cost units: what its workers take in {@link FAIR_ROOM_MS} at
   * the measured service rate (all replicas), enough that a freed slot finds a call while the
   * ingress refills the queue, at most half the fair-queue size; half the size while the rate is
   * unknown. Held calls wait here in fair order; the queue ahead of any call stays this short.
   */
  private room(pool: PoolState): number {
    const costPerS = pool.costPerS + (this.ledgerUp ? pool.othersCostPerS : 0);
    const half = pool.fairSize / 2;
    return costPerS > 0 ? Math.min(half, (costPerS * FAIR_ROOM_MS) / 1000) : half;
  }

  /** Whether a call of `cost` would take `t` past its quota. */
  private overQuota(t: TenantState, cost: number): boolean {
    const queued = t.queuedCost + (this.ledgerUp ? t.others.queuedCost : 0);
    return queued > 0 && queued + cost > this.quota(t);
  }

  private toQueued(t: TenantState, ticket: Ticket): void {
    ticket.state = 'queued';
    t.queuedCalls += 1;
    t.queuedCost += ticket.cost;
    t.pool.queuedCalls += 1;
    t.pool.queuedCost += ticket.cost;
  }

  private unqueue(t: TenantState, cost: number): void {
    t.queuedCalls -= 1;
    t.queuedCost = t.queuedCalls === 0 ? 0 : t.queuedCost - cost;
    t.pool.queuedCalls -= 1;
    t.pool.queuedCost = t.pool.queuedCalls === 0 ? 0 : t.pool.queuedCost - cost;
  }

  /** A worker took the call of `ticket` (its `accepted` chunk reached this replica). */
  onAccepted(ticket: Ticket): void {
    const t = ticket.tenantState;
    if (!t || ticket.state !== 'queued') return;
    ticket.state = 'accepted';
    this.unqueue(t, ticket.cost);
    this.metrics.tenantQueueWait.observe(
      { pool: t.pool.name, tenant: t.label },
      Math.max(0, this.now() - ticket.sinceMs) / 1000,
    );
    this.pump(t.pool);
  }

  /** The call of `ticket` ended (answered, failed, cancelled, expired); `answered`: with a result. */
  onEnded(ticket: Ticket, answered: boolean): void {
    const t = ticket.tenantState;
    if (!t || ticket.state === 'ended') return;
    if (ticket.state === 'held') {
      t.heldCalls -= 1;
      t.heldCost = t.heldCalls === 0 ? 0 : t.heldCost - ticket.cost;
      this.metrics.tenantHeldCalls.dec({ pool: t.pool.name, tenant: t.label });
    } else if (ticket.state === 'queued') this.unqueue(t, ticket.cost);
    else if (ticket.state === 'accepted') {
      // A worker took it and is done with it: its slot is free again, whatever the outcome.
      t.pool.servedCalls += 1;
      t.pool.servedCost += ticket.cost;
    }
    ticket.state = 'ended';
    t.inFlight -= 1;
    if (answered) this.metrics.tenantCostServed.inc({ pool: t.pool.name, tenant: t.label }, ticket.cost);
    this.pump(t.pool);
  }

  /**
   * Releases held calls of `pool` while its fair queue has room, one at a time, each time from the
   * tenant whose next call has the smallest start tag (start-time fair queueing: served cost over
   * weight, a tenant coming back starting at the pool's virtual time, so idling banks no credit);
   * a tenant at its quota is passed over. Each tenant's calls leave in arrival order.
   */
  private pump(pool: PoolState): void {
    for (;;) {
      const next = nextHeld(pool, (t, head) => this.overQuota(t, head.cost));
      if (!next || !this.poolHasRoom(pool, next.head.cost)) return;
      const { t, head } = next;
      t.held.shift();
      t.heldCalls -= 1;
      t.heldCost = t.heldCalls === 0 ? 0 : t.heldCost - head.cost;
      this.metrics.tenantHeldCalls.dec({ pool: pool.name, tenant: t.label });
      if (t.heldCalls === 0) {
        t.held.length = 0;
        pool.heldTenants.delete(t);
      }
      stamp(t, head.cost);
      this.toQueued(t, head);
      head.release();
    }
  }

  private refuse(t: TenantState, reason: 'rate' | 'concurrency' | 'overloaded', error: ClusterError) {
    this.metrics.tenantRejected.inc({ pool: t.pool.name, tenant: t.label, reason });
    return error;
  }

  private burstOf(limits: PoolLimits | undefined): number {
    return limits?.burst ?? Math.max(1, Math.ceil(limits?.rate ?? 1));
  }

  private tenantState(pool: PoolState, tenant: string): TenantState {
    let t = pool.tenants.get(tenant);
    if (t) return t;
    const settings = this.options.tenants[tenant] ?? this.options.tenants.default;
    const limits = settings?.limits[pool.name];
    t = {
      tenant,
      label: this.options.tenantLabel(tenant),
      pool,
      weight: settings?.weight ?? 1,
      limits,
      bucket: undefined,
      queuedCost: 0,
      queuedCalls: 0,
      inFlight: 0,
      heldCalls: 0,
      heldCost: 0,
      held: [],
      finish: 0,
      others: zeroFigures(),
      demandCount: 0,
      demandPerS: 0,
    };
    if (limits?.rate !== undefined) {
      const share = this.rateShare(t);
      t.bucket = new TokenBucket(limits.rate * share, Math.max(1, this.burstOf(limits) * share), this.now());
    }
    pool.tenants.set(tenant, t);
    return t;
  }

  /**
   * This replica's share of `t`'s rate limit: its share of the tenant's demand over the live
   * replicas (each credited {@link DEMAND_FLOOR_PER_S}, so a replica with no demand yet gets a
   * sliver and the shares sum to 1); during a ledger outage, 1 / the replicas last seen.
   */
  private rateShare(t: TenantState): number {
    if (!this.ledgerUp) return 1 / this.replicas;
    const local = t.demandPerS + DEMAND_FLOOR_PER_S;
    return local / (local + t.others.demandPerS + DEMAND_FLOOR_PER_S * (this.replicas - 1));
  }

  /**
   * Advances the averages to now: demand rates, and the pool's service rate over the interval when
   * it had calls queued (an idle pool's rate says nothing about its capacity, so it is kept).
   * Called every publish period, before the entry is built.
   */
  tick(): void {
    const now = this.now();
    const dt = now - this.lastTickMs;
    if (dt <= 0) return;
    this.lastTickMs = now;
    const a = 1 - Math.exp(-dt / DEMAND_TAU_MS);
    for (const pool of this.pools.values()) {
      if (pool.backlogged) this.measure(pool, dt);
      pool.servedCalls = 0;
      pool.servedCost = 0;
      pool.backlogged = pool.queuedCalls > 0;
      for (const t of pool.tenants.values()) {
        t.demandPerS += a * ((t.demandCount / dt) * 1000 - t.demandPerS);
        t.demandCount = 0;
        if (t.demandPerS < 1e-3) t.demandPerS = 0;
      }
    }
    this.refresh();
  }

  /**
   * Takes the cost served over the last `dt` ms (the pool had calls queued throughout, so workers
   * were never short of work) into the pool's service rate. Measured from finished calls, not
   * from calls taken: a pool that fills its idle slots takes a burst of calls at once, many times
   * its steady rate. Over the first SERVICE_TAU_MS of backlog the rate is the plain average since
   * the backlog began (no single period's waves of finishing calls dominate it), then an
   * exponentially weighted one; it stays unknown (0) until MIN_MEASURED_CALLS calls finished, so
   * the first few, finishing early, cannot read as a slow pool and shed calls.
   */
  private measure(pool: PoolState, dt: number): void {
    if (pool.measuredMs < SERVICE_TAU_MS) {
      pool.measuredMs += dt;
      pool.measuredCalls += pool.servedCalls;
      pool.measuredCost += pool.servedCost;
      if (pool.measuredCalls >= MIN_MEASURED_CALLS)
        pool.costPerS = (pool.measuredCost / pool.measuredMs) * 1000;
      return;
    }
    const costPerS = (pool.servedCost / dt) * 1000;
    pool.costPerS += (1 - Math.exp(-dt / SERVICE_TAU_MS)) * (costPerS - pool.costPerS);
  }

  /** This replica's entry for the ledger: its own figures, tenants with any figure above 0. */
  entry(): ReplicaEntry {
    const now = this.now();
    const pools: Record<string, PoolFigures> = {};
    for (const pool of this.pools.values()) {
      const tenants: Record<string, TenantFigures> = {};
      for (const t of pool.tenants.values()) {
        if (t.inFlight === 0 && t.demandPerS === 0) continue;
        tenants[t.tenant] = {
          queuedCost: t.queuedCost,
          queuedCalls: t.queuedCalls,
          inFlight: t.inFlight,
          heldCalls: t.heldCalls,
          heldCost: t.heldCost,
          oldestHeldMs: oldestHeldMs(t, now),
          demandPerS: t.demandPerS,
        };
      }
      pools[pool.name] = { servedCostPerS: pool.costPerS, tenants };
    }
    return { v: ENTRY_VERSION, pools };
  }

  /**
   * Takes the ledger's live entries (`self`'s own is skipped): the other replicas' figures replace
   * those read before. Entries that are not of this version are ignored.
   */
  applyEntries(entries: ReadonlyMap<string, unknown>, self: string): void {
    for (const pool of this.pools.values()) {
      pool.othersQueuedCost = 0;
      pool.othersHeldCost = 0;
      pool.othersCostPerS = 0;
      for (const t of pool.tenants.values()) t.others = zeroFigures();
    }
    let replicas = 1;
    for (const [replica, value] of entries) {
      if (replica === self) continue;
      const entry = readEntry(value);
      if (!entry) continue;
      replicas += 1;
      for (const [name, figures] of Object.entries(entry.pools)) {
        const pool = this.pools.get(name);
        if (!pool) continue;
        pool.othersCostPerS += figures.servedCostPerS;
        for (const [tenant, f] of Object.entries(figures.tenants)) {
          pool.othersQueuedCost += f.queuedCost;
          pool.othersHeldCost += f.heldCost;
          const o = this.tenantState(pool, tenant).others;
          o.queuedCost += f.queuedCost;
          o.queuedCalls += f.queuedCalls;
          o.inFlight += f.inFlight;
          o.heldCalls += f.heldCalls;
          o.heldCost += f.heldCost;
          o.demandPerS += f.demandPerS;
        }
      }
    }
    this.replicas = replicas;
    this.ledgerUp = true;
    this.refresh();
  }

  /**
   * The ledger cannot be read: every limit falls back to this replica's own figures, rate and
   * concurrency to 1 / (replicas last seen) of the tenant's limit, until a read succeeds again.
   */
  ledgerUnavailable(): void {
    if (!this.ledgerUp) return;
    this.ledgerUp = false;
    this.refresh();
  }

  /** Recomputes what depends on the other replicas' figures, drops idle tenants, releases held calls. */
  private refresh(): void {
    const now = this.now();
    for (const pool of this.pools.values()) {
      for (const [name, t] of pool.tenants) {
        const idle =
          t.inFlight === 0 &&
          t.demandCount === 0 &&
          t.demandPerS === 0 &&
          t.others.inFlight === 0 &&
          t.others.demandPerS === 0;
        if (idle) {
          pool.tenants.delete(name);
          continue;
        }
        if (t.bucket && t.limits?.rate !== undefined) {
          const share = this.rateShare(t);
          t.bucket.resize(t.limits.rate * share, Math.max(1, this.burstOf(t.limits) * share), now);
        }
      }
      this.pump(pool);
    }
  }

  /** Every tracked tenant of every pool over all replicas, for the status page. */
  overview(): TenantOverview[] {
    return tenantOverview(this.pools.values());
  }

  /** Figures for tests and diagnostics: a tenant's state on a pool, as this replica sees it. */
  figures(
    pool: string,
    tenant: string,
  ): (TenantFigures & { quota: number; others: TenantFigures }) | undefined {
    const t = this.pools.get(pool)?.tenants.get(tenant);
    if (!t) return undefined;
    return {
      queuedCost: t.queuedCost,
      queuedCalls: t.queuedCalls,
      inFlight: t.inFlight,
      heldCalls: t.heldCalls,
      heldCost: t.heldCost,
      oldestHeldMs: oldestHeldMs(t, this.now()),
      demandPerS: t.demandPerS,
      quota: this.quota(t),
      others: { ...t.others },
    };
  }
}
