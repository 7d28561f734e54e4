// Original file: proto/mcp_cluster.proto


/**
 * A failed call. `code` is one of the ClusterError codes (e.g. "BACKEND_UNAVAILABLE").
 */
export interface CallError {
  'code'?: (string);
  'message'?: (string);
}

/**
 * A failed call. `code` is one of the ClusterError codes (e.g. "BACKEND_UNAVAILABLE").
 */
export interface CallError__Output {
  'code': (string);
  'message': (string);
}
