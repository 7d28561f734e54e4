/**
 * The protobuf codec of mcp-cluster's wire schema (`proto/mcp_cluster.proto`): the `ToolCall`
 * envelope the queues carry, and the `Chunk` and `Order` messages of gRPC delivery. One protobuf
 * runtime (protobufjs), the .proto loaded once per process; the types are the kernel's generated
 * ones.
 */
export {
  decodeToolCall,
  deserializeChunk,
  deserializeOrder,
  encodeToolCall,
  serializeChunk,
  serializeOrder,
} from './codec.js';
export { protoPath } from './schema.js';
