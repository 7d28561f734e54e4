import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath } from '../envelope.js';
import type { ProtoGrpcType } from '../generated/mcp_cluster.js';

/** Loader options; they must match the flags `proto/gen.sh` generates the types with. */
const LOADER_OPTIONS: protoLoader.Options = {
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

let loaded: ProtoGrpcType | undefined;

/** The Delivery service definition and client constructor, loaded once per process. */
export function deliveryProto(): ProtoGrpcType['mcpcluster']['v1'] {
  loaded ??= grpc.loadPackageDefinition(
    protoLoader.loadSync(protoPath(), LOADER_OPTIONS),
  ) as unknown as ProtoGrpcType;
  return loaded.mcpcluster.v1;
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
