// Original file: proto/mcp_cluster.proto


/**
 * The final result: an MCP CallToolResult as JSON.
 */
export interface Final {
  'resultJson'?: (string);
}

/**
 * The final result: an MCP CallToolResult as JSON.
 */
export interface Final__Output {
  'resultJson': (string);
}
