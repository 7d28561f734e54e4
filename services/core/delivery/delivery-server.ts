import * as grpc from '@grpc/grpc-js';
import { ClusterError } from '../errors.js';
import type { Chunk, Order } from '../generated/mcp_cluster.js';
import { clusterMetrics } from '../metrics.js';
import { CHANNEL_OPTIONS, deliveryProto } from './grpc.js';

/** The ingress end of one worker's delivery stream; orders for that worker's calls go here. */
export interface WorkerLink {
  /** Sends an order (delivered acknowledgement or cancel). Dropped when the stream is closed. */
  send(order: Order): void;
  readonly closed: boolean;
}

/** What the ingress does with chunks arriving from workers. */
export type ChunkHandler = (chunk: Chunk, link: WorkerLink) => void;

/** A running Delivery server. */
export interface DeliveryServer {
  /** `host:port` the server is bound to. */
  readonly address: string;
  readonly port: number;
  /** Stops accepting streams and ends open ones after `graceMs`. */
  close(graceMs?: number): Promise<void>;
}

/**
 * Serves `Delivery.Connect` on `host:port` (port 0 picks a free port). Every chunk of every
 * stream goes to `onChunk` with the link to answer on.
 */
export async function startDeliveryServer(options: {
  host: string;
  port: number;
  onChunk: ChunkHandler;
  onLinkClosed?: (link: WorkerLink) => void;
}): Promise<DeliveryServer> {
  const proto = deliveryProto();
  const server = new grpc.Server(CHANNEL_OPTIONS);
  const metrics = clusterMetrics();
  server.addService(proto.Delivery.service, {
    Connect: (stream: grpc.ServerDuplexStream<Chunk, Order>) => {
      let closed = false;
      const link: WorkerLink = {
        send: (order) => {
          if (!closed) stream.write(order);
        },
        get closed() {
          return closed;
        },
      };
      metrics.deliveryStreams.inc({ side: 'ingress' });
      const finish = () => {
        if (closed) return;
        closed = true;
        metrics.deliveryStreams.dec({ side: 'ingress' });
        options.onLinkClosed?.(link);
      };
      stream.on('data', (chunk: Chunk) => options.onChunk(chunk, link));
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
    address: `${options.host}:${port}`,
    port,
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
