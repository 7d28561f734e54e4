import { type Broker, type BrokerOptions, ClusterError, messageOf } from '../core/index.js';
import { BullmqCallQueue } from './call-queue.js';
import { RedisCancelBus } from './cancel-bus.js';
import { RedisEpoch } from './epoch.js';
import { assertRedisName, LANES } from './jobs.js';
import { connectOrFail, createClient, PRODUCER_OPTIONS } from './redis-connection.js';
import { RedisShareLedger } from './share-ledger.js';

/**
 * Opens the BullMQ broker on Redis: two queues per pool under the key prefix `<namespace>`,
 * `calls-<pool>` for high and normal calls and `calls-<pool>.low` for low ones, job id = call id, failed jobs as the dead-letter set, and cancel orders on
 * the pub/sub channel `<namespace>:cancels`, the shares ledger in the hash `<namespace>:shares`
 * and the roles ledger in the hash `<namespace>:roles` (see `RedisShareLedger`). Rejects with `ClusterError('QUEUE_UNAVAILABLE')`
 * naming the URL when Redis cannot be reached within a few seconds; afterwards every
 * connection reconnects by itself. The key `<namespace>:epoch` tells whether a reconnected Redis
 * still has its data (see `RedisEpoch` and `CallQueue.onDataLost`).
 */
export async function openBullmqBroker(options: BrokerOptions): Promise<Broker> {
  assertRedisName(options.namespace, 'broker namespace');
  for (const pool of options.pools) assertRedisName(pool, 'pool');
  // One producer connection carries enqueues, cancels, stats, cancel orders and the epoch.
  const producer = createClient(options.url, 'producer', PRODUCER_OPTIONS);
  await connectOrFail(producer, options.url);
  const epoch = new RedisEpoch(producer, `${options.namespace}:epoch`, options.url);
  try {
    await epoch.open();
  } catch (err) {
    producer.disconnect();
    throw new ClusterError('QUEUE_UNAVAILABLE', `Redis at ${options.url} did not answer: ${messageOf(err)}`, {
      cause: err,
    });
  }
  const queue = new BullmqCallQueue(options.url, options.namespace, producer, epoch);
  for (const pool of options.pools) for (const lane of LANES) queue.queueFor(pool, lane);
  const cancels = new RedisCancelBus(options.url, `${options.namespace}:cancels`, producer);
  // On the producer connection; no I/O until first used.
  const shares = new RedisShareLedger(options.url, options.namespace, producer, 'shares');
  const roles = new RedisShareLedger(options.url, options.namespace, producer, 'roles');
  let closing: Promise<void> | undefined;
  return {
    url: options.url,
    queue,
    cancels,
    shares,
    roles,
    close: () => {
      closing ??= (async () => {
        await shares.close();
        await roles.close();
        await queue.close();
        await cancels.close();
        producer.disconnect();
      })();
      return closing;
    },
  };
}
