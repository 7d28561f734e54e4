import { ClusterError } from '../errors.js';
import type { Broker, BrokerOptions } from './call-queue.js';

/**
 * Opens the broker a URL names: `nats://` (JetStream), `redis://` / `rediss://` (BullMQ) or
 * `memory:`. Transports load lazily, so a process only pulls in the client it uses.
 * Rejects with `ClusterError('INVALID_CONFIG')` for an unknown scheme and
 * `ClusterError('QUEUE_UNAVAILABLE')` when the broker cannot be reached.
 */
export async function openBroker(options: BrokerOptions): Promise<Broker> {
  const scheme = brokerScheme(options.url);
  switch (scheme) {
    case 'memory': {
      const { openMemoryBroker } = await import('./memory.js');
      return openMemoryBroker(options);
    }
    case 'nats': {
      // A computed path: the NATS folder imports the kernel, so a literal import here would close a
      // cycle. The CLI composition root takes over opening brokers by scheme.
      const natsEntry: string = '../../nats/index.js';
      const { openNatsBroker } = (await import(natsEntry)) as typeof import('../../nats/index.js');
      return openNatsBroker(options);
    }
    case 'redis': {
      const { openBullmqBroker } = await import('../../bullmq/index.js');
      return openBullmqBroker(options);
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
