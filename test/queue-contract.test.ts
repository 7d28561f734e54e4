import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openBroker } from '../services/cli/index.js';
import {
  type Broker,
  type CancelOrder,
  ClusterError,
  encodeArguments,
  newCallId,
  PRIORITIES,
  type Priority,
  type QueuedCall,
  type QueueStats,
  type ToolCall,
} from '../services/core/index.js';
import {
  freePort,
  type SpawnedBroker,
  startNatsServer,
  startRedisServer,
  uniqueNamespace,
} from './support/brokers.js';
import { sleep, waitFor } from './support/wait.js';

/**
 * The one contract suite of `CallQueue` and `CancelBus`, run unchanged against every
 * implementation. The networked ones run against brokers this file spawns (never the
 * machine's own), each test in a namespace of its own.
 */

interface Backend {
  name: 'memory' | 'nats' | 'bullmq';
  /** Starts the shared broker process, if any. */
  start(): Promise<void>;
  stop(): Promise<void>;
  url(): string;
  /** Spawns a private broker (for restart tests); networked backends only. */
  spawn?: () => Promise<SpawnedBroker>;
  /** A URL of this scheme where nothing listens. */
  deadUrl?: (port: number) => string;
  /** Puts a message that is not a ToolCall envelope on pool `pool`, priority normal, behind the queue's back. */
  injectBadEnvelope?: (url: string, namespace: string) => Promise<void>;
}

function networked(
  name: 'nats' | 'bullmq',
  spawn: () => Promise<SpawnedBroker>,
  scheme: string,
  injectBadEnvelope: (url: string, namespace: string) => Promise<void>,
): Backend {
  let server: SpawnedBroker | undefined;
  return {
    name,
    start: async () => {
      server = await spawn();
    },
    stop: async () => {
      await server?.stop();
    },
    url: () => {
      if (!server) throw new Error(`${name} broker not started`);
      return server.url;
    },
    spawn,
    deadUrl: (port) => `${scheme}://127.0.0.1:${port}`,
    injectBadEnvelope,
  };
}

/** 0xff is never a valid start of a protobuf field, so the envelope cannot decode. */
const GARBAGE = Uint8Array.from([0xff, 0xff, 0xff, 0x01, 0x02]);

async function natsGarbage(url: string, namespace: string): Promise<void> {
  const nc = await connect({ servers: url });
  try {
    await jetstream(nc).publish(`${namespace}.calls.${POOL}.normal`, GARBAGE);
  } finally {
    await nc.close();
  }
}

async function redisGarbage(url: string, namespace: string): Promise<void> {
  const connection = new Redis(url, { maxRetriesPerRequest: 1 });
  // The queue of high and normal calls (low ones have `calls-<pool>.low`).
  const queue = new Queue(`calls-${POOL}`, { connection, prefix: namespace });
  try {
    await queue.add(
      'garbage',
      { envelope: Buffer.from(GARBAGE).toString('base64') },
      { jobId: 'garbage-1', priority: 2 },
    );
  } finally {
    await queue.close();
    connection.disconnect();
  }
}

const backends: Backend[] = [
  { name: 'memory', start: async () => undefined, stop: async () => undefined, url: () => 'memory:' },
  networked('nats', startNatsServer, 'nats', natsGarbage),
  networked('bullmq', startRedisServer, 'redis', redisGarbage),
];

const POOL = 'pool';

function makeCall(priority: Priority = 'normal', pool = POOL): ToolCall {
  const now = Date.now();
  return {
    callId: newCallId(),
    tool: 'echo',
    pool,
    argumentsJson: encodeArguments({ text: 'hello', n: 3, nested: { ok: true, list: [1, 'two'] } }),
    tenant: 'tenant-a',
    sessionKey: 'session-1',
    priority,
    deadlineUnixMs: now + 120_000,
    attempt: 0,
    replyTo: '127.0.0.1:7001',
    traceContext: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
    enqueuedUnixMs: now,
    wantsProgress: true,
    principal: 'anonymous',
    scopes: [],
  };
}

interface Delivery {
  message: QueuedCall;
  atMs: number;
}

/** A handler that records every delivery and its time. */
function recorder() {
  const got: Delivery[] = [];
  const handler = (message: QueuedCall) => {
    got.push({ message, atMs: Date.now() });
  };
  const at = (i: number): QueuedCall => {
    const delivery = got[i];
    if (!delivery) throw new Error(`no delivery #${i}`);
    return delivery.message;
  };
  return { got, handler, at };
}

/**
 * Enqueues a fresh call and waits until `got` holds it, then acks it. Calls are delivered first in,
 * first out within a priority, so once the sentinel arrives anything queued before it has too: a
 * state to wait for instead of a sleep before asserting that nothing more came.
 */
async function sentinel(broker: Broker, got: Delivery[]): Promise<void> {
  const call = makeCall();
  await broker.queue.enqueue(call);
  await waitFor('the sentinel call', () => got.some((d) => d.message.call.callId === call.callId));
  const delivery = got.find((d) => d.message.call.callId === call.callId);
  await delivery?.message.ack();
  got.splice(got.indexOf(delivery as Delivery), 1);
}

function byPriority(stats: QueueStats[]): Record<Priority, QueueStats> {
  const find = (p: Priority) => {
    const row = stats.find((s) => s.priority === p);
    if (!row) throw new Error(`stats lack priority ${p}`);
    return row;
  };
  return { high: find('high'), normal: find('normal'), low: find('low') };
}

describe.each(backends)('CallQueue contract: $name', (backend) => {
  const opened: Broker[] = [];

  beforeAll(async () => {
    await backend.start();
  });

  afterEach(async () => {
    await Promise.allSettled(opened.splice(0).map((b) => b.close()));
  });

  afterAll(async () => {
    await backend.stop();
  });

  async function open(namespace: string): Promise<Broker> {
    const broker = await openBroker({ url: backend.url(), namespace, pools: [POOL] });
    opened.push(broker);
    return broker;
  }

  it('delivers an enqueued call decoded as it was enqueued, with attempt 1', async () => {
    const broker = await open(uniqueNamespace('deliver'));
    expect(broker.queue.kind).toBe(backend.name);
    expect(await broker.queue.ready()).toBe(true);
    const call = makeCall();
    await broker.queue.enqueue(call);
    const { got, handler, at } = recorder();
    broker.queue.consume(POOL, { maxInFlight: 4 }, handler);
    await waitFor('the delivery', () => got.length === 1);
    expect(at(0).call).toEqual({ ...call, attempt: 1 });
    await at(0).ack();
    await waitFor('the ack to settle', async () => {
      const stats = byPriority(await broker.queue.stats(POOL));
      return stats.normal.inFlight === 0 && stats.normal.depth === 0;
    });
    await sentinel(broker, got);
    expect(got).toHaveLength(1);
  });

  it('pulls high before normal before low when all are queued before consuming', async () => {
    const broker = await open(uniqueNamespace('priority'));
    const calls = [
      makeCall('low'),
      makeCall('low'),
      makeCall('normal'),
      makeCall('normal'),
      makeCall('high'),
      makeCall('high'),
    ];
    for (const call of calls) await broker.queue.enqueue(call);
    const order: string[] = [];
    broker.queue.consume(POOL, { maxInFlight: 1 }, (m) => {
      order.push(m.call.callId);
      void m.ack();
    });
    await waitFor('every call', () => order.length === calls.length);
    const id = (i: number) => calls[i]?.callId;
    // Highest priority first, and first in, first out within a priority.
    expect(order).toEqual([id(4), id(5), id(2), id(3), id(0), id(1)]);
  });

  it('delivers a high call enqueued behind a waiting low backlog before the rest of the backlog', async () => {
    const broker = await open(uniqueNamespace('overtake'));
    const { got, handler, at } = recorder();
    broker.queue.consume(POOL, { maxInFlight: 1 }, handler);
    const busy = makeCall('low');
    await broker.queue.enqueue(busy);
    await waitFor('the consumer busy with a low call', () => got.length === 1);
    const backlog = [makeCall('low'), makeCall('low'), makeCall('low')];
    for (const call of backlog) await broker.queue.enqueue(call);
    const high = makeCall('high');
    await broker.queue.enqueue(high);
    await waitFor('the backlog and the high call queued', async () => {
      const s = byPriority(await broker.queue.stats(POOL));
      return s.low.depth === 3 && s.high.depth === 1;
    });
    await at(0).ack();
    await waitFor('the next delivery', () => got.length === 2);
    expect(at(1).call.callId).toBe(high.callId);
    for (let i = 1; i <= backlog.length; i++) {
      await at(i).ack();
      await waitFor(`delivery #${i + 1}`, () => got.length === i + 2);
    }
    expect(got.slice(2).map((d) => d.message.call.callId)).toEqual(backlog.map((c) => c.callId));
    await at(backlog.length + 1).ack();
  });

  it('never holds more than maxInFlight unsettled; the rest arrive as earlier ones settle', async () => {
    const broker = await open(uniqueNamespace('inflight'));
    const calls = Array.from({ length: 6 }, () => makeCall());
    for (const call of calls) await broker.queue.enqueue(call);
    let unsettled = 0;
    let most = 0;
    const { got, handler, at } = recorder();
    broker.queue.consume(POOL, { maxInFlight: 2 }, (m) => {
      unsettled += 1;
      most = Math.max(most, unsettled);
      handler(m);
    });
    await waitFor('two held and four waiting', async () => {
      const stats = byPriority(await broker.queue.stats(POOL));
      return got.length === 2 && stats.normal.inFlight === 2 && stats.normal.depth === 4;
    });
    expect(got).toHaveLength(2);
    for (let i = 0; i < calls.length; i++) {
      await waitFor(`delivery #${i}`, () => got.length > i);
      // Count it settled before acking: a queue may hand over the next one during the ack.
      unsettled -= 1;
      await at(i).ack();
    }
    expect(most).toBeLessThanOrEqual(2);
    expect(new Set(got.map((d) => d.message.call.callId))).toEqual(new Set(calls.map((c) => c.callId)));
  });

  it('redelivers a nacked call after its delay, with attempt 2', async () => {
    const broker = await open(uniqueNamespace('nack'));
    const call = makeCall();
    await broker.queue.enqueue(call);
    const { got, handler, at } = recorder();
    broker.queue.consume(POOL, { maxInFlight: 1 }, handler);
    await waitFor('the first delivery', () => got.length === 1);
    const nackedAt = Date.now();
    await at(0).nack(700);
    await waitFor('the redelivery', () => got.length === 2);
    const second = got[1];
    expect(second?.message.call.callId).toBe(call.callId);
    expect(second?.message.call.attempt).toBe(2);
    expect((second?.atMs ?? 0) - nackedAt).toBeGreaterThanOrEqual(650);
    await at(1).ack();
  });

  it('redelivers a call that is not settled within ackWaitMs', async () => {
    const broker = await open(uniqueNamespace('ackwait'));
    const call = makeCall();
    await broker.queue.enqueue(call);
    const { got, handler, at } = recorder();
    broker.queue.consume(POOL, { maxInFlight: 2, ackWaitMs: 1_000 }, handler);
    await waitFor('the first delivery', () => got.length === 1);
    await waitFor('the redelivery', () => got.length === 2, 15_000);
    expect(at(1).call.callId).toBe(call.callId);
    expect(at(1).call.attempt).toBe(2);
    expect((got[1]?.atMs ?? 0) - (got[0]?.atMs ?? 0)).toBeGreaterThanOrEqual(900);
    await at(1).ack();
    // Settling the abandoned first delivery late is harmless.
    await at(0).ack();
  });

  it('keeps a call that reports inProgress from being redelivered past ackWaitMs', async () => {
    const broker = await open(uniqueNamespace('progress'));
    await broker.queue.enqueue(makeCall());
    const { got, handler, at } = recorder();
    broker.queue.consume(POOL, { maxInFlight: 1, ackWaitMs: 1_000 }, handler);
    await waitFor('the delivery', () => got.length === 1);
    const until = Date.now() + 2_600;
    while (Date.now() < until) {
      await at(0).inProgress();
      await sleep(300);
    }
    expect(got).toHaveLength(1);
    await at(0).ack();
    await sentinel(broker, got);
    expect(got).toHaveLength(1);
  });

  it('stops delivering a call once maxDeliveries is exhausted', async () => {
    const broker = await open(uniqueNamespace('maxdeliver'));
    const call = makeCall();
    await broker.queue.enqueue(call);
    const attempts: number[] = [];
    broker.queue.consume(POOL, { maxInFlight: 1, maxDeliveries: 2, ackWaitMs: 1_000 }, (m) => {
      attempts.push(m.call.attempt);
      void m.nack();
    });
    await waitFor('two deliveries', () => attempts.length === 2);
    // Gone from the queue (dead-lettered), so nothing is left that could come a third time.
    await waitFor('the queue to be empty', async () => {
      const stats = byPriority(await broker.queue.stats(POOL));
      return stats.normal.depth === 0 && stats.normal.inFlight === 0;
    });
    expect(attempts).toEqual([1, 2]);
  });

  it('never redelivers a terminated call', async () => {
    const broker = await open(uniqueNamespace('term'));
    await broker.queue.enqueue(makeCall());
    const { got, handler, at } = recorder();
    broker.queue.consume(POOL, { maxInFlight: 1, ackWaitMs: 1_000 }, handler);
    await waitFor('the delivery', () => got.length === 1);
    await at(0).term('cancelled by the caller');
    // A term the broker ignored would keep the call in flight until its redelivery, and then held.
    await waitFor('the queue to be empty', async () => {
      const stats = byPriority(await broker.queue.stats(POOL));
      return stats.normal.depth === 0 && stats.normal.inFlight === 0;
    });
    await sentinel(broker, got);
    expect(got).toHaveLength(1);
  });

  it.runIf(backend.injectBadEnvelope !== undefined)(
    'never hands an undecodable envelope to the handler',
    async () => {
      const inject = backend.injectBadEnvelope;
      if (!inject) return;
      const namespace = uniqueNamespace('garbage');
      const broker = await open(namespace);
      await inject(backend.url(), namespace);
      const good = makeCall();
      await broker.queue.enqueue(good);
      const { got, handler, at } = recorder();
      broker.queue.consume(POOL, { maxInFlight: 2 }, handler);
      await waitFor('the good call', () => got.length === 1);
      expect(at(0).call.callId).toBe(good.callId);
      await at(0).ack();
      await waitFor('the bad envelope to be removed', async () => {
        const stats = byPriority(await broker.queue.stats(POOL));
        return stats.normal.depth === 0 && stats.normal.inFlight === 0;
      });
      expect(got).toHaveLength(1);
    },
  );

  it('de-duplicates by call id while the call is queued or running', async () => {
    const broker = await open(uniqueNamespace('dedup'));
    const call = makeCall();
    await broker.queue.enqueue(call);
    await broker.queue.enqueue({ ...call });
    expect(byPriority(await broker.queue.stats(POOL)).normal.depth).toBe(1);
    const { got, handler, at } = recorder();
    broker.queue.consume(POOL, { maxInFlight: 4 }, handler);
    await waitFor('the delivery', () => got.length === 1);
    await broker.queue.enqueue({ ...call });
    await sentinel(broker, got);
    expect(got).toHaveLength(1);
    expect(byPriority(await broker.queue.stats(POOL)).normal.depth).toBe(0);
    await at(0).ack();
  });

  it('cancels a queued call and reports false for unknown or delivered calls', async () => {
    const broker = await open(uniqueNamespace('cancel'));
    const queued = makeCall();
    await broker.queue.enqueue(queued);
    expect(await broker.queue.cancel(queued.callId, POOL)).toBe(true);
    expect(await broker.queue.cancel(queued.callId, POOL)).toBe(false);
    expect(await broker.queue.cancel(newCallId(), POOL)).toBe(false);
    expect(byPriority(await broker.queue.stats(POOL)).normal.depth).toBe(0);

    const { got, handler, at } = recorder();
    broker.queue.consume(POOL, { maxInFlight: 2 }, handler);
    const delivered = makeCall();
    await broker.queue.enqueue(delivered);
    await waitFor('the delivery', () => got.length === 1);
    expect(at(0).call.callId).toBe(delivered.callId);
    expect(await broker.queue.cancel(delivered.callId, POOL)).toBe(false);
    await at(0).ack();
    await sentinel(broker, got);
    expect(got).toHaveLength(1);
  });

  it('reports depth, in-flight and oldest age per priority', async () => {
    const broker = await open(uniqueNamespace('stats'));
    const initial = await broker.queue.stats(POOL);
    expect(initial.map((s) => s.priority).sort()).toEqual([...PRIORITIES].sort());
    for (const row of initial)
      expect(row).toEqual({ pool: POOL, priority: row.priority, depth: 0, inFlight: 0, oldestAgeMs: 0 });

    await broker.queue.enqueue(makeCall('normal'));
    await broker.queue.enqueue(makeCall('normal'));
    await broker.queue.enqueue(makeCall('high'));
    await waitFor('the calls to age 100 ms', async () => {
      const s = byPriority(await broker.queue.stats(POOL));
      return s.high.oldestAgeMs >= 100 && s.normal.oldestAgeMs >= 100;
    });
    const queued = byPriority(await broker.queue.stats(POOL));
    expect(queued.high).toMatchObject({ depth: 1, inFlight: 0 });
    expect(queued.normal).toMatchObject({ depth: 2, inFlight: 0 });
    expect(queued.low).toEqual({ pool: POOL, priority: 'low', depth: 0, inFlight: 0, oldestAgeMs: 0 });
    expect(queued.high.oldestAgeMs).toBeGreaterThanOrEqual(100);
    expect(queued.normal.oldestAgeMs).toBeGreaterThanOrEqual(100);

    const { got, handler, at } = recorder();
    broker.queue.consume(POOL, { maxInFlight: 1 }, handler);
    await waitFor('the high call in flight', async () => {
      const s = byPriority(await broker.queue.stats(POOL));
      return s.high.inFlight === 1 && s.high.depth === 0 && s.normal.depth === 2 && s.normal.inFlight === 0;
    });
    expect(got).toHaveLength(1);
    await at(0).ack();
    await waitFor('a normal call in flight', async () => {
      const s = byPriority(await broker.queue.stats(POOL));
      return s.high.inFlight === 0 && s.normal.inFlight === 1 && s.normal.depth === 1;
    });
    await waitFor('the second delivery', () => got.length === 2);
    await at(1).ack();
    await waitFor('the third delivery', () => got.length === 3);
    await at(2).ack();
    await waitFor('an empty queue', async () => {
      const s = byPriority(await broker.queue.stats(POOL));
      return PRIORITIES.every((p) => s[p].depth === 0 && s[p].inFlight === 0 && s[p].oldestAgeMs === 0);
    });
  });

  it('gives two consumers of one pool distinct calls, never the same one twice', async () => {
    const namespace = uniqueNamespace('shared');
    // Opened side by side, as replicas starting together do: stream setup must be idempotent.
    const [first, second] = await Promise.all([open(namespace), open(namespace)]);
    const seen: string[] = [];
    const handler = (m: QueuedCall) => {
      seen.push(m.call.callId);
      setTimeout(() => void m.ack(), 20);
    };
    first.queue.consume(POOL, { maxInFlight: 2 }, handler);
    second.queue.consume(POOL, { maxInFlight: 2 }, handler);
    const calls = Array.from({ length: 10 }, () => makeCall());
    for (const call of calls) await first.queue.enqueue(call);
    await waitFor('every call', () => seen.length >= calls.length);
    // All acked: the queue holds nothing that could be delivered a second time.
    await waitFor('every call settled', async () => {
      const s = byPriority(await first.queue.stats(POOL));
      return s.normal.depth === 0 && s.normal.inFlight === 0;
    });
    expect(seen).toHaveLength(calls.length);
    expect(new Set(seen)).toEqual(new Set(calls.map((c) => c.callId)));
  });

  it('gives a consumer only the priorities it takes, two of them on one pool at once', async () => {
    const broker = await open(uniqueNamespace('lanes'));
    const calls = PRIORITIES.flatMap((p) => [makeCall(p), makeCall(p)]);
    for (const call of calls) await broker.queue.enqueue(call);
    const batch: ToolCall[] = [];
    const interactive: ToolCall[] = [];
    broker.queue.consume(POOL, { maxInFlight: 4, priorities: ['low'] }, (m) => {
      batch.push(m.call);
      void m.ack();
    });
    // Given lowest first: a consumer takes its priorities highest first whatever the order.
    broker.queue.consume(POOL, { maxInFlight: 4, priorities: ['normal', 'high'] }, (m) => {
      interactive.push(m.call);
      void m.ack();
    });
    await waitFor('every call', () => batch.length + interactive.length === calls.length);
    await waitFor('every call settled', async () => {
      const s = byPriority(await broker.queue.stats(POOL));
      return PRIORITIES.every((p) => s[p].depth === 0 && s[p].inFlight === 0);
    });
    expect(batch.map((c) => c.priority)).toEqual(['low', 'low']);
    expect(interactive.map((c) => c.priority).sort()).toEqual(['high', 'high', 'normal', 'normal']);
    expect(new Set([...batch, ...interactive].map((c) => c.callId))).toEqual(
      new Set(calls.map((c) => c.callId)),
    );
  });

  it('delivers a normal call at once behind a low backlog the low consumer holds, each within its maxInFlight', async () => {
    const broker = await open(uniqueNamespace('backlog'));
    let batchHeld = 0;
    let batchMost = 0;
    const batch = recorder();
    broker.queue.consume(POOL, { maxInFlight: 2, priorities: ['low'] }, (m) => {
      batchHeld += 1;
      batchMost = Math.max(batchMost, batchHeld);
      batch.handler(m);
    });
    const interactive = recorder();
    broker.queue.consume(POOL, { maxInFlight: 2, priorities: ['high', 'normal'] }, interactive.handler);
    const backlog = Array.from({ length: 8 }, () => makeCall('low'));
    for (const call of backlog) await broker.queue.enqueue(call);
    await waitFor('the low consumer full and the rest of the backlog waiting', async () => {
      const s = byPriority(await broker.queue.stats(POOL));
      return batch.got.length === 2 && s.low.inFlight === 2 && s.low.depth === 6;
    });

    // The backlog takes no room of the interactive consumer: a normal call goes straight through.
    const normal = makeCall('normal');
    const enqueuedAt = Date.now();
    await broker.queue.enqueue(normal);
    await waitFor('the normal call', () => interactive.got.length === 1, 2_000);
    expect(interactive.at(0).call.callId).toBe(normal.callId);
    expect((interactive.got[0]?.atMs ?? 0) - enqueuedAt).toBeLessThan(2_000);
    // Nor does the interactive consumer take low calls while the low consumer is full.
    const more = [makeCall('normal'), makeCall('normal')];
    for (const call of more) await broker.queue.enqueue(call);
    await waitFor('the interactive consumer full', async () => {
      const s = byPriority(await broker.queue.stats(POOL));
      return interactive.got.length === 2 && s.normal.inFlight === 2 && s.normal.depth === 1;
    });
    expect(batch.got).toHaveLength(2);
    expect(interactive.got.map((d) => d.message.call.priority)).toEqual(['normal', 'normal']);

    for (let i = 0; i < 3; i++) {
      await waitFor(`interactive delivery #${i}`, () => interactive.got.length > i);
      await interactive.at(i).ack();
    }
    for (let i = 0; i < backlog.length; i++) {
      await waitFor(`batch delivery #${i}`, () => batch.got.length > i);
      // Counted settled before the ack: a queue may hand over the next one during the ack.
      batchHeld -= 1;
      await batch.at(i).ack();
    }
    expect(batchMost).toBeLessThanOrEqual(2);
    expect(batch.got.map((d) => d.message.call.callId)).toEqual(backlog.map((c) => c.callId));
    expect(interactive.got).toHaveLength(3);
  });

  it('cancels and reports queued calls of every priority', async () => {
    const broker = await open(uniqueNamespace('cancel-all'));
    const calls = PRIORITIES.map((p) => makeCall(p));
    for (const call of calls) await broker.queue.enqueue(call);
    const queued = byPriority(await broker.queue.stats(POOL));
    for (const p of PRIORITIES) expect(queued[p]).toMatchObject({ depth: 1, inFlight: 0 });
    for (const call of calls) expect(await broker.queue.cancel(call.callId, POOL)).toBe(true);
    for (const call of calls) expect(await broker.queue.cancel(call.callId, POOL)).toBe(false);
    const empty = byPriority(await broker.queue.stats(POOL));
    for (const p of PRIORITIES) expect(empty[p]).toMatchObject({ depth: 0, inFlight: 0, oldestAgeMs: 0 });

    const { got, handler, at } = recorder();
    broker.queue.consume(POOL, { maxInFlight: 1, priorities: ['low'] }, handler);
    const low = makeCall('low');
    await broker.queue.enqueue(low);
    await waitFor('the low call in flight', async () => {
      const s = byPriority(await broker.queue.stats(POOL));
      return got.length === 1 && s.low.inFlight === 1 && s.low.depth === 0;
    });
    expect(await broker.queue.cancel(low.callId, POOL)).toBe(false);
    await at(0).ack();
  });

  it('refuses a consumer of no priority or of an unknown one', async () => {
    const broker = await open(uniqueNamespace('no-lane'));
    const handler = () => undefined;
    expect(() => broker.queue.consume(POOL, { maxInFlight: 1, priorities: [] }, handler)).toThrow(
      expect.objectContaining({ code: 'INVALID_CONFIG' }),
    );
    expect(() =>
      broker.queue.consume(POOL, { maxInFlight: 1, priorities: ['urgent' as Priority] }, handler),
    ).toThrow(expect.objectContaining({ code: 'INVALID_CONFIG' }));
  });

  it('stops delivering after stop(), while held calls can still be settled', async () => {
    const broker = await open(uniqueNamespace('stop'));
    const { got, handler, at } = recorder();
    const consumer = broker.queue.consume(POOL, { maxInFlight: 4 }, handler);
    await broker.queue.enqueue(makeCall());
    await waitFor('the first delivery', () => got.length === 1);
    await consumer.stop();
    const later = makeCall();
    await broker.queue.enqueue(later);
    await waitFor('the later call to wait in the queue', async () => {
      const s = byPriority(await broker.queue.stats(POOL));
      return s.normal.depth === 1 && s.normal.inFlight === 1;
    });
    expect(got).toHaveLength(1);
    await at(0).ack();

    const next = recorder();
    broker.queue.consume(POOL, { maxInFlight: 4 }, next.handler);
    await waitFor('the delivery to a new consumer', () => next.got.length === 1);
    expect(next.at(0).call.callId).toBe(later.callId);
    await next.at(0).ack();
  });

  it('broadcasts a cancel order to every subscriber', async () => {
    const namespace = uniqueNamespace('bus');
    const first = await open(namespace);
    const second = await open(namespace);
    const heardFirst: CancelOrder[] = [];
    const heardSecond: CancelOrder[] = [];
    await first.cancels.subscribe((o) => heardFirst.push(o));
    const unsubscribeSecond = await second.cancels.subscribe((o) => heardSecond.push(o));
    const order: CancelOrder = { sessionId: 'session-1', requestId: '42', reason: 'client disconnected' };
    await first.cancels.publish(order);
    await waitFor('both subscribers', () => heardFirst.length === 1 && heardSecond.length === 1);
    expect(heardFirst[0]).toEqual(order);
    expect(heardSecond[0]).toEqual(order);

    unsubscribeSecond();
    await second.cancels.publish({ ...order, requestId: '43' });
    await waitFor('the remaining subscriber', () => heardFirst.length === 2);
    // A new listener on the same replica hears a later order: the removed one would have heard 43 first.
    const heardLater: CancelOrder[] = [];
    await second.cancels.subscribe((o) => heardLater.push(o));
    await second.cancels.publish({ ...order, requestId: '44' });
    await waitFor('the new listener', () => heardLater.length === 1);
    expect(heardSecond).toHaveLength(1);
  });

  it.runIf(backend.spawn !== undefined)(
    'returns calls left unsettled by a closed broker to the queue',
    async () => {
      const namespace = uniqueNamespace('crash');
      const doomed = await open(namespace);
      const call = makeCall();
      await doomed.queue.enqueue(call);
      const first = recorder();
      doomed.queue.consume(POOL, { maxInFlight: 1, ackWaitMs: 1_000 }, first.handler);
      await waitFor('the first delivery', () => first.got.length === 1);
      // A replica that goes away without settling, as a killed worker would.
      await doomed.close();

      const survivor = await open(namespace);
      const second = recorder();
      survivor.queue.consume(POOL, { maxInFlight: 1, ackWaitMs: 1_000 }, second.handler);
      await waitFor('the redelivery to another replica', () => second.got.length === 1, 15_000);
      expect(second.at(0).call).toMatchObject({ callId: call.callId, attempt: 2 });
      await second.at(0).ack();
    },
  );

  it.runIf(backend.spawn !== undefined)('enqueues and consumes again after the broker restarts', async () => {
    const spawn = backend.spawn;
    if (!spawn) return;
    const server = await spawn();
    const broker = await openBroker({ url: server.url, namespace: uniqueNamespace('hiccup'), pools: [POOL] });
    try {
      const seen: string[] = [];
      broker.queue.consume(POOL, { maxInFlight: 2 }, (m) => {
        seen.push(m.call.callId);
        void m.ack();
      });
      const before = makeCall();
      await broker.queue.enqueue(before);
      await waitFor('the delivery before the restart', () => seen.includes(before.callId));

      await server.stop();
      await server.restart();

      const after = makeCall();
      await waitFor(
        'an enqueue after the restart',
        async () => {
          try {
            await broker.queue.enqueue(after);
            return true;
          } catch (err) {
            expect(err).toBeInstanceOf(ClusterError);
            return false;
          }
        },
        20_000,
      );
      await waitFor('the delivery after the restart', () => seen.includes(after.callId), 20_000);
      await waitFor('ready after the restart', () => broker.queue.ready());
    } finally {
      await broker.close();
      await server.stop();
    }
  });

  it.runIf(backend.deadUrl !== undefined)(
    'rejects opening a broker on a dead port with QUEUE_UNAVAILABLE',
    async () => {
      const deadUrl = backend.deadUrl;
      if (!deadUrl) return;
      const port = await freePort();
      const url = deadUrl(port);
      const startedAt = Date.now();
      const outcome = await openBroker({ url, namespace: uniqueNamespace('dead'), pools: [POOL] }).then(
        (broker) => {
          opened.push(broker);
          return undefined;
        },
        (err: unknown) => err,
      );
      expect(outcome).toBeInstanceOf(ClusterError);
      expect(outcome).toMatchObject({ code: 'QUEUE_UNAVAILABLE' });
      expect((outcome as ClusterError).message).toContain(url);
      // A hang detector, not a speed target: the open must give up on its own.
      expect(Date.now() - startedAt).toBeLessThan(10_000);
    },
  );
});

describe('NATS queue: requests on the call path', () => {
  let server: SpawnedBroker | undefined;

  beforeAll(async () => {
    server = await startNatsServer();
  });

  afterAll(async () => {
    await server?.stop();
  });

  it('makes no consumer-info request per call, and at most one pull request per call', async () => {
    const url = server?.url ?? '';
    const broker = await openBroker({ url, namespace: uniqueNamespace('lean'), pools: [POOL] });
    // Every JetStream API request is a core message: a subscription of our own sees them all.
    const spy = await connect({ servers: url });
    try {
      let infos = 0;
      let pulls = 0;
      spy.subscribe('$JS.API.CONSUMER.INFO.>', {
        callback: () => {
          infos += 1;
        },
      });
      spy.subscribe('$JS.API.CONSUMER.MSG.NEXT.>', {
        callback: () => {
          pulls += 1;
        },
      });
      await spy.flush();
      const { got, handler } = recorder();
      broker.queue.consume(POOL, { maxInFlight: 1 }, (m) => {
        handler(m);
        void m.ack();
      });
      const roundTrip = async () => {
        const call = makeCall();
        await broker.queue.enqueue(call);
        await waitFor('the delivery', () => got.some((d) => d.message.call.callId === call.callId));
      };
      // Warm up: the consumer opens (consumer info, looks at every priority) and settles into its steady state.
      for (let i = 0; i < 5; i++) await roundTrip();
      // The spy's counts include everything the server got before a round trip on the spy's connection.
      await spy.flush();
      const [infosBefore, pullsBefore] = [infos, pulls];
      const calls = 50;
      for (let i = 0; i < calls; i++) await roundTrip();
      await spy.flush();
      expect(infos - infosBefore).toBe(0);
      // One re-arm of the standing pull per call, plus a few idle re-arms should the run be slow.
      expect(pulls - pullsBefore).toBeLessThanOrEqual(calls + 6);
    } finally {
      await spy.close();
      await broker.close();
    }
  });

  it('recreates a stream the broker lost and takes the enqueue that found it gone', async () => {
    const url = server?.url ?? '';
    const namespace = uniqueNamespace('lost');
    const broker = await openBroker({ url, namespace, pools: [POOL] });
    const admin = await connect({ servers: url });
    try {
      const jsm = await jetstreamManager(admin);
      // What a broker restarted without its store looks like to a publish: nothing takes the subject.
      await jsm.streams.delete(`${namespace}_calls`);
      const call = makeCall();
      await broker.queue.enqueue(call);
      expect((await jsm.streams.info(`${namespace}_calls`)).state.messages).toBe(1);
      const { got, handler, at } = recorder();
      broker.queue.consume(POOL, { maxInFlight: 1 }, handler);
      await waitFor('the delivery from the recreated stream', () => got.length === 1, 20_000);
      expect(at(0).call.callId).toBe(call.callId);
      await at(0).ack();
      expect((await jsm.streams.info(`${namespace}_calls`)).state.messages).toBe(0);
    } finally {
      await admin.close();
      await broker.close();
    }
  });

  it('takes a second enqueue of a call id as a duplicate: the stream holds one message', async () => {
    const url = server?.url ?? '';
    const namespace = uniqueNamespace('dup');
    const broker = await openBroker({ url, namespace, pools: [POOL] });
    const spy = await connect({ servers: url });
    try {
      let published = 0;
      spy.subscribe(`${namespace}.calls.>`, {
        callback: () => {
          published += 1;
        },
      });
      await spy.flush();
      const call = makeCall();
      await broker.queue.enqueue(call);
      await broker.queue.enqueue({ ...call });
      await spy.flush();
      // Both publishes reached the server; JetStream kept one.
      expect(published).toBe(2);
      const jsm = await jetstreamManager(spy);
      expect((await jsm.streams.info(`${namespace}_calls`)).state.messages).toBe(1);
      // The receipt of the first enqueue still cancels the call.
      expect(await broker.queue.cancel(call.callId, POOL)).toBe(true);
      expect((await jsm.streams.info(`${namespace}_calls`)).state.messages).toBe(0);
    } finally {
      await spy.close();
      await broker.close();
    }
  });

  it('rejects an enqueue and an ack the broker never answers with QUEUE_UNAVAILABLE naming the call', async () => {
    // A private broker, paused with SIGSTOP: the connection stays up, requests get no reply.
    const paused = await startNatsServer();
    const broker = await openBroker({ url: paused.url, namespace: uniqueNamespace('hang'), pools: [POOL] });
    let stopped = false;
    try {
      const { got, handler, at } = recorder();
      // Room for the call enqueued during the pause (the server stores it once it runs again) and the next.
      broker.queue.consume(POOL, { maxInFlight: 4 }, handler);
      const held = makeCall();
      await broker.queue.enqueue(held);
      await waitFor('the delivery', () => got.length === 1);
      process.kill(paused.pid, 'SIGSTOP');
      stopped = true;
      const call = makeCall();
      const [enqueued, acked] = await Promise.all([
        broker.queue.enqueue(call).then(
          () => undefined,
          (err: unknown) => err,
        ),
        at(0)
          .ack()
          .then(
            () => undefined,
            (err: unknown) => err,
          ),
      ]);
      expect(enqueued).toBeInstanceOf(ClusterError);
      expect(enqueued).toMatchObject({ code: 'QUEUE_UNAVAILABLE' });
      expect((enqueued as ClusterError).message).toContain(call.callId);
      expect(acked).toBeInstanceOf(ClusterError);
      expect(acked).toMatchObject({ code: 'QUEUE_UNAVAILABLE' });
      expect((acked as ClusterError).message).toContain(held.callId);
      process.kill(paused.pid, 'SIGCONT');
      stopped = false;
      // The late replies find nobody waiting; requests go on working.
      const after = makeCall();
      await broker.queue.enqueue(after);
      // The consumer's pulls may have been lost in the pause: its lost-pull guard (a pull silent past
      // its expiry plus 10 s, checked every 5 s) re-arms them, so this wait covers that.
      await waitFor(
        'the delivery after the pause',
        () => got.some((d) => d.message.call.callId === after.callId),
        30_000,
      );
    } finally {
      if (stopped) process.kill(paused.pid, 'SIGCONT');
      await broker.close();
      await paused.dispose();
    }
  });
});
