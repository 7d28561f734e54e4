import type { Redis } from 'ioredis';
import {
  type CancelBus,
  type CancelOrder,
  ClusterError,
  encodeCancelOrder,
  messageOf,
  parseCancelOrder,
  withTimeout,
} from '../core/index.js';
import { logEvent } from './log.js';
import { COMMAND_TIMEOUT_MS, connectOrFail, createClient } from './redis-connection.js';

/**
 * Cancel orders on the Redis pub/sub channel `<namespace>:cancels`: published on the producer
 * connection, received on a dedicated subscriber connection opened by the first `subscribe`.
 */
export class RedisCancelBus implements CancelBus {
  private readonly listeners = new Set<(order: CancelOrder) => void>();
  private subscriber?: Promise<Redis>;

  constructor(
    private readonly url: string,
    private readonly channel: string,
    private readonly publisher: Redis,
  ) {}

  async publish(order: CancelOrder): Promise<void> {
    try {
      await withTimeout(this.publisher.publish(this.channel, encodeCancelOrder(order)), COMMAND_TIMEOUT_MS);
    } catch (err) {
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `Redis at ${this.url} did not take a cancel order: ${messageOf(err)}`,
        { cause: err },
      );
    }
  }

  async subscribe(listener: (order: CancelOrder) => void): Promise<() => void> {
    this.subscriber ??= this.connectSubscriber();
    try {
      await this.subscriber;
    } catch (err) {
      this.subscriber = undefined;
      throw err;
    }
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  private async connectSubscriber(): Promise<Redis> {
    const client = createClient(this.url, 'subscriber', { maxRetriesPerRequest: null });
    await connectOrFail(client, this.url);
    client.on('message', (channel: string, text: string) => {
      if (channel !== this.channel) return;
      const order = parseCancelOrder(text);
      if (!order) {
        logEvent('warn', 'bad_cancel_order', { channel });
        return;
      }
      for (const listener of this.listeners) {
        try {
          listener(order);
        } catch (err) {
          logEvent('error', 'cancel_listener_threw', { error: messageOf(err) });
        }
      }
    });
    // Resolves once Redis confirmed the subscription; ioredis re-subscribes after reconnects.
    await client.subscribe(this.channel);
    return client;
  }

  async close(): Promise<void> {
    this.listeners.clear();
    const subscriber = this.subscriber;
    this.subscriber = undefined;
    if (!subscriber) return;
    const client = await subscriber.catch(() => undefined);
    client?.disconnect();
  }
}
