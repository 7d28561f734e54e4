// Original file: proto/mcp_cluster.proto


export interface Delivered {
  'known'?: (boolean);
}

export interface Delivered__Output {
  'known': (boolean);
}
