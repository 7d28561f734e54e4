/**
 * GET /metrics in the Prometheus text format (0.0.4), under vLLM's own metric names so that
 * dashboards, alerts and autoscaler queries written for vLLM read the simulation unchanged.
 */

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

function family(name: string, type: 'gauge' | 'counter', help: string, samples: Sample[]): string {
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`];
  for (const { labels, value } of samples) {
    const rendered = labels
      ? `{${Object.entries(labels)
          .map(([k, v]) => `${k}="${labelValue(v)}"`)
          .join(',')}}`
      : '';
    lines.push(`${name}${rendered} ${value}`);
  }
  return lines.join('\n');
}

/** Renders every metric of the backend, one family after another. */
export function renderMetrics(state: SimState): string {
  const { options, counters, chatSlots, embedGpu } = state;
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
  ].join('\n')}\n`;
}
