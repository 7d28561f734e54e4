// The delivery messages, in one place: the generated protobuf types of `Chunk` and `Order`, and
// what an in-process link does instead of encoding and decoding them. Swapping the codec means
// changing this file only.
import type { Chunk, Chunk__Output } from '../generated/mcpcluster/v1/Chunk.js';
import type { Order, Order__Output } from '../generated/mcpcluster/v1/Order.js';

export type { Chunk, Order };
/** A chunk as the ingress receives it: every field present, `body` naming the one that is set. */
export type ChunkReceived = Chunk__Output;
/** An order as a worker receives it: every field present, `body` naming the one that is set. */
export type OrderReceived = Order__Output;

type Wide = number | string | { toNumber(): number } | null | undefined;

function num(value: Wide): number {
  if (value === null || value === undefined) return 0;
  return typeof value === 'object' ? value.toNumber() : Number(value);
}

/**
 * The chunk a sender wrote, as the receiving end of a wire would decode it (proto3 defaults,
 * `oneofs: true`): what an in-process link hands the ingress instead of bytes.
 */
export function receivedChunk(chunk: Chunk): ChunkReceived {
  const t = chunk.timing;
  const out: ChunkReceived = {
    callId: chunk.callId ?? '',
    attempt: chunk.attempt ?? 0,
    timing: t
      ? {
          queueWaitMs: num(t.queueWaitMs),
          backendMs: num(t.backendMs),
          batchWaitMs: num(t.batchWaitMs),
          sentUnixMs: num(t.sentUnixMs),
        }
      : null,
  };
  if (chunk.accepted) {
    out.accepted = { workerId: chunk.accepted.workerId ?? '' };
    out.body = 'accepted';
  } else if (chunk.progress) {
    const p = chunk.progress;
    out.progress = { progress: num(p.progress), total: num(p.total), message: p.message ?? '' };
    out.body = 'progress';
  } else if (chunk.partial) {
    out.partial = { textDelta: chunk.partial.textDelta ?? '' };
    out.body = 'partial';
  } else if (chunk.final) {
    out.final = { resultJson: chunk.final.resultJson ?? '' };
    out.body = 'final';
  } else if (chunk.error) {
    out.error = { code: chunk.error.code ?? '', message: chunk.error.message ?? '' };
    out.body = 'error';
  }
  return out;
}

/** The order an ingress wrote, as a worker's end of a wire would decode it; see {@link receivedChunk}. */
export function receivedOrder(order: Order): OrderReceived {
  const out: OrderReceived = { callId: order.callId ?? '' };
  if (order.delivered) {
    out.delivered = { known: order.delivered.known ?? false };
    out.body = 'delivered';
  } else if (order.cancel) {
    out.cancel = { reason: order.cancel.reason ?? '' };
    out.body = 'cancel';
  }
  return out;
}
