// The delivery messages, in one place: the generated types of `Chunk` and `Order`, and what an
// in-process link does instead of encoding and decoding them.
import type { Chunk, Order } from '../generated/mcp_cluster.js';

export type { Chunk, Order };
/** A chunk as the ingress receives it: `body` names the member that is set. */
export type ChunkReceived = Chunk;
/** An order as a worker receives it: `body` names the member that is set. */
export type OrderReceived = Order;

/**
 * The chunk a sender wrote as the receiving end of a wire sees it: `body` names the member that
 * is set, as the protobuf decoder reports a oneof. What an in-process link hands the ingress
 * instead of bytes; the members themselves are passed as they are, not copied.
 */
export function receivedChunk(chunk: Chunk): ChunkReceived {
  const body = chunk.accepted
    ? 'accepted'
    : chunk.progress
      ? 'progress'
      : chunk.partial
        ? 'partial'
        : chunk.final
          ? 'final'
          : chunk.error
            ? 'error'
            : chunk.log
              ? 'log'
              : undefined;
  return { ...chunk, timing: chunk.timing ?? null, body };
}

/** The order an ingress wrote, as a worker's end of a wire sees it; see {@link receivedChunk}. */
export function receivedOrder(order: Order): OrderReceived {
  const body = order.delivered ? 'delivered' : order.cancel ? 'cancel' : undefined;
  return { ...order, body };
}
