/** Prometheus metrics of the embed adapter, on the process's shared cluster registry. */

import { Counter, Histogram } from 'prom-client';
import { clusterMetrics } from '../../services/core/index.js';

export interface EmbedMetrics {
  /** Texts answered from the result cache. */
  cacheHits: Counter<'pool' | 'tool'>;
  /** Texts looked up in the result cache and not found (they go to the backend). */
  cacheMisses: Counter<'pool' | 'tool'>;
  /** Texts per backend request (micro-batch size). */
  batchSize: Histogram<'pool' | 'tool'>;
}

let shared: EmbedMetrics | undefined;

/** The embed metrics, registered on first use. */
export function embedMetrics(): EmbedMetrics {
  if (shared) return shared;
  const { registry } = clusterMetrics();
  const registers = [registry];
  // Another copy of this module (a test runner's re-import) may have registered them already.
  const existing = <T>(name: string) => registry.getSingleMetric(name) as T | undefined;
  shared = {
    cacheHits:
      existing<Counter<'pool' | 'tool'>>('mcp_cluster_embed_cache_hits_total') ??
      new Counter({
        name: 'mcp_cluster_embed_cache_hits_total',
        help: 'Embedding texts answered from the result cache.',
        labelNames: ['pool', 'tool'],
        registers,
      }),
    cacheMisses:
      existing<Counter<'pool' | 'tool'>>('mcp_cluster_embed_cache_misses_total') ??
      new Counter({
        name: 'mcp_cluster_embed_cache_misses_total',
        help: 'Embedding texts not found in the result cache (sent to the backend).',
        labelNames: ['pool', 'tool'],
        registers,
      }),
    batchSize:
      existing<Histogram<'pool' | 'tool'>>('mcp_cluster_batch_size') ??
      new Histogram({
        name: 'mcp_cluster_batch_size',
        help: 'Texts per embedding backend request (micro-batch size).',
        labelNames: ['pool', 'tool'],
        buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048],
        registers,
      }),
  };
  return shared;
}
