/**
 * The autoscaler's control law: one pure function from (policy, previous state, one observation of a pool)
 * to (desired replicas, next state, reason). No timers, no I/O, no clock: time enters only as
 * `PoolObservation.atMs`, so the law can be replayed over synthetic traces in unit tests and the service
 * around it (polling, providers, metrics) stays a thin shell.
 *
 * ## The law
 *
 * Let λ = arrival rate (calls/s), S = mean service time per call (s), Q = queue depth (calls),
 * T = target queue wait (s), k = per-replica concurrency (calls one replica serves at once). λ, Q,
 * inFlight and the oldest wait are the interactive figures, priorities high and normal; Qb and Fb are
 * the low-priority (batch) calls queued and in flight, Ab the age of the oldest queued one (0 when
 * none is queued), D the batch drain target (s).
 *
 *     busySlots    = max(λ · S, inFlight)          Little's law: calls in service on average
 *     drainSlots   = Q · S / T                      slots that clear today's backlog within T
 *     little       = ceil((busySlots + drainSlots) / k)
 *     if Q = 0 and 0 < inFlight ≤ current · k: little ≤ current   (keeping up: λ·S above is noise)
 *     interactive  = max(little, ceil((Q + inFlight) / k))   outstanding: a slot for every call there is
 *     if Q > 0 and oldestWaitMs > T: interactive ≥ current + 1   (the model lags reality: add one)
 *     r            = k / S                          calls/s one replica completes when kept full
 *     batch        = ceil((Qb + Fb) / (r · (D − Ab)))          while Ab < D: done by the oldest's deadline
 *     batch        = max(ceil((Qb + Fb) / (r · D)), current + 1)   once Ab ≥ D: behind plan, add one
 *     required     = max(interactive, batch)
 *     if there is any demand (λ > 0, Q, inFlight, Qb or Fb > 0): required ≥ 1
 *     required     = min(required, maxReplicas)
 *
 * `inFlight` is a floor on the busy term because a lagging or smoothed arrival rate under-reports a
 * load that is already being served. The outstanding term sizes a step at once: agents that wait for
 * their answers (the closed loop multi-agent orchestrators make) arrive no faster than the pool serves
 * them, so λ reads low until capacity grows, and a pool woken from zero knows no S yet; 64 agents
 * against 16 slots per replica are 64 calls queued or running, 4 replicas, at the first poll. When S is unknown (0, negative or not finite) only `inFlight`,
 * the old-call rules and "any demand ⇒ ≥ 1" are used.
 *
 * Batch work is sized on its own because its wait target is not T: a chunk of a million-text job that
 * starts an hour after it was queued is on plan, and sizing the backlog by Q · S / T would call up the
 * whole `maxReplicas` for every job. k / S is what one replica completes per second when it is kept
 * full (Little's law), which a backlog does. The two needs are combined with max, not added: low
 * priority only fills the slots interactive calls leave, the interactive term keeps headroom that the
 * backlog uses, and the batch term is re-read every interval, so a backlog that drains slower than
 * planned (interactive calls took the slots) grows older and raises it. Batch arrivals do not enter λ: a job enqueues
 * all its chunks at once, and that burst read as a rate would size the pool for the burst.
 *
 * D counts from when the oldest waiting batch call was queued, not from now: a fresh job of N calls
 * gets ceil(N / (r · D)) replicas, and as it drains at that pace the requirement stays put until it is
 * done. Measured from now, the requirement would fall with the backlog, the pool would shrink after
 * each stabilisation window, and the backlog would decay roughly exponentially: a job needing R
 * replicas would take about D · (1 + ln R) instead of D. Anchored on the oldest call, a young job
 * queued behind an old one is sized for the old one's deadline until the old one's calls are taken,
 * which errs on the side of more replicas for a while.
 *
 * Then, like the Kubernetes HPA's `behavior` (scale-up window 0, scale-down window
 * `scaleDownStabilizationMs`, selectPolicy Max):
 *
 * - **up** (required > current): at once, to `required`, but by at most the growth cap of one step:
 *   `max(ceil(current · factor), current + absolute, current + 1)`.
 * - **down** (required < current): to the highest `required` seen within the last
 *   `scaleDownStabilizationMs` (never above current), so a dip shorter than the window changes nothing
 *   and steady load never flaps.
 * - never below `max(minReplicas, 1)` while the pool is active or has been idle for less than
 *   `idleToZeroMs`; to **zero** only when `minReplicas` is 0 and there have been no arrivals, no queued
 *   and no in-flight calls (batch ones included) for `idleToZeroMs` (the idle period is its own
 *   stabilisation window); from zero back to ≥ 1 on the first observation with a queued call or an
 *   arrival.
 *
 * Providers should report `arrivalRatePerSec` as exactly 0 when no call arrived during their
 * measurement window (an exponentially decaying average never reaches 0 and would keep the pool awake).
 */

/** How fast one decision may grow a pool. Both limits apply as HPA's `selectPolicy: Max`: the larger wins. */
export interface ScaleUpLimit {
  /** Multiply the current replicas by at most this (e.g. 2 = double per step). Default 2. */
  readonly factor?: number;
  /** Add at most this many replicas per step. Default 4. */
  readonly absolute?: number;
}

/** Per-pool scaling policy. All durations in milliseconds. */
export interface ScalingPolicy {
  /** Fewest replicas. 0 allows scale-to-zero after `idleToZeroMs`. Default 0. */
  readonly minReplicas: number;
  /** Most replicas. Default 10. */
  readonly maxReplicas: number;
  /** Queue wait the pool is sized for, ms: interactive calls (priorities high and normal). Default 1000. */
  readonly targetQueueWaitMs: number;
  /**
   * Time in which the pool should work off its low-priority (batch) backlog, queued and in flight, ms.
   * Default 3 600 000 (1 h).
   */
  readonly batchDrainTargetMs: number;
  /** Scale down only to the highest recommendation of this trailing window, ms. Default 300 000 (5 min, as HPA). */
  readonly scaleDownStabilizationMs: number;
  /** With `minReplicas` 0: go to zero after this long without arrivals, queued or in-flight calls, ms. Default 600 000. */
  readonly idleToZeroMs: number;
  /** Growth cap per decision step. Default `{ factor: 2, absolute: 4 }`. */
  readonly maxScaleUpPerStep: ScaleUpLimit;
  /** Calls one replica serves concurrently (vLLM max-num-seqs, ComfyUI 1, ...). Default 1. */
  readonly perReplicaConcurrency: number;
}

export const DEFAULT_SCALING_POLICY: ScalingPolicy = Object.freeze({
  minReplicas: 0,
  maxReplicas: 10,
  targetQueueWaitMs: 1_000,
  batchDrainTargetMs: 3_600_000,
  scaleDownStabilizationMs: 300_000,
  idleToZeroMs: 600_000,
  maxScaleUpPerStep: Object.freeze({ factor: 2, absolute: 4 }),
  perReplicaConcurrency: 1,
});

/**
 * The defaults with `overrides` applied, validated.
 * @throws RangeError when a value is out of range (negative, not finite, min > max, concurrency < 1, ...).
 */
export function scalingPolicy(overrides: Partial<ScalingPolicy> = {}): ScalingPolicy {
  const p: ScalingPolicy = {
    ...DEFAULT_SCALING_POLICY,
    ...overrides,
    maxScaleUpPerStep: overrides.maxScaleUpPerStep ?? DEFAULT_SCALING_POLICY.maxScaleUpPerStep,
  };
  const nonNegInt = (name: string, v: number) => {
    if (!Number.isInteger(v) || v < 0)
      throw new RangeError(`${name} must be a non-negative integer, got ${v}`);
  };
  const nonNeg = (name: string, v: number) => {
    if (!Number.isFinite(v) || v < 0) throw new RangeError(`${name} must be a finite number ≥ 0, got ${v}`);
  };
  nonNegInt('minReplicas', p.minReplicas);
  nonNegInt('maxReplicas', p.maxReplicas);
  if (p.maxReplicas < 1) throw new RangeError('maxReplicas must be ≥ 1');
  if (p.minReplicas > p.maxReplicas) {
    throw new RangeError(`minReplicas (${p.minReplicas}) > maxReplicas (${p.maxReplicas})`);
  }
  nonNeg('targetQueueWaitMs', p.targetQueueWaitMs);
  if (p.targetQueueWaitMs === 0) throw new RangeError('targetQueueWaitMs must be > 0');
  nonNeg('batchDrainTargetMs', p.batchDrainTargetMs);
  if (p.batchDrainTargetMs === 0) throw new RangeError('batchDrainTargetMs must be > 0');
  nonNeg('scaleDownStabilizationMs', p.scaleDownStabilizationMs);
  nonNeg('idleToZeroMs', p.idleToZeroMs);
  if (!Number.isFinite(p.perReplicaConcurrency) || p.perReplicaConcurrency < 1) {
    throw new RangeError(`perReplicaConcurrency must be ≥ 1, got ${p.perReplicaConcurrency}`);
  }
  const { factor, absolute } = p.maxScaleUpPerStep;
  if (factor !== undefined && (!Number.isFinite(factor) || factor < 1)) {
    throw new RangeError(`maxScaleUpPerStep.factor must be ≥ 1, got ${factor}`);
  }
  if (absolute !== undefined) nonNegInt('maxScaleUpPerStep.absolute', absolute);
  return p;
}

/**
 * One look at a pool: queue stats from the broker, worker stats from the pool. The interactive
 * figures (`queueDepth`, `oldestWaitMs`, `arrivalRatePerSec`, `inFlight`) are of priorities high and
 * normal, the `batch…` ones of priority low. A caller that cannot tell priorities apart puts
 * everything in the interactive figures and leaves the batch ones out (they default to 0), which sizes
 * every call against the queue-wait target.
 */
export interface PoolObservation {
  /** When the observation was taken, ms on any monotonic clock. */
  readonly atMs: number;
  /**
   * Interactive calls waiting for a worker (priorities high and normal): in the broker queue, plus
   * those the ingress replicas hold for their tenant's fair-queue quota.
   */
  readonly queueDepth: number;
  /** Age of the oldest waiting interactive call, ms (0 when none waits). */
  readonly oldestWaitMs: number;
  /**
   * Interactive arrivals per second over the provider's measurement window; exactly 0 when none
   * arrived. Batch arrivals stay out: a job enqueues its chunks in one burst.
   */
  readonly arrivalRatePerSec: number;
  /** Mean service time of one call (any priority), ms; 0 or NaN when unknown (no completions yet). */
  readonly serviceTimeMs: number;
  /** Interactive calls being served right now across the pool. */
  readonly inFlight: number;
  /** Low-priority (batch) calls waiting in the queue. Default 0. */
  readonly batchQueueDepth?: number;
  /** Low-priority calls being served right now across the pool. Default 0. */
  readonly batchInFlight?: number;
  /**
   * Age of the oldest waiting low-priority call, ms (0 when none waits). Default 0. The batch drain
   * target counts from its enqueue: it is how far the backlog already is into its time.
   */
  readonly batchOldestWaitMs?: number;
  /** Replicas the pool is set to now (the provider's desired/spec count, not only the ready ones). */
  readonly currentReplicas: number;
}

/** A past recommendation kept for the scale-down window. */
export interface Recommendation {
  readonly atMs: number;
  readonly replicas: number;
}

/** What the law remembers between decisions. Create with {@link initialScalerState}; treat as immutable. */
export interface ScalerState {
  /**
   * Recommendations within the scale-down window as a monotonic deque (strictly decreasing replicas,
   * increasing time): its head is the window's maximum. Bounded by the number of distinct values.
   */
  readonly window: readonly Recommendation[];
  /** Last time the pool had an arrival, a queued or an in-flight call; null before the first observation. */
  readonly lastActiveAtMs: number | null;
}

export function initialScalerState(): ScalerState {
  return { window: [], lastActiveAtMs: null };
}

export type ScalingReason =
  | 'scale-up'
  | 'scale-up-capped'
  | 'wake-from-zero'
  | 'hold'
  | 'stabilizing'
  | 'scale-down'
  | 'idle-to-zero'
  | 'idle-waiting'
  | 'min-replicas';

export interface ScalingDecision {
  /** Replicas the pool should have now. */
  readonly replicas: number;
  /** State to pass to the next call. */
  readonly state: ScalerState;
  readonly reason: ScalingReason;
  /** The raw requirement from the load (before the growth cap, the window and idle handling). */
  readonly required: number;
}

/** Non-finite or negative → 0. */
function clean(v: number): number {
  return Number.isFinite(v) && v > 0 ? v : 0;
}

/** The largest replica count one step may reach from `current`. */
export function growthLimit(current: number, limit: ScaleUpLimit): number {
  const byFactor = limit.factor !== undefined ? Math.ceil(current * limit.factor) : current;
  const byAbsolute = limit.absolute !== undefined ? current + limit.absolute : current;
  return Math.max(byFactor, byAbsolute, current + 1);
}

/** Whether the observation shows any demand: an arrival, or a queued or in-flight call of any priority. */
function hasDemand(obs: PoolObservation): boolean {
  return (
    clean(obs.arrivalRatePerSec) > 0 ||
    clean(obs.queueDepth) > 0 ||
    clean(obs.inFlight) > 0 ||
    clean(obs.batchQueueDepth ?? 0) > 0 ||
    clean(obs.batchInFlight ?? 0) > 0
  );
}

/**
 * Calls one replica completes per second when it is kept full: k / S (Little's law), with S in
 * seconds; 0 when the service time is unknown.
 */
export function perReplicaRate(
  policy: Pick<ScalingPolicy, 'perReplicaConcurrency'>,
  serviceTimeMs: number,
): number {
  const serviceSec = clean(serviceTimeMs) / 1000;
  return serviceSec > 0 ? policy.perReplicaConcurrency / serviceSec : 0;
}

/**
 * Replicas the low-priority backlog (queued + in flight) needs to be worked off within
 * `batchDrainTargetMs` of when its oldest waiting call was queued: ceil(backlog / (r · (D − age))) with
 * r = {@link perReplicaRate}; once that age is D or more (behind plan), the current count plus one,
 * and never less than ceil(backlog / (r · D)). 0 without a backlog; when the service time is unknown,
 * only the behind-plan rule applies. Not clamped to maxReplicas.
 */
export function batchReplicas(policy: ScalingPolicy, obs: PoolObservation): number {
  const queued = clean(obs.batchQueueDepth ?? 0);
  const backlog = queued + clean(obs.batchInFlight ?? 0);
  if (backlog === 0) return 0;
  const rate = perReplicaRate(policy, obs.serviceTimeMs);
  // Calls in flight have no age here; with none queued the backlog is only finishing.
  const ageMs = queued > 0 ? clean(obs.batchOldestWaitMs ?? 0) : 0;
  const leftMs = policy.batchDrainTargetMs - ageMs;
  const within = (ms: number) => (rate > 0 ? Math.ceil(backlog / (rate * (ms / 1000)) - 1e-9) : 0);
  let replicas: number;
  if (leftMs > 0) replicas = within(leftMs);
  else replicas = Math.max(within(policy.batchDrainTargetMs), Math.floor(clean(obs.currentReplicas)) + 1);
  return Number.isFinite(replicas) ? replicas : policy.maxReplicas;
}

/**
 * Replicas the interactive calls outstanding now need, one slot each: ceil((Q + inFlight) / k).
 * What a queue-depth scaler (KEDA's, RunPod's) reads; `plan` and the ScaledObjects use the same term.
 */
export function outstandingReplicas(
  policy: Pick<ScalingPolicy, 'perReplicaConcurrency'>,
  obs: Pick<PoolObservation, 'queueDepth' | 'inFlight'>,
): number {
  const outstanding = clean(obs.queueDepth) + clean(obs.inFlight);
  // 0, not −0, when nothing is outstanding (ceil of −1e-9).
  return Math.max(0, Math.ceil(outstanding / policy.perReplicaConcurrency - 1e-9));
}

/**
 * Replicas the load needs right now, before caps and windows (see the module comment for the formula),
 * clamped to [0, maxReplicas]: the larger of the interactive and the batch requirement.
 */
export function requiredReplicas(policy: ScalingPolicy, obs: PoolObservation): number {
  const lambda = clean(obs.arrivalRatePerSec);
  const depth = clean(obs.queueDepth);
  const inFlight = clean(obs.inFlight);
  const current = Math.floor(clean(obs.currentReplicas));
  const serviceSec = clean(obs.serviceTimeMs) / 1000;
  const targetSec = policy.targetQueueWaitMs / 1000;

  const busySlots = Math.max(lambda * serviceSec, inFlight);
  const drainSlots = (depth * serviceSec) / targetSec;
  let required = Math.ceil((busySlots + drainSlots) / policy.perReplicaConcurrency - 1e-9);
  if (!Number.isFinite(required)) required = policy.maxReplicas;
  // Nothing waits and the calls in flight fit the slots there are: the pool keeps up, and a λ·S
  // above them is the estimate's noise (λ and S averaged over windows that do not line up read 69
  // calls in service for a closed loop of 64), not demand: it alone grows nothing. A load that
  // outgrows the pool shows as a queue at the next observation.
  if (depth === 0 && inFlight > 0 && inFlight <= current * policy.perReplicaConcurrency)
    required = Math.min(required, current);
  // Outstanding work: every call queued or running wants a slot now. Agents that wait for their
  // answers arrive no faster than the pool serves them, so in that closed loop the rate under-reads
  // demand until capacity grows; the calls outstanding do not (and need no service time).
  required = Math.max(required, outstandingReplicas(policy, obs));
  if (depth > 0 && clean(obs.oldestWaitMs) > policy.targetQueueWaitMs)
    required = Math.max(required, current + 1);
  required = Math.max(required, batchReplicas(policy, obs));
  if (hasDemand(obs)) required = Math.max(required, 1);
  return Math.min(Math.max(required, 0), policy.maxReplicas);
}

/** Push `rec` onto the monotonic deque and drop entries older than the window. */
function pushWindow(window: readonly Recommendation[], rec: Recommendation, windowMs: number) {
  const next = window.filter((r) => r.atMs > rec.atMs - windowMs && r.atMs <= rec.atMs);
  while (next.length > 0 && next[next.length - 1]!.replicas <= rec.replicas) next.pop();
  next.push(rec);
  return next;
}

/**
 * Decide the replicas of one pool from one observation. Pure: same inputs, same output; the returned
 * `state` replaces the one passed in. See the module comment for the law.
 */
export function decideReplicas(
  policy: ScalingPolicy,
  state: ScalerState,
  obs: PoolObservation,
): ScalingDecision {
  const now = Number.isFinite(obs.atMs) ? obs.atMs : 0;
  const current = Math.min(Math.floor(clean(obs.currentReplicas)), Number.MAX_SAFE_INTEGER);
  const active = hasDemand(obs);
  const lastActiveAtMs = active || state.lastActiveAtMs === null ? now : state.lastActiveAtMs;
  const idleForMs = now - lastActiveAtMs;

  const required = requiredReplicas(policy, obs);
  const floor = Math.max(policy.minReplicas, 1);
  // Recommendations feed the window already floored, so an idle dip to 0 counts as `floor`.
  const recommended = Math.max(required, floor);
  const window = pushWindow(
    state.window,
    { atMs: now, replicas: recommended },
    policy.scaleDownStabilizationMs,
  );
  const nextState: ScalerState = { window, lastActiveAtMs };
  const decide = (replicas: number, reason: ScalingReason): ScalingDecision => ({
    replicas,
    state: nextState,
    reason,
    required,
  });

  // Scale to zero: only with min 0, only after a full idle period.
  if (policy.minReplicas === 0 && !active && idleForMs >= policy.idleToZeroMs) {
    return decide(0, current === 0 ? 'hold' : 'idle-to-zero');
  }
  if (current === 0 && !active) {
    // Already at zero and nothing to do; stay there (only reachable with minReplicas 0).
    if (policy.minReplicas === 0) return decide(0, 'hold');
  }

  if (recommended > current) {
    const cap = growthLimit(current, policy.maxScaleUpPerStep);
    const target = Math.min(recommended, cap, policy.maxReplicas);
    if (current === 0) return decide(target, 'wake-from-zero');
    if (required <= current) return decide(target, 'min-replicas');
    return decide(target, target < recommended ? 'scale-up-capped' : 'scale-up');
  }
  if (recommended === current) return decide(current, 'hold');

  // Down: no lower than the highest recommendation within the window.
  const windowMax = window[0]!.replicas;
  const target = Math.max(Math.min(current, windowMax), floor);
  if (target === current) {
    return decide(
      current,
      !active && required === 0 && policy.minReplicas === 0 ? 'idle-waiting' : 'stabilizing',
    );
  }
  return decide(target, 'scale-down');
}
