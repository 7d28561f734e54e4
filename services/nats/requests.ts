import { performance } from 'node:perf_hooks';
import { type ApiError, JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import {
  createInbox,
  headers,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type Subscription,
} from '@nats-io/transport-node';

const decoder = new TextDecoder();

/** No reply came within the timeout. Named like the client's own, so callers tell it apart the same way. */
export class RequestTimeoutError extends Error {
  constructor(subject: string, timeoutMs: number) {
    super(`no reply within ${timeoutMs} ms to a request on ${subject}`);
    this.name = 'TimeoutError';
  }
}

/**
 * The server answered that nothing listens on the subject (an empty reply with status 503). For a
 * publish to a stream subject: no stream takes it (the broker lost its store) or JetStream is off.
 */
export class NoRespondersError extends Error {
  constructor(subject: string) {
    super(`nothing listens on ${subject} (no stream takes it, or JetStream is off)`);
    this.name = 'NoRespondersError';
  }
}

/** What JetStream answers a publish with: where the message was stored, or that it was already. */
export interface PubAck {
  stream: string;
  /** The message's sequence in the stream (the original one for a duplicate). */
  seq: number;
  /** The stream already had a message with this `Nats-Msg-Id` within its duplicate window. */
  duplicate: boolean;
}

interface Waiter {
  resolve(msg: Msg): void;
  reject(err: Error): void;
  subject: string;
  /** `performance.now()` at which the request times out. */
  deadline: number;
}

/**
 * Request/reply for the call path (each enqueue's publish with its PubAck, each confirmed ack),
 * without the client's per-request machinery: the client builds a RequestError with a stack trace
 * for every request it completes, plus a deferred, a timer and a mux entry; here a request is one
 * publish with a reply subject, one Map entry and one promise, and no Error exists unless it fails.
 *
 * All replies arrive on one subscription, `<inbox>.*`, each request on its own token. The client
 * re-subscribes it after a reconnect; a request whose reply was lost in a disconnect times out.
 * Timeouts are swept by one timer: every request here has the same timeout, so the Map's insertion
 * order is the order of the deadlines, and the timer is armed for the oldest waiting request (on
 * firing it rejects what is due and re-arms for the next oldest). A request therefore rejects at
 * its deadline (give or take the event loop's timer lag), and a busy connection fires the timer
 * about once per timeout, not once per request. When the connection closes (or drains), waiting
 * requests reject and later ones are refused.
 */
export class Requests {
  private readonly prefix: string;
  private readonly waiting = new Map<string, Waiter>();
  private readonly sub: Subscription;
  private next = 0;
  private sweeper: NodeJS.Timeout | undefined;
  private closedWith: Error | undefined;

  /** `timeoutMs`: how long every request waits for its reply, in milliseconds. */
  constructor(
    private readonly nc: NatsConnection,
    readonly timeoutMs: number,
  ) {
    this.prefix = `${createInbox()}.`;
    this.sub = nc.subscribe(`${this.prefix}*`, {
      callback: (err, msg) => {
        if (err) this.failAll(err);
        else this.onReply(msg);
      },
    });
    void this.sub.closed.then(
      () => this.close(new Error('the NATS connection closed')),
      (err: unknown) => this.close(err instanceof Error ? err : new Error(String(err))),
    );
  }

  /** How many requests wait for their reply. */
  get pending(): number {
    return this.waiting.size;
  }

  /**
   * Publishes `data` on `subject` with a reply subject of ours and resolves with the reply. Rejects
   * with {@link RequestTimeoutError} after `timeoutMs`, {@link NoRespondersError} when nothing
   * listens on `subject`, or the client's error when the publish cannot be sent (closed connection).
   */
  request(subject: string, data: Uint8Array, hdrs?: MsgHdrs): Promise<Msg> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const reply = this.prefix + (this.next++).toString(36);
    try {
      this.nc.publish(subject, data, hdrs ? { reply, headers: hdrs } : { reply });
    } catch (err) {
      return Promise.reject(err);
    }
    // The reply cannot arrive before this tick ends (it is read from the socket later).
    return new Promise<Msg>((resolve, reject) => {
      this.waiting.set(reply, { resolve, reject, subject, deadline: performance.now() + this.timeoutMs });
      this.sweeper ??= this.arm(this.timeoutMs);
    });
  }

  /**
   * Publishes to a stream subject with `msgId` as `Nats-Msg-Id` (JetStream drops a second message
   * with the same id within the stream's duplicate window and answers `duplicate`) and resolves with
   * the PubAck. Rejects as {@link request} does, or with a `JetStreamApiError` the stream answered.
   */
  async publish(subject: string, data: Uint8Array, msgId: string): Promise<PubAck> {
    const h = headers();
    h.set('Nats-Msg-Id', msgId);
    return readPubAck(await this.request(subject, data, h));
  }

  private onReply(msg: Msg): void {
    const waiter = this.waiting.get(msg.subject);
    // A reply to a request that timed out already: nobody waits for it.
    if (!waiter) return;
    this.waiting.delete(msg.subject);
    // A status reply (no-responders is an empty body with a 503 header); headers are parsed only then.
    if (msg.data.length === 0 && msg.headers?.code === 503)
      waiter.reject(new NoRespondersError(waiter.subject));
    else waiter.resolve(msg);
  }

  private arm(ms: number): NodeJS.Timeout {
    const timer = setTimeout(() => this.sweep(), Math.max(1, Math.ceil(ms)));
    // The connection keeps the process alive while requests wait; this timer alone should not.
    timer.unref();
    return timer;
  }

  private sweep(): void {
    this.sweeper = undefined;
    const now = performance.now();
    for (const [reply, waiter] of this.waiting) {
      if (waiter.deadline > now) {
        this.sweeper = this.arm(waiter.deadline - now);
        return;
      }
      this.waiting.delete(reply);
      waiter.reject(new RequestTimeoutError(waiter.subject, this.timeoutMs));
    }
  }

  private failAll(err: Error): void {
    const waiters = [...this.waiting.values()];
    this.waiting.clear();
    for (const waiter of waiters) waiter.reject(err);
  }

  private close(err: Error): void {
    this.closedWith ??= err;
    clearTimeout(this.sweeper);
    this.sweeper = undefined;
    this.failAll(this.closedWith);
  }
}

/** Reads JetStream's answer to a publish; an error answer throws a `JetStreamApiError` with its code. */
export function readPubAck(msg: Msg): PubAck {
  const answer = JSON.parse(decoder.decode(msg.data)) as Partial<PubAck> & { error?: ApiError };
  if (answer.error) throw new JetStreamApiError(answer.error);
  if (typeof answer.stream !== 'string' || answer.stream === '' || typeof answer.seq !== 'number') {
    throw new Error(
      `JetStream answered a publish with something that is not an ack: ${decoder.decode(msg.data)}`,
    );
  }
  return { stream: answer.stream, seq: answer.seq, duplicate: answer.duplicate === true };
}

/** Whether a failed publish says no stream took it: nothing listened, or JetStream is off for the account. */
export function isNoStream(err: unknown): boolean {
  return (
    err instanceof NoRespondersError ||
    (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.JetStreamNotEnabledForAccount)
  );
}
