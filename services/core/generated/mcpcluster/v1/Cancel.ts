// Original file: proto/mcp_cluster.proto


export interface Cancel {
  /**
   * Why: "client", "deadline", "shutdown".
   */
  'reason'?: (string);
}

export interface Cancel__Output {
  /**
   * Why: "client", "deadline", "shutdown".
   */
  'reason': (string);
}
