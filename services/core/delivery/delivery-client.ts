import * as grpc from '@grpc/grpc-js';
import { ClusterError } from '../errors.js';
import type { Chunk, Order } from '../generated/mcp_cluster.js';
import { clusterMetrics } from '../metrics.js';
import { CHANNEL_OPTIONS, deliveryProto, type GrpcDeliveryClient } from './grpc.js';

/** What a worker hears about one call from its owning ingress. */
export type CallSignal =
  | { kind: 'order'; order: Order }
  /** The stream to the owning replica broke: the caller is gone with it. */
  | { kind: 'lost' };

/** The worker end of one stream to one ingress replica, shared by all calls for that replica. */
export interface DeliveryChannel {
  readonly address: string;
  /** Sends a chunk; returns false when the stream is already broken. */
  send(chunk: Chunk): boolean;
  /** Listens for orders about `callId` (and for the stream breaking); returns the unsubscribe. */
  watch(callId: string, listener: (signal: CallSignal) => void): () => void;
}

/**
 * Keeps one long-lived `Delivery.Connect` stream per ingress replica and multiplexes every
 * call's chunks on it. A stream that breaks is reopened on the next call for that replica.
 */
export class DeliveryClient {
  private readonly channels = new Map<string, Promise<Channel>>();

  /**
   * @param connectTimeoutMs how long `channel()` tries to reach a replica before giving up
   *   with `ClusterError('UNDELIVERABLE')`.
   */
  constructor(private readonly connectTimeoutMs: number) {}

  /** The open channel to `address` (`host:port`), connecting first when needed. */
  channel(address: string): Promise<DeliveryChannel> {
    let pending = this.channels.get(address);
    if (!pending) {
      const opening = Channel.open(address, this.connectTimeoutMs, () => this.channels.delete(address));
      pending = opening;
      this.channels.set(address, opening);
      // A replica that could not be reached stays failed for one more timeout: the calls that
      // follow for it are dropped at once instead of each holding a slot for the full timeout.
      opening.catch(() => {
        setTimeout(() => {
          if (this.channels.get(address) === opening) this.channels.delete(address);
        }, this.connectTimeoutMs).unref();
      });
    }
    return pending;
  }

  /** Ends every stream. */
  async close(): Promise<void> {
    const all = [...this.channels.values()];
    this.channels.clear();
    for (const pending of all) {
      try {
        (await pending).close();
      } catch {
        // A channel that never opened has nothing to close.
      }
    }
  }
}

class Channel implements DeliveryChannel {
  private readonly watchers = new Map<string, Set<(signal: CallSignal) => void>>();
  private broken = false;

  private constructor(
    readonly address: string,
    private readonly client: GrpcDeliveryClient,
    private readonly stream: grpc.ClientDuplexStream<Chunk, Order>,
    private readonly onBroken: () => void,
  ) {
    clusterMetrics().deliveryStreams.inc({ side: 'worker' });
    stream.on('data', (order: Order) => {
      const listeners = this.watchers.get(order.callId);
      if (listeners) for (const l of [...listeners]) l({ kind: 'order', order });
    });
    const lose = () => this.lose();
    stream.on('error', lose);
    stream.on('end', lose);
    stream.on('close', lose);
  }

  static async open(address: string, connectTimeoutMs: number, onBroken: () => void): Promise<Channel> {
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
              {
                cause: err,
              },
            ),
          );
        } else {
          resolve();
        }
      });
    });
    return new Channel(address, client, client.Connect(), onBroken);
  }

  send(chunk: Chunk): boolean {
    if (this.broken) return false;
    this.stream.write(chunk);
    return true;
  }

  watch(callId: string, listener: (signal: CallSignal) => void): () => void {
    if (this.broken) {
      queueMicrotask(() => listener({ kind: 'lost' }));
      return () => {};
    }
    let set = this.watchers.get(callId);
    if (!set) {
      set = new Set();
      this.watchers.set(callId, set);
    }
    set.add(listener);
    return () => {
      const current = this.watchers.get(callId);
      if (!current) return;
      current.delete(listener);
      if (current.size === 0) this.watchers.delete(callId);
    };
  }

  private lose(): void {
    if (this.broken) return;
    this.broken = true;
    clusterMetrics().deliveryStreams.dec({ side: 'worker' });
    this.onBroken();
    for (const set of this.watchers.values()) for (const l of [...set]) l({ kind: 'lost' });
    this.watchers.clear();
    this.client.close();
  }

  close(): void {
    this.stream.end();
    this.lose();
  }
}
