// Original file: proto/mcp_cluster.proto


export interface Accepted {
  'workerId'?: (string);
}

export interface Accepted__Output {
  'workerId': (string);
}
