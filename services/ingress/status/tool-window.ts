import type { ClusterMetrics } from '../../core/index.js';

// Calls per second and latency quantiles per tool over a sliding window, from the counters the
// call path already keeps (`mcp_cluster_ingress_calls_total`, `mcp_cluster_call_duration_seconds`):
// the status page reads them when it refreshes, so a call costs nothing more than before.

/** One tool's figures on the status page. */
export interface ToolFigures {
  tool: string;
  /** Calls answered since this replica started, every outcome. */
  calls: number;
  /** Of those, calls not answered `ok` (tool errors, timeouts, cancels, refusals). */
  errors: number;
  /** Calls answered per second over the window; null until two readings span some time. */
  callsPerS: number | null;
  /** Median and 95th percentile of the answer time over the window (since the start before), in ms. */
  p50Ms: number | null;
  p95Ms: number | null;
}

/** What one reading holds per tool: cumulative counts and duration buckets. */
interface ToolReading {
  calls: number;
  errors: number;
  /** Cumulative bucket counts, in the order of `bounds`. */
  buckets: number[];
}

interface Reading {
  atMs: number;
  bounds: number[];
  tools: Map<string, ToolReading>;
}

/** How far back rates and quantiles look, in milliseconds. */
export const TOOL_WINDOW_MS = 60_000;

/**
 * Keeps the readings of the last {@link TOOL_WINDOW_MS} and answers each tool's figures against
 * the oldest of them. Readings are taken only when the page refreshes (nobody watching costs nothing),
 * so right after the page opens the window is the time since the first refresh.
 */
export class ToolWindow {
  private readings: Reading[] = [];

  constructor(
    private readonly metrics: Pick<ClusterMetrics, 'ingressCalls' | 'callDuration'>,
    private readonly now: () => number = Date.now,
  ) {}

  /** Reads the counters now; `known` tools are listed even before their first call. */
  async figures(known: readonly string[]): Promise<ToolFigures[]> {
    const current = await this.read();
    this.readings = this.readings.filter((r) => r.atMs >= current.atMs - TOOL_WINDOW_MS);
    const base = this.readings[0];
    this.readings.push(current);
    const names = [...new Set([...known, ...current.tools.keys()])].sort();
    return names.map((tool) => {
      const now = current.tools.get(tool) ?? emptyReading(current.bounds);
      const then = base?.tools.get(tool) ?? (base ? emptyReading(base.bounds) : undefined);
      const seconds = base ? (current.atMs - base.atMs) / 1000 : 0;
      const sameBounds = base !== undefined && base.bounds.join() === current.bounds.join();
      const windowed =
        then && sameBounds ? now.buckets.map((n, i) => n - (then.buckets[i] ?? 0)) : now.buckets;
      return {
        tool,
        calls: now.calls,
        errors: now.errors,
        callsPerS: then && seconds > 0 ? Math.max(0, now.calls - then.calls) / seconds : null,
        p50Ms: quantileMs(current.bounds, windowed, 0.5),
        p95Ms: quantileMs(current.bounds, windowed, 0.95),
      };
    });
  }

  private async read(): Promise<Reading> {
    const [calls, durations] = await Promise.all([
      this.metrics.ingressCalls.get(),
      this.metrics.callDuration.get(),
    ]);
    const tools = new Map<string, ToolReading>();
    const boundsSet = new Set<number>();
    for (const v of durations.values) {
      const le = bucketBound(v);
      if (le !== undefined) boundsSet.add(le);
    }
    const bounds = [...boundsSet].sort((a, b) => a - b);
    const toolOf = (name: unknown): ToolReading | undefined => {
      if (typeof name !== 'string') return undefined;
      let t = tools.get(name);
      if (!t) {
        t = emptyReading(bounds);
        tools.set(name, t);
      }
      return t;
    };
    for (const v of calls.values) {
      const t = toolOf(v.labels.tool);
      if (!t) continue;
      t.calls += v.value;
      if (v.labels.outcome !== 'ok') t.errors += v.value;
    }
    for (const v of durations.values) {
      const le = bucketBound(v);
      const i = le === undefined ? -1 : bounds.indexOf(le);
      const t = toolOf(v.labels.tool);
      if (t && i >= 0) t.buckets[i] = (t.buckets[i] ?? 0) + v.value;
    }
    return { atMs: this.now(), bounds, tools };
  }
}

/**
 * The upper bound, in seconds, of a histogram's `_bucket` value as prom-client gives it (`le` a
 * number, or `+Inf`); undefined for its `_sum` and `_count` values.
 */
export function bucketBound(value: { metricName?: string; labels: object }): number | undefined {
  if (!value.metricName?.endsWith('_bucket')) return undefined;
  const le = (value.labels as { le?: unknown }).le;
  if (le === '+Inf') return Number.POSITIVE_INFINITY;
  return typeof le === 'number' ? le : undefined;
}

function emptyReading(bounds: readonly number[]): ToolReading {
  return { calls: 0, errors: 0, buckets: bounds.map(() => 0) };
}

/**
 * The `q` quantile of cumulative bucket counts with upper `bounds` in seconds, in milliseconds,
 * interpolated linearly inside the bucket as Prometheus's `histogram_quantile` does; the highest
 * finite bound when it falls in the `+Inf` bucket; null without observations.
 */
export function quantileMs(
  bounds: readonly number[],
  cumulative: readonly number[],
  q: number,
): number | null {
  const total = cumulative.at(-1) ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  for (let i = 0; i < bounds.length; i++) {
    const count = cumulative[i] ?? 0;
    if (count < rank) continue;
    const upper = bounds[i] ?? 0;
    if (!Number.isFinite(upper)) return (bounds[i - 1] ?? 0) * 1000;
    const lower = i === 0 ? 0 : (bounds[i - 1] ?? 0);
    const below = i === 0 ? 0 : (cumulative[i - 1] ?? 0);
    const inBucket = count - below;
    const fraction = inBucket > 0 ? (rank - below) / inBucket : 1;
    return (lower + (upper - lower) * fraction) * 1000;
  }
  return null;
}
