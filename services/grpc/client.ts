import * as grpc from '@grpc/grpc-js';
import { type Chunk, ClusterError, type OrderReceived, WorkerChannel } from '../core/index.js';
import { CHANNEL_OPTIONS } from './options.js';
import { deliveryProto } from './proto.js';

/**
 * Opens one `Delivery.Connect` stream to the replica at `address` (`host:port`), waiting up to
 * `connectTimeoutMs` for it to be reachable; UNDELIVERABLE otherwise.
 */
export async function openGrpcChannel(
  address: string,
  connectTimeoutMs: number,
  onBroken: () => void,
): Promise<WorkerChannel> {
  const proto = deliveryProto();
  const client = new proto.Delivery(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  await new Promise<void>((resolve, reject) => {
    client.waitForReady(Date.now() + connectTimeoutMs, (err) => {
      if (err) {
        client.close();
        reject(
          new ClusterError(
            'UNDELIVERABLE',
            `ingress replica ${address} unreachable for ${connectTimeoutMs} ms: ${err.message}`,
            { cause: err },
          ),
        );
      } else {
        resolve();
      }
    });
  });
  const stream: grpc.ClientDuplexStream<Chunk, OrderReceived> = client.Connect();
  const channel = new WorkerChannel(
    address,
    {
      write: (chunk) => stream.write(chunk),
      end: () => {
        stream.end();
        client.close();
      },
    },
    onBroken,
  );
  stream.on('data', (order: OrderReceived) => channel.receive(order));
  const lose = () => channel.lose();
  stream.on('error', lose);
  stream.on('end', lose);
  stream.on('close', lose);
  return channel;
}
