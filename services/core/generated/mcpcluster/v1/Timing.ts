// Original file: proto/mcp_cluster.proto

import type { Long } from '@grpc/proto-loader';

/**
 * Worker-side timings reported with the final chunk, in milliseconds.
 */
export interface Timing {
  /**
   * Enqueue to the worker taking the call.
   */
  'queueWaitMs'?: (number | string);
  /**
   * Time in the backend request, including any batch wait.
   */
  'backendMs'?: (number | string);
  /**
   * Part of backend_ms the call waited for its micro-batch to close.
   */
  'batchWaitMs'?: (number | string);
  /**
   * When the worker sent the terminal chunk, milliseconds since the Unix epoch.
   */
  'sentUnixMs'?: (number | string | Long);
}

/**
 * Worker-side timings reported with the final chunk, in milliseconds.
 */
export interface Timing__Output {
  /**
   * Enqueue to the worker taking the call.
   */
  'queueWaitMs': (number);
  /**
   * Time in the backend request, including any batch wait.
   */
  'backendMs': (number);
  /**
   * Part of backend_ms the call waited for its micro-batch to close.
   */
  'batchWaitMs': (number);
  /**
   * When the worker sent the terminal chunk, milliseconds since the Unix epoch.
   */
  'sentUnixMs': (number);
}
