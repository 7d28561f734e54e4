import { ClusterError } from '../core/index.js';
import {
  DEFAULT_MAX_BODY_BYTES,
  DEFAULT_TIMEOUT_MS,
  DEPTH,
  ENQUEUED,
  getBounded,
  HELD,
  type HttpReadOptions,
  INFLIGHT,
  LOW,
  type MetricsSource,
  OLDEST,
  type PoolRates,
  QUEUE_INFLIGHT,
  QUEUE_WAIT,
  REPLICAS,
  SERVICE,
  SERVICE_SQUARES,
  serviceCs2,
  WORKER_CALLS,
} from './metrics-source.js';
import { parsePromNumber, shown } from './prom-text.js';

// The live per-pool figures read from a Prometheus server's HTTP query API instead of from the
// processes' own pages (see metrics-source.ts for the figures and the metrics they come from).

/** The PromQL `prometheusSource` sends, by figure, for a rate window of `windowMs`. */
export function prometheusQueries(windowMs: number): Record<string, string> {
  const ms = Math.round(windowMs);
  const w = ms % 1000 === 0 ? `[${ms / 1000}s]` : `[${ms}ms]`;
  return {
    // Apart by priority: low is batch work (see interactiveArrivalPerSec), and the total is their sum.
    arrivals: `sum by (pool) (rate(${ENQUEUED}{priority!="${LOW}"}${w}))`,
    lowArrivals: `sum by (pool) (rate(${ENQUEUED}{priority="${LOW}"}${w}))`,
    completions: `sum by (pool) (rate(${WORKER_CALLS}{outcome!="retried"}${w}))`,
    serviceSum: `sum by (pool) (increase(${SERVICE}_sum${w}))`,
    serviceCount: `sum by (pool) (increase(${SERVICE}_count${w}))`,
    serviceP95: `histogram_quantile(0.95, sum by (pool, le) (rate(${SERVICE}_bucket${w})))`,
    // Σ S², and the calls of the series that export it (`and` matches the same labels), for Cs².
    serviceSquares: `sum by (pool) (increase(${SERVICE_SQUARES}${w}))`,
    squaresCount: `sum by (pool) (increase(${SERVICE}_count${w}) and increase(${SERVICE_SQUARES}${w}))`,
    squaresSum: `sum by (pool) (increase(${SERVICE}_sum${w}) and increase(${SERVICE_SQUARES}${w}))`,
    queueWaitSum: `sum by (pool) (increase(${QUEUE_WAIT}_sum${w}))`,
    queueWaitCount: `sum by (pool) (increase(${QUEUE_WAIT}_count${w}))`,
    inFlight: `sum by (pool) (${INFLIGHT})`,
    queueDepth: `sum by (pool) (max by (pool, priority) (${DEPTH}))`,
    // Each ingress replica exports only the calls it holds itself: a sum, not a max. Added to the
    // depth when the answers are combined (a pool may have either figure without the other).
    heldCalls: `sum by (pool) (${HELD})`,
    lowQueueDepth: `max by (pool) (${DEPTH}{priority="${LOW}"})`,
    lowInFlight: `max by (pool) (${QUEUE_INFLIGHT}{priority="${LOW}"})`,
    oldestAge: `max by (pool) (${OLDEST})`,
    replicas: `sum by (pool) (${REPLICAS}{state="running"})`,
  };
}

/**
 * Reads the same figures from a Prometheus server's instant-query API (`GET <baseUrl>/api/v1/query`):
 * `rate()` / `increase()` over the last `windowMs`, `histogram_quantile(0.95, ...)` for the p95, `max by`
 * for the broker-wide queue gauges, a sum for the calls the ingress replicas hold (see
 * {@link prometheusQueries}). Every read covers the window ending
 * now; it should be at least twice Prometheus's scrape interval, or `rate()` has too few samples and
 * reports nothing (a pool that reports nothing has rate 0).
 * @throws ClusterError from `read()`: `BACKEND_UNAVAILABLE` when Prometheus cannot be reached, answers
 *   non-200 or says `unavailable`/`timeout`; `BACKEND_PROTOCOL` on an answer that is not Prometheus's
 *   JSON or an `error` status (e.g. a query it rejects).
 */
export function prometheusSource(
  baseUrl: string,
  windowMs: number,
  options: HttpReadOptions = {},
): MetricsSource {
  if (!/^https?:\/\/[^/]/.test(baseUrl)) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `the Prometheus URL must be http:// or https://, got "${baseUrl}"`,
    );
  }
  if (!Number.isFinite(windowMs) || windowMs < 1000) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `the Prometheus rate window must be at least 1s, got ${windowMs} ms`,
    );
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const endpoint = `${baseUrl.replace(/\/+$/, '')}/api/v1/query`;
  const queries = prometheusQueries(windowMs);

  async function query(promql: string): Promise<Map<string, number>> {
    const url = `${endpoint}?${new URLSearchParams({ query: promql })}`;
    const { status, text } = await getBounded(url, timeoutMs, maxBodyBytes, 'application/json');
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (err) {
      if (status !== 200) {
        throw new ClusterError('BACKEND_UNAVAILABLE', `Prometheus at ${endpoint} answered HTTP ${status}`, {
          cause: err,
        });
      }
      throw new ClusterError(
        'BACKEND_PROTOCOL',
        `Prometheus at ${endpoint} answered with something that is not JSON (${shown(text)}); is ${baseUrl} a Prometheus server?`,
        { cause: err },
      );
    }
    const answer = (typeof body === 'object' && body !== null ? body : {}) as {
      status?: unknown;
      errorType?: unknown;
      error?: unknown;
      data?: { resultType?: unknown; result?: unknown };
    };
    if (answer.status === 'error' || status !== 200) {
      const kind = typeof answer.errorType === 'string' ? answer.errorType : `HTTP ${status}`;
      const why = typeof answer.error === 'string' ? `: ${answer.error.slice(0, 500)}` : '';
      const code =
        kind === 'unavailable' || kind === 'timeout' || status >= 500
          ? 'BACKEND_UNAVAILABLE'
          : 'BACKEND_PROTOCOL';
      throw new ClusterError(code, `Prometheus at ${endpoint} refused query ${promql} (${kind})${why}`);
    }
    if (
      answer.status !== 'success' ||
      answer.data?.resultType !== 'vector' ||
      !Array.isArray(answer.data.result)
    ) {
      throw new ClusterError(
        'BACKEND_PROTOCOL',
        `Prometheus at ${endpoint} answered ${shown(text)} to ${promql}; expected {"status":"success","data":{"resultType":"vector",...}}`,
      );
    }
    const byPool = new Map<string, number>();
    for (const item of answer.data.result as unknown[]) {
      const entry = item as { metric?: { pool?: unknown }; value?: unknown };
      const pair = entry?.value;
      const raw =
        Array.isArray(pair) && pair.length === 2 && typeof pair[1] === 'string' ? pair[1] : undefined;
      const value = raw === undefined ? undefined : parsePromNumber(raw);
      if (value === undefined || typeof entry.metric !== 'object' || entry.metric === null) {
        throw new ClusterError(
          'BACKEND_PROTOCOL',
          `Prometheus at ${endpoint} answered a sample ${shown(JSON.stringify(item) ?? '')} to ${promql}; expected {"metric":{...},"value":[time,"number"]}`,
        );
      }
      if (typeof entry.metric.pool === 'string') byPool.set(entry.metric.pool, value);
    }
    return byPool;
  }

  return {
    async read() {
      const names = Object.keys(queries);
      const answers = await Promise.all(names.map((name) => query(queries[name] as string)));
      const figures = Object.fromEntries(names.map((name, i) => [name, answers[i] as Map<string, number>]));
      const pools = new Set<string>();
      for (const answer of answers) for (const pool of answer.keys()) pools.add(pool);
      const rates = new Map<string, PoolRates>();
      const finite = (name: string, pool: string) => {
        const v = figures[name]?.get(pool);
        return v !== undefined && Number.isFinite(v) ? v : 0;
      };
      for (const pool of [...pools].sort()) {
        const count = finite('serviceCount', pool);
        const p95 = figures.serviceP95?.get(pool);
        const arrival = finite('arrivals', pool);
        const low = finite('lowArrivals', pool);
        const completed = finite('completions', pool);
        const held = Math.max(0, finite('heldCalls', pool));
        rates.set(pool, {
          pool,
          // The sum here, not a third query: subtracting low again must leave exactly 0 (see PoolRates).
          arrivalPerSec: arrival + low > 0 ? arrival + low : 0,
          lowArrivalPerSec: low > 0 ? low : 0,
          completedPerSec: completed > 0 ? completed : 0,
          meanServiceMs: count > 0 ? (finite('serviceSum', pool) / count) * 1000 : Number.NaN,
          p95ServiceMs: count > 0 && p95 !== undefined ? p95 * 1000 : Number.NaN,
          serviceCs2: serviceCs2(
            finite('squaresSum', pool),
            finite('serviceSquares', pool),
            finite('squaresCount', pool),
          ),
          meanQueueWaitMs:
            finite('queueWaitCount', pool) > 0
              ? (finite('queueWaitSum', pool) / finite('queueWaitCount', pool)) * 1000
              : Number.NaN,
          inFlight: finite('inFlight', pool),
          queueDepth: finite('queueDepth', pool) + held,
          heldCalls: held,
          lowQueueDepth: finite('lowQueueDepth', pool),
          lowInFlight: finite('lowInFlight', pool),
          oldestWaitMs: finite('oldestAge', pool) * 1000,
          replicas: finite('replicas', pool),
          windowMs,
        });
      }
      return rates;
    },
  };
}
