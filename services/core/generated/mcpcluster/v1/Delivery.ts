// Original file: proto/mcp_cluster.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { Chunk as _mcpcluster_v1_Chunk, Chunk__Output as _mcpcluster_v1_Chunk__Output } from '../../mcpcluster/v1/Chunk.js';
import type { Order as _mcpcluster_v1_Order, Order__Output as _mcpcluster_v1_Order__Output } from '../../mcpcluster/v1/Order.js';

/**
 * Served by every ingress replica. A worker opens one long-lived Connect stream per
 * replica and multiplexes the chunks of all calls it runs for that replica on it.
 */
export interface DeliveryClient extends grpc.Client {
  Connect(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_mcpcluster_v1_Chunk, _mcpcluster_v1_Order__Output>;
  Connect(options?: grpc.CallOptions): grpc.ClientDuplexStream<_mcpcluster_v1_Chunk, _mcpcluster_v1_Order__Output>;
  connect(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_mcpcluster_v1_Chunk, _mcpcluster_v1_Order__Output>;
  connect(options?: grpc.CallOptions): grpc.ClientDuplexStream<_mcpcluster_v1_Chunk, _mcpcluster_v1_Order__Output>;
  
}

/**
 * Served by every ingress replica. A worker opens one long-lived Connect stream per
 * replica and multiplexes the chunks of all calls it runs for that replica on it.
 */
export interface DeliveryHandlers extends grpc.UntypedServiceImplementation {
  Connect: grpc.handleBidiStreamingCall<_mcpcluster_v1_Chunk__Output, _mcpcluster_v1_Order>;
  
}

export interface DeliveryDefinition extends grpc.ServiceDefinition {
  Connect: MethodDefinition<_mcpcluster_v1_Chunk, _mcpcluster_v1_Order, _mcpcluster_v1_Chunk__Output, _mcpcluster_v1_Order__Output>
}
