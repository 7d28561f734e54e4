/**
 * Queueing and GPU-memory arithmetic for capacity planning (`mcp-cluster plan`). Pure functions.
 *
 * ## Model: M/M/c (Erlang C)
 *
 * Poisson arrivals at rate λ, exponential service with mean S (μ = 1/S), c identical servers, FIFO.
 * Here one "server" is one concurrent slot: c = replicas × concurrencyPerReplica.
 *
 *     a  = λ · S                 offered load, Erlangs
 *     ρ  = a / c                 utilisation (must be < 1 for a finite queue)
 *     B(0) = 1,  B(k) = a·B(k−1) / (k + a·B(k−1))            Erlang B, iterative (no factorials)
 *     C(c, a) = c·B(c) / (c − a·(1 − B(c)))                   Erlang C = P(wait > 0)
 *     P(W > t) = C · exp(−(c·μ − λ)·t)
 *     mean wait  E[W] = C / (c·μ − λ)
 *     wait at percentile p:  W_p = 0 if C ≤ 1 − p, else ln(C / (1 − p)) / (c·μ − λ)
 *
 * The recursion stays in [0, 1] so it neither overflows nor loses precision for c in the thousands.
 *
 * ## Model: M/G/c by the Allen-Cunneen approximation
 *
 * M/M/c takes service times as exponential (squared coefficient of variation Cs² = 1). Steady LLM and
 * embedding calls vary far less (Cs² near 0: M/D/c), and then wait about half as long; diffusion with
 * mixed step counts can vary more. Allen-Cunneen scales the M/M/c wait by (1 + Cs²) / 2, with Cs²
 * measured from the calls themselves (Var[S] / E[S]²):
 *
 *     P(W > t) ≈ C · exp(−(c·μ − λ)·t · 2 / (1 + Cs²))       so every wait figure × (1 + Cs²) / 2
 *
 * Cs² = 1 gives M/M/c exactly. `npm run bench -- plan` compares both with measured waits.
 */

/** Offered load a = λ·S in Erlangs. */
export function offeredLoad(arrivalPerSec: number, serviceTimeMs: number): number {
  return (arrivalPerSec * serviceTimeMs) / 1000;
}

/** Erlang B blocking probability for `servers` servers and `load` Erlangs (iterative, stable). */
export function erlangB(servers: number, load: number): number {
  assertServers(servers);
  if (!(load >= 0) || !Number.isFinite(load))
    throw new RangeError(`load must be a finite number ≥ 0, got ${load}`);
  let b = 1;
  for (let k = 1; k <= servers; k++) b = (load * b) / (k + load * b);
  return b;
}

/** Erlang C from Erlang B for the same c and a; 1 when the system is unstable (a ≥ c). */
function erlangCFromB(servers: number, load: number, b: number): number {
  if (load >= servers) return 1;
  if (load === 0) return 0;
  const c = (servers * b) / (servers - load * (1 - b));
  return Math.min(1, Math.max(0, c));
}

/**
 * Erlang C: the probability that an arriving call has to wait, for `servers` servers and `load` Erlangs.
 * Returns 1 when load ≥ servers (the queue grows without bound). c = 1 reduces to ρ.
 */
export function erlangC(servers: number, load: number): number {
  return erlangCFromB(servers, load, erlangB(servers, load));
}

/** Queue-wait figures of an M/M/c system. Times in ms; Infinity when unstable. */
export interface WaitEstimate {
  /** c, the concurrent slots. */
  readonly servers: number;
  /** a = λ·S, Erlangs. */
  readonly offeredLoad: number;
  /** ρ = a / c. */
  readonly utilization: number;
  /** Erlang C, P(wait > 0). */
  readonly probabilityOfWaiting: number;
  readonly meanWaitMs: number;
  /** The wait at the requested percentile. */
  readonly percentileWaitMs: number;
}

function waitFromC(
  servers: number,
  arrivalPerSec: number,
  serviceTimeMs: number,
  percentile: number,
  pWait: number,
): WaitEstimate {
  const load = offeredLoad(arrivalPerSec, serviceTimeMs);
  const utilization = servers > 0 ? load / servers : load > 0 ? Number.POSITIVE_INFINITY : 0;
  if (load === 0) {
    return {
      servers,
      offeredLoad: 0,
      utilization: 0,
      probabilityOfWaiting: 0,
      meanWaitMs: 0,
      percentileWaitMs: 0,
    };
  }
  if (load >= servers) {
    return {
      servers,
      offeredLoad: load,
      utilization,
      probabilityOfWaiting: 1,
      meanWaitMs: Number.POSITIVE_INFINITY,
      percentileWaitMs: Number.POSITIVE_INFINITY,
    };
  }
  // c·μ − λ in calls per ms.
  const drainPerMs = servers / serviceTimeMs - arrivalPerSec / 1000;
  const meanWaitMs = pWait / drainPerMs;
  const tail = 1 - percentile;
  const percentileWaitMs = pWait <= tail ? 0 : Math.log(pWait / tail) / drainPerMs;
  return {
    servers,
    offeredLoad: load,
    utilization,
    probabilityOfWaiting: pWait,
    meanWaitMs,
    percentileWaitMs,
  };
}

/**
 * Wait figures for `servers` concurrent slots at `arrivalPerSec` and mean `serviceTimeMs`;
 * `percentile` is a fraction in (0, 1), e.g. 0.95; `serviceCs2` the squared coefficient of variation of
 * the service time (default 1: exponential, plain M/M/c; 0: every call alike, M/D/c), applied by the
 * Allen-Cunneen factor (1 + Cs²) / 2 to the mean and percentile waits.
 */
export function mmcWait(
  servers: number,
  arrivalPerSec: number,
  serviceTimeMs: number,
  percentile = 0.95,
  serviceCs2 = 1,
): WaitEstimate {
  assertServers(servers);
  assertRate(arrivalPerSec, serviceTimeMs);
  assertPercentile(percentile);
  const factor = variabilityFactor(serviceCs2);
  const load = offeredLoad(arrivalPerSec, serviceTimeMs);
  const w = waitFromC(
    servers,
    arrivalPerSec,
    serviceTimeMs,
    percentile,
    servers === 0 ? 1 : erlangC(servers, load),
  );
  return factor === 1
    ? w
    : { ...w, meanWaitMs: w.meanWaitMs * factor, percentileWaitMs: w.percentileWaitMs * factor };
}

/** The Allen-Cunneen factor (1 + Cs²) / 2; Cs² must be a finite number ≥ 0. */
function variabilityFactor(serviceCs2: number): number {
  if (!Number.isFinite(serviceCs2) || serviceCs2 < 0) {
    throw new RangeError(`serviceCs2 must be a finite number ≥ 0, got ${serviceCs2}`);
  }
  return (1 + serviceCs2) / 2;
}

/** Upper bound on replicas `replicasForWait` will search, as a guard against absurd inputs. */
export const MAX_PLANNED_SERVERS = 1_000_000;

/**
 * The fewest replicas (each serving `concurrencyPerReplica` calls at once) for which the M/M/c wait at
 * `percentile`, times the Allen-Cunneen factor of `serviceCs2` (default 1: none), is at most
 * `targetWaitMs`. 0 when there is no load (λ = 0 or S = 0); the caller applies its
 * own minimum. Cost O(c): Erlang B is carried forward as c grows.
 * @throws RangeError on negative / non-finite input, percentile outside (0, 1), or more than
 *   {@link MAX_PLANNED_SERVERS} slots needed.
 */
export function replicasForWait(
  arrivalPerSec: number,
  serviceTimeMs: number,
  concurrencyPerReplica: number,
  targetWaitMs: number,
  percentile = 0.95,
  serviceCs2 = 1,
): number {
  assertRate(arrivalPerSec, serviceTimeMs);
  assertPercentile(percentile);
  const factor = variabilityFactor(serviceCs2);
  if (!Number.isInteger(concurrencyPerReplica) || concurrencyPerReplica < 1) {
    throw new RangeError(`concurrencyPerReplica must be an integer ≥ 1, got ${concurrencyPerReplica}`);
  }
  if (!Number.isFinite(targetWaitMs) || targetWaitMs < 0) {
    throw new RangeError(`targetWaitMs must be a finite number ≥ 0, got ${targetWaitMs}`);
  }
  const load = offeredLoad(arrivalPerSec, serviceTimeMs);
  if (load === 0) return 0;
  let b = 1;
  let servers = 0;
  for (let replicas = 1; ; replicas++) {
    const target = replicas * concurrencyPerReplica;
    if (target > MAX_PLANNED_SERVERS) {
      throw new RangeError(`more than ${MAX_PLANNED_SERVERS} concurrent slots needed for ${load} Erlangs`);
    }
    for (; servers < target; ) {
      servers++;
      b = (load * b) / (servers + load * b);
    }
    if (load >= servers) continue;
    const w = waitFromC(servers, arrivalPerSec, serviceTimeMs, percentile, erlangCFromB(servers, load, b));
    if (w.percentileWaitMs * factor <= targetWaitMs) return replicas;
  }
}

/** Human-readable names of the models, for the planner's output. */
export const QUEUEING_MODEL = 'M/M/c (Erlang C): Poisson arrivals, exponential service, FIFO';
export const QUEUEING_MODEL_MGC =
  'M/G/c (Erlang C × (1 + Cs²)/2, Allen-Cunneen): Poisson arrivals, service-time variability as measured, FIFO';

function assertServers(servers: number) {
  if (!Number.isInteger(servers) || servers < 0) {
    throw new RangeError(`servers must be a non-negative integer, got ${servers}`);
  }
}
function assertRate(arrivalPerSec: number, serviceTimeMs: number) {
  if (!Number.isFinite(arrivalPerSec) || arrivalPerSec < 0) {
    throw new RangeError(`arrivalPerSec must be a finite number ≥ 0, got ${arrivalPerSec}`);
  }
  if (!Number.isFinite(serviceTimeMs) || serviceTimeMs < 0) {
    throw new RangeError(`serviceTimeMs must be a finite number ≥ 0, got ${serviceTimeMs}`);
  }
}
function assertPercentile(p: number) {
  if (!(p > 0 && p < 1)) throw new RangeError(`percentile must be a fraction in (0, 1), got ${p}`);
}

// ---------------------------------------------------------------------------------------------------
// GPU memory and tiers
// ---------------------------------------------------------------------------------------------------

export const GIB = 1024 ** 3;

/** Share added on top of weights + KV cache for activations, CUDA context, fragmentation. */
export const GPU_MEMORY_OVERHEAD = 0.15;

export interface GpuMemoryInput {
  /** Model size in billions of parameters (8 for an 8B model). */
  readonly modelParamsBillions: number;
  /** Bytes per weight: 2 for fp16/bf16, 1 for fp8/int8, 0.5 for 4-bit. */
  readonly bytesPerParam: number;
  /** KV cache bytes per token: 2 (K and V) × layers × KV heads × head dim × bytes per element. */
  readonly kvCacheBytesPerToken: number;
  /** Context length each sequence may use, tokens. */
  readonly contextTokens: number;
  /** Sequences served at once by one replica (vLLM max-num-seqs). */
  readonly concurrentSequences: number;
}

export interface GpuMemoryEstimate {
  readonly weightsBytes: number;
  readonly kvCacheBytes: number;
  readonly overheadBytes: number;
  /** (weights + KV cache) × 1.15 */
  readonly totalBytes: number;
}

/**
 * GPU memory one replica needs:
 *     weights  = params × bytesPerParam
 *     kvCache  = kvCacheBytesPerToken × contextTokens × concurrentSequences
 *     total    = (weights + kvCache) × (1 + 0.15)
 */
export function gpuMemoryPerReplica(input: GpuMemoryInput): GpuMemoryEstimate {
  for (const [k, v] of Object.entries(input)) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw new RangeError(`${k} must be a finite number ≥ 0, got ${String(v)}`);
    }
  }
  const weightsBytes = input.modelParamsBillions * 1e9 * input.bytesPerParam;
  const kvCacheBytes = input.kvCacheBytesPerToken * input.contextTokens * input.concurrentSequences;
  const overheadBytes = (weightsBytes + kvCacheBytes) * GPU_MEMORY_OVERHEAD;
  return {
    weightsBytes,
    kvCacheBytes,
    overheadBytes,
    totalBytes: weightsBytes + kvCacheBytes + overheadBytes,
  };
}

export interface GpuTier {
  readonly name: string;
  /** Usable memory per GPU, bytes. */
  readonly memoryBytes: number;
  /** Price per GPU-hour in the operator's currency. */
  readonly pricePerHour: number;
}

/**
 * Default GPU tiers. The memory sizes are the cards' nominal sizes. **The prices are EXAMPLE
 * placeholders, not quotes from any provider**: they only keep relative order plausible. Operators
 * override the table (names, memory, prices) in config with what they actually pay.
 */
export const DEFAULT_GPU_TIERS: readonly GpuTier[] = Object.freeze([
  { name: 'L4', memoryBytes: 24 * GIB, pricePerHour: 0.8 },
  { name: 'L40S', memoryBytes: 48 * GIB, pricePerHour: 1.9 },
  { name: 'A100-80GB', memoryBytes: 80 * GIB, pricePerHour: 3.0 },
  { name: 'H100-80GB', memoryBytes: 80 * GIB, pricePerHour: 4.5 },
  { name: 'H200', memoryBytes: 141 * GIB, pricePerHour: 6.0 },
]);

export interface GpuFit {
  readonly tier: GpuTier;
  /** GPUs one replica needs (tensor parallel), a power of two. */
  readonly gpusPerReplica: number;
  /** gpusPerReplica × tier price. */
  readonly pricePerReplicaHour: number;
}

/**
 * The GPU tier for a replica needing `bytes`: the smallest single GPU that holds it (ties: the cheaper);
 * if none does, the cheapest tensor-parallel set of 2, 4, ... up to `maxGpusPerReplica` GPUs of one tier
 * (ties: fewer GPUs). undefined when nothing fits.
 */
export function fitGpuTier(
  bytes: number,
  tiers: readonly GpuTier[] = DEFAULT_GPU_TIERS,
  maxGpusPerReplica = 8,
): GpuFit | undefined {
  if (!Number.isFinite(bytes) || bytes < 0)
    throw new RangeError(`bytes must be a finite number ≥ 0, got ${bytes}`);
  const single = tiers
    .filter((t) => t.memoryBytes >= bytes)
    .sort((x, y) => x.memoryBytes - y.memoryBytes || x.pricePerHour - y.pricePerHour)[0];
  if (single) return { tier: single, gpusPerReplica: 1, pricePerReplicaHour: single.pricePerHour };
  let best: GpuFit | undefined;
  for (const tier of tiers) {
    if (tier.memoryBytes <= 0) continue;
    let gpus = 2;
    while (gpus <= maxGpusPerReplica && gpus * tier.memoryBytes < bytes) gpus *= 2;
    if (gpus > maxGpusPerReplica) continue;
    const fit = { tier, gpusPerReplica: gpus, pricePerReplicaHour: gpus * tier.pricePerHour };
    if (
      !best ||
      fit.pricePerReplicaHour < best.pricePerReplicaHour ||
      (fit.pricePerReplicaHour === best.pricePerReplicaHour && fit.gpusPerReplica < best.gpusPerReplica)
    ) {
      best = fit;
    }
  }
  return best;
}
