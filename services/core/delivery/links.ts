import { clusterMetrics } from '../metrics.js';
import type {
  CallSignal,
  DeliveryChannel,
  DeliveryClient,
  DeliveryClientOptions,
  WorkerLink,
} from './delivery.js';
import type { Chunk, Order, OrderReceived } from './messages.js';

// What every delivery transport does the same way around its own wire: the worker end's watchers
// and `lost` signal, the ingress end's closed flag, one link per address with reopening, and the
// `mcp_cluster_delivery_streams` gauge. A transport supplies how bytes (or objects) move.

/** How a worker's channel reaches its wire. */
export interface ChannelWire {
  /** Writes a chunk; only called while the link is whole. */
  write(chunk: Chunk): void;
  /** Ends the link and frees what it holds; called once, when the link closes or breaks. */
  end(): void;
}

/**
 * The worker end of one link. The transport passes each order it receives to `receive` and calls
 * `lose` when its wire breaks; every watcher then hears `lost` once.
 */
export class WorkerChannel implements DeliveryChannel {
  private readonly watchers = new Map<string, Set<(signal: CallSignal) => void>>();
  private broken = false;

  /** @param onBroken called once when the link closes or breaks (the client forgets it). */
  constructor(
    readonly address: string,
    private readonly wire: ChannelWire,
    private readonly onBroken: () => void,
  ) {
    clusterMetrics().deliveryStreams.inc({ side: 'worker' });
  }

  get isBroken(): boolean {
    return this.broken;
  }

  send(chunk: Chunk): boolean {
    if (this.broken) return false;
    this.wire.write(chunk);
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

  /** An order arrived: it goes to the watchers of its call. */
  receive(order: OrderReceived): void {
    const listeners = this.watchers.get(order.callId);
    if (listeners) for (const l of [...listeners]) l({ kind: 'order', order });
  }

  /** The link broke (or was closed here): every watcher hears `lost`. */
  lose(): void {
    if (this.broken) return;
    this.broken = true;
    clusterMetrics().deliveryStreams.dec({ side: 'worker' });
    this.onBroken();
    for (const set of this.watchers.values()) for (const l of [...set]) l({ kind: 'lost' });
    this.watchers.clear();
    this.wire.end();
  }
}

/** The ingress end of one worker's link. The transport calls `finish` once the link is gone. */
export class IngressLink implements WorkerLink {
  private ended = false;

  constructor(
    private readonly write: (order: Order) => void,
    private readonly onClosed: ((link: WorkerLink) => void) | undefined,
  ) {
    clusterMetrics().deliveryStreams.inc({ side: 'ingress' });
  }

  get closed(): boolean {
    return this.ended;
  }

  send(order: Order): void {
    if (!this.ended) this.write(order);
  }

  /** The link closed or broke; tells the ingress once. */
  finish(): void {
    if (this.ended) return;
    this.ended = true;
    clusterMetrics().deliveryStreams.dec({ side: 'ingress' });
    this.onClosed?.(this);
  }
}

/**
 * Opens a link to `address` within `connectTimeoutMs`, or rejects with
 * `ClusterError('UNDELIVERABLE')`. The channel it makes must call `onBroken` when it breaks.
 */
export type OpenChannel = (
  address: string,
  connectTimeoutMs: number,
  onBroken: () => void,
) => Promise<WorkerChannel>;

/**
 * A {@link DeliveryClient} over any transport: one link per address, shared by every call for it,
 * forgotten when it breaks so the next call opens a new one.
 */
export class DeliveryChannels implements DeliveryClient {
  private readonly channels = new Map<string, Promise<WorkerChannel>>();

  constructor(
    private readonly options: DeliveryClientOptions,
    private readonly open: OpenChannel,
  ) {}

  channel(address: string): Promise<DeliveryChannel> {
    const current = this.channels.get(address);
    if (current !== undefined) return current;
    const { connectTimeoutMs } = this.options;
    const opening: Promise<WorkerChannel> = this.open(address, connectTimeoutMs, () => {
      if (this.channels.get(address) === opening) this.channels.delete(address);
    });
    this.channels.set(address, opening);
    // A replica that could not be reached stays failed for one more timeout: the calls that
    // follow for it are dropped at once instead of each holding a slot for the full timeout.
    opening.catch(() => {
      setTimeout(() => {
        if (this.channels.get(address) === opening) this.channels.delete(address);
      }, connectTimeoutMs).unref();
    });
    return opening;
  }

  async close(): Promise<void> {
    const all = [...this.channels.values()];
    this.channels.clear();
    for (const pending of all) {
      try {
        (await pending).lose();
      } catch {
        // A channel that never opened has nothing to close.
      }
    }
  }
}
