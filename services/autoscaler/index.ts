/**
 * Public entry of the autoscaler package: the pure control law and queueing maths, the service that
 * observes each pool and applies the law through a scaling provider (kubernetes, local worker
 * processes, metrics-only), the live-metrics reader shared with the capacity planner, and the planner
 * behind `mcp-cluster plan`.
 */

export {
  CLOSED_LOOP_MODEL,
  closedLoopWait,
  MAX_AGENTS,
  replicasForClosedLoop,
} from './closed-loop.js';
export {
  batchReplicas,
  DEFAULT_SCALING_POLICY,
  decideReplicas,
  growthLimit,
  initialScalerState,
  type PoolObservation,
  perReplicaRate,
  type Recommendation,
  requiredReplicas,
  type ScalerState,
  type ScaleUpLimit,
  type ScalingDecision,
  type ScalingPolicy,
  type ScalingReason,
  scalingPolicy,
} from './control-law.js';
export {
  type HttpReadOptions,
  histogramQuantile,
  interactiveArrivalPerSec,
  type MetricsSource,
  type PoolRates,
  type ScrapeOptions,
  scrapeSource,
} from './metrics-source.js';
export {
  type CapacityPlan,
  type PlanModel,
  type PlanOptions,
  type PoolBatchPlan,
  type PoolGpuPlan,
  type PoolPlan,
  planCapacity,
} from './plan.js';
export { formatPlan, planToJson } from './plan-output.js';
export {
  MAX_EXPOSITION_LINE_CHARS,
  type PromExposition,
  type PromMetricType,
  type PromSample,
  parsePrometheusText,
  parsePromNumber,
} from './prom-text.js';
export { prometheusQueries, prometheusSource } from './prometheus-source.js';
export type { ScalingProvider } from './provider.js';
export {
  FIELD_MANAGER,
  type KubernetesProviderOptions,
  kubernetesProvider,
  SERVICE_ACCOUNT_NAMESPACE_FILE,
} from './providers/kubernetes.js';
export {
  type LocalProvider,
  type LocalProviderOptions,
  type LocalReplica,
  type LocalReplicaView,
  localProvider,
  type ReplicaLauncher,
  readyPort,
  type WorkerProcessOptions,
  workerProcessLauncher,
} from './providers/local.js';
export { type MetricsProviderOptions, metricsProvider } from './providers/metrics.js';
export {
  DEFAULT_GPU_TIERS,
  erlangB,
  erlangC,
  fitGpuTier,
  GIB,
  GPU_MEMORY_OVERHEAD,
  type GpuFit,
  type GpuMemoryEstimate,
  type GpuMemoryInput,
  type GpuTier,
  gpuMemoryPerReplica,
  MAX_PLANNED_SERVERS,
  mmcWait,
  offeredLoad,
  QUEUEING_MODEL,
  QUEUEING_MODEL_MGC,
  replicasForWait,
  type WaitEstimate,
} from './queueing.js';
export {
  type Autoscaler,
  type AutoscalerOptions,
  OBSERVE_TIMEOUT_MS,
  type PoolStatus,
  policyFromConfig,
  startAutoscaler,
} from './service.js';
