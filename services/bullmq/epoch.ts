import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { type DataLost, messageOf, withTimeout } from '../core/index.js';
import { logEvent } from './log.js';
import { COMMAND_TIMEOUT_MS } from './redis-connection.js';

/**
 * Notices a Redis that lost its data. The key `<namespace>:epoch` holds a random id, written with
 * `SET NX` when the broker opens (the first process to open writes it, every other reads it).
 * After every reconnect of the watched connection the key is read again: missing or different
 * means Redis restarted without persistence (or was flushed, or failed over to a replica that
 * had not caught up), and every queued call is gone. Then a new epoch is written (`SET NX`, so
 * the processes that notice at once agree on one) and the listeners are told.
 *
 * A lost epoch key is the sign, not the cause: a Redis that keeps its data (append-only file,
 * as deploy/ runs it) keeps the key too, and the listeners never fire.
 */
export class RedisEpoch {
  private epoch: string | undefined;
  private readonly listeners = new Set<(event: DataLost) => void>();
  /** The check after the latest reconnect; an enqueue waits for it (never rejects). */
  private checking: Promise<void> = Promise.resolve();

  constructor(
    private readonly client: Redis,
    private readonly key: string,
    private readonly url: string,
  ) {}

  /** Writes the epoch unless one exists, then reads it. Rejects when Redis cannot be reached. */
  async open(): Promise<void> {
    await withTimeout(this.client.set(this.key, randomUUID(), 'NX'), COMMAND_TIMEOUT_MS);
    this.epoch = (await withTimeout(this.client.get(this.key), COMMAND_TIMEOUT_MS)) ?? undefined;
    // Listeners of 'ready' run in order before anything awaiting it resumes, so an enqueue that
    // waited for this reconnect finds `checking` already set and waits for it.
    this.client.on('ready', () => {
      this.checking = this.check().catch((err: unknown) =>
        logEvent('warn', 'epoch_check_failed', { url: this.url, error: messageOf(err) }, 'epoch'),
      );
    });
  }

  /** Registers a listener told when Redis is found to have lost its data; returns its removal. */
  onDataLost(listener: (event: DataLost) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves once the check after the latest reconnect (if any) finished. */
  verified(): Promise<void> {
    return this.checking;
  }

  private async check(): Promise<void> {
    const seen = await withTimeout(this.client.get(this.key), COMMAND_TIMEOUT_MS);
    if (seen !== null && seen === this.epoch) return;
    await withTimeout(this.client.set(this.key, randomUUID(), 'NX'), COMMAND_TIMEOUT_MS);
    this.epoch = (await withTimeout(this.client.get(this.key), COMMAND_TIMEOUT_MS)) ?? undefined;
    const reason =
      seen === null
        ? `the key ${this.key} is gone: Redis restarted without its data`
        : `the key ${this.key} changed: another process found Redis without its data`;
    logEvent('warn', 'broker_data_lost', { url: this.url, reason });
    for (const listener of [...this.listeners]) {
      try {
        listener({ url: this.url, reason });
      } catch (err) {
        logEvent('error', 'data_lost_listener_threw', { error: messageOf(err) });
      }
    }
  }
}
