import * as grpc from '@grpc/grpc-js';
import type { Chunk, Order } from '../core/index.js';
import { deserializeChunk, deserializeOrder, serializeChunk, serializeOrder } from '../protobuf/index.js';

// Where the Delivery service definition comes from: the protobuf codec's serializers for the
// messages of `service Delivery`. The only file of this folder that knows how.

/**
 * `service Delivery` of `proto/mcp_cluster.proto`, by hand: one bidirectional stream method whose
 * messages the protobuf codec turns into bytes and back (no second protobuf runtime).
 */
const DELIVERY_SERVICE = {
  Connect: {
    path: '/mcpcluster.v1.Delivery/Connect',
    requestStream: true,
    responseStream: true,
    requestSerialize: serializeChunk,
    requestDeserialize: deserializeChunk,
    responseSerialize: serializeOrder,
    responseDeserialize: deserializeOrder,
  },
} satisfies grpc.ServiceDefinition;

/** A client of one ingress replica's Delivery service. */
export interface GrpcDeliveryClient extends grpc.Client {
  Connect(): grpc.ClientDuplexStream<Chunk, Order>;
}

/** The Delivery service: its definition (`.service`) and a client constructor. */
export interface DeliveryService {
  Delivery: (new (
    address: string,
    credentials: grpc.ChannelCredentials,
    options?: grpc.ChannelOptions,
  ) => GrpcDeliveryClient) & { service: grpc.ServiceDefinition };
}

let made: DeliveryService | undefined;

/** The Delivery service definition and client constructor, made once per process. */
export function deliveryProto(): DeliveryService {
  made ??= {
    Delivery: grpc.makeGenericClientConstructor(
      DELIVERY_SERVICE,
      'Delivery',
    ) as unknown as DeliveryService['Delivery'],
  };
  return made;
}
