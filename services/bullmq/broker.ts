import type { Broker, BrokerOptions } from '../core/index.js';
import { BullmqCallQueue } from './call-queue.js';
import { RedisCancelBus } from './cancel-bus.js';
import { assertRedisName, LANES } from './jobs.js';
import { connectOrFail, createClient, PRODUCER_RETRIES_PER_REQUEST } from './redis-connection.js';

/**
 * Opens the BullMQ broker on Redis: two queues per pool under the key prefix `<namespace>`,
 * `calls-<pool>` for high and normal calls and `calls-<pool>.low` for low ones, job id = call id, failed jobs as the dead-letter set, and cancel orders on
 * the pub/sub channel `<namespace>:cancels`. Rejects with `ClusterError('QUEUE_UNAVAILABLE')`
 * naming the URL when Redis cannot be reached within a few seconds; afterwards every
 * connection reconnects by itself.
 */
export async function openBullmqBroker(options: BrokerOptions): Promise<Broker> {
  assertRedisName(options.namespace, 'broker namespace');
  for (const pool of options.pools) assertRedisName(pool, 'pool');
  // One producer connection carries enqueues, cancels, stats and cancel orders.
  const producer = createClient(options.url, 'producer', {
    maxRetriesPerRequest: PRODUCER_RETRIES_PER_REQUEST,
  });
  await connectOrFail(producer, options.url);
  const queue = new BullmqCallQueue(options.url, options.namespace, producer);
  for (const pool of options.pools) for (const lane of LANES) queue.queueFor(pool, lane);
  const cancels = new RedisCancelBus(options.url, `${options.namespace}:cancels`, producer);
  let closing: Promise<void> | undefined;
  return {
    url: options.url,
    queue,
    cancels,
    close: () => {
      closing ??= (async () => {
        await queue.close();
        await cancels.close();
        producer.disconnect();
      })();
      return closing;
    },
  };
}
