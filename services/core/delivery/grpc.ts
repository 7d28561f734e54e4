import * as grpc from '@grpc/grpc-js';
import { deserializeChunk, deserializeOrder, serializeChunk, serializeOrder } from '../../protobuf/index.js';
import type { Chunk, Order } from '../generated/mcp_cluster.js';

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

/**
 * Channel options for both sides: keepalive pings find a dead peer (a replica killed without
 * closing its sockets) within seconds instead of waiting for TCP timeouts.
 */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 5_000,
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
  'grpc.max_send_message_length': 64 * 1024 * 1024,
};
