// Original file: proto/mcp_cluster.proto


/**
 * A partial result (e.g. streamed text so far is in progress; this carries a delta).
 */
export interface Partial {
  'textDelta'?: (string);
}

/**
 * A partial result (e.g. streamed text so far is in progress; this carries a delta).
 */
export interface Partial__Output {
  'textDelta': (string);
}
