import type { ResolvedConfig } from '../../core/index.js';
import { ClusterError } from '../../core/index.js';
import type { ScalingProvider } from '../provider.js';

/** Options of {@link metricsProvider}. */
export interface MetricsProviderOptions {
  /**
   * Replicas each pool is believed to have when the autoscaler starts, e.g. the running workers counted
   * from `mcp_cluster_worker_replicas` by one read of the metrics source. A pool not listed starts at its
   * `scaling.minReplicas`.
   */
  initial?: Readonly<Record<string, number>>;
}

/**
 * The `metrics` provider: nothing is started or stopped. A decision only becomes the
 * `mcp_cluster_autoscaler_desired_replicas{pool}` gauge (the service sets it), which an external scaler
 * follows, e.g. a KEDA ScaledObject with a Prometheus trigger on that gauge.
 *
 * `replicas()` answers the last desired count, not the observed number of workers: the desired count IS
 * the spec the external scaler works toward, and the observed count lags it by the time workers take to
 * start, so comparing the law with it would make the law step up again on every interval until the
 * workers arrive. The count starts at `initial[pool]` when given (so a restarted autoscaler carries on
 * from the workers that run), else at the pool's `minReplicas`.
 */
export function metricsProvider(
  config: ResolvedConfig,
  options: MetricsProviderOptions = {},
): ScalingProvider {
  const desired = new Map<string, number>();
  for (const [pool, p] of Object.entries(config.pools)) {
    const seeded = options.initial?.[pool];
    const start =
      seeded !== undefined && Number.isInteger(seeded) && seeded >= 0
        ? Math.min(seeded, p.scaling.maxReplicas)
        : p.scaling.minReplicas;
    desired.set(pool, start);
  }
  const known = (pool: string) => {
    const n = desired.get(pool);
    if (n === undefined) {
      throw new ClusterError(
        'INVALID_CONFIG',
        `no pool "${pool}" in the configuration (have: ${[...desired.keys()].join(', ')})`,
      );
    }
    return n;
  };
  return {
    kind: 'metrics',
    replicas: async (pool) => known(pool),
    scale: async (pool, replicas) => {
      known(pool);
      if (!Number.isInteger(replicas) || replicas < 0) {
        throw new ClusterError('INTERNAL', `replicas must be a non-negative integer, got ${replicas}`);
      }
      desired.set(pool, replicas);
    },
    close: async () => undefined,
  };
}
