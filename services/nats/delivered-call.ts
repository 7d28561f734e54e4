import type { Priority, QueuedCall, ToolCall } from '../core/index.js';
import type { NatsLink } from './connection.js';
import type { DeadLetters } from './dead-letters.js';
import type { PulledMessage } from './pulled-message.js';

/** What settling a delivered call needs from the consumer that pulled it; one per consumer. */
export interface DeliveredCallContext {
  link: NatsLink;
  deadLetters: DeadLetters;
  /** Drops the enqueue receipt of a settled call. */
  forget(callId: string): void;
  pool: string;
  /** How long the call may go unsettled before the server redelivers it, in milliseconds. */
  ackWaitMs: number;
  /** Deliveries after which a call is dead-lettered instead of given back. */
  maxDeliveries: number;
  /**
   * A call was settled, abandoned or its ack wait ran out: its slot is free. Called once per call,
   * with the call's `abandon`.
   */
  released(abandon: () => void): void;
  /** A call of `priority` will be delivered again in `afterMs` milliseconds (a nack, an expired ack wait). */
  dueAgain(priority: Priority, afterMs: number): void;
}

/**
 * A delivered message as the `QueuedCall` a handler settles exactly once: ack (confirmed by the
 * server), nack (after an optional delay; dead-lettered on the last delivery), inProgress (restarts
 * the ack wait) or term. A local timer mirrors the server's ack wait, so the slot is freed when the
 * server gives the message to someone else. `abandon` frees the slot without telling the server
 * (the consumer's close: the server redelivers after the ack wait).
 */
export function deliveredCall(
  m: PulledMessage,
  call: ToolCall,
  priority: Priority,
  ctx: DeliveredCallContext,
): { message: QueuedCall; abandon: () => void } {
  const { link, deadLetters } = ctx;
  const deliveries = call.attempt;
  const lastDelivery = deliveries >= ctx.maxDeliveries;
  let settled = false;
  let timer: NodeJS.Timeout | undefined;

  const release = (): boolean => {
    if (settled) return false;
    settled = true;
    clearTimeout(timer);
    ctx.released(abandon);
    return true;
  };
  const abandon = () => void release();
  const expire = () => {
    if (!release()) return;
    if (lastDelivery) {
      void deadLetters.deadLetter(
        m,
        ctx.pool,
        call.callId,
        `ack wait expired on delivery ${deliveries}`,
        true,
      );
    } else {
      // The server redelivers it now; pull it back (here or elsewhere) without waiting for a probe.
      ctx.dueAgain(priority, 0);
    }
  };
  const arm = () => {
    timer = setTimeout(expire, ctx.ackWaitMs);
    timer.unref();
  };

  const message: QueuedCall = {
    call,
    ack: async () => {
      if (!release()) return;
      ctx.forget(call.callId);
      await link.confirm('ack', call.callId, () => m.ackConfirmed(link.requests));
    },
    nack: async (delayMs = 0) => {
      if (!release()) return;
      if (lastDelivery) {
        ctx.forget(call.callId);
        await deadLetters.deadLetter(m, ctx.pool, call.callId, `nacked on delivery ${deliveries}`, false);
        return;
      }
      ctx.dueAgain(priority, Math.max(0, delayMs));
      await link.confirm('nack', call.callId, () => {
        m.nak(Math.max(0, delayMs));
        return link.flush();
      });
    },
    inProgress: async () => {
      if (settled) return;
      clearTimeout(timer);
      arm();
      await link.confirm('inProgress', call.callId, () => {
        m.working();
        return link.flush();
      });
    },
    term: async (reason: string) => {
      if (!release()) return;
      ctx.forget(call.callId);
      await link.confirm('term', call.callId, () => {
        deadLetters.terminate(m, reason);
        return link.flush();
      });
    },
  };
  arm();
  return { message, abandon };
}
