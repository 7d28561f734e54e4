/**
 * The capacity planner behind `mcp-cluster plan`: from observed per-pool rates and the configuration,
 * how loaded each pool is now, how many replicas it needs to keep the queue wait under a target at a
 * percentile, and what GPUs and money that takes. Pure: rates in, plan out.
 */
import type { ResolvedConfig } from '../core/index.js';
import { CLOSED_LOOP_MODEL, closedLoopWait, replicasForClosedLoop } from './closed-loop.js';
import { outstandingReplicas } from './control-law.js';
import { interactiveArrivalPerSec, type PoolRates } from './metrics-source.js';
import { batchNotes, type PoolBatchPlan, planBatch } from './plan-batch.js';
import { formatGiB, formatMs, formatRate, percentileLabel } from './plan-output.js';
import {
  DEFAULT_GPU_TIERS,
  fitGpuTier,
  GPU_MEMORY_OVERHEAD,
  type GpuTier,
  gpuMemoryPerReplica,
  mmcWait,
  offeredLoad,
  QUEUEING_MODEL,
  QUEUEING_MODEL_MGC,
  replicasForWait,
  type WaitEstimate,
} from './queueing.js';

/**
 * The open-loop model: `mgc` takes the service-time variability as measured (Allen-Cunneen with the
 * window's Cs², M/M/c where Cs² is unknown); `mmc` takes every service time as exponential (Cs² = 1),
 * which over-plans steady calls about twofold in wait.
 */
export type PlanModel = 'mgc' | 'mmc';
export type { PoolBatchPlan };

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
  /** Open-loop model, default `mgc`. */
  readonly model?: PlanModel;
  /**
   * Pools whose load is a closed loop: agents that send their next call only after the answer to the
   * last, by pool (`*`: every pool not named). Such a pool is planned with M/M/c//N for that many
   * agents (× what-if) instead of an arrival rate.
   */
  readonly agents?: Readonly<Record<string, number>>;
  /**
   * Mean time an agent is away from the pool between an answer and its next call, ms, for every
   * closed-loop pool. Default: from the observation, N / λ − S − W (Little's law over the loop).
   */
  readonly thinkTimeMs?: number;
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
  /** Mean backend time per call: the service time S. */
  readonly meanServiceMs: number;
  readonly p95ServiceMs: number;
  /** Var[S] / E[S]² over the window; NaN when unknown. */
  readonly serviceCs2: number;
  /** The model this pool was sized with: `M/G/c`, `M/M/c` or `M/M/c//N` (closed loop). */
  readonly model: 'M/G/c' | 'M/M/c' | 'M/M/c//N';
  /** Closed loop only: the agents planned for (after what-if). */
  readonly agents: number | undefined;
  /** Closed loop only: the mean think time Z, ms (given or estimated); NaN otherwise. */
  readonly thinkTimeMs: number;
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
  /**
   * Replicas the pool needs: the more of `neededForWait` and `outstandingReplicas`, which is what the
   * autoscaler runs. undefined when neither is known.
   */
  readonly neededReplicas: number | undefined;
  /** Fewest replicas that meet the wait target by the model; undefined when the service time is unknown or the search gave up. */
  readonly neededForWait: number | undefined;
  /**
   * Open loop: `neededForWait` at the upper 95% bound of the arrival rate, which the window's count of
   * calls gives only so precisely (λ + 1.645·√(λ/T), Poisson); undefined when not computed.
   */
  readonly neededAtUpperRate: number | undefined;
  /**
   * ceil((queued + in flight interactive calls) / replicaConcurrency) when observed: the autoscaler
   * and KEDA keep a slot for every outstanding call, so the plan asks for no fewer. 0 without metrics.
   */
  readonly outstandingReplicas: number;
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
  /** The queueing models the numbers come from, in words. */
  readonly model: string;
  /** The open-loop model asked for. */
  readonly openLoopModel: PlanModel;
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
  const { batchDeadlineMs, thinkTimeMs } = options;
  if (batchDeadlineMs !== undefined && !(Number.isFinite(batchDeadlineMs) && batchDeadlineMs > 0)) {
    throw new RangeError(`batchDeadlineMs must be a finite number above 0, got ${batchDeadlineMs}`);
  }
  const model = options.model ?? 'mgc';
  if (model !== 'mgc' && model !== 'mmc') throw new RangeError(`model must be mgc or mmc, got ${model}`);
  if (thinkTimeMs !== undefined && !(Number.isFinite(thinkTimeMs) && thinkTimeMs >= 0)) {
    throw new RangeError(`thinkTimeMs must be a finite number ≥ 0, got ${thinkTimeMs}`);
  }
  const agents = options.agents ?? {};
  for (const [pool, n] of Object.entries(agents)) {
    if (!Number.isInteger(n) || n < 1) {
      throw new RangeError(`agents of ${pool} must be a whole number above 0, got ${n}`);
    }
  }
  const fromConfig = config.planner.gpuTiers.length > 0;
  const tiers: readonly GpuTier[] = fromConfig ? config.planner.gpuTiers : DEFAULT_GPU_TIERS;
  let windowMs = 0;
  for (const r of rates.values()) windowMs = Math.max(windowMs, r.windowMs);

  const pools = Object.values(config.pools).map((pool) => {
    const observed = rates.get(pool.name);
    if (observed) windowMs = Math.max(windowMs, observed.windowMs);
    return planPool(pool, observed, tiers, {
      whatIf,
      targetWaitMs,
      percentile,
      batchDeadlineMs,
      model,
      // A bare --agents N is for the pools the agents were seen calling, not idle ones.
      agents:
        agents[pool.name] ?? (observed && interactiveArrivalPerSec(observed) > 0 ? agents['*'] : undefined),
      thinkTimeMs,
    });
  });
  const notes: string[] = [];
  for (const pool of Object.keys(agents)) {
    if (pool !== '*' && !config.pools[pool])
      notes.push(`--agents names pool ${pool}, which the config lacks`);
  }
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
  const closed = pools.some((p) => p.model === 'M/M/c//N');
  const openModel = model === 'mgc' ? QUEUEING_MODEL_MGC : QUEUEING_MODEL;
  const assumptions = [
    `${openModel}; servers c = replicas × replicaConcurrency (calls one replica serves at once)`,
    model === 'mgc'
      ? 'service time S = mean backend time per call over the window, Cs² = Var[S]/S² over the same calls (from mcp_cluster_backend_duration_squared_seconds_total); where Cs² is unknown, M/M/c (Cs² = 1)'
      : 'service time S = mean backend time per call over the window; M/M/c takes it as exponential, so calls of steadier length (most LLM and embedding calls) wait less than planned, more variable ones (diffusion with mixed step counts) can wait more',
    `a = λ·S, ρ = a/c, C = Erlang C(c, a); wait at ${pct}: W = ln(C/(1−p)) / (c/S − λ)${model === 'mgc' ? ' × (1 + Cs²)/2' : ''}, 0 when C ≤ 1−p; needed = fewest replicas with W ≤ ${formatMs(targetWaitMs)}, and at least ceil((queued + in flight) / replicaConcurrency) for the work outstanding when observed (what the autoscaler and the KEDA triggers size on)`,
    `GPU memory per replica = (params × bytesPerParam + kvCachePerToken × contextTokens × concurrentSequences) × ${1 + GPU_MEMORY_OVERHEAD}; tier = smallest GPU that holds it, else the cheapest 2/4/8-GPU tensor-parallel set`,
    fromConfig
      ? 'GPU prices from planner.gpuTiers in the config'
      : 'GPU prices are the built-in EXAMPLE placeholders, not quotes: set planner.gpuTiers to what you pay',
  ];
  if (closed) {
    assumptions.push(
      `closed loop (--agents): ${CLOSED_LOOP_MODEL}; think time Z ${thinkTimeMs === undefined ? '= N/λ − S − W from the observation (λ arrivals, W mean queue wait)' : `= ${formatMs(thinkTimeMs)} as given`}; exponential service (calls of one length that start together end together, and wait about as long); needed = fewest replicas with the ${pct} wait ≤ ${formatMs(targetWaitMs)}, at most one slot per agent`,
    );
  }
  if (whatIf !== 1) {
    assumptions.push(
      `what-if: observed arrival rates${closed ? ' and agents' : ''} × ${whatIf}, service times as observed${pools.some((p) => p.batch) ? ', batch backlogs as they are' : ''}`,
    );
  }
  if (pools.some((p) => p.batch)) {
    assumptions.push(
      'batch (priority low): arrivals are interactive only (high, normal); a backlog is its queued and in-flight calls; one replica kept full completes r = replicaConcurrency / S calls/s; ETA = backlog / (replicas × r), as if the backlog had the replicas to itself (interactive calls go first); needed = ceil(backlog / (r × deadline)), which the autoscaler combines with the interactive need by max',
    );
  }
  return {
    model: closed ? `${openModel}; closed loops: ${CLOSED_LOOP_MODEL}` : openModel,
    openLoopModel: model,
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
  target: {
    whatIf: number;
    targetWaitMs: number;
    percentile: number;
    batchDeadlineMs: number | undefined;
    model: PlanModel;
    agents: number | undefined;
    thinkTimeMs: number | undefined;
  },
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
  const closedLoop = target.agents !== undefined;
  // Without arrivals there is no load whatever the service time (unless agents are planned for);
  // with load and no service time nothing can be said, and the figures stay NaN.
  const S = lambda === 0 && !closedLoop ? 0 : serviceKnown ? meanServiceMs : Number.NaN;
  const load = Number.isNaN(S) ? Number.NaN : offeredLoad(lambda, S);
  if (closedLoop && !serviceKnown && lambda === 0) {
    notes.push(
      `pool ${pool.name}: no call finished in the window, so the service time of the ${target.agents} agents' calls is unknown: observe them longer (--window)`,
    );
  }
  // Open loop: M/G/c (Allen-Cunneen) with the measured Cs², or M/M/c.
  const observedCs2 = observed?.serviceCs2 ?? Number.NaN;
  const cs2 = target.model === 'mmc' || !Number.isFinite(observedCs2) ? 1 : observedCs2;
  if (target.model === 'mgc' && lambda > 0 && serviceKnown && !Number.isFinite(observedCs2) && !closedLoop) {
    notes.push(
      `pool ${pool.name}: the service-time variability is unknown (workers that do not export mcp_cluster_backend_duration_squared_seconds_total), so it is planned as M/M/c`,
    );
  }
  const agents = closedLoop ? Math.max(1, Math.round((target.agents as number) * target.whatIf)) : undefined;
  const thinkTimeMs = closedLoop && serviceKnown ? thinkTime(pool.name, observed, target, notes) : Number.NaN;
  if (closedLoop && Number.isFinite(thinkTimeMs)) {
    notes.push(
      `pool ${pool.name}: a closed loop of ${agents} agents, each away ${formatMs(thinkTimeMs)} between an answer and its next call (${target.thinkTimeMs === undefined ? 'estimated from the observation' : '--think-time'})`,
    );
  }
  const wait = (replicaCount: number): WaitEstimate | undefined => {
    if (Number.isNaN(S) || (closedLoop && Number.isNaN(thinkTimeMs))) return undefined;
    if (!closedLoop) return mmcWait(replicaCount * k, lambda, S, target.percentile, cs2);
    if (replicaCount === 0) return unboundedWait(agents as number);
    return closedLoopWait(replicaCount * k, agents as number, S, thinkTimeMs, target.percentile);
  };
  const now = wait(replicas);
  if (observed && replicas === 0 && (lambda > 0 || closedLoop)) {
    notes.push(
      `pool ${pool.name}: no running replica reported (mcp_cluster_worker_replicas), so the current wait is unbounded`,
    );
  }

  let neededForWait: number | undefined;
  if (!Number.isNaN(S) && !(closedLoop && Number.isNaN(thinkTimeMs))) {
    try {
      neededForWait = closedLoop
        ? replicasForClosedLoop(agents as number, S, thinkTimeMs, k, target.targetWaitMs, target.percentile)
        : replicasForWait(lambda, S, k, target.targetWaitMs, target.percentile, cs2);
    } catch (err) {
      if (!(err instanceof RangeError)) throw err;
      notes.push(`pool ${pool.name}: ${err.message}: not planned`);
    }
  }
  const neededAtUpperRate = closedLoop
    ? undefined
    : upperRateNeed(pool.name, observed, neededForWait, target.whatIf, notes, (upperPerSec) =>
        replicasForWait(upperPerSec * target.whatIf, S, k, target.targetWaitMs, target.percentile, cs2),
      );
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
  let needed = neededForWait;
  if (outstanding > 0 && (needed === undefined ? Number.isNaN(S) : outstanding > needed)) {
    needed = outstanding;
    if (neededForWait !== undefined) {
      notes.push(
        `pool ${pool.name}: ${neededForWait} replica${neededForWait === 1 ? '' : 's'} would hold the wait target; it needs ${outstanding} because that many replicas' slots were taken by the calls outstanding when observed, and the autoscaler and the KEDA triggers keep a slot for each`,
      );
    }
  }
  const then = needed === undefined ? undefined : wait(needed);
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
    serviceCs2: observedCs2,
    // An idle pool is planned by the model asked for; a loaded one names the model it was sized with.
    model: closedLoop
      ? 'M/M/c//N'
      : target.model === 'mmc' || (lambda > 0 && !Number.isFinite(observedCs2))
        ? 'M/M/c'
        : 'M/G/c',
    agents,
    thinkTimeMs,
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
    neededForWait,
    neededAtUpperRate,
    outstandingReplicas: outstanding,
    utilizationAtNeeded: then?.utilization ?? Number.NaN,
    waitAtNeededMs: then?.percentileWaitMs ?? Number.NaN,
    maxReplicas: pool.scaling.maxReplicas,
    gpu,
    batch,
    notes,
  };
}

/** One-sided 95% normal quantile: the rate's upper bound is λ + Z95·√(λ/T). */
const Z95 = 1.645;

/**
 * The replicas `need` gives at the upper 95% bound of the observed interactive arrival rate: a window
 * of T s that counted n = λ·T calls knows λ to about ±√n / T. Near ρ = 1 a few percent of rate are a
 * replica; a note says so when the bound needs more than the estimate.
 */
function upperRateNeed(
  pool: string,
  observed: PoolRates | undefined,
  neededForWait: number | undefined,
  whatIf: number,
  notes: string[],
  need: (arrivalPerSec: number) => number,
): number | undefined {
  const lambda = observed ? interactiveArrivalPerSec(observed) : 0;
  const seconds = (observed?.windowMs ?? 0) / 1000;
  if (neededForWait === undefined || lambda === 0 || !(seconds > 0)) return undefined;
  const upper = lambda + Z95 * Math.sqrt(lambda / seconds);
  let needed: number;
  try {
    needed = need(upper);
  } catch (err) {
    if (err instanceof RangeError) return undefined;
    throw err;
  }
  if (needed > neededForWait) {
    notes.push(
      `pool ${pool}: the arrival rate comes from ${Math.round(lambda * seconds)} calls in ${formatMs(seconds * 1000)}, so it is known to ±${((Z95 * Math.sqrt(lambda / seconds) * 100) / lambda).toFixed(0)}%; at its upper bound (${formatRate(upper)}/s${whatIf !== 1 ? `, × ${whatIf} for the what-if` : ''}) the pool needs ${needed} replicas: observe longer (--window) or plan for ${needed}`,
    );
  }
  return needed;
}

/** The wait of agents with no replica to serve them: every call waits, for ever. */
function unboundedWait(agents: number): WaitEstimate {
  return {
    servers: 0,
    offeredLoad: Number.NaN,
    utilization: Number.POSITIVE_INFINITY,
    probabilityOfWaiting: agents > 0 ? 1 : 0,
    meanWaitMs: agents > 0 ? Number.POSITIVE_INFINITY : 0,
    percentileWaitMs: agents > 0 ? Number.POSITIVE_INFINITY : 0,
  };
}

/**
 * The closed loop's think time Z, ms: as given, else by Little's law over the loop of the N agents
 * observed, N = λ · (Z + W + S), so Z = N/λ − W − S, with W the mean queue wait (or, unmeasured, the
 * interactive calls waiting / λ). NaN, with a note, when nothing arrived to estimate it from.
 */
function thinkTime(
  pool: string,
  observed: PoolRates | undefined,
  target: { agents: number | undefined; thinkTimeMs: number | undefined },
  notes: string[],
): number {
  if (target.thinkTimeMs !== undefined) return target.thinkTimeMs;
  const agents = target.agents as number;
  const lambda = observed ? interactiveArrivalPerSec(observed) : 0;
  if (!observed || lambda === 0) {
    notes.push(
      `pool ${pool}: no calls arrived in the window, so the agents' think time cannot be estimated: pass --think-time (0 for agents calling back to back)`,
    );
    return Number.NaN;
  }
  const waitMs = Number.isFinite(observed.meanQueueWaitMs)
    ? observed.meanQueueWaitMs
    : ((observed.queueDepth - observed.lowQueueDepth) / lambda) * 1000;
  const z = (agents / lambda) * 1000 - waitMs - observed.meanServiceMs;
  if (z < 0) {
    notes.push(
      `pool ${pool}: ${agents} agents cannot keep ${formatRate(lambda)} calls/s of ${formatMs(observed.meanServiceMs)} going (that takes ${Math.ceil((lambda * (observed.meanServiceMs + waitMs)) / 1000)} at least): more agents were calling than --agents says, or other traffic shares the pool; planned with think time 0`,
    );
    return 0;
  }
  return z;
}
