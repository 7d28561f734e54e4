import * as grpc from '@grpc/grpc-js';
import {
  type ChunkReceived,
  ClusterError,
  type DeliveryServer,
  IngressLink,
  type Order,
  type ServeOptions,
} from '../core/index.js';
import { CHANNEL_OPTIONS } from './options.js';
import { deliveryProto } from './proto.js';

/**
 * Serves `Delivery.Connect` on `host:port` (port 0 picks a free port). Every chunk of every
 * stream goes to `onChunk` with the link to answer on. `advertise`, when set, is the address
 * workers are told instead of the bound one (e.g. a pod's DNS name).
 */
export async function serveGrpc(
  options: ServeOptions & { host: string; port: number; advertise?: string },
): Promise<DeliveryServer> {
  const proto = deliveryProto();
  const server = new grpc.Server(CHANNEL_OPTIONS);
  server.addService(proto.Delivery.service, {
    Connect: (stream: grpc.ServerDuplexStream<ChunkReceived, Order>) => {
      const link = new IngressLink((order) => stream.write(order), options.onLinkClosed);
      const finish = () => link.finish();
      stream.on('data', (chunk: ChunkReceived) => options.onChunk(chunk, link));
      stream.on('end', () => {
        stream.end();
        finish();
      });
      stream.on('error', finish);
      stream.on('close', finish);
    },
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(
      `${options.host}:${options.port}`,
      grpc.ServerCredentials.createInsecure(),
      (err, bound) => {
        if (err) {
          reject(
            new ClusterError(
              'INVALID_CONFIG',
              `cannot bind delivery server on ${options.host}:${options.port}: ${err.message}`,
              { cause: err },
            ),
          );
        } else {
          resolve(bound);
        }
      },
    );
  });
  return {
    address: options.advertise || `${options.host}:${port}`,
    close: (graceMs = 1000) =>
      new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      }),
  };
}
