/**
 * Public entry of the autoscaler package: the pure control law and the capacity-planning arithmetic.
 * The polling service, scaling providers (kubernetes, local processes, metrics-only) and the `plan` CLI
 * build on these.
 */
export {
  DEFAULT_SCALING_POLICY,
  decideReplicas,
  growthLimit,
  initialScalerState,
  type PoolObservation,
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
  replicasForWait,
  type WaitEstimate,
} from './queueing.js';
