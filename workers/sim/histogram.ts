/** A Prometheus-style histogram: cumulative buckets by upper bound, plus sum and count. */

/** vLLM's buckets of `vllm:time_to_first_token_seconds`, in seconds. */
export const ttftBucketsSeconds: readonly number[] = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640,
  2560,
];

/** vLLM's buckets of `vllm:inter_token_latency_seconds`, in seconds. */
export const interTokenBucketsSeconds: readonly number[] = [
  0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80,
];

/** vLLM's buckets of request latencies (queue time, end-to-end), in seconds. */
export const requestLatencyBucketsSeconds: readonly number[] = [
  0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680,
];

/** vLLM's buckets of `vllm:iteration_tokens_total` (tokens per engine step). */
export const iterationTokenBuckets: readonly number[] = [
  1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384,
];

/** Buckets of `sim_embed_batch_size` (inputs per embeddings request). */
export const embedBatchSizeBuckets: readonly number[] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

export class Histogram {
  /** Observations per bucket (not cumulative); the last entry is the `+Inf` bucket. */
  readonly #counts: number[];
  #sum = 0;
  #count = 0;

  constructor(readonly bounds: readonly number[]) {
    this.#counts = new Array<number>(bounds.length + 1).fill(0);
  }

  /** Records `value` `times` times (e.g. the same latency for every token of a step). */
  observe(value: number, times = 1): void {
    if (!(times > 0) || !Number.isFinite(value)) return;
    let i = 0;
    while (i < this.bounds.length && value > (this.bounds[i] ?? Number.POSITIVE_INFINITY)) i++;
    this.#counts[i] = (this.#counts[i] ?? 0) + times;
    this.#sum += value * times;
    this.#count += times;
  }

  get sum(): number {
    return this.#sum;
  }

  get count(): number {
    return this.#count;
  }

  /** `[upper bound, cumulative count]` pairs, ending with `+Inf` (the total count). */
  cumulative(): [string, number][] {
    const out: [string, number][] = [];
    let running = 0;
    this.bounds.forEach((bound, i) => {
      running += this.#counts[i] ?? 0;
      out.push([String(bound), running]);
    });
    out.push(['+Inf', this.#count]);
    return out;
  }
}
