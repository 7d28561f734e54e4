import type * as grpc from '@grpc/grpc-js';

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
