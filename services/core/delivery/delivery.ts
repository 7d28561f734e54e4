import type { Chunk, ChunkReceived, Order, OrderReceived } from './messages.js';

// The Delivery contract: how workers stream a call's chunks back to the ingress replica that owns
// the call, and how that replica answers with orders. Transport-free; the in-process linked pair
// (./in-process.ts) and gRPC (services/grpc) implement it, and the composition root picks one.
//
// One link joins one worker to one ingress replica and carries the chunks of every call that
// worker runs for that replica. Chunks of one call arrive in the order they were sent; orders
// about one call likewise. Nothing is retried: a chunk written to a link that breaks may be lost,
// which the worker learns as `lost` and the queue's redelivery covers.

/** The ingress end of one worker's link; orders for that worker's calls go here. */
export interface WorkerLink {
  /** Sends an order (delivered acknowledgement or cancel). Dropped when the link is closed. */
  send(order: Order): void;
  readonly closed: boolean;
}

/** What the ingress does with each chunk arriving from workers: `link` is where to answer. */
export type ChunkHandler = (chunk: ChunkReceived, link: WorkerLink) => void;

/** What the ingress side serves: every chunk, and the end of every link. */
export interface ServeOptions {
  onChunk: ChunkHandler;
  /** A worker's link closed or broke; calls it carried will be redelivered by the queue. */
  onLinkClosed?: (link: WorkerLink) => void;
  /**
   * Where to listen, in the transport's address form (gRPC `host:port`, in-process
   * `inproc:name`). Default: the transport's own choice (gRPC: the host and port it was made
   * with; in-process: a fresh name). Serving again at a closed server's address brings it back.
   */
  listen?: string;
}

/** A running ingress side of delivery. */
export interface DeliveryServer {
  /** The address workers reach this server at; the ingress puts it in `ToolCall.replyTo`. */
  readonly address: string;
  /**
   * Stops taking new links at once, waits up to `graceMs` (default 1000) for the open ones to be
   * closed by their workers, then breaks the rest (their workers see `lost`).
   */
  close(graceMs?: number): Promise<void>;
}

/** What a worker hears about one call from its owning ingress. */
export type CallSignal =
  | { kind: 'order'; order: OrderReceived }
  /** The link to the owning replica broke: the caller is gone with it. */
  | { kind: 'lost' };

/** The worker end of one link to one ingress replica, shared by all calls for that replica. */
export interface DeliveryChannel {
  readonly address: string;
  /** Sends a chunk; returns false when the link is already broken. */
  send(chunk: Chunk): boolean;
  /**
   * Listens for orders about `callId` and for the link breaking (then `lost`, at most once, also
   * when the link was already broken); returns the unsubscribe.
   */
  watch(callId: string, listener: (signal: CallSignal) => void): () => void;
}

/** Options of a worker's delivery client. */
export interface DeliveryClientOptions {
  /**
   * How long `channel()` tries to reach a replica before failing with
   * `ClusterError('UNDELIVERABLE')`, in milliseconds. An address that failed stays failed for
   * one more such period, so the calls that follow for it are dropped at once.
   */
  connectTimeoutMs: number;
}

/**
 * The worker side of delivery: one long-lived link per ingress address, multiplexing every call's
 * chunks. A link that broke is opened again for the next call to that address.
 */
export interface DeliveryClient {
  /**
   * The open channel to `address` (an ingress's `ToolCall.replyTo`), connecting first when
   * needed. Rejects with `ClusterError('UNDELIVERABLE')` when the address cannot be reached.
   */
  channel(address: string): Promise<DeliveryChannel>;
  /** Ends every link; watchers of calls still running hear `lost`. */
  close(): Promise<void>;
}

/** One way of carrying delivery: serves the ingress side and makes worker-side clients. */
export interface DeliveryTransport {
  /** For logs: `in-process`, `grpc`. */
  readonly kind: string;
  /** Starts an ingress side of delivery; rejects with INVALID_CONFIG when it cannot listen. */
  serve(options: ServeOptions): Promise<DeliveryServer>;
  client(options: DeliveryClientOptions): DeliveryClient;
}
