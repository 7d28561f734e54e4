import type { CallQueue, ClusterMetrics, Priority } from '../../core/index.js';
import type { BatchJobs, JobStatus } from '../../jobs/index.js';
import type { TenantOverview } from '../admission/index.js';
import { bucketBound, quantileMs, type ToolFigures, ToolWindow } from './tool-window.js';

// What the status page shows, gathered when a viewer asks (at most once per refresh interval,
// shared by every viewer) from what the replica already holds: the broker's queue figures, the
// process's metrics registry, the admission layer's tenant figures, the batch job store and, when
// it runs in this process, the autoscaler. Nothing here runs on the call path.

/** The autoscaler's last decision for one pool, when one runs in this process (`up --autoscale`). */
export interface AutoscalerView {
  pool: string;
  /** Replicas the law wants; null before its first decision. */
  desired: number | null;
  /** Replicas the pool had at the last observation; null before the first one. */
  current: number | null;
  /** The law's reason for the last decision (e.g. `backlog`, `idle`, `steady`). */
  reason: string | null;
  /** The last error observing or scaling the pool; null when none. */
  error: string | null;
  /** Decisions that changed the pool's replicas since the start. */
  changes: number;
}

/** Where the status page's figures come from. */
export interface StatusSources {
  queue: Pick<CallQueue, 'stats' | 'kind'>;
  metrics: ClusterMetrics;
  /** Pools of the catalog, in catalog order. */
  pools: readonly string[];
  /** Tools of the catalog: listed even before their first call. */
  tools: readonly string[];
  /** The admission layer's tenants (every replica's, through the shares ledger). */
  tenants: () => readonly TenantOverview[];
  /** The batch engine, when this replica serves batch jobs. */
  jobs?: Pick<BatchJobs, 'overview'> | undefined;
  /** The autoscaler's decisions, when one runs in this process; undefined otherwise. */
  autoscaler?: (() => readonly AutoscalerView[] | undefined) | undefined;
  /** Longest wait for one pool's queue figures, in ms (a slow broker leaves that pool marked). */
  statsTimeoutMs: number;
}

/** One pool's queue at one priority. */
export interface PriorityFigures {
  priority: Priority;
  /** Calls waiting for a worker. */
  depth: number;
  /** Calls a worker holds and has not settled. */
  inFlight: number;
  /** How long the oldest waiting call has waited, in ms (0 when none waits). */
  oldestWaitMs: number;
}

/** Everything the page shows; the body of `GET /status/data`. */
export interface StatusSnapshot {
  /** When it was gathered, ISO 8601. */
  generatedAt: string;
  /** How often the page refreshes, in ms. */
  refreshMs: number;
  replica: {
    broker: CallQueue['kind'];
    /** Calls this replica waits on. */
    inFlight: number;
    /** Open delivery streams from workers to this replica. */
    workerStreams: number;
  };
  pools: {
    pool: string;
    /** Null when the broker did not answer in time. */
    priorities: PriorityFigures[] | null;
    /** Queue wait of calls taken by workers (from enqueue or hold), this replica's calls, in ms. */
    waitP50Ms: number | null;
    waitP95Ms: number | null;
  }[];
  /** Workers of this process by pool (embedded mode); empty for an ingress on its own. */
  workers: { pool: string; states: Record<string, number>; inFlight: number }[];
  /** Backend endpoints of this process's workers (embedded mode): `backend` is the endpoint index. */
  backends: {
    pool: string;
    backend: string;
    healthy: boolean;
    breaker: 'closed' | 'half-open' | 'open';
    inFlight: number;
  }[];
  tools: ToolFigures[];
  /** Busiest tenants first (in flight plus waiting, then demand). */
  tenants: TenantOverview[];
  /** Batch jobs, unfinished first; null when this replica serves none. */
  jobs:
    | {
        id: string;
        tenant: string;
        status: JobStatus;
        pool: string;
        total: number;
        completed: number;
        failed: number;
        createdAt: number;
      }[]
    | null;
  /** The autoscaler's last decisions; null when none runs in this process. */
  autoscaler: AutoscalerView[] | null;
  /** Sections that could not be read this time, with why (e.g. the broker timed out). */
  problems: string[];
}

/** Most tenants and jobs one snapshot keeps; a request asks for fewer. */
export const MAX_ROWS = 100;

/**
 * Gathers snapshots, one at a time, and hands the latest to every request within `refreshMs / 2`
 * of it: many viewers cost the broker what one does.
 */
export class StatusSource {
  private readonly window: ToolWindow;
  private latest: { atMs: number; snapshot: Promise<StatusSnapshot> } | undefined;

  constructor(
    private readonly sources: StatusSources,
    private readonly refreshMs: number,
    private readonly now: () => number = Date.now,
  ) {
    this.window = new ToolWindow(sources.metrics, now);
  }

  /** The current snapshot (gathered now, or shared from one gathered within half a refresh). */
  snapshot(): Promise<StatusSnapshot> {
    const at = this.now();
    if (this.latest && at - this.latest.atMs < this.refreshMs / 2) return this.latest.snapshot;
    const snapshot = this.gather();
    this.latest = { atMs: at, snapshot };
    // A failed gathering is not shared: the next request tries again.
    snapshot.catch(() => {
      if (this.latest?.snapshot === snapshot) this.latest = undefined;
    });
    return snapshot;
  }

  private async gather(): Promise<StatusSnapshot> {
    const { sources } = this;
    const problems: string[] = [];
    const [pools, tools, gauges, jobs] = await Promise.all([
      this.pools(problems),
      this.window.figures(sources.tools),
      this.gauges(),
      this.jobs(problems),
    ]);
    const tenants = [...sources.tenants()]
      .sort(
        (a, b) =>
          b.inFlight + b.waiting - (a.inFlight + a.waiting) ||
          b.demandPerS - a.demandPerS ||
          a.tenant.localeCompare(b.tenant),
      )
      .slice(0, MAX_ROWS);
    const autoscaler = sources.autoscaler?.();
    return {
      generatedAt: new Date(this.now()).toISOString(),
      refreshMs: this.refreshMs,
      replica: { broker: sources.queue.kind, inFlight: gauges.inFlight, workerStreams: gauges.workerStreams },
      pools,
      workers: gauges.workers,
      backends: gauges.backends,
      tools,
      tenants,
      jobs,
      autoscaler: autoscaler ? [...autoscaler] : null,
      problems,
    };
  }

  private async pools(problems: string[]): Promise<StatusSnapshot['pools']> {
    const { queue, metrics, statsTimeoutMs } = this.sources;
    const waits = await metrics.tenantQueueWait.get();
    return Promise.all(
      this.sources.pools.map(async (pool) => {
        const stats = await within(queue.stats(pool), statsTimeoutMs).catch((err: unknown) => {
          problems.push(`queue figures of pool ${pool}: ${err instanceof Error ? err.message : String(err)}`);
          return null;
        });
        const bounds = new Map<number, number>();
        for (const v of waits.values) {
          const le = bucketBound(v);
          if (v.labels.pool !== pool || le === undefined) continue;
          bounds.set(le, (bounds.get(le) ?? 0) + v.value);
        }
        const les = [...bounds.keys()].sort((a, b) => a - b);
        const cumulative = les.map((le) => bounds.get(le) ?? 0);
        return {
          pool,
          priorities: stats
            ? stats.map((s) => ({
                priority: s.priority,
                depth: s.depth,
                inFlight: s.inFlight,
                oldestWaitMs: s.oldestAgeMs,
              }))
            : null,
          waitP50Ms: quantileMs(les, cumulative, 0.5),
          waitP95Ms: quantileMs(les, cumulative, 0.95),
        };
      }),
    );
  }

  /** The gauges workers of this process set, and the replica's own. */
  private async gauges() {
    const { metrics } = this.sources;
    const [inFlight, streams, replicas, workerInFlight, healthy, breaker, backendInFlight] =
      await Promise.all([
        metrics.ingressInFlight.get(),
        metrics.deliveryStreams.get(),
        metrics.workerReplicas.get(),
        metrics.workerInFlight.get(),
        metrics.backendHealthy.get(),
        metrics.backendBreaker.get(),
        metrics.backendInFlight.get(),
      ]);
    const workers = new Map<string, { pool: string; states: Record<string, number>; inFlight: number }>();
    const workerOf = (pool: string) => {
      let w = workers.get(pool);
      if (!w) {
        w = { pool, states: {}, inFlight: 0 };
        workers.set(pool, w);
      }
      return w;
    };
    for (const v of replicas.values) {
      if (typeof v.labels.pool === 'string' && typeof v.labels.state === 'string')
        workerOf(v.labels.pool).states[v.labels.state] = v.value;
    }
    for (const v of workerInFlight.values) {
      if (typeof v.labels.pool === 'string') workerOf(v.labels.pool).inFlight = v.value;
    }
    const key = (labels: Partial<Record<string, string | number>>) => `${labels.pool}\u0000${labels.backend}`;
    const breakers = new Map(breaker.values.map((v) => [key(v.labels), v.value]));
    const inFlights = new Map(backendInFlight.values.map((v) => [key(v.labels), v.value]));
    const backends = healthy.values
      .filter((v) => v.labels.pool !== undefined && v.labels.backend !== undefined)
      .map((v) => {
        const state = breakers.get(key(v.labels)) ?? 0;
        return {
          pool: String(v.labels.pool),
          backend: String(v.labels.backend),
          healthy: v.value === 1,
          breaker: state >= 2 ? ('open' as const) : state >= 1 ? ('half-open' as const) : ('closed' as const),
          inFlight: inFlights.get(key(v.labels)) ?? 0,
        };
      })
      .sort(
        (a, b) => a.pool.localeCompare(b.pool) || a.backend.localeCompare(b.backend, 'en', { numeric: true }),
      );
    return {
      inFlight: inFlight.values[0]?.value ?? 0,
      workerStreams: streams.values.find((v) => v.labels.side === 'ingress')?.value ?? 0,
      workers: [...workers.values()].sort((a, b) => a.pool.localeCompare(b.pool)),
      backends,
    };
  }

  private async jobs(problems: string[]): Promise<StatusSnapshot['jobs']> {
    const { jobs, statsTimeoutMs } = this.sources;
    if (!jobs) return null;
    try {
      const views = await within(jobs.overview(MAX_ROWS), statsTimeoutMs);
      return views.map((j) => ({
        id: j.id,
        tenant: j.tenant,
        status: j.status,
        pool: j.pool,
        total: j.counts.total,
        completed: j.counts.completed,
        failed: j.counts.failed,
        createdAt: j.createdAt,
      }));
    } catch (err) {
      problems.push(`batch jobs: ${err instanceof Error ? err.message : String(err)}`);
      return [];
    }
  }
}

/** `promise`, or a rejection naming the wait once `ms` pass first. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}
