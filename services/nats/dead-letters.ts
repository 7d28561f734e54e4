import { JetStreamApiCodes, type JetStreamClient } from '@nats-io/jetstream';
import { headers, type Subscription } from '@nats-io/transport-node';
import { clusterMetrics, messageOf } from '../core/index.js';
import { decodeToolCall } from '../protobuf/index.js';
import { API_TIMEOUT_MS, logEvent, type NatsLink } from './connection.js';
import type { PulledMessage } from './pulled-message.js';
import { isApiError, priorityOfSubject, type Topology } from './topology.js';

/**
 * Dead letters: calls that will never run are published, raw envelope and all, to
 * `<ns>.dead.<pool>` (kept `DEAD_MAX_AGE_MS` in the `<ns>_dead` stream) with headers saying why
 * (`Mcp-Dead-Reason`), how often they were delivered (`Mcp-Deliveries`) and where they sat
 * (`Mcp-Stream-Seq`), then terminated. That happens when the last delivery is nacked or expires,
 * for envelopes that do not decode, and for messages the server gave up on while their worker was
 * gone (the max-deliveries advisory).
 */
export class DeadLetters {
  /** Envelopes that could not be decoded and were dead-lettered, for tests and metrics. */
  badEnvelopes = 0;
  private advisories?: Subscription;

  constructor(
    private readonly link: NatsLink,
    private readonly js: JetStreamClient,
    private readonly topology: Topology,
  ) {}

  /**
   * Terminates a message. nats-server before 2.10 ignores a `+TERM` that carries a reason (the
   * message would come back after its ack wait), so the reason is only sent to newer servers.
   */
  terminate(m: PulledMessage, reason: string): void {
    const [major = 0, minor = 0] = (this.link.nc.info?.version ?? '0.0').split('.').map(Number);
    m.term(major > 2 || (major === 2 && minor >= 10) ? reason : undefined);
  }

  /**
   * Publishes a message's raw envelope to the pool's dead letters and terminates it;
   * `removeFromStream` also deletes it from the call stream (after a final ack wait the server may
   * already have given up on it, and it would stay in the work queue and its figures).
   */
  async deadLetter(
    m: PulledMessage,
    pool: string,
    callId: string | undefined,
    reason: string,
    removeFromStream: boolean,
  ): Promise<void> {
    await this.publishDead(m.subject, pool, m.data, callId ?? `seq-${m.seq}`, reason, m.deliveryCount, m.seq);
    this.terminate(m, reason);
    if (removeFromStream) {
      await this.topology.jsm.streams.deleteMessage(this.topology.stream, m.seq, false).catch(() => false);
    }
    await this.link.flushQuietly();
  }

  /** Dead-letters a message whose envelope does not decode; it never reaches a handler. */
  async discardBadEnvelope(m: PulledMessage, pool: string, err: unknown): Promise<void> {
    this.badEnvelopes += 1;
    logEvent('error', 'bad_envelope', {
      code: 'BAD_ENVELOPE',
      pool,
      seq: m.seq,
      deliveries: m.deliveryCount,
      error: messageOf(err),
      count: this.badEnvelopes,
    });
    await this.deadLetter(m, pool, undefined, `BAD_ENVELOPE: ${messageOf(err)}`, false);
  }

  /**
   * A worker that died holding a message on its last delivery never nacks it: the server then
   * announces the exhausted message and leaves it in the stream. One consuming process (queue
   * group) dead-letters and removes it. Idempotent; started by the first consumer.
   */
  watchMaxDeliveries(): void {
    if (this.advisories) return;
    this.advisories = this.link.nc.subscribe(
      `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${this.topology.stream}.*`,
      {
        queue: `${this.topology.namespace}_dead_letters`,
        callback: (err, msg) => {
          if (err) return;
          let advisory: { stream_seq?: unknown; deliveries?: unknown };
          try {
            advisory = JSON.parse(msg.string()) as typeof advisory;
          } catch {
            return;
          }
          const { stream_seq: seq, deliveries } = advisory;
          if (typeof seq === 'number')
            void this.deadLetterOrphan(seq, typeof deliveries === 'number' ? deliveries : 0);
        },
      },
    );
  }

  close(): void {
    this.advisories?.unsubscribe();
  }

  private async deadLetterOrphan(seq: number, deliveries: number): Promise<void> {
    const { jsm, stream } = this.topology;
    try {
      const stored = await jsm.streams.getMessage(stream, { seq });
      if (!stored) return;
      const pool = stored.subject.split('.')[2] ?? 'unknown';
      let id = `seq-${seq}`;
      try {
        id = decodeToolCall(stored.data).callId;
      } catch {
        // kept under its sequence number
      }
      await this.publishDead(
        stored.subject,
        pool,
        stored.data,
        id,
        'delivery limit reached without a settle',
        deliveries,
        seq,
      );
      await jsm.streams.deleteMessage(stream, seq, false);
    } catch (err) {
      if (isApiError(err, JetStreamApiCodes.NoMessageFound)) return;
      logEvent('error', 'dead_letter_failed', { seq, error: messageOf(err) });
    }
  }

  private async publishDead(
    subject: string,
    pool: string,
    data: Uint8Array,
    id: string,
    reason: string,
    deliveries: number,
    seq: number,
  ): Promise<void> {
    const h = headers();
    h.set('Mcp-Dead-Reason', reason.replace(/[^\x20-\x7e]/g, ' '));
    h.set('Mcp-Deliveries', String(deliveries));
    h.set('Mcp-Stream-Seq', String(seq));
    try {
      await this.js.publish(this.topology.deadSubject(pool), data, {
        msgID: id,
        headers: h,
        timeout: API_TIMEOUT_MS,
      });
    } catch (err) {
      logEvent('error', 'dead_letter_failed', { pool, id, reason, error: messageOf(err) });
    }
    logEvent('warn', 'dead_lettered', { pool, id, reason, deliveries });
    clusterMetrics().queueDeadLettered.inc({ pool, priority: priorityOfSubject(subject) });
  }
}
