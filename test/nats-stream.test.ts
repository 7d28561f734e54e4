import { type JetStreamManager, jetstreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import { connect, type NatsConnection, nanos } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { brokerFor, openBroker } from '../services/cli/index.js';
import {
  type Broker,
  encodeArguments,
  newCallId,
  type QueuedCall,
  type ToolCall,
} from '../services/core/index.js';
import { type SpawnedBroker, startNatsServer, uniqueNamespace } from './support/brokers.js';
import { resolveConfig } from './support/families.js';
import { sleep, waitFor } from './support/wait.js';

// The JetStream calls stream across a broker crash: answered calls a killed nats-server brings back
// are removed, and the stream's max_age follows the configured call retention.

const POOL = 'pool';
/** A pool nobody consumes: its one queued call keeps the stream's message block (and its stale removals) on disk. */
const IDLE_POOL = 'idle';
const CALLS = 200;

function makeCall(pool = POOL): ToolCall {
  const now = Date.now();
  return {
    callId: newCallId(),
    tool: 'echo',
    pool,
    argumentsJson: encodeArguments({ text: 'hello' }),
    tenant: 'tenant-a',
    sessionKey: '',
    priority: 'normal',
    deadlineUnixMs: now + 120_000,
    attempt: 0,
    replyTo: '127.0.0.1:7001',
    traceContext: {},
    enqueuedUnixMs: now,
    wantsProgress: false,
    principal: 'anonymous',
    scopes: [],
  };
}

describe('NATS calls stream across a broker crash', () => {
  let server: SpawnedBroker;
  let admin: NatsConnection;
  let jsm: JetStreamManager;

  beforeAll(async () => {
    server = await startNatsServer();
  });

  afterAll(async () => {
    await server?.dispose();
  });

  const connectAdmin = async () => {
    admin = await connect({ servers: server.url });
    jsm = await jetstreamManager(admin);
  };

  /**
   * Queues one call of the idle pool, then runs CALLS calls of POOL to their confirmed acks, and
   * waits until the broker's consumer has them all below its ack floor.
   */
  const answerCalls = async (broker: Broker, namespace: string) => {
    await broker.queue.enqueue(makeCall(IDLE_POOL));
    const acks: Promise<void>[] = [];
    const consumer = broker.queue.consume(POOL, { maxInFlight: 64 }, (m: QueuedCall) => {
      acks.push(m.ack());
    });
    await Promise.all(Array.from({ length: CALLS }, () => broker.queue.enqueue(makeCall())));
    await waitFor('every call acked', () => acks.length === CALLS, 20_000);
    await Promise.all(acks);
    await consumer.stop();
    await waitFor(
      'the ack floor past every answered call',
      async () =>
        (await jsm.consumers.info(`${namespace}_calls`, `${POOL}_normal`)).ack_floor.stream_seq === CALLS + 1,
    );
  };

  /** SIGKILL, as a crash or an OOM kill would, then a start on the same store. */
  const crashAndRestart = async () => {
    await admin.close();
    // Let the broker write its consumer state, as it does within a moment of the acks.
    await sleep(300);
    process.kill(server.pid, 'SIGKILL');
    await server.restart();
    await connectAdmin();
  };

  const streamMessages = async (namespace: string) =>
    (await jsm.streams.info(`${namespace}_calls`)).state.messages;

  /** What stats() says the stream holds for both pools: waiting plus delivered-and-unsettled. */
  const statsTotal = async (broker: Broker) => {
    let total = 0;
    for (const pool of [POOL, IDLE_POOL]) {
      for (const s of await broker.queue.stats(pool)) total += s.depth + s.inFlight;
    }
    return total;
  };

  it('removes answered calls a killed broker brought back when a process opens the broker', async () => {
    await connectAdmin();
    const namespace = uniqueNamespace('crash_open');
    const options = { url: server.url, namespace, pools: [POOL, IDLE_POOL] };
    const first = await openBroker(options);
    await answerCalls(first, namespace);
    expect(await streamMessages(namespace)).toBe(1);
    await first.close();

    await crashAndRestart();
    // The broker came back with the consumer's acks but not the stream's removals: the answered calls
    // are in the stream again, below the ack floor, and no consumer will deliver them.
    const info = await jsm.consumers.info(`${namespace}_calls`, `${POOL}_normal`);
    expect(info.ack_floor.stream_seq).toBe(CALLS + 1);
    expect(info.num_pending).toBe(0);
    expect(info.num_ack_pending).toBe(0);
    expect(await streamMessages(namespace)).toBe(CALLS + 1);

    const second = await openBroker(options);
    try {
      // Only the idle pool's queued call is left, and the figures say what the stream holds.
      expect(await streamMessages(namespace)).toBe(1);
      expect(await statsTotal(second)).toBe(1);
      const idle = (await second.queue.stats(IDLE_POOL)).find((s) => s.priority === 'normal');
      expect(idle?.depth).toBe(1);
      // The queued call is still delivered.
      const got: QueuedCall[] = [];
      second.queue.consume(IDLE_POOL, { maxInFlight: 1 }, (m) => got.push(m));
      await waitFor('the idle pool call', () => got.length === 1);
      await got[0]?.ack();
      expect(await streamMessages(namespace)).toBe(0);
    } finally {
      await second.close();
    }
  }, 60_000);

  it('removes them after a process reconnects to the restarted broker', async () => {
    await connectAdmin();
    const namespace = uniqueNamespace('crash_reconnect');
    const broker = await openBroker({ url: server.url, namespace, pools: [POOL, IDLE_POOL] });
    try {
      await answerCalls(broker, namespace);
      await crashAndRestart();
      await waitFor(
        'the stream to hold only the queued call',
        async () => (await streamMessages(namespace)) === 1,
        20_000,
      );
      expect(await statsTotal(broker)).toBe(1);
    } finally {
      await broker.close();
      await admin.close();
    }
  }, 60_000);

  it('sets the calls stream max_age to the configured retention, on create and on every open', async () => {
    await connectAdmin();
    try {
      const namespace = uniqueNamespace('max_age');
      const stream = `${namespace}_calls`;
      const maxAgeOf = async () => (await jsm.streams.info(stream)).config.max_age;

      // A stream an earlier version created, keeping calls forever.
      await jsm.streams.add({
        name: stream,
        subjects: [`${namespace}.calls.>`],
        retention: RetentionPolicy.Workqueue,
        storage: StorageType.File,
        duplicate_window: nanos(120_000),
        allow_direct: true,
      });
      expect(await maxAgeOf()).toBe(0);
      await (
        await openBroker({ url: server.url, namespace, pools: [POOL], callRetentionMs: 3_600_000 })
      ).close();
      expect(await maxAgeOf()).toBe(nanos(3_600_000));
      expect((await jsm.streams.info(stream)).config.retention).toBe(RetentionPolicy.Workqueue);

      // A new configuration wins at the next open; one that names no retention leaves it alone.
      await (
        await openBroker({ url: server.url, namespace, pools: [POOL], callRetentionMs: 900_000 })
      ).close();
      expect(await maxAgeOf()).toBe(nanos(900_000));
      await (await openBroker({ url: server.url, namespace, pools: [POOL] })).close();
      expect(await maxAgeOf()).toBe(nanos(900_000));

      // A stream created without a configured retention gets the default configuration's: 24 h + 30 s + 5 min.
      const fresh = uniqueNamespace('max_age_default');
      await (await openBroker({ url: server.url, namespace: fresh, pools: [POOL] })).close();
      expect((await jsm.streams.info(`${fresh}_calls`)).config.max_age).toBe(
        nanos(24 * 3_600_000 + 30_000 + 300_000),
      );

      // What a role opens: the longest deadline (here ingress.maxDeadline, above the batch window),
      // one ack wait and 5 minutes.
      const configured = uniqueNamespace('max_age_config');
      const config = resolveConfig(
        JSON.stringify({
          cluster: { namespace: configured },
          broker: { url: server.url },
          ingress: { maxDeadline: '2h' },
          batch: { completionWindow: '1h' },
          worker: { ackWait: '10s' },
        }),
        {},
      );
      await (await brokerFor(config)).close();
      expect((await jsm.streams.info(`${configured}_calls`)).config.max_age).toBe(
        nanos(2 * 3_600_000 + 10_000 + 300_000),
      );
    } finally {
      await admin.close();
    }
  });
});
