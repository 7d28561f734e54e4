import { connect, type NatsConnection } from '@nats-io/transport-node';
import { BROKER_RECONNECT_GRACE_MS, ClusterError, messageOf, queueLog, withTimeout } from '../core/index.js';
import { Requests } from './requests.js';

/** The event log of the NATS queue and cancel bus. */
export const logEvent = queueLog('queue.nats');

/** Timeout of JetStream API calls, publishes and confirmed settles, in milliseconds. */
export const API_TIMEOUT_MS = 5_000;
/** How long an enqueue or a settle waits for a dropped connection to come back before failing (same on every broker). */
export const RECONNECT_GRACE_MS = BROKER_RECONNECT_GRACE_MS;
/** Timeout of the initial TCP/NATS handshake; the open must fail fast on a dead URL. */
const CONNECT_TIMEOUT_MS = 3_000;
/** Pause between reconnect attempts after a broker restart. */
const RECONNECT_WAIT_MS = 250;

/**
 * Connects to the comma-separated NATS servers of a broker URL, reconnecting by itself for the
 * connection's whole life. Rejects with `ClusterError('QUEUE_UNAVAILABLE')` naming the URL.
 */
export async function connectNats(url: string, namespace: string): Promise<NatsConnection> {
  try {
    return await connect({
      servers: url.split(',').map((s) => s.trim()),
      name: `mcp-cluster:${namespace}`,
      timeout: CONNECT_TIMEOUT_MS,
      maxReconnectAttempts: -1,
      reconnectTimeWait: RECONNECT_WAIT_MS,
      // Otherwise every request (each publish and each confirmed ack) builds an Error for its stack
      // trace up front: measurable CPU per call, for a trace our errors replace with their own message.
      noAsyncTraces: true,
    });
  } catch (err) {
    throw new ClusterError('QUEUE_UNAVAILABLE', `cannot connect to NATS at ${url}: ${messageOf(err)}`, {
      cause: err,
    });
  }
}

/**
 * The broker connection as the queue sees it: whether it is up, a bounded wait for it to come
 * back, the requests of the call path (timing out after API_TIMEOUT_MS), settles confirmed by the
 * server, and listeners told about reconnects (pull requests and core publishes sent while it was
 * down are lost, so consumers re-arm).
 */
export class NatsLink {
  /** Enqueue publishes and confirmed acks: one reply subscription for the connection. */
  readonly requests: Requests;
  private connected = true;
  private readonly reconnectWaiters = new Set<() => void>();
  private readonly reconnectListeners = new Set<() => void>();

  constructor(
    readonly nc: NatsConnection,
    readonly url: string,
  ) {
    this.requests = new Requests(nc, API_TIMEOUT_MS);
    void this.watchStatus();
  }

  /** Whether the connection is up; requests sent while it is down are lost by the client. */
  get isConnected(): boolean {
    return this.connected && !this.nc.isClosed();
  }

  /** Registers a listener called after every reconnect; returns a function that removes it. */
  onReconnect(listener: () => void): () => void {
    this.reconnectListeners.add(listener);
    return () => this.reconnectListeners.delete(listener);
  }

  /**
   * Waits up to `ms` milliseconds for a lost connection to come back, so a short broker blip delays
   * an enqueue instead of failing it. Rejects with QUEUE_UNAVAILABLE when it does not.
   */
  async awaitConnected(ms: number): Promise<void> {
    if (this.isConnected) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.reconnectWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.reconnectWaiters.add(done);
    });
    if (!this.isConnected) {
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `the connection to NATS at ${this.url} is down (reconnecting)`,
      );
    }
  }

  /**
   * Sends a settle once the connection is up (the client loses what it sends while down) and
   * waits for the server to have it. `op` is bounded by API_TIMEOUT_MS itself: a request of
   * {@link requests}, or {@link flush}. Rejects with QUEUE_UNAVAILABLE naming the call.
   */
  async confirm(what: string, callId: string, op: () => Promise<unknown>): Promise<void> {
    try {
      // Sent in this tick when the connection is up, so it leaves in one write with the pull re-arm.
      if (!this.isConnected) await this.awaitConnected(RECONNECT_GRACE_MS);
      await op();
    } catch (err) {
      throw new ClusterError(
        'QUEUE_UNAVAILABLE',
        `NATS at ${this.url} did not confirm the ${what} of call ${callId}: ${messageOf(err)}`,
        { cause: err },
      );
    }
  }

  /** Resolves once the server has everything sent so far; rejects after API_TIMEOUT_MS. */
  flush(): Promise<void> {
    return withTimeout(this.nc.flush(), API_TIMEOUT_MS);
  }

  /** {@link flush}, with failures ignored. */
  async flushQuietly(): Promise<void> {
    await this.flush().catch(() => undefined);
  }

  /** Drains the connection (pending publishes go out), or closes it when the drain hangs. */
  async close(): Promise<void> {
    if (this.nc.isClosed()) return;
    try {
      await withTimeout(this.nc.drain(), API_TIMEOUT_MS);
    } catch {
      await this.nc.close().catch(() => undefined);
    }
  }

  private async watchStatus(): Promise<void> {
    for await (const status of this.nc.status()) {
      if (status.type === 'disconnect') {
        this.connected = false;
        logEvent('warn', 'nats_disconnected', { url: this.url });
      } else if (status.type === 'reconnect') {
        this.connected = true;
        logEvent('info', 'nats_reconnected', { url: this.url });
        for (const resume of this.reconnectWaiters) resume();
        this.reconnectWaiters.clear();
        for (const listener of this.reconnectListeners) listener();
      }
    }
  }
}
