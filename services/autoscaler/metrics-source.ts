/**
 * Live per-pool figures for the autoscaler and the capacity planner, read either straight from the
 * processes' `/metrics` pages (`scrapeSource`, here) or from a Prometheus server (`prometheusSource`,
 * prometheus-source.ts); the text format both parse is in prom-text.ts.
 *
 * Both answer the same question: over the interval since the previous read, how many calls arrived
 * per pool, how many finished, how long the backend took per call, and what the queue and the workers
 * hold right now. The metric names are those of `services/core/metrics.ts`:
 *
 * | figure | metric | combined over processes |
 * | --- | --- | --- |
 * | arrivals | `mcp_cluster_queue_enqueued_total{pool,priority}` (ingress) | sum of increases; priority low also apart |
 * | completions | `mcp_cluster_worker_calls_total{pool,tool,outcome}`, outcome ≠ `retried` | sum of increases |
 * | service time | `mcp_cluster_backend_duration_seconds{pool,tool}` histogram | Δsum / Δcount; p95 from Δbuckets |
 * | service-time variability | `mcp_cluster_backend_duration_squared_seconds_total{pool,tool}` (Σ S²) | Cs² = (ΔΣS²/Δcount) / mean² − 1, over the series that export it |
 * | queue wait | `mcp_cluster_queue_wait_seconds{pool}` histogram (worker) | Δsum / Δcount |
 * | in flight | `mcp_cluster_worker_inflight_calls{pool}` | sum |
 * | queue depth | `mcp_cluster_queue_depth{pool,priority}` plus `mcp_cluster_tenant_held_calls{pool,tenant}` (ingress) | depth: max per priority (every process exports the same broker-wide figure), then sum over priorities; priority low also apart. Held calls: sum over processes and tenants (each ingress replica exports only the calls it holds itself), added to the interactive depth (batch calls are never held); also apart |
 * | low-priority in flight | `mcp_cluster_queue_inflight{pool,priority="low"}` | max (a broker-wide figure, like the depth) |
 * | oldest wait | `mcp_cluster_queue_oldest_age_seconds{pool,priority}` | max |
 * | replicas | `mcp_cluster_worker_replicas{pool,state="running"}` | sum (each worker sets 1 on its own state) |
 */
import { ClusterError, createLogger, type Logger } from '../core/index.js';
import { type PromExposition, type PromSample, parsePrometheusText, parsePromNumber } from './prom-text.js';

// ---------------------------------------------------------------------------------------------------
// Pool rates
// ---------------------------------------------------------------------------------------------------

/** What one read tells about one pool. */
export interface PoolRates {
  readonly pool: string;
  /**
   * Calls put on the pool's queue per second over the window (all priorities, all ingress replicas).
   * Exactly 0 when no call arrived in the window, so an idle pool can be recognised as idle.
   */
  readonly arrivalPerSec: number;
  /**
   * The low-priority (batch) part of `arrivalPerSec`, calls/s. The sources compute `arrivalPerSec` as
   * the other priorities' rate plus this one, so `arrivalPerSec − lowArrivalPerSec` is exactly 0 when
   * only batch calls arrived (see {@link interactiveArrivalPerSec}).
   */
  readonly lowArrivalPerSec: number;
  /** Calls workers finished per second over the window, any outcome but `retried`. */
  readonly completedPerSec: number;
  /** Mean backend time per finished call over the window, ms; NaN when no call finished. */
  readonly meanServiceMs: number;
  /**
   * 95th percentile of the backend time per call over the window, ms, interpolated linearly within the
   * histogram bucket that holds it (as PromQL's `histogram_quantile`); NaN when no call finished.
   */
  readonly p95ServiceMs: number;
  /**
   * Squared coefficient of variation of the backend time over the window, Var[S] / E[S]²: 0 when
   * every call took as long, 1 for exponential times. NaN when no call finished or no worker exports
   * `mcp_cluster_backend_duration_squared_seconds_total` (older workers).
   */
  readonly serviceCs2: number;
  /** Mean time calls taken in the window waited in the queue, ms; NaN when no call was taken. */
  readonly meanQueueWaitMs: number;
  /** Calls workers hold now (taken from the queue, not yet settled), summed over workers. */
  readonly inFlight: number;
  /**
   * Calls waiting for a worker now, summed over priorities: those in the pool's broker queue plus
   * `heldCalls`, the calls the ingress replicas hold for their tenant's fair-queue quota (fair
   * queueing keeps a flood at the ingresses, so the broker's queue alone would hide it).
   */
  readonly queueDepth: number;
  /**
   * The part of `queueDepth` held at the ingress replicas (not yet in the broker queue), summed over
   * replicas and tenants; always interactive (priorities high and normal), never in `lowQueueDepth`.
   */
  readonly heldCalls: number;
  /** The low-priority (batch) part of `queueDepth`: calls waiting now. */
  readonly lowQueueDepth: number;
  /** Low-priority calls taken from the queue and not yet settled now (the broker's count). */
  readonly lowInFlight: number;
  /** Age of the oldest waiting call now, ms; 0 when the queue is empty. */
  readonly oldestWaitMs: number;
  /** Worker replicas of the pool in state `running` now. */
  readonly replicas: number;
  /**
   * Length of the window the rates cover, ms. 0 on a scrape source's first read: there is no earlier
   * reading to compare with yet, so the rates are 0 and the service times NaN.
   */
  readonly windowMs: number;
}

/** A reader of per-pool rates. */
export interface MetricsSource {
  /**
   * Rates per pool over the interval since the previous read (the first read of a scrape source only
   * takes the baseline), gauges as they are now. Reads are serialised: a call made while another is
   * running waits for it.
   * @throws ClusterError when no figure at all could be read (every target unreachable, Prometheus down).
   */
  read(): Promise<Map<string, PoolRates>>;
  /** Releases what the source holds. */
  close?(): Promise<void>;
}

/** Options shared by both sources. */
export interface HttpReadOptions {
  /** Timeout of one HTTP request, including its body, ms. Default 5000. */
  readonly timeoutMs?: number;
  /** Largest body accepted, bytes. Default 16 MiB. */
  readonly maxBodyBytes?: number;
}

/** Default `HttpReadOptions.timeoutMs`, in milliseconds. */
export const DEFAULT_TIMEOUT_MS = 5_000;
/** Default `HttpReadOptions.maxBodyBytes`. */
export const DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024;

/** Why a fetch failed, in words: `connection refused`, `no answer within 5000 ms`, ... */
function networkReason(err: unknown, timeoutMs: number): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return `no answer within ${timeoutMs} ms`;
  const code = e?.cause?.code;
  if (code === 'ECONNREFUSED') return 'connection refused';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'host not found';
  if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET') return 'connection reset';
  return e?.cause?.message ?? e?.message ?? String(err);
}

/**
 * GET `url` and read its body as text, bounded in time and size.
 * @throws ClusterError `BACKEND_UNAVAILABLE` (unreachable, timeout), `BACKEND_PROTOCOL` (body too large).
 */
export async function getBounded(
  url: string,
  timeoutMs: number,
  maxBodyBytes: number,
  accept: string,
): Promise<{ status: number; text: string }> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers: { accept } });
  } catch (err) {
    throw new ClusterError('BACKEND_UNAVAILABLE', `cannot read ${url}: ${networkReason(err, timeoutMs)}`, {
      cause: err,
    });
  }
  const declared = Number(res.headers.get('content-length') ?? Number.NaN);
  const tooLarge = () =>
    new ClusterError('BACKEND_PROTOCOL', `${url} answered with more than ${maxBodyBytes} bytes (the limit)`);
  if (declared > maxBodyBytes) {
    await res.body?.cancel().catch(() => {});
    throw tooLarge();
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    if (res.body) {
      const reader = res.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        size += value.byteLength;
        if (size > maxBodyBytes) {
          await reader.cancel().catch(() => {});
          throw tooLarge();
        }
        chunks.push(value);
      }
    }
  } catch (err) {
    if (err instanceof ClusterError) throw err;
    throw new ClusterError(
      'BACKEND_UNAVAILABLE',
      `cannot read ${url}: ${networkReason(err, timeoutMs)} while reading the body`,
      { cause: err },
    );
  }
  return { status: res.status, text: Buffer.concat(chunks).toString('utf8') };
}

/**
 * Arrivals per second of priorities high and normal: what the control law and the planner size the
 * queue-wait target for (a batch job enqueues its chunks in one burst, which is no arrival rate).
 * Never negative; exactly 0 when only low-priority calls arrived.
 */
export function interactiveArrivalPerSec(r: Pick<PoolRates, 'arrivalPerSec' | 'lowArrivalPerSec'>): number {
  const all = Number.isFinite(r.arrivalPerSec) ? r.arrivalPerSec : 0;
  const low = Number.isFinite(r.lowArrivalPerSec) ? r.lowArrivalPerSec : 0;
  return all - low > 0 ? all - low : 0;
}

/** The figures of one pool as they are accumulated before the division into rates. */
interface PoolAccumulator {
  /** Arrivals of priorities other than low. */
  arrivalPerSec: number;
  lowArrivalPerSec: number;
  completedPerSec: number;
  serviceSumSec: number;
  serviceCount: number;
  /** Σ S² (s²), and Σ S and the count of the calls it covers: series of workers that export the squares. */
  squaresSumSec2: number;
  squaresServiceSumSec: number;
  squaresCount: number;
  queueWaitSumSec: number;
  queueWaitCount: number;
  /** Increase of each cumulative bucket, by upper bound `le`. */
  buckets: Map<number, number>;
  inFlight: number;
  /** Depth and oldest age per priority: the max over processes. */
  depthByPriority: Map<string, number>;
  /** Low-priority calls in flight: the max over processes (each exports the broker's figure). */
  lowInFlight: number;
  /** Calls held at the ingress replicas: the sum over processes (each exports its own). */
  heldCalls: number;
  oldestAgeSec: number;
  replicas: number;
}

function newAccumulator(): PoolAccumulator {
  return {
    arrivalPerSec: 0,
    lowArrivalPerSec: 0,
    completedPerSec: 0,
    serviceSumSec: 0,
    serviceCount: 0,
    squaresSumSec2: 0,
    squaresServiceSumSec: 0,
    squaresCount: 0,
    queueWaitSumSec: 0,
    queueWaitCount: 0,
    buckets: new Map(),
    inFlight: 0,
    depthByPriority: new Map(),
    lowInFlight: 0,
    heldCalls: 0,
    oldestAgeSec: 0,
    replicas: 0,
  };
}

/**
 * The `q` quantile of a cumulative histogram given as (upper bound, cumulative count) pairs, like
 * PromQL's `histogram_quantile`: linear interpolation inside the bucket holding the rank (the lowest
 * bucket starts at 0); the highest finite bound when the rank falls in the +Inf bucket; NaN without
 * observations or without a +Inf bucket. Counts are made monotonic first (series summed over processes
 * whose scrapes were not simultaneous can disagree by a call).
 */
export function histogramQuantile(q: number, buckets: ReadonlyMap<number, number>): number {
  const sorted = [...buckets.entries()].filter(([le]) => !Number.isNaN(le)).sort((a, b) => a[0] - b[0]);
  if (sorted.length < 2 || sorted[sorted.length - 1]?.[0] !== Number.POSITIVE_INFINITY) return Number.NaN;
  let max = 0;
  for (const entry of sorted) {
    max = Math.max(max, entry[1]);
    entry[1] = max;
  }
  const total = sorted[sorted.length - 1]?.[1] ?? 0;
  if (!(total > 0)) return Number.NaN;
  const rank = q * total;
  const at = sorted.findIndex(([, count]) => count >= rank);
  if (at === sorted.length - 1) return sorted[sorted.length - 2]?.[0] ?? Number.NaN;
  const [upper, count] = sorted[at] ?? [Number.NaN, 0];
  if (at === 0 && upper <= 0) return upper;
  const [lower, below] = at === 0 ? [0, 0] : (sorted[at - 1] ?? [0, 0]);
  const inBucket = count - below;
  return inBucket > 0 ? lower + (upper - lower) * ((rank - below) / inBucket) : upper;
}

/**
 * Var[S] / E[S]² from Σ S, Σ S² and the count, in any one unit; NaN without calls or a mean of 0.
 * Never below 0 (rounding can leave E[S²] a hair under E[S]² when every call took as long).
 */
export function serviceCs2(sum: number, sumOfSquares: number, count: number): number {
  if (!(count > 0) || !(sum > 0)) return Number.NaN;
  const mean = sum / count;
  return Math.max(0, sumOfSquares / count / mean ** 2 - 1);
}

function finishRates(pool: string, acc: PoolAccumulator, windowMs: number): PoolRates {
  let queueDepth = acc.heldCalls;
  for (const depth of acc.depthByPriority.values()) queueDepth += depth;
  const served = acc.serviceCount > 0;
  return {
    pool,
    // Exactly 0 (never -0 or a rounding residue) when nothing arrived: the control law's idle test.
    // The other priorities plus low, so that subtracting low again leaves exactly their 0.
    arrivalPerSec:
      acc.arrivalPerSec + acc.lowArrivalPerSec > 0 ? acc.arrivalPerSec + acc.lowArrivalPerSec : 0,
    lowArrivalPerSec: acc.lowArrivalPerSec > 0 ? acc.lowArrivalPerSec : 0,
    completedPerSec: acc.completedPerSec > 0 ? acc.completedPerSec : 0,
    meanServiceMs: served ? (acc.serviceSumSec / acc.serviceCount) * 1000 : Number.NaN,
    p95ServiceMs: served ? histogramQuantile(0.95, acc.buckets) * 1000 : Number.NaN,
    serviceCs2: serviceCs2(acc.squaresServiceSumSec, acc.squaresSumSec2, acc.squaresCount),
    meanQueueWaitMs: acc.queueWaitCount > 0 ? (acc.queueWaitSumSec / acc.queueWaitCount) * 1000 : Number.NaN,
    inFlight: acc.inFlight,
    queueDepth,
    heldCalls: acc.heldCalls,
    lowQueueDepth: acc.depthByPriority.get(LOW) ?? 0,
    lowInFlight: acc.lowInFlight,
    oldestWaitMs: acc.oldestAgeSec * 1000,
    replicas: acc.replicas,
    windowMs,
  };
}

// ---------------------------------------------------------------------------------------------------
// Scraping /metrics pages
// ---------------------------------------------------------------------------------------------------

/** The metric names of services/core/metrics.ts both sources read. */
export const ENQUEUED = 'mcp_cluster_queue_enqueued_total';
export const WORKER_CALLS = 'mcp_cluster_worker_calls_total';
export const SERVICE = 'mcp_cluster_backend_duration_seconds';
export const SERVICE_SQUARES = 'mcp_cluster_backend_duration_squared_seconds_total';
export const QUEUE_WAIT = 'mcp_cluster_queue_wait_seconds';
export const INFLIGHT = 'mcp_cluster_worker_inflight_calls';
export const DEPTH = 'mcp_cluster_queue_depth';
export const QUEUE_INFLIGHT = 'mcp_cluster_queue_inflight';
/** The priority of batch work (job chunks), sized apart from the interactive priorities. */
export const LOW = 'low';
export const OLDEST = 'mcp_cluster_queue_oldest_age_seconds';
export const REPLICAS = 'mcp_cluster_worker_replicas';
/** Calls an ingress replica holds for their tenant's fair-queue quota (services/ingress/admission). */
export const HELD = 'mcp_cluster_tenant_held_calls';

type CounterKind =
  | 'arrival'
  | 'lowArrival'
  | 'completion'
  | 'serviceSum'
  | 'serviceCount'
  | 'serviceSquares'
  | 'serviceBucket'
  | 'queueWaitSum'
  | 'queueWaitCount';

/** One counter series of one target, reduced to what the rates need. */
interface CounterSeries {
  readonly kind: CounterKind;
  readonly pool: string;
  /** Bucket upper bound (serviceBucket only). */
  readonly le: number;
  readonly value: number;
}

/** What one target showed at one read. */
interface TargetReading {
  /** The source's clock at the read that took it, ms. */
  atMs: number;
  /** The process's start time (`*process_start_time_seconds`), s since the epoch; undefined if absent. */
  readonly startTimeSec: number | undefined;
  /** Counter series by series key (name and sorted labels). */
  readonly counters: ReadonlyMap<string, CounterSeries>;
  /** The gauges, per pool. */
  readonly gauges: readonly { pool: string; name: string; priority: string; state: string; value: number }[];
  /** Every pool the target mentions. */
  readonly pools: ReadonlySet<string>;
}

function seriesKey(sample: PromSample): string {
  const labels = Object.keys(sample.labels)
    .sort()
    .map((k) => `${k}=${JSON.stringify(sample.labels[k])}`);
  return `${sample.name}{${labels.join(',')}}`;
}

/** Reduces a parsed page to the series the rates are computed from. */
function readingOf(exposition: PromExposition, atMs: number): TargetReading {
  const counters = new Map<string, CounterSeries>();
  const gauges: { pool: string; name: string; priority: string; state: string; value: number }[] = [];
  const pools = new Set<string>();
  let startTimeSec: number | undefined;
  for (const sample of exposition.samples) {
    const { name, labels, value } = sample;
    if (name.endsWith('process_start_time_seconds') && Object.keys(labels).length === 0) {
      startTimeSec = value;
      continue;
    }
    const pool = labels.pool;
    if (pool === undefined || !name.startsWith('mcp_cluster_')) continue;
    let kind: CounterKind | undefined;
    let le = Number.NaN;
    if (name === ENQUEUED) kind = labels.priority === LOW ? 'lowArrival' : 'arrival';
    else if (name === WORKER_CALLS) kind = labels.outcome === 'retried' ? undefined : 'completion';
    else if (name === `${SERVICE}_sum`) kind = 'serviceSum';
    else if (name === `${SERVICE}_count`) kind = 'serviceCount';
    else if (name === SERVICE_SQUARES) kind = 'serviceSquares';
    else if (name === `${QUEUE_WAIT}_sum`) kind = 'queueWaitSum';
    else if (name === `${QUEUE_WAIT}_count`) kind = 'queueWaitCount';
    else if (name === `${SERVICE}_bucket`) {
      le = parsePromNumber(labels.le ?? '') ?? Number.NaN;
      kind = Number.isNaN(le) ? undefined : 'serviceBucket';
    } else if (
      name === INFLIGHT ||
      name === DEPTH ||
      name === OLDEST ||
      name === REPLICAS ||
      name === HELD ||
      (name === QUEUE_INFLIGHT && labels.priority === LOW)
    ) {
      if (Number.isFinite(value)) {
        gauges.push({ pool, name, priority: labels.priority ?? '', state: labels.state ?? '', value });
      }
      pools.add(pool);
      continue;
    } else continue;
    pools.add(pool);
    // A counter that is not a finite number ≥ 0 is not a counter; it would poison every sum.
    if (kind && Number.isFinite(value) && value >= 0)
      counters.set(seriesKey(sample), { kind, pool, le, value });
  }
  return { atMs, startTimeSec, counters, gauges, pools };
}

/** Options of {@link scrapeSource}. */
export interface ScrapeOptions extends HttpReadOptions {
  /**
   * When true, a read fails (ClusterError naming every failed URL) if any target cannot be read; for
   * one-shot commands like `mcp-cluster plan`, where a missing process would silently under-count.
   * Default false: a failed target is skipped and logged, and the read fails only when every target failed.
   */
  readonly failOnUnreachable?: boolean;
  /** Where skipped targets are reported. Default a logger for component `metrics-source`. */
  readonly logger?: Logger;
  /** Monotonic clock in ms that windows are measured with. Default `performance.now`. */
  readonly clock?: () => number;
}

/**
 * Reads every URL's `/metrics` page on each `read()` and turns the counter increases since that target's
 * previous page into per-pool rates. `urls` is asked at every read, so the target list may change (a
 * target dropped from it is forgotten).
 *
 * Counter increases are computed per target (per process) and per series, like Prometheus's `increase()`:
 * - a series that went down, or a target whose process start time changed, is a restarted process: the
 *   new value is the increase;
 * - a series or a target seen for the first time after the first read is new, and its whole value is
 *   the increase, unless the target reports a start time before the previous read (an old process that
 *   could not be reached before: it only sets its baseline);
 * - a target that cannot be read (refused, timeout, not 200, unparseable) is skipped for that read and
 *   logged once until it recovers; its previous page is kept, so the next good read covers the whole
 *   gap at the right rate.
 *
 * The first `read()` only records the baseline: rates 0, service times NaN, `windowMs` 0.
 */
export function scrapeSource(urls: () => readonly string[], options: ScrapeOptions = {}): MetricsSource {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const log = options.logger ?? createLogger('metrics-source');
  const clock = options.clock ?? (() => performance.now());
  const previous = new Map<string, TargetReading>();
  const failing = new Set<string>();
  let lastReadAtMs: number | undefined;
  let lastReadWallMs = 0;
  let chain: Promise<unknown> = Promise.resolve();

  async function readTarget(url: string): Promise<TargetReading> {
    const { status, text } = await getBounded(url, timeoutMs, maxBodyBytes, 'text/plain;version=0.0.4');
    if (status !== 200) {
      throw new ClusterError('BACKEND_UNAVAILABLE', `cannot read ${url}: it answered HTTP ${status}`);
    }
    // Stamped with the read's time once every target answered (one clock reading per read).
    return readingOf(parsePrometheusText(text, url), Number.NaN);
  }

  async function readOnce(): Promise<Map<string, PoolRates>> {
    const targets = [...new Set(urls())];
    for (const url of previous.keys()) if (!targets.includes(url)) previous.delete(url);
    const results = await Promise.allSettled(targets.map(readTarget));
    const nowMs = clock();
    const first = lastReadAtMs === undefined;
    const windowMs = first ? 0 : nowMs - (lastReadAtMs as number);
    const pools = new Map<string, PoolAccumulator>();
    const acc = (pool: string) => {
      let a = pools.get(pool);
      if (!a) {
        a = newAccumulator();
        pools.set(pool, a);
      }
      return a;
    };
    const failures: ClusterError[] = [];
    results.forEach((result, index) => {
      const url = targets[index] as string;
      if (result.status === 'rejected') {
        const err =
          result.reason instanceof ClusterError
            ? result.reason
            : new ClusterError('BACKEND_UNAVAILABLE', `cannot read ${url}: ${String(result.reason)}`, {
                cause: result.reason,
              });
        failures.push(err);
        // With failOnUnreachable the error is thrown to the caller; a log line would say it twice.
        if (!options.failOnUnreachable && !failing.has(url)) {
          failing.add(url);
          log.warn('metrics target skipped: cannot read it', { url, err: err.message });
        }
        return;
      }
      if (failing.delete(url)) log.info('metrics target readable again', { url });
      const now = result.value;
      now.atMs = nowMs;
      const before = previous.get(url);
      previous.set(url, now);
      for (const pool of now.pools) acc(pool);
      for (const g of now.gauges) {
        const a = acc(g.pool);
        if (g.name === INFLIGHT) a.inFlight += g.value;
        else if (g.name === REPLICAS) {
          if (g.state === 'running') a.replicas += g.value;
        } else if (g.name === DEPTH) {
          a.depthByPriority.set(g.priority, Math.max(a.depthByPriority.get(g.priority) ?? 0, g.value));
        } else if (g.name === OLDEST) a.oldestAgeSec = Math.max(a.oldestAgeSec, g.value);
        else if (g.name === QUEUE_INFLIGHT) a.lowInFlight = Math.max(a.lowInFlight, g.value);
        else if (g.name === HELD && g.value > 0) a.heldCalls += g.value;
      }
      if (first) return;
      let restarted = false;
      let baselineOnly = false;
      if (before) {
        restarted =
          before.startTimeSec !== undefined &&
          now.startTimeSec !== undefined &&
          now.startTimeSec !== before.startTimeSec;
      } else {
        // Start times are whole seconds (prom-client rounds): allow one second of slack.
        baselineOnly = now.startTimeSec !== undefined && now.startTimeSec * 1000 < lastReadWallMs - 1000;
      }
      if (baselineOnly) return;
      const targetWindowSec = (before ? now.atMs - before.atMs : windowMs) / 1000;
      for (const [key, series] of now.counters) {
        const old = restarted ? undefined : before?.counters.get(key);
        const increase =
          old === undefined || series.value < old.value ? series.value : series.value - old.value;
        if (increase === 0) continue;
        const a = acc(series.pool);
        switch (series.kind) {
          case 'arrival':
            if (targetWindowSec > 0) a.arrivalPerSec += increase / targetWindowSec;
            break;
          case 'lowArrival':
            if (targetWindowSec > 0) a.lowArrivalPerSec += increase / targetWindowSec;
            break;
          case 'completion':
            if (targetWindowSec > 0) a.completedPerSec += increase / targetWindowSec;
            break;
          // A series whose squares (same labels) the worker exports counts for Cs² too.
          case 'serviceSum':
            a.serviceSumSec += increase;
            if (now.counters.has(key.replace(`${SERVICE}_sum{`, `${SERVICE_SQUARES}{`)))
              a.squaresServiceSumSec += increase;
            break;
          case 'serviceCount':
            a.serviceCount += increase;
            if (now.counters.has(key.replace(`${SERVICE}_count{`, `${SERVICE_SQUARES}{`)))
              a.squaresCount += increase;
            break;
          case 'serviceSquares':
            a.squaresSumSec2 += increase;
            break;
          case 'queueWaitSum':
            a.queueWaitSumSec += increase;
            break;
          case 'queueWaitCount':
            a.queueWaitCount += increase;
            break;
          case 'serviceBucket':
            a.buckets.set(series.le, (a.buckets.get(series.le) ?? 0) + increase);
            break;
        }
      }
    });
    if (failures.length > 0 && (options.failOnUnreachable || failures.length === targets.length)) {
      throw new ClusterError(
        failures[0]?.code ?? 'BACKEND_UNAVAILABLE',
        failures.length === 1
          ? (failures[0]?.message ?? '')
          : `cannot read ${failures.length} of ${targets.length} metrics targets: ${failures.map((f) => f.message).join('; ')}`,
        { cause: failures[0] },
      );
    }
    lastReadAtMs = nowMs;
    lastReadWallMs = Date.now();
    const rates = new Map<string, PoolRates>();
    for (const [pool, a] of [...pools].sort(([x], [y]) => x.localeCompare(y))) {
      rates.set(pool, finishRates(pool, a, windowMs));
    }
    return rates;
  }

  return {
    read() {
      const next = chain.then(readOnce, readOnce);
      chain = next.catch(() => {});
      return next;
    },
    async close() {
      previous.clear();
    },
  };
}
