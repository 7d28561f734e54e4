// Original file: proto/mcp_cluster.proto


/**
 * Progress of a running call (e.g. tokens generated so far).
 */
export interface Progress {
  'progress'?: (number | string);
  /**
   * 0 when the total is unknown.
   */
  'total'?: (number | string);
  'message'?: (string);
}

/**
 * Progress of a running call (e.g. tokens generated so far).
 */
export interface Progress__Output {
  'progress': (number);
  /**
   * 0 when the total is unknown.
   */
  'total': (number);
  'message': (string);
}
