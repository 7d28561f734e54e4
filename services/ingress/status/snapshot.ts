import {
  type BackendStatus,
  type CallQueue,
  type ClusterMetrics,
  type LifecycleState,
  type PoolDecision,
  type Priority,
  readRoleEntry,
  type ShareLedger,
} from '../../core/index.js';
import type { BatchJobs, JobStatus } from '../../jobs/index.js';
import type { TenantOverview } from '../admission/index.js';
import { bucketBound, quantileMs, type ToolFigures, ToolWindow } from './tool-window.js';

// What the status page shows, gathered when a viewer asks (at most once per refresh interval,
// shared by every viewer): the broker's queue figures, the process's metrics registry, the
// admission layer's tenant figures, the batch job store, and the roles ledger, where every worker
// and autoscaler of the cluster publishes its status, whichever process it runs in (this one
// included: one path). Nothing here runs on the call path.

/** The autoscaler's last decision for one pool, as an autoscaler published it to the roles ledger. */
export interface AutoscalerView extends PoolDecision {
  /** The autoscaler that decided (`<host>-<pid>`): two autoscalers on one cluster show as two rows. */
  autoscaler: string;
  /** Where its decisions land: `kubernetes`, `local` or `metrics`. */
  provider: string;
}

/** One worker of the cluster, as it published itself to the roles ledger. */
export interface WorkerView {
  /** The worker's id (`<host>-<pid>-<pool>` for the CLI's workers). */
  worker: string;
  pool: string;
  state: LifecycleState;
  /** Calls it holds now. */
  inFlight: number;
  /** Most calls it takes at once. */
  maxInFlight: number;
}

/** One backend endpoint as one worker sees it (each worker probes and breaks on its own). */
export interface BackendView extends Omit<BackendStatus, 'index'> {
  pool: string;
  worker: string;
  /** The endpoint's index in the pool's `endpoints`. */
  backend: string;
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
  /** The roles ledger (`Broker.roles`): workers, their backends and the autoscaler's decisions. */
  roles: Pick<ShareLedger, 'read'>;
  /** Longest wait for one pool's queue figures (and for the roles ledger), in ms. */
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
  /**
   * Every live worker of the cluster (roles ledger), by pool then id, at most {@link MAX_WORKERS};
   * null when the roles ledger could not be read (`problems` says why).
   */
  workers: WorkerView[] | null;
  /** Every worker's backend endpoints, by pool, worker and index; null as `workers`. */
  backends: BackendView[] | null;
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
  /**
   * The last decisions of every live autoscaler, by pool; empty when none runs (none published within
   * the entry TTL, 3 s); null when the roles ledger could not be read.
   */
  autoscaler: AutoscalerView[] | null;
  /** Sections that could not be read this time, with why (e.g. the broker timed out). */
  problems: string[];
}

/** Most tenants and jobs one snapshot keeps; a request asks for fewer. */
export const MAX_ROWS = 100;
/** Most workers one snapshot lists (their backends with them); more are counted in `problems`. */
export const MAX_WORKERS = 500;

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
    const [pools, tools, gauges, jobs, roles] = await Promise.all([
      this.pools(problems),
      this.window.figures(sources.tools),
      this.gauges(),
      this.jobs(problems),
      this.roles(problems),
    ]);
    const tenants = [...sources.tenants()]
      .sort(
        (a, b) =>
          b.inFlight + b.waiting - (a.inFlight + a.waiting) ||
          b.demandPerS - a.demandPerS ||
          a.tenant.localeCompare(b.tenant),
      )
      .slice(0, MAX_ROWS);
    return {
      generatedAt: new Date(this.now()).toISOString(),
      refreshMs: this.refreshMs,
      replica: { broker: sources.queue.kind, inFlight: gauges.inFlight, workerStreams: gauges.workerStreams },
      pools,
      workers: roles?.workers ?? null,
      backends: roles?.backends ?? null,
      tools,
      tenants,
      jobs,
      autoscaler: roles?.autoscaler ?? null,
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

  /** The replica's own gauges. */
  private async gauges() {
    const { metrics } = this.sources;
    const [inFlight, streams] = await Promise.all([
      metrics.ingressInFlight.get(),
      metrics.deliveryStreams.get(),
    ]);
    return {
      inFlight: inFlight.values[0]?.value ?? 0,
      workerStreams: streams.values.find((v) => v.labels.side === 'ingress')?.value ?? 0,
    };
  }

  /**
   * Workers, backends and autoscaler decisions from the roles ledger; undefined (and a problem) when
   * it cannot be read in time. Entries that are not of this version are skipped.
   */
  private async roles(problems: string[]): Promise<
    | {
        workers: WorkerView[];
        backends: BackendView[];
        autoscaler: AutoscalerView[];
      }
    | undefined
  > {
    const { roles, statsTimeoutMs } = this.sources;
    let entries: Map<string, unknown>;
    try {
      entries = await within(roles.read(), statsTimeoutMs);
    } catch (err) {
      problems.push(
        `workers, backends and autoscaler: figures unavailable, the roles ledger cannot be read (${err instanceof Error ? err.message : String(err)})`,
      );
      return undefined;
    }
    const workers: WorkerView[] = [];
    const backends: BackendView[] = [];
    const autoscaler: AutoscalerView[] = [];
    const byPoolThen = (a: { pool: string }, b: { pool: string }) => a.pool.localeCompare(b.pool);
    const seen: { worker: WorkerView; backends: BackendView[] }[] = [];
    for (const value of entries.values()) {
      const entry = readRoleEntry(value);
      if (entry?.role === 'worker') {
        const { worker, pool } = entry;
        if (entry.backendsOmitted > 0) {
          problems.push(
            `worker ${worker} lists ${entry.backends.length} of its ${entry.backends.length + entry.backendsOmitted} backends`,
          );
        }
        seen.push({
          worker: {
            worker,
            pool,
            state: entry.state,
            inFlight: entry.inFlight,
            maxInFlight: entry.maxInFlight,
          },
          backends: entry.backends.map(({ index, ...b }) => ({ pool, worker, backend: String(index), ...b })),
        });
      } else if (entry?.role === 'autoscaler') {
        for (const decision of entry.pools) {
          autoscaler.push({ ...decision, autoscaler: entry.autoscaler, provider: entry.provider });
        }
      }
    }
    seen.sort((a, b) => byPoolThen(a.worker, b.worker) || a.worker.worker.localeCompare(b.worker.worker));
    if (seen.length > MAX_WORKERS) {
      problems.push(`showing ${MAX_WORKERS} of the ${seen.length} workers (the first by pool and id)`);
    }
    for (const { worker, backends: theirs } of seen.slice(0, MAX_WORKERS)) {
      workers.push(worker);
      theirs.sort((a, b) => Number(a.backend) - Number(b.backend));
      backends.push(...theirs);
    }
    autoscaler.sort((a, b) => byPoolThen(a, b) || a.autoscaler.localeCompare(b.autoscaler));
    return { workers, backends, autoscaler };
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
