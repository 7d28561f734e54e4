import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { assertName, type Broker, type BrokerOptions, ClusterError, messageOf } from '../core/index.js';
import { AnsweredSweep } from './answered-sweep.js';
import { NatsCallQueue } from './call-queue.js';
import { NatsCancelBus } from './cancel-bus.js';
import { API_TIMEOUT_MS, connectNats, NatsLink } from './connection.js';
import { DeadLetters } from './dead-letters.js';
import { NatsShareLedger } from './share-ledger.js';
import { Topology } from './topology.js';

/**
 * Opens the NATS JetStream broker: the call queue on the streams and consumers of
 * {@link Topology}, cancel orders on the core subject `<ns>.cancels`, the shares ledger on the
 * KV bucket `<ns>_shares` and the roles ledger on `<ns>_roles` ({@link NatsShareLedger}, each
 * created on first use). Creates or updates the
 * streams (the calls stream's `max_age` from `options.callRetentionMs`) and the consumers of
 * `options.pools` idempotently, so concurrent opens are safe, and removes answered calls a crashed
 * broker brought back, at open and after every reconnect ({@link AnsweredSweep}).
 * Rejects with `ClusterError('QUEUE_UNAVAILABLE')` naming the URL when the broker cannot be reached
 * or has no JetStream, and `ClusterError('INVALID_CONFIG')` for a namespace or pool that cannot name
 * NATS subjects; the connection then reconnects by itself for its whole life.
 */
export async function openNatsBroker(options: BrokerOptions): Promise<Broker> {
  const { namespace, url } = options;
  assertName(namespace, 'broker namespace', 'NATS streams');
  for (const pool of options.pools) assertName(pool, 'pool', 'NATS subjects and consumers');

  const nc: NatsConnection = await connectNats(url, namespace);
  try {
    const jsm = await jetstreamManager(nc, { timeout: API_TIMEOUT_MS });
    const link = new NatsLink(nc, url);
    const topology = new Topology(jsm, url, namespace, options.callRetentionMs);
    await topology.ensureStreams();
    for (const pool of options.pools) await topology.ensurePool(pool);
    const sweep = new AnsweredSweep(link, topology);
    await sweep.run();
    const js = jsm.jetstream();
    const queue = new NatsCallQueue(link, topology, new DeadLetters(link, js, topology));
    const cancels = new NatsCancelBus(link, `${namespace}.cancels`);
    // Sets nothing up on the broker until first used (workers never use it).
    const shares = new NatsShareLedger(link, namespace, 'shares');
    const roles = new NatsShareLedger(link, namespace, 'roles');
    let closing: Promise<void> | undefined;
    return {
      url,
      queue,
      cancels,
      shares,
      roles,
      close: () => {
        closing ??= (async () => {
          sweep.close();
          await shares.close();
          await roles.close();
          await queue.close();
          await cancels.close();
          await link.close();
        })();
        return closing;
      },
    };
  } catch (err) {
    await nc.close().catch(() => undefined);
    if (err instanceof ClusterError) throw err;
    throw new ClusterError('QUEUE_UNAVAILABLE', `NATS at ${url} has no usable JetStream: ${messageOf(err)}`, {
      cause: err,
    });
  }
}
