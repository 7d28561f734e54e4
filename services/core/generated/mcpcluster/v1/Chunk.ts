// Original file: proto/mcp_cluster.proto

import type { Accepted as _mcpcluster_v1_Accepted, Accepted__Output as _mcpcluster_v1_Accepted__Output } from '../../mcpcluster/v1/Accepted.js';
import type { Progress as _mcpcluster_v1_Progress, Progress__Output as _mcpcluster_v1_Progress__Output } from '../../mcpcluster/v1/Progress.js';
import type { Partial as _mcpcluster_v1_Partial, Partial__Output as _mcpcluster_v1_Partial__Output } from '../../mcpcluster/v1/Partial.js';
import type { Final as _mcpcluster_v1_Final, Final__Output as _mcpcluster_v1_Final__Output } from '../../mcpcluster/v1/Final.js';
import type { CallError as _mcpcluster_v1_CallError, CallError__Output as _mcpcluster_v1_CallError__Output } from '../../mcpcluster/v1/CallError.js';
import type { Timing as _mcpcluster_v1_Timing, Timing__Output as _mcpcluster_v1_Timing__Output } from '../../mcpcluster/v1/Timing.js';

/**
 * Worker -> ingress: one chunk of one call. Chunks of many calls share a stream.
 */
export interface Chunk {
  'callId'?: (string);
  'attempt'?: (number);
  /**
   * The worker took the call and started working on it.
   */
  'accepted'?: (_mcpcluster_v1_Accepted | null);
  'progress'?: (_mcpcluster_v1_Progress | null);
  'partial'?: (_mcpcluster_v1_Partial | null);
  'final'?: (_mcpcluster_v1_Final | null);
  'error'?: (_mcpcluster_v1_CallError | null);
  'timing'?: (_mcpcluster_v1_Timing | null);
  'body'?: "accepted"|"progress"|"partial"|"final"|"error";
}

/**
 * Worker -> ingress: one chunk of one call. Chunks of many calls share a stream.
 */
export interface Chunk__Output {
  'callId': (string);
  'attempt': (number);
  /**
   * The worker took the call and started working on it.
   */
  'accepted'?: (_mcpcluster_v1_Accepted__Output | null);
  'progress'?: (_mcpcluster_v1_Progress__Output | null);
  'partial'?: (_mcpcluster_v1_Partial__Output | null);
  'final'?: (_mcpcluster_v1_Final__Output | null);
  'error'?: (_mcpcluster_v1_CallError__Output | null);
  'timing': (_mcpcluster_v1_Timing__Output | null);
  'body'?: "accepted"|"progress"|"partial"|"final"|"error";
}
