// The figures one ingress replica publishes to the shares ledger (share-ledger.ts) and reads from
// the others: one JSON entry per replica, replaced every publish period and expiring with the
// ledger's time to live, so a dead replica's figures drop out on their own. Written by the ingress's
// admission (services/ingress/admission); read by it and by the autoscaler, which counts the calls
// held at the ingresses as queue depth. Kept in the kernel so that both read it with one decoder.

/** Version of the entry's shape; entries of another version are ignored (a rolling upgrade). */
export const ENTRY_VERSION = 2;

/** One tenant's figures on one pool at one replica. Counts in calls, costs in the pool's cost units. */
export interface TenantFigures {
  /** Cost of the tenant's calls in the broker queue (enqueued, not yet taken by a worker). */
  queuedCost: number;
  queuedCalls: number;
  /** Calls admitted and not yet answered (held, queued or running). */
  inFlight: number;
  /** Calls waiting at the replica for the tenant's fair share, and their cost. */
  heldCalls: number;
  heldCost: number;
  /** Age of the tenant's oldest held call when the entry was built, ms; 0 when none is held. */
  oldestHeldMs: number;
  /** Calls asked per second (admitted and refused), an exponentially weighted average. */
  demandPerS: number;
}

/** One pool's figures at one replica. */
export interface PoolFigures {
  /**
   * Rate at which workers finished this replica's calls of the pool while it had calls queued (its
   * share of the pool's service rate), cost units/s; 0 while not yet measured.
   */
  servedCostPerS: number;
  /** Tenants with any figure above 0, by tenant name. */
  tenants: Record<string, TenantFigures>;
}

/** A replica's entry in the ledger. */
export interface ReplicaEntry {
  v: typeof ENTRY_VERSION;
  pools: Record<string, PoolFigures>;
}

export const ZERO_TENANT: Readonly<TenantFigures> = {
  queuedCost: 0,
  queuedCalls: 0,
  inFlight: 0,
  heldCalls: 0,
  heldCost: 0,
  oldestHeldMs: 0,
  demandPerS: 0,
};

const TENANT_KEYS = Object.keys(ZERO_TENANT) as (keyof TenantFigures)[];

/** A finite number at least 0, else 0: another replica's entry is read, never trusted. */
const figure = (value: unknown): number =>
  typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : 0;

/**
 * Reads another replica's entry; undefined when it is not an entry of this version (a replica of
 * another release, or garbage). Bad figures read as 0.
 */
export function readEntry(value: unknown): ReplicaEntry | undefined {
  if (!isObject(value) || value.v !== ENTRY_VERSION || !isObject(value.pools)) return undefined;
  const pools: Record<string, PoolFigures> = {};
  for (const [pool, raw] of Object.entries(value.pools)) {
    if (!isObject(raw)) continue;
    const tenants: Record<string, TenantFigures> = {};
    if (isObject(raw.tenants)) {
      for (const [tenant, t] of Object.entries(raw.tenants)) {
        if (!isObject(t)) continue;
        const figures = { ...ZERO_TENANT };
        for (const key of TENANT_KEYS) figures[key] = figure(t[key]);
        tenants[tenant] = figures;
      }
    }
    pools[pool] = {
      servedCostPerS: figure(raw.servedCostPerS),
      tenants,
    };
  }
  return { v: ENTRY_VERSION, pools };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The calls held at the ingress replicas on one pool: how many, and the oldest one's age. */
export interface HeldFigures {
  calls: number;
  /** Age of the oldest held call, ms, as of its replica's last publish. */
  oldestMs: number;
}

/**
 * Calls held at the ingress replicas for their tenant's fair share, per pool: the sum of the calls
 * and the oldest age over the live entries in `entries` (as `ShareLedger.read()` returns them) and
 * over tenants. Each replica publishes only its own held calls, so the sum counts every held call
 * once. Entries that are not of this version are skipped (see {@link readEntry}); a pool absent
 * from the result holds none.
 */
export function heldByPool(entries: ReadonlyMap<string, unknown>): Map<string, HeldFigures> {
  const held = new Map<string, HeldFigures>();
  for (const value of entries.values()) {
    const entry = readEntry(value);
    if (!entry) continue;
    for (const [pool, figures] of Object.entries(entry.pools)) {
      for (const tenant of Object.values(figures.tenants)) {
        if (tenant.heldCalls <= 0) continue;
        const sum = held.get(pool) ?? { calls: 0, oldestMs: 0 };
        sum.calls += tenant.heldCalls;
        sum.oldestMs = Math.max(sum.oldestMs, tenant.oldestHeldMs);
        held.set(pool, sum);
      }
    }
  }
  return held;
}
