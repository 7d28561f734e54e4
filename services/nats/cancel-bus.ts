import type { Subscription } from '@nats-io/transport-node';
import {
  type CancelBus,
  type CancelOrder,
  ClusterError,
  encodeCancelOrder,
  messageOf,
  parseCancelOrder,
  withTimeout,
} from '../core/index.js';
import { API_TIMEOUT_MS, logEvent, type NatsLink, RECONNECT_GRACE_MS } from './connection.js';

/** Cancel orders on the core subject `<ns>.cancels`: at-most-once, to every subscribed replica. */
export class NatsCancelBus implements CancelBus {
  private readonly subscriptions = new Set<Subscription>();

  constructor(
    private readonly link: NatsLink,
    private readonly subject: string,
  ) {}

  async publish(order: CancelOrder): Promise<void> {
    const { nc } = this.link;
    try {
      await this.link.awaitConnected(RECONNECT_GRACE_MS);
      nc.publish(this.subject, encodeCancelOrder(order));
      await withTimeout(nc.flush(), API_TIMEOUT_MS);
    } catch (err) {
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `NATS at ${this.link.url} did not take a cancel order: ${messageOf(err)}`,
        { cause: err },
      );
    }
  }

  async subscribe(listener: (order: CancelOrder) => void): Promise<() => void> {
    const sub = this.link.nc.subscribe(this.subject, {
      callback: (err, msg) => {
        if (err) return;
        const order = parseCancelOrder(msg.string());
        if (!order) {
          logEvent('warn', 'bad_cancel_order', { subject: this.subject });
          return;
        }
        try {
          listener(order);
        } catch (listenerErr) {
          logEvent('error', 'cancel_listener_threw', { error: messageOf(listenerErr) });
        }
      },
    });
    this.subscriptions.add(sub);
    // Orders published after subscribe() resolves must reach this listener; while disconnected
    // the client re-subscribes on reconnect, so a failed flush is not an error here.
    await this.link.flushQuietly();
    return () => {
      this.subscriptions.delete(sub);
      sub.unsubscribe();
    };
  }

  async close(): Promise<void> {
    for (const sub of this.subscriptions) sub.unsubscribe();
    this.subscriptions.clear();
  }
}
