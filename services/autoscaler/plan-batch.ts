import type { ResolvedConfig } from '../core/index.js';
import { perReplicaRate } from './control-law.js';
import type { PoolRates } from './metrics-source.js';
import { formatDuration } from './plan-output.js';

// The batch part of a capacity plan: when a pool's low-priority backlog (batch job chunks) is done
// at the current replicas, and how many replicas finish it by a deadline.

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

/** The ETA and the replicas needed of a pool's low-priority backlog (> 0 calls). */
export function planBatch(
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

export function batchNotes(
  pool: ResolvedConfig['pools'][string],
  batch: PoolBatchPlan,
  replicas: number,
): string[] {
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
