import { type TenantFigures, ZERO_TENANT } from '../../core/index.js';
import type { Ticket } from './ticket.js';
import type { TokenBucket } from './token-bucket.js';

// What the admission keeps per pool and per tenant on one replica, and the start-time fair
// queueing order over it (start tags, virtual time).

/** A tenant's limits on one pool (config `tenants.<name>.limits.<pool>`); each optional. */
export interface PoolLimits {
  /** Calls/s over all replicas. */
  rate?: number | undefined;
  /** Calls above the rate at once; default `rate` rounded up, at least 1. */
  burst?: number | undefined;
  /** Calls admitted and not answered at once, over all replicas. */
  concurrency?: number | undefined;
}

/** One tenant on one pool, as this replica sees it. */
export interface TenantState {
  readonly tenant: string;
  readonly label: string;
  readonly pool: PoolState;
  readonly weight: number;
  readonly limits: PoolLimits | undefined;
  bucket: TokenBucket | undefined;
  queuedCost: number;
  queuedCalls: number;
  inFlight: number;
  heldCalls: number;
  heldCost: number;
  /** Held calls in arrival order; ended ones are skipped when they reach the head. */
  held: Ticket[];
  /**
   * Virtual finish of the tenant's last call released or queued here (start-time fair queueing):
   * its start (the pool's virtual time, or this if later) plus its cost over the tenant's weight.
   */
  finish: number;
  /** The sum of the other replicas' figures (zero while the ledger is unreachable). */
  others: TenantFigures;
  demandCount: number;
  demandPerS: number;
}

/** One pool with fair-queue state, as this replica sees it. */
export interface PoolState {
  readonly name: string;
  /** Fair queue size in the pool's cost units; 0: fair queueing off. */
  readonly fairSize: number;
  readonly tenants: Map<string, TenantState>;
  queuedCost: number;
  queuedCalls: number;
  othersQueuedCost: number;
  /** The other replicas' held cost, all tenants (as last published). */
  othersHeldCost: number;
  othersCostPerS: number;
  /** Cost of the calls workers finished (taken, then ended) since the last tick. */
  servedCost: number;
  /** Whether calls were queued at the last tick: only then does the served cost measure capacity. */
  backlogged: boolean;
  /** Backlogged time measured so far (ms, up to SERVICE_TAU_MS), and the calls and cost served in it. */
  measuredMs: number;
  measuredCalls: number;
  measuredCost: number;
  /** Calls finished since the last tick (counted into `measuredCalls`). */
  servedCalls: number;
  /** The pool's service rate from this replica's calls, cost units/s; 0 while unknown. */
  costPerS: number;
  heldTenants: Set<TenantState>;
  /** Virtual time: the start tag of the call released last (start-time fair queueing). */
  vtime: number;
}

export function newPoolState(name: string, fairSize: number): PoolState {
  return {
    name,
    fairSize,
    tenants: new Map(),
    queuedCost: 0,
    queuedCalls: 0,
    othersQueuedCost: 0,
    othersHeldCost: 0,
    othersCostPerS: 0,
    servedCost: 0,
    backlogged: false,
    measuredMs: 0,
    measuredCalls: 0,
    measuredCost: 0,
    servedCalls: 0,
    costPerS: 0,
    heldTenants: new Set(),
    vtime: 0,
  };
}

export const zeroFigures = (): TenantFigures => ({ ...ZERO_TENANT });

/**
 * Calls `t` has waiting (queued in the broker or held at an ingress): here, and at the other
 * replicas as last published when `withOthers` (false while the ledger is unreachable).
 */
export function waitingCalls(t: TenantState, withOthers: boolean): number {
  const here = t.queuedCalls + t.heldCalls;
  return withOthers ? here + t.others.queuedCalls + t.others.heldCalls : here;
}

/** Age of `t`'s oldest held call at `now` (ms since the epoch), in ms; 0 when it holds none. */
export function oldestHeldMs(t: TenantState, now: number): number {
  const oldest = t.held.find((ticket) => ticket.state === 'held');
  return oldest ? Math.max(0, now - oldest.sinceMs) : 0;
}

/** The start tag a call of `t` would get now: the pool's virtual time, or `t`'s finish if later. */
export function startTag(t: TenantState): number {
  return Math.max(t.pool.vtime, t.finish);
}

/** Stamps a call of `cost` of `t` as released: its start becomes the pool's virtual time. */
export function stamp(t: TenantState, cost: number): void {
  const start = startTag(t);
  t.pool.vtime = start;
  t.finish = start + cost / t.weight;
}

/**
 * The held tenant of `pool` whose next call goes first (the smallest start tag), with that call;
 * tenants `passOver` rules out (at their quota) are skipped. Drops tenants with nothing held.
 */
export function nextHeld(
  pool: PoolState,
  passOver: (t: TenantState, head: Ticket) => boolean,
): { t: TenantState; head: Ticket } | undefined {
  let next: { t: TenantState; head: Ticket } | undefined;
  for (const t of [...pool.heldTenants]) {
    while (t.held[0] && t.held[0].state !== 'held') t.held.shift();
    const head = t.held[0];
    if (!head || t.heldCalls === 0) {
      t.held.length = 0;
      pool.heldTenants.delete(t);
      continue;
    }
    if (passOver(t, head)) continue;
    if (!next || startTag(t) < startTag(next.t)) next = { t, head };
  }
  return next;
}

/** One tenant on one pool over every replica: this replica's figures plus the others' as last published. */
export interface TenantOverview {
  readonly tenant: string;
  readonly pool: string;
  /** Calls admitted and not yet answered. */
  readonly inFlight: number;
  /** Calls queued in the broker or held at an ingress for the tenant's fair-queue quota. */
  readonly waiting: number;
  /** Calls asked for per second, averaged over about two seconds. */
  readonly demandPerS: number;
}

/** Every tenant the admission tracks on `pools` (an idle one is dropped within a publish period). */
export function tenantOverview(pools: Iterable<PoolState>): TenantOverview[] {
  const rows: TenantOverview[] = [];
  for (const pool of pools) {
    for (const t of pool.tenants.values()) {
      rows.push({
        tenant: t.tenant,
        pool: pool.name,
        inFlight: t.inFlight + t.others.inFlight,
        waiting: waitingCalls(t, true),
        demandPerS: t.demandPerS + t.others.demandPerS,
      });
    }
  }
  return rows;
}
