// Original file: proto/mcp_cluster.proto

import type { Delivered as _mcpcluster_v1_Delivered, Delivered__Output as _mcpcluster_v1_Delivered__Output } from '../../mcpcluster/v1/Delivered.js';
import type { Cancel as _mcpcluster_v1_Cancel, Cancel__Output as _mcpcluster_v1_Cancel__Output } from '../../mcpcluster/v1/Cancel.js';

/**
 * Ingress -> worker: an order about one call.
 */
export interface Order {
  'callId'?: (string);
  /**
   * The terminal chunk (final or error) reached the ingress; `known` is false
   * when the ingress no longer waits for the call (answered, timed out, caller gone).
   */
  'delivered'?: (_mcpcluster_v1_Delivered | null);
  /**
   * Stop working on the call.
   */
  'cancel'?: (_mcpcluster_v1_Cancel | null);
  'body'?: "delivered"|"cancel";
}

/**
 * Ingress -> worker: an order about one call.
 */
export interface Order__Output {
  'callId': (string);
  /**
   * The terminal chunk (final or error) reached the ingress; `known` is false
   * when the ingress no longer waits for the call (answered, timed out, caller gone).
   */
  'delivered'?: (_mcpcluster_v1_Delivered__Output | null);
  /**
   * Stop working on the call.
   */
  'cancel'?: (_mcpcluster_v1_Cancel__Output | null);
  'body'?: "delivered"|"cancel";
}
