/**
 * The capacity planner behind `mcp-cluster plan`: from observed per-pool rates and the configuration,
 * how loaded each pool is now, how many replicas it needs to keep the queue wait under a target at a
 * percentile, and what GPUs and money that takes. Pure: rates in, plan out.
 */
import type { ResolvedConfig } from '../core/index.js';
import { outstandingReplicas, perReplicaRate } from './control-law.js';
import { interactiveArrivalPerSec, type PoolRates } from './metrics-source.js';
import { formatDuration, formatGiB, formatMs, formatRate, percentileLabel } from './plan-output.js';
import {
  DEFAULT_GPU_TIERS,
  fitGpuTier,
  GPU_MEMORY_OVERHEAD,
  type GpuTier,
  gpuMemoryPerReplica,
  MAX_PLANNED_SERVERS,
  mmcWait,
  offeredLoad,
  QUEUEING_MODEL,
  replicasForWait,
} from './queueing.js';

/** Inputs of {@link planCapacity} beyond rates and config. */
export interface PlanOptions {
  /** Multiplier applied to every pool's observed arrival rate ("what if traffic doubles": 2). Default 1. */
  readonly whatIf?: number;
  /** Queue wait to plan for, ms. Default `config.planner.targetWaitMs`. */
  readonly targetWaitMs?: number;
  /** Fraction of calls that must wait at most the target, in (0, 1). Default `config.planner.percentile`. */
  readonly percentile?: number;
  /**
   * Time in which each pool's low-priority (batch) backlog should be finished, ms. Default each pool's
   * `scaling.batchDrainTarget` (1 h unless set).
   */
  readonly batchDeadlineMs?: number;
}

/**
 * The low-priority (batch) backlog of one pool: when it finishes at the current replicas, and the
 * replicas that finish it by a deadline. Times in ms, rates in calls/s; NaN: unknown (no call finished
 * in the window, so no service time); Infinity: never (no running replica).
 */
export interface PoolBatchPlan {
  /** Low-priority calls waiting in the queue. */
  readonly queued: number;
  /** Low-priority calls taken by workers and not yet settled. */
  readonly inFlight: number;
  /** queued + inFlight: the calls (job chunks) left. */
  readonly backlog: number;
  /** Calls one replica completes per second when kept full: replicaConcurrency / mean service time. */
  readonly perReplicaPerSec: number;
  /** backlog / (replicas × perReplicaPerSec): when the backlog is done at the current replicas. */
  readonly etaMs: number;
  /** The deadline planned for: `--batch-deadline`, else the pool's `scaling.batchDrainTarget`. */
  readonly deadlineMs: number;
  /** ceil(backlog / (perReplicaPerSec × deadline)); undefined when the rate is unknown. */
  readonly neededReplicas: number | undefined;
}

/** GPU sizing of one pool at the needed replicas. */
export interface PoolGpuPlan {
  /** Memory one replica needs: (weights + KV cache) × 1.15, bytes. */
  readonly memoryPerReplicaBytes: number;
  readonly weightsBytes: number;
  readonly kvCacheBytes: number;
  /** The tier that holds one replica; undefined when none does (not even 8 GPUs of one tier). */
  readonly tier: string | undefined;
  /** GPUs per replica (tensor parallel when > 1). */
  readonly gpusPerReplica: number;
  /** Price of one GPU of the tier per hour. */
  readonly pricePerGpuHour: number;
  /** GPUs for the needed replicas; undefined when the replicas or the tier are unknown. */
  readonly gpus: number | undefined;
  /** Price per hour of those GPUs; undefined like `gpus`. */
  readonly costPerHour: number | undefined;
}

/**
 * The plan for one pool. Times in ms, rates in calls/s, utilisation as a fraction. NaN: unknown (no call
 * finished in the window); Infinity: unbounded (the load is at or above capacity).
 */
export interface PoolPlan {
  readonly pool: string;
  /**
   * Interactive arrivals per second as observed: priorities high and normal. Low-priority (batch)
   * calls arrive in bursts of a job's chunks and are planned by their backlog instead (`batch`).
   */
  readonly observedArrivalPerSec: number;
  /** Interactive arrivals per second planned for: observed × what-if. */
  readonly arrivalPerSec: number;
  readonly completedPerSec: number;
  /** Mean backend time per call: the M/M/c service time S. */
  readonly meanServiceMs: number;
  readonly p95ServiceMs: number;
  readonly inFlight: number;
  readonly queueDepth: number;
  readonly oldestWaitMs: number;
  /** Running replicas now. */
  readonly replicas: number;
  /** Calls one replica serves at once (`pools.<pool>.scaling.replicaConcurrency`). */
  readonly replicaConcurrency: number;
  /** a = λ·S in Erlangs (busy slots on average). */
  readonly offeredLoad: number;
  /** ρ = a / (replicas × replicaConcurrency) now. */
  readonly utilization: number;
  /** Queue wait at the percentile now. */
  readonly waitMs: number;
  /** Mean queue wait now. */
  readonly meanWaitMs: number;
  /** Fewest replicas that meet the target; undefined when the service time is unknown or the search gave up. */
  readonly neededReplicas: number | undefined;
  /** ρ at the needed replicas. */
  readonly utilizationAtNeeded: number;
  /** Queue wait at the percentile with the needed replicas. */
  readonly waitAtNeededMs: number;
  /** `pools.<pool>.scaling.maxReplicas`, the autoscaler's ceiling. */
  readonly maxReplicas: number;
  /** GPU sizing; undefined when the pool has no `gpu` section. */
  readonly gpu: PoolGpuPlan | undefined;
  /** The low-priority backlog's ETA and needed replicas; undefined when the pool has no such backlog. */
  readonly batch: PoolBatchPlan | undefined;
  /** What the reader should know about this pool's figures. */
  readonly notes: readonly string[];
}

export interface CapacityPlan {
  /** The queueing model the numbers come from. */
  readonly model: string;
  readonly targetWaitMs: number;
  readonly percentile: number;
  readonly whatIf: number;
  /** `PlanOptions.batchDeadlineMs`; undefined: each pool's `scaling.batchDrainTarget`. */
  readonly batchDeadlineMs: number | undefined;
  /** Length of the observation the rates cover, ms. */
  readonly windowMs: number;
  /** Where the GPU prices come from. */
  readonly priceTable: 'config' | 'built-in example';
  readonly gpuTiers: readonly GpuTier[];
  readonly pools: readonly PoolPlan[];
  /** GPUs over every pool with a known GPU sizing. */
  readonly totalGpus: number;
  readonly totalCostPerHour: number;
  readonly assumptions: readonly string[];
  /** Notes not about one configured pool (e.g. pools seen in metrics but absent from the config). */
  readonly notes: readonly string[];
}

/**
 * Plans every pool of `config` from `rates` (a pool without rates is planned as idle). Pools present in
 * `rates` but not in the config are named in `notes` (their concurrency is unknown).
 * @throws RangeError when `whatIf`, `targetWaitMs` or `percentile` are out of range.
 */
export function planCapacity(
  rates: ReadonlyMap<string, PoolRates>,
  config: Pick<ResolvedConfig, 'pools' | 'planner'>,
  options: PlanOptions = {},
): CapacityPlan {
  const whatIf = options.whatIf ?? 1;
  const targetWaitMs = options.targetWaitMs ?? config.planner.targetWaitMs;
  const percentile = options.percentile ?? config.planner.percentile;
  if (!Number.isFinite(whatIf) || whatIf <= 0) {
    throw new RangeError(`whatIf must be a number above 0 (e.g. 2 for twice the traffic), got ${whatIf}`);
  }
  if (!Number.isFinite(targetWaitMs) || targetWaitMs < 0) {
    throw new RangeError(`targetWaitMs must be a finite number ≥ 0, got ${targetWaitMs}`);
  }
  if (!(percentile > 0 && percentile < 1)) {
    throw new RangeError(`percentile must be a fraction in (0, 1), got ${percentile}`);
  }
  const { batchDeadlineMs } = options;
  if (batchDeadlineMs !== undefined && !(Number.isFinite(batchDeadlineMs) && batchDeadlineMs > 0)) {
    throw new RangeError(`batchDeadlineMs must be a finite number above 0, got ${batchDeadlineMs}`);
  }
  const fromConfig = config.planner.gpuTiers.length > 0;
  const tiers: readonly GpuTier[] = fromConfig ? config.planner.gpuTiers : DEFAULT_GPU_TIERS;
  let windowMs = 0;
  for (const r of rates.values()) windowMs = Math.max(windowMs, r.windowMs);

  const pools = Object.values(config.pools).map((pool) => {
    const observed = rates.get(pool.name);
    if (observed) windowMs = Math.max(windowMs, observed.windowMs);
    return planPool(pool, observed, tiers, { whatIf, targetWaitMs, percentile, batchDeadlineMs });
  });
  const notes: string[] = [];
  for (const pool of rates.keys()) {
    if (!config.pools[pool]) {
      notes.push(
        `pool ${pool} appears in the metrics but not in the config: not planned (pass the cluster's --config)`,
      );
    }
  }
  let totalGpus = 0;
  let totalCostPerHour = 0;
  for (const p of pools) {
    totalGpus += p.gpu?.gpus ?? 0;
    totalCostPerHour += p.gpu?.costPerHour ?? 0;
  }
  const pct = percentileLabel(percentile);
  const assumptions = [
    `${QUEUEING_MODEL}; servers c = replicas × replicaConcurrency (calls one replica serves at once)`,
    'service time S = mean backend time per call over the window; M/M/c takes it as exponential, so calls of steadier length (most LLM and embedding calls) wait less than planned, more variable ones (diffusion with mixed step counts) can wait more',
    `a = λ·S, ρ = a/c, C = Erlang C(c, a); wait at ${pct}: W = ln(C/(1−p)) / (c/S − λ), 0 when C ≤ 1−p; needed = fewest replicas with W ≤ ${formatMs(targetWaitMs)}, and at least ceil((queued + in flight) / replicaConcurrency) for the work outstanding when observed (what the autoscaler and the KEDA triggers size on)`,
    `GPU memory per replica = (params × bytesPerParam + kvCachePerToken × contextTokens × concurrentSequences) × ${1 + GPU_MEMORY_OVERHEAD}; tier = smallest GPU that holds it, else the cheapest 2/4/8-GPU tensor-parallel set`,
    fromConfig
      ? 'GPU prices from planner.gpuTiers in the config'
      : 'GPU prices are the built-in EXAMPLE placeholders, not quotes: set planner.gpuTiers to what you pay',
  ];
  if (whatIf !== 1) {
    assumptions.push(
      `what-if: observed arrival rates × ${whatIf}, service times as observed${pools.some((p) => p.batch) ? ', batch backlogs as they are' : ''}`,
    );
  }
  if (pools.some((p) => p.batch)) {
    assumptions.push(
      'batch (priority low): arrivals are interactive only (high, normal); a backlog is its queued and in-flight calls; one replica kept full completes r = replicaConcurrency / S calls/s; ETA = backlog / (replicas × r), as if the backlog had the replicas to itself (interactive calls go first); needed = ceil(backlog / (r × deadline)), which the autoscaler combines with the interactive need by max',
    );
  }
  return {
    model: QUEUEING_MODEL,
    targetWaitMs,
    percentile,
    whatIf,
    batchDeadlineMs,
    windowMs,
    priceTable: fromConfig ? 'config' : 'built-in example',
    gpuTiers: tiers,
    pools,
    totalGpus,
    totalCostPerHour,
    assumptions,
    notes,
  };
}

function planPool(
  pool: ResolvedConfig['pools'][string],
  observed: PoolRates | undefined,
  tiers: readonly GpuTier[],
  target: { whatIf: number; targetWaitMs: number; percentile: number; batchDeadlineMs: number | undefined },
): PoolPlan {
  const notes: string[] = [];
  const k = pool.scaling.replicaConcurrency;
  const observedArrival = observed ? interactiveArrivalPerSec(observed) : 0;
  const batchBacklog = (observed?.lowQueueDepth ?? 0) + (observed?.lowInFlight ?? 0);
  const lambda = observedArrival * target.whatIf;
  const meanServiceMs = observed?.meanServiceMs ?? Number.NaN;
  const replicas = observed?.replicas ?? 0;
  if (!observed) notes.push(`pool ${pool.name}: no metrics for it, planned as idle`);
  // A pool working off a batch backlog submitted before the window finishes calls with no arrivals.
  if (observed && observed.arrivalPerSec === 0 && batchBacklog === 0 && observed.completedPerSec > 0) {
    notes.push(
      `pool ${pool.name}: no arrivals counted but ${formatRate(observed.completedPerSec)} calls/s finished: read the ingress's /metrics too (it counts arrivals)`,
    );
  }
  const serviceKnown = Number.isFinite(meanServiceMs) && meanServiceMs >= 0;
  if (lambda > 0 && !serviceKnown) {
    notes.push(
      `pool ${pool.name}: no call finished in the window, so the service time is unknown: observe longer (--window)`,
    );
  }
  // Without arrivals there is no load whatever the service time; with arrivals and no service time
  // nothing can be said, and the figures stay NaN.
  const S = lambda === 0 ? 0 : serviceKnown ? meanServiceMs : Number.NaN;
  const load = Number.isNaN(S) ? Number.NaN : offeredLoad(lambda, S);
  const now = Number.isNaN(S) ? undefined : mmcWait(replicas * k, lambda, S, target.percentile);
  if (observed && replicas === 0 && lambda > 0) {
    notes.push(
      `pool ${pool.name}: no running replica reported (mcp_cluster_worker_replicas), so the current wait is unbounded`,
    );
  }

  let needed: number | undefined;
  if (!Number.isNaN(S)) {
    try {
      needed = replicasForWait(lambda, S, k, target.targetWaitMs, target.percentile);
    } catch (err) {
      if (!(err instanceof RangeError)) throw err;
      notes.push(`pool ${pool.name}: more than ${MAX_PLANNED_SERVERS} concurrent slots needed: not planned`);
    }
  }
  // The work outstanding when observed (queued and running interactive calls, a slot each): the
  // signal the autoscaler and the KEDA triggers size on, so the plan never asks for fewer. It is
  // what was there, not scaled by what-if; without a service time it is all that can be said.
  const outstanding = observed
    ? outstandingReplicas(
        { perReplicaConcurrency: k },
        {
          queueDepth: observed.queueDepth - observed.lowQueueDepth,
          inFlight: Math.max(0, observed.inFlight - observed.lowInFlight),
        },
      )
    : 0;
  if (outstanding > 0 && (needed === undefined ? Number.isNaN(S) : outstanding > needed))
    needed = outstanding;
  const then =
    needed === undefined || Number.isNaN(S) ? undefined : mmcWait(needed * k, lambda, S, target.percentile);
  if (needed !== undefined && needed > pool.scaling.maxReplicas) {
    notes.push(
      `pool ${pool.name}: needs ${needed} replicas, above scaling.maxReplicas ${pool.scaling.maxReplicas}, where the autoscaler stops`,
    );
  }

  let gpu: PoolGpuPlan | undefined;
  if (!pool.gpu) {
    notes.push(
      `no gpu section for pool ${pool.name}: add pools.${pool.name}.gpu for GPU memory, tier and cost`,
    );
  } else {
    const memory = gpuMemoryPerReplica(pool.gpu);
    const fit = fitGpuTier(memory.totalBytes, tiers);
    if (!fit) {
      notes.push(
        `pool ${pool.name}: one replica needs ${formatGiB(memory.totalBytes)}, and no tier in the price table holds it, even with 8 GPUs`,
      );
    }
    const known = fit !== undefined && needed !== undefined;
    gpu = {
      memoryPerReplicaBytes: memory.totalBytes,
      weightsBytes: memory.weightsBytes,
      kvCacheBytes: memory.kvCacheBytes,
      tier: fit?.tier.name,
      gpusPerReplica: fit?.gpusPerReplica ?? 0,
      pricePerGpuHour: fit?.tier.pricePerHour ?? Number.NaN,
      gpus: known ? (needed as number) * fit.gpusPerReplica : undefined,
      costPerHour: known ? (needed as number) * fit.pricePerReplicaHour : undefined,
    };
  }

  const batch =
    observed && batchBacklog > 0
      ? planBatch(pool, observed, replicas, target.batchDeadlineMs ?? pool.scaling.batchDrainTargetMs)
      : undefined;
  if (batch) notes.push(...batchNotes(pool, batch, replicas));

  return {
    pool: pool.name,
    observedArrivalPerSec: observedArrival,
    arrivalPerSec: lambda,
    completedPerSec: observed?.completedPerSec ?? 0,
    meanServiceMs,
    p95ServiceMs: observed?.p95ServiceMs ?? Number.NaN,
    inFlight: observed?.inFlight ?? 0,
    queueDepth: observed?.queueDepth ?? 0,
    oldestWaitMs: observed?.oldestWaitMs ?? 0,
    replicas,
    replicaConcurrency: k,
    offeredLoad: load,
    utilization: now?.utilization ?? Number.NaN,
    waitMs: now?.percentileWaitMs ?? Number.NaN,
    meanWaitMs: now?.meanWaitMs ?? Number.NaN,
    neededReplicas: needed,
    utilizationAtNeeded: then?.utilization ?? Number.NaN,
    waitAtNeededMs: then?.percentileWaitMs ?? Number.NaN,
    maxReplicas: pool.scaling.maxReplicas,
    gpu,
    batch,
    notes,
  };
}

/** The ETA and the replicas needed of a pool's low-priority backlog (> 0 calls). */
function planBatch(
  pool: ResolvedConfig['pools'][string],
  observed: PoolRates,
  replicas: number,
  deadlineMs: number,
): PoolBatchPlan {
  const queued = observed.lowQueueDepth;
  const inFlight = observed.lowInFlight;
  const backlog = queued + inFlight;
  const rate = perReplicaRate(
    { perReplicaConcurrency: pool.scaling.replicaConcurrency },
    observed.meanServiceMs,
  );
  const known = rate > 0;
  return {
    queued,
    inFlight,
    backlog,
    perReplicaPerSec: known ? rate : Number.NaN,
    etaMs: !known
      ? Number.NaN
      : replicas > 0
        ? (backlog / (replicas * rate)) * 1000
        : Number.POSITIVE_INFINITY,
    deadlineMs,
    // The same rounding as the control law's batch term, so the plan and the autoscaler agree.
    neededReplicas: known ? Math.ceil(backlog / (rate * (deadlineMs / 1000)) - 1e-9) : undefined,
  };
}

function batchNotes(pool: ResolvedConfig['pools'][string], batch: PoolBatchPlan, replicas: number): string[] {
  const notes: string[] = [];
  if (Number.isNaN(batch.etaMs)) {
    notes.push(
      `pool ${pool.name}: a batch backlog of ${batch.backlog} calls, but no call finished in the window, so its rate is unknown: observe longer (--window)`,
    );
  } else if (replicas === 0) {
    notes.push(
      `pool ${pool.name}: a batch backlog of ${batch.backlog} calls and no running replica: it does not progress until one starts`,
    );
  }
  if (batch.neededReplicas !== undefined && batch.neededReplicas > pool.scaling.maxReplicas) {
    notes.push(
      `pool ${pool.name}: the batch backlog needs ${batch.neededReplicas} replicas to finish within ${formatDuration(batch.deadlineMs)}, above scaling.maxReplicas ${pool.scaling.maxReplicas}: at that ceiling it takes ${formatDuration((batch.backlog / (pool.scaling.maxReplicas * batch.perReplicaPerSec)) * 1000)}`,
    );
  }
  return notes;
}

// ---------------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------------
