import {
  type Broker,
  type BrokerOptions,
  ClusterError,
  type JobStore,
  type JobStoreOptions,
  openMemoryBroker,
  openMemoryJobStore,
} from '../core/index.js';

/**
 * The composition root's choice of queue implementation. The kernel defines the `CallQueue` and
 * `CancelBus` contracts and the in-process memory broker; the NATS and BullMQ implementations
 * live in their own folders and are picked here, by the scheme of `broker.url`.
 *
 * Opens the broker a URL names: `nats://` (JetStream), `redis://` / `rediss://` (BullMQ) or
 * `memory:`. Transports load lazily, so a process only pulls in the client it uses.
 * Rejects with `ClusterError('INVALID_CONFIG')` for an unknown scheme and
 * `ClusterError('QUEUE_UNAVAILABLE')` when the broker cannot be reached.
 */
export async function openBroker(options: BrokerOptions): Promise<Broker> {
  const scheme = brokerScheme(options.url);
  switch (scheme) {
    case 'memory':
      return openMemoryBroker(options);
    case 'nats': {
      const { openNatsBroker } = await import('../nats/index.js');
      return openNatsBroker(options);
    }
    case 'redis': {
      const { openBullmqBroker } = await import('../bullmq/index.js');
      return openBullmqBroker(options);
    }
  }
}

/**
 * Opens the job store (durable state of batch jobs) in the broker `options.url` names, picked like
 * {@link openBroker}: JetStream KV and Object Store for `nats://`, plain keys for `redis://` /
 * `rediss://`, and for `memory:` an in-process store (blobs in `options.directory` when set, else
 * the heap). The store opens its own connection. Rejects with `ClusterError('INVALID_CONFIG')` for
 * an unknown scheme or a namespace that cannot name buckets or keys, and
 * `ClusterError('QUEUE_UNAVAILABLE')` when the broker cannot be reached.
 */
export async function openJobStore(options: JobStoreOptions): Promise<JobStore> {
  switch (brokerScheme(options.url)) {
    case 'memory':
      return openMemoryJobStore({ directory: options.directory });
    case 'nats': {
      const { openNatsJobStore } = await import('../nats/index.js');
      return openNatsJobStore(options);
    }
    case 'redis': {
      const { openRedisJobStore } = await import('../bullmq/index.js');
      return openRedisJobStore(options);
    }
  }
}

/** Which implementation a broker URL selects; throws INVALID_CONFIG naming the URL otherwise. */
export function brokerScheme(url: string): 'memory' | 'nats' | 'redis' {
  if (url === 'memory:' || url.startsWith('memory:')) return 'memory';
  if (url.startsWith('nats://') || url.startsWith('tls://')) return 'nats';
  if (url.startsWith('redis://') || url.startsWith('rediss://')) return 'redis';
  throw new ClusterError(
    'INVALID_CONFIG',
    `broker.url "${url}" has an unknown scheme; use nats://host:port, redis://host:port or memory:`,
  );
}
