// Original file: proto/mcp_cluster.proto


/**
 * Worker-side timings reported with the final chunk, in milliseconds.
 */
export interface Timing {
  'queueWaitMs'?: (number | string);
  'backendMs'?: (number | string);
}

/**
 * Worker-side timings reported with the final chunk, in milliseconds.
 */
export interface Timing__Output {
  'queueWaitMs': (number);
  'backendMs': (number);
}
