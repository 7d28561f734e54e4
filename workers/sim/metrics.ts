/**
 * GET /metrics in the Prometheus text format (0.0.4), under vLLM's own metric names so that
 * dashboards, alerts and autoscaler queries written for vLLM read the simulation unchanged.
 */

import type { Histogram } from './histogram.js';
import { type SimState, snapshotStats } from './sim-state.js';

/** Content-Type of the Prometheus text exposition format. */
export const metricsContentType = 'text/plain; version=0.0.4; charset=utf-8';

function labelValue(value: string): string {
  return value.replaceAll('\\', '\\\\').replaceAll('"', '\\"').replaceAll('\n', '\\n');
}

interface Sample {
  labels?: Record<string, string>;
  value: number;
}

function renderLabels(labels: Record<string, string> | undefined): string {
  if (!labels || Object.keys(labels).length === 0) return '';
  return `{${Object.entries(labels)
    .map(([k, v]) => `${k}="${labelValue(v)}"`)
    .join(',')}}`;
}

function family(name: string, type: 'gauge' | 'counter', help: string, samples: Sample[]): string {
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`];
  for (const { labels, value } of samples) lines.push(`${name}${renderLabels(labels)} ${value}`);
  return lines.join('\n');
}

function histogramFamily(
  name: string,
  help: string,
  series: { labels: Record<string, string>; histogram: Histogram }[],
): string {
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} histogram`];
  for (const { labels, histogram } of series) {
    for (const [le, count] of histogram.cumulative()) {
      lines.push(`${name}_bucket${renderLabels({ ...labels, le })} ${count}`);
    }
    lines.push(`${name}_sum${renderLabels(labels)} ${histogram.sum}`);
    lines.push(`${name}_count${renderLabels(labels)} ${histogram.count}`);
  }
  return lines.join('\n');
}

/** Renders every metric of the backend, one family after another. */
export function renderMetrics(state: SimState): string {
  const { options, counters, chatSlots, embedGpu, histograms } = state;
  const stats = snapshotStats(state);
  const chat = { model_name: options.model };
  const embed = { model_name: options.embeddingModel };
  return `${[
    family('vllm:num_requests_running', 'gauge', 'Number of requests in model execution batches.', [
      { labels: chat, value: chatSlots.running },
      { labels: embed, value: embedGpu.running },
    ]),
    family('vllm:num_requests_waiting', 'gauge', 'Number of requests waiting to be processed.', [
      { labels: chat, value: chatSlots.waiting },
      { labels: embed, value: embedGpu.waiting },
    ]),
    // The simulation has no real KV cache: each running sequence is taken to fill 1/maxNumSeqs of it.
    family('vllm:kv_cache_usage_perc', 'gauge', 'KV-cache usage. 1 means 100 percent usage.', [
      { labels: chat, value: chatSlots.running / options.maxNumSeqs },
    ]),
    family('vllm:prompt_tokens_total', 'counter', 'Number of prefill tokens processed.', [
      { labels: chat, value: counters.chatPromptTokens },
      { labels: embed, value: counters.embedTokens },
    ]),
    family('vllm:generation_tokens_total', 'counter', 'Number of generation tokens processed.', [
      { labels: chat, value: counters.generationTokens },
    ]),
    // vLLM V1 counts prefix-cache queries and hits in tokens; the gpu_ names are its older ones.
    family(
      'vllm:prefix_cache_queries_total',
      'counter',
      'Prefix cache queries, in terms of number of queried tokens.',
      [{ labels: chat, value: counters.prefixCacheQueryTokens }],
    ),
    family(
      'vllm:prefix_cache_hits_total',
      'counter',
      'Prefix cache hits, in terms of number of cached tokens.',
      [{ labels: chat, value: counters.prefixCacheHitTokens }],
    ),
    family(
      'vllm:gpu_prefix_cache_queries_total',
      'counter',
      'GPU prefix cache queries, in terms of number of queried tokens (deprecated name).',
      [{ labels: chat, value: counters.prefixCacheQueryTokens }],
    ),
    family(
      'vllm:gpu_prefix_cache_hits_total',
      'counter',
      'GPU prefix cache hits, in terms of number of cached tokens (deprecated name).',
      [{ labels: chat, value: counters.prefixCacheHitTokens }],
    ),
    histogramFamily('vllm:time_to_first_token_seconds', 'Histogram of time to first token in seconds.', [
      { labels: chat, histogram: histograms.timeToFirstToken },
    ]),
    histogramFamily('vllm:inter_token_latency_seconds', 'Histogram of inter-token latency in seconds.', [
      { labels: chat, histogram: histograms.interTokenLatency },
    ]),
    histogramFamily('vllm:iteration_tokens_total', 'Histogram of number of tokens per engine_step.', [
      { labels: chat, histogram: histograms.iterationTokens },
    ]),
    histogramFamily(
      'vllm:request_queue_time_seconds',
      'Histogram of time spent in WAITING phase for request.',
      [{ labels: chat, histogram: histograms.queueTime }],
    ),
    histogramFamily('vllm:e2e_request_latency_seconds', 'Histogram of e2e request latency in seconds.', [
      { labels: chat, histogram: histograms.e2eLatency },
    ]),
    family('sim_requests_total', 'counter', 'Inference requests accepted (chat and embeddings).', [
      { value: stats.requests },
    ]),
    family('sim_requests_completed_total', 'counter', 'Accepted requests whose response finished.', [
      { value: stats.completed },
    ]),
    family(
      'sim_requests_aborted_total',
      'counter',
      'Accepted requests whose client closed the connection before the response finished.',
      [{ value: stats.aborted }],
    ),
    family('sim_embed_inputs_total', 'counter', 'Texts embedded in accepted embeddings requests.', [
      { value: stats.embedInputs },
    ]),
    family('sim_embed_gpu_batches_total', 'counter', 'Embeddings batches the simulated GPU ran.', [
      { value: stats.embedGpuBatches },
    ]),
    histogramFamily(
      'sim_embed_batch_size',
      'Inputs per accepted embeddings request (OpenAI and TEI formats).',
      [{ labels: embed, histogram: histograms.embedBatchSize }],
    ),
    family('sim_failures_injected_total', 'counter', 'Requests answered by an injected failure.', [
      { value: stats.failuresInjected },
    ]),
  ].join('\n')}\n`;
}
