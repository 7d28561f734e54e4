import type { Msg } from '@nats-io/transport-node';
import type { Requests } from './requests.js';

const ACK = Uint8Array.of(43, 65, 67, 75); // +ACK
const NAK = Uint8Array.of(45, 78, 65, 75); // -NAK
const WPI = Uint8Array.of(43, 87, 80, 73); // +WPI
const TERM = Uint8Array.of(43, 84, 69, 82, 77); // +TERM
const encoder = new TextEncoder();

/**
 * A message JetStream delivered on one of our pull requests, read straight from the core message
 * (the consumer loop owns its pull subscriptions, so it does not go through the client's `fetch`).
 * The delivery info is in the ack subject:
 * `$JS.ACK.<stream>.<consumer>.<deliveries>.<stream seq>.<consumer seq>.<timestamp ns>.<pending>`,
 * with `<domain>.<account hash>` after `ACK` and a random token at the end on newer servers.
 */
export class PulledMessage {
  /** How often the server has delivered this message, this delivery included (1 on the first). */
  readonly deliveryCount: number;
  /** Sequence of the message in the stream. */
  readonly seq: number;
  /** Messages still waiting on this consumer after this one, as the server counted at delivery. */
  readonly pending: number;

  private constructor(
    private readonly msg: Msg,
    reply: string,
    dots: number[],
    offset: number,
  ) {
    this.deliveryCount = token(reply, dots, offset);
    this.seq = token(reply, dots, offset + 1);
    this.pending = token(reply, dots, offset + 4);
  }

  /** Reads a delivered message, or `undefined` when `msg` is a status (no JetStream ack subject). */
  static from(msg: Msg): PulledMessage | undefined {
    const reply = msg.reply;
    if (!reply?.startsWith('$JS.ACK.')) return undefined;
    // Where the dots are: the three numbers are read in place instead of splitting every token out.
    const dots: number[] = [];
    for (let at = reply.indexOf('.'); at !== -1; at = reply.indexOf('.', at + 1)) dots.push(at);
    const tokens = dots.length + 1;
    if (tokens === 9) return new PulledMessage(msg, reply, dots, 4);
    if (tokens >= 11) return new PulledMessage(msg, reply, dots, 6);
    return undefined;
  }

  /** The subject the call was published on (`<ns>.calls.<pool>.<priority>`). */
  get subject(): string {
    return this.msg.subject;
  }

  get data(): Uint8Array {
    return this.msg.data;
  }

  /** Acks and resolves once the server confirmed the ack (rejects after the requests' timeout). */
  ackConfirmed(requests: Requests): Promise<unknown> {
    return requests.request(this.msg.reply ?? '', ACK);
  }

  /** Gives the message back for redelivery after `delayMs` milliseconds (now when 0). */
  nak(delayMs: number): void {
    const payload =
      delayMs > 0 ? encoder.encode(`-NAK ${JSON.stringify({ delay: delayMs * 1_000_000 })}`) : NAK;
    this.msg.respond(payload);
  }

  /** Restarts the ack wait. */
  working(): void {
    this.msg.respond(WPI);
  }

  /** Never redeliver; `reason` (when given) shows in the server's termination advisory. */
  term(reason?: string): void {
    this.msg.respond(reason ? encoder.encode(`+TERM ${reason}`) : TERM);
  }
}

/** Token `k` (from 0) of a dot-separated subject whose dots are at `dots`, as a number. */
function token(subject: string, dots: number[], k: number): number {
  return Number(subject.slice((dots[k - 1] ?? -1) + 1, dots[k] ?? subject.length));
}
