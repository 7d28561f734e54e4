/**
 * Where the autoscaler's decisions land. One implementation per `autoscaler.provider` setting:
 * `kubernetes` (the scale subresource of each pool's Deployment), `local` (worker processes on this
 * machine) and `metrics` (a gauge an external scaler reads; nothing is started or stopped).
 */
export interface ScalingProvider {
  readonly kind: 'kubernetes' | 'local' | 'metrics';
  /**
   * Replicas the pool is set to now: the desired/spec count, including replicas still starting, not
   * only the ready ones (the control law compares its decision with this).
   */
  replicas(pool: string): Promise<number>;
  /**
   * Sets the pool's replicas. Removing a replica drains it: it stops taking calls and finishes or hands
   * back the ones it holds within its drain grace (SIGTERM on a worker process or pod).
   * Rejects with a ClusterError when the orchestrator refuses or cannot be reached; the service logs it
   * and tries again on the next interval.
   */
  scale(pool: string, replicas: number): Promise<void>;
  /** Stops what the provider started (the local provider drains its workers); idempotent. */
  close(): Promise<void>;
}
