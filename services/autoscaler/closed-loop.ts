/**
 * Queue waits of a closed loop: a fixed number of agents, each of which sends its next call only
 * after the answer to the last one (and an optional think time). Pure functions, beside the open-loop
 * models of queueing.ts, for `mcp-cluster plan --agents`.
 *
 * ## Model: M/M/c//N (the finite-source, "machine repair" queue)
 *
 * N agents, each away from the pool (thinking, or its call travelling through the ingress and back)
 * for an exponential time of mean Z, then sending one call; c slots serve calls in an exponential time
 * of mean S, FIFO. An open-loop model lets the queue grow without bound when λ·S ≥ c; a closed loop
 * cannot: at most N − c calls ever wait, and the arrivals slow down as the answers do.
 *
 *     j calls in the pool (waiting + served), birth rate (N − j)/Z, death rate min(j, c)/S
 *     p(j) ∝ Π_{i=1..j} ((N − i + 1)·S/Z) / min(i, c)
 *
 * By the arrival theorem, a call finds the pool as the other N − 1 agents leave it, so the wait
 * distribution comes from p computed for N − 1 agents. A call that finds j ≥ c calls in the pool waits
 * for j − c + 1 departures, each Exp(c/S): an Erlang(j − c + 1, c/S) time. Hence
 *
 *     P(W > t) = Σ_{j ≥ c} p_{N−1}(j) · P(Erlang(j − c + 1, c/S) > t)
 *     E[W]     = Σ_{j ≥ c} p_{N−1}(j) · (j − c + 1) · S / c
 *
 * Z = 0 (agents calling back to back) is the limit where every other agent is always in the pool.
 * Everything is computed in logarithms, so N up to MAX_AGENTS neither overflows nor
 * underflows. Service times are taken as exponential: calls of one length ending together (waves)
 * make a closed loop wait about as long as that, so the planner applies no Cs² correction here.
 */
import type { WaitEstimate } from './queueing.js';

/** Name of the model, for the planner's output. */
export const CLOSED_LOOP_MODEL = 'M/M/c//N (finite source): N agents, each calling again after its answer';

/** Upper bound on the agents {@link closedLoopWait} accepts, as a guard against absurd inputs. */
export const MAX_AGENTS = 100_000;

/** log(a + b) from log a and log b. */
function logAdd(la: number, lb: number): number {
  if (la === Number.NEGATIVE_INFINITY) return lb;
  if (lb === Number.NEGATIVE_INFINITY) return la;
  const hi = Math.max(la, lb);
  return hi + Math.log1p(Math.exp(Math.min(la, lb) - hi));
}

/**
 * log p(j), j = 0..agents, of `agents` agents (normalised): the calls in a pool of `servers` slots.
 * Z = 0 puts all of them in the pool.
 */
function logOccupancy(agents: number, servers: number, serviceMs: number, thinkMs: number): number[] {
  const log = new Array<number>(agents + 1).fill(Number.NEGATIVE_INFINITY);
  if (thinkMs === 0) {
    log[agents] = 0;
    return log;
  }
  const ratio = Math.log(serviceMs / thinkMs);
  let total = 0;
  log[0] = 0;
  for (let j = 1; j <= agents; j++) {
    log[j] = (log[j - 1] as number) + Math.log(agents - j + 1) + ratio - Math.log(Math.min(j, servers));
    total = logAdd(total, log[j] as number);
  }
  for (let j = 0; j <= agents; j++) log[j] = (log[j] as number) - total;
  return log;
}

/** P(W > t) for a call that finds the pool as `arriving` (log p over 0..N−1) describes. */
function waitTail(arriving: readonly number[], servers: number, serviceMs: number, tMs: number): number {
  // x = rate · t; P(Erlang(n, rate) > t) = Σ_{i<n} e^{−x} x^i / i!, carried forward in logs as n grows.
  const x = (servers / serviceMs) * tMs;
  const logX = Math.log(x);
  let logTerm = -x;
  let logTail = Number.NEGATIVE_INFINITY;
  let p = 0;
  for (let j = servers, n = 1; j < arriving.length; j++, n++) {
    if (n > 1) logTerm += logX - Math.log(n - 1);
    logTail = x === 0 ? 0 : logAdd(logTail, logTerm);
    const lp = arriving[j] as number;
    if (lp !== Number.NEGATIVE_INFINITY) p += Math.exp(lp + Math.min(0, logTail));
  }
  return Math.min(1, p);
}

/**
 * Queue-wait figures of a closed loop of `agents` agents on `servers` concurrent slots, with mean
 * service time `serviceMs` and mean think time `thinkMs` (0: back to back); `percentile` in (0, 1).
 * `offeredLoad` and `utilization` are of the loop's own throughput (which it finds for itself);
 * `probabilityOfWaiting` is the share of calls that wait at all. Times in ms.
 * @throws RangeError on negative / non-finite input, more than {@link MAX_AGENTS} agents, or 0 servers
 *   with agents (their calls would wait forever).
 */
export function closedLoopWait(
  servers: number,
  agents: number,
  serviceMs: number,
  thinkMs: number,
  percentile = 0.95,
): WaitEstimate {
  if (!Number.isInteger(servers) || servers < 0)
    throw new RangeError(`servers must be a non-negative integer, got ${servers}`);
  if (!Number.isInteger(agents) || agents < 0 || agents > MAX_AGENTS)
    throw new RangeError(`agents must be an integer from 0 to ${MAX_AGENTS}, got ${agents}`);
  for (const [name, v] of [
    ['serviceMs', serviceMs],
    ['thinkMs', thinkMs],
  ] as const) {
    if (!Number.isFinite(v) || v < 0) throw new RangeError(`${name} must be a finite number ≥ 0, got ${v}`);
  }
  if (!(percentile > 0 && percentile < 1))
    throw new RangeError(`percentile must be a fraction in (0, 1), got ${percentile}`);
  const none = { servers, offeredLoad: 0, utilization: 0, probabilityOfWaiting: 0, meanWaitMs: 0 };
  if (agents === 0 || serviceMs === 0) return { ...none, percentileWaitMs: 0 };
  if (servers === 0) throw new RangeError('a closed loop of agents needs at least one server');
  // Throughput of the N agents: the time-average busy slots over S.
  const all = logOccupancy(agents, servers, serviceMs, thinkMs);
  let busy = 0;
  for (let j = 1; j <= agents; j++) busy += Math.exp(all[j] as number) * Math.min(j, servers);
  const arriving = logOccupancy(agents - 1, servers, serviceMs, thinkMs);
  let pWait = 0;
  let meanWaitMs = 0;
  for (let j = servers; j < agents; j++) {
    const p = Math.exp(arriving[j] as number);
    pWait += p;
    meanWaitMs += (p * (j - servers + 1) * serviceMs) / servers;
  }
  const tail = 1 - percentile;
  let percentileWaitMs = 0;
  if (pWait > tail) {
    // P(W > t) falls from pWait to 0 as t grows: bisect for P(W > t) = 1 − p.
    let lo = 0;
    let hi = Math.max(meanWaitMs, serviceMs / servers);
    while (waitTail(arriving, servers, serviceMs, hi) > tail) hi *= 2;
    for (let i = 0; i < 60 && hi - lo > 1e-6 * hi; i++) {
      const mid = (lo + hi) / 2;
      if (waitTail(arriving, servers, serviceMs, mid) > tail) lo = mid;
      else hi = mid;
    }
    percentileWaitMs = hi;
  }
  return {
    servers,
    offeredLoad: busy,
    utilization: busy / servers,
    probabilityOfWaiting: Math.min(1, pWait),
    meanWaitMs,
    percentileWaitMs,
  };
}

/**
 * The fewest replicas (each `concurrencyPerReplica` slots) for which the closed loop's wait at
 * `percentile` is at most `targetWaitMs`; 0 without agents. At most ceil(agents / concurrencyPerReplica):
 * with a slot for every agent no call waits.
 */
export function replicasForClosedLoop(
  agents: number,
  serviceMs: number,
  thinkMs: number,
  concurrencyPerReplica: number,
  targetWaitMs: number,
  percentile = 0.95,
): number {
  if (!Number.isInteger(concurrencyPerReplica) || concurrencyPerReplica < 1) {
    throw new RangeError(`concurrencyPerReplica must be an integer ≥ 1, got ${concurrencyPerReplica}`);
  }
  if (!Number.isFinite(targetWaitMs) || targetWaitMs < 0) {
    throw new RangeError(`targetWaitMs must be a finite number ≥ 0, got ${targetWaitMs}`);
  }
  if (agents === 0 || serviceMs === 0) {
    closedLoopWait(1, agents, serviceMs, thinkMs, percentile); // validates the rest
    return 0;
  }
  const most = Math.ceil(agents / concurrencyPerReplica);
  // The wait falls as replicas are added: bisect over 1..most.
  let lo = 1;
  let hi = most;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    const w = closedLoopWait(mid * concurrencyPerReplica, agents, serviceMs, thinkMs, percentile);
    if (w.percentileWaitMs <= targetWaitMs) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}
