import { build, type Histogram } from 'hdr-histogram-js';

/** Percentiles of one latency distribution, in milliseconds. */
export interface LatencySummary {
  count: number;
  mean: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  p999: number;
  max: number;
}

/** 1 µs .. 1 h at 3 significant digits; grows by itself past an hour. */
const HIGHEST_US = 3_600_000_000;

/**
 * An HDR histogram of durations: values are given in milliseconds and recorded as whole
 * microseconds (1 µs resolution, 3 significant digits, so within 0.1% at any magnitude).
 */
export class LatencyRecorder {
  private readonly histogram: Histogram = build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: HIGHEST_US,
    numberOfSignificantValueDigits: 3,
    autoResize: true,
  });

  /** Records one duration in milliseconds; negative and non-finite values are ignored. */
  record(ms: number): void {
    if (!(ms >= 0) || ms === Number.POSITIVE_INFINITY) return;
    this.histogram.recordValue(Math.round(ms * 1000));
  }

  get count(): number {
    return this.histogram.totalCount;
  }

  summary(): LatencySummary {
    const h = this.histogram;
    if (h.totalCount === 0) return emptySummary();
    return {
      count: h.totalCount,
      mean: round3(h.mean / 1000),
      p50: round3(h.getValueAtPercentile(50) / 1000),
      p90: round3(h.getValueAtPercentile(90) / 1000),
      p95: round3(h.getValueAtPercentile(95) / 1000),
      p99: round3(h.getValueAtPercentile(99) / 1000),
      p999: round3(h.getValueAtPercentile(99.9) / 1000),
      max: round3(h.maxValue / 1000),
    };
  }
}

export function emptySummary(): LatencySummary {
  return { count: 0, mean: 0, p50: 0, p90: 0, p95: 0, p99: 0, p999: 0, max: 0 };
}

function round3(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
