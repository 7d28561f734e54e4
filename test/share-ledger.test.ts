import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openBroker } from '../services/cli/index.js';
import {
  type Broker,
  ClusterError,
  MAX_REPLICA_ID_LENGTH,
  MAX_SHARE_TTL_MS,
  MAX_SHARE_VALUE_BYTES,
} from '../services/core/index.js';
import { type SpawnedBroker, startNatsServer, startRedisServer, uniqueNamespace } from './support/brokers.js';
import { waitFor } from './support/wait.js';

/**
 * The one contract suite of `ShareLedger`, run unchanged against every implementation and both of a
 * broker's ledgers (`Broker.shares`, `Broker.roles`: one implementation, parametrized by bucket or
 * key name); the networked ones against brokers this file spawns, each test in a namespace of its
 * own. Two brokers opened on one namespace play two replicas.
 */

/** The broker's ledgers: the ingress replicas' shares and the roles' status. */
type LedgerName = 'shares' | 'roles';

interface Backend {
  name: 'memory' | 'nats' | 'bullmq';
  start(): Promise<void>;
  stop(): Promise<void>;
  url(): string;
  /** Spawns a private broker (for stop and restart tests); networked backends only. */
  spawn?: () => Promise<SpawnedBroker>;
  /** Whether the ledger `ledger` left anything on the broker of `url` under `namespace`. */
  ledgerExists?: (url: string, namespace: string, ledger: LedgerName) => Promise<boolean>;
}

function networked(
  name: 'nats' | 'bullmq',
  spawn: () => Promise<SpawnedBroker>,
  ledgerExists: (url: string, namespace: string, ledger: LedgerName) => Promise<boolean>,
): Backend {
  let server: SpawnedBroker | undefined;
  return {
    name,
    start: async () => {
      server = await spawn();
    },
    stop: async () => {
      await server?.dispose();
    },
    url: () => {
      if (!server) throw new Error(`${name} broker not started`);
      return server.url;
    },
    spawn,
    ledgerExists,
  };
}

async function natsBucketExists(url: string, namespace: string, ledger: LedgerName): Promise<boolean> {
  const nc = await connect({ servers: url });
  try {
    const jsm = await jetstreamManager(nc);
    const names: string[] = [];
    for await (const n of jsm.streams.names()) names.push(n);
    return names.includes(`KV_${namespace}_${ledger}`);
  } finally {
    await nc.close();
  }
}

async function redisKeyExists(url: string, namespace: string, ledger: LedgerName): Promise<boolean> {
  const client = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    return (await client.exists(`${namespace}:${ledger}`)) === 1;
  } finally {
    client.disconnect();
  }
}

const backends: Backend[] = [
  { name: 'memory', start: async () => undefined, stop: async () => undefined, url: () => 'memory:' },
  networked('nats', startNatsServer, natsBucketExists),
  networked('bullmq', startRedisServer, redisKeyExists),
];

/** Generous bound on "rejects within a few seconds" (the implementations take about 3 s). */
const OUTAGE_BOUND_MS = 12_000;

const cases = backends.flatMap((backend) =>
  (['shares', 'roles'] as const).map((ledger) => ({ backend, name: backend.name, ledger })),
);

describe.each(cases)('ShareLedger contract: $name, Broker.$ledger', ({ backend, ledger }) => {
  const opened: Broker[] = [];
  const servers: SpawnedBroker[] = [];

  beforeAll(async () => {
    await backend.start();
  });

  afterEach(async () => {
    await Promise.allSettled(opened.splice(0).map((b) => b.close()));
    await Promise.allSettled(servers.splice(0).map((s) => s.dispose()));
  });

  afterAll(async () => {
    await backend.stop();
  });

  async function open(namespace: string, url = backend.url()): Promise<Broker> {
    const broker = await openBroker({ url, namespace, pools: [] });
    opened.push(broker);
    return broker;
  }

  /** Two replicas of one namespace. */
  async function pair(prefix: string, url?: string): Promise<[Broker, Broker, string]> {
    const namespace = uniqueNamespace(prefix);
    return [await open(namespace, url), await open(namespace, url), namespace];
  }

  /** Waits until `broker` reads exactly `expected` (replica id -> value). */
  async function readsExactly(broker: Broker, expected: Record<string, unknown>, timeoutMs?: number) {
    let last: Map<string, unknown> | undefined;
    await waitFor(
      () => `the entries ${JSON.stringify(expected)}, last read ${JSON.stringify(last && [...last])}`,
      async () => {
        last = await broker[ledger].read();
        return JSON.stringify(sorted(Object.fromEntries(last))) === JSON.stringify(sorted(expected));
      },
      timeoutMs,
    );
  }

  it('round trip: each replica reads both entries, values decoded as published', async () => {
    const [a, b] = await pair('round_trip');
    const valueA = { pools: { inference: { acme: { queuedCost: 2048, inFlight: 3 } } }, rate: 1.5 };
    const valueB = { pools: {}, list: [1, 'two', null, true], text: 'ünï 🚀' };
    await a[ledger].publish('replica-a', valueA, 30_000);
    await b[ledger].publish('replica-b', valueB, 30_000);
    await readsExactly(b, { 'replica-a': valueA, 'replica-b': valueB });
    await readsExactly(a, { 'replica-a': valueA, 'replica-b': valueB });
  });

  it('the broker’s other ledger is apart: the same replica id there is another entry', async () => {
    const [a, b] = await pair('apart');
    const other = ledger === 'shares' ? 'roles' : 'shares';
    await a[ledger].publish('replica-a', { here: true }, 30_000);
    await a[other].publish('replica-a', { there: true }, 30_000);
    await a[other].publish('only-there', { there: true }, 30_000);
    await readsExactly(b, { 'replica-a': { here: true } });
    await a[ledger].withdraw('replica-a');
    await readsExactly(b, {}, 5_000);
    expect(Object.fromEntries(await b[other].read())).toEqual({
      'replica-a': { there: true },
      'only-there': { there: true },
    });
  });

  it('a read returns copies: changing one changes nothing the ledger holds', async () => {
    const [a] = await pair('copies');
    await a[ledger].publish('replica-a', { n: 1 }, 30_000);
    const first = await a[ledger].read();
    (first.get('replica-a') as { n: number }).n = 99;
    expect((await a[ledger].read()).get('replica-a')).toEqual({ n: 1 });
  });

  it('a publish replaces the replica’s previous entry', async () => {
    const [a, b] = await pair('replace');
    await a[ledger].publish('replica-a', { v: 1 }, 30_000);
    await readsExactly(b, { 'replica-a': { v: 1 } });
    await a[ledger].publish('replica-a', { v: 2 }, 30_000);
    await readsExactly(b, { 'replica-a': { v: 2 } });
    await readsExactly(a, { 'replica-a': { v: 2 } });
  });

  it('an entry not published again within its TTL expires; others stay', async () => {
    const [a, b] = await pair('expiry');
    await b[ledger].publish('replica-b', { alive: true }, 30_000);
    // Seen by the other replica first: published again until it is (a loaded machine may take
    // longer than the TTL between a publish and a read).
    await waitFor('replica-a seen by replica-b', async () => {
      await a[ledger].publish('replica-a', { alive: false }, 300);
      return (await b[ledger].read()).has('replica-a');
    });
    await readsExactly(b, { 'replica-b': { alive: true } }, 5_000);
    await readsExactly(a, { 'replica-b': { alive: true } }, 5_000);
  });

  it('an entry published again before its TTL stays live past the first TTL', async () => {
    const [a, b] = await pair('refresh');
    const until = Date.now() + 1_600;
    while (Date.now() < until) {
      await a[ledger].publish('replica-a', { t: 'kept' }, 500);
      await new Promise((r) => setTimeout(r, 100));
    }
    // Three TTLs after the first publish, the entry is live (counted from the latest publish).
    await readsExactly(b, { 'replica-a': { t: 'kept' } });
  });

  it('withdraw removes the entry at once (long before its TTL) and never rejects', async () => {
    const [a, b] = await pair('withdraw');
    await a[ledger].publish('replica-a', { v: 1 }, MAX_SHARE_TTL_MS);
    await b[ledger].publish('replica-b', { v: 2 }, MAX_SHARE_TTL_MS);
    await readsExactly(b, { 'replica-a': { v: 1 }, 'replica-b': { v: 2 } });
    await a[ledger].withdraw('replica-a');
    await readsExactly(a, { 'replica-b': { v: 2 } }, 5_000);
    await readsExactly(b, { 'replica-b': { v: 2 } }, 5_000);
    // Unknown and malformed ids: nothing to do, no rejection.
    await a[ledger].withdraw('never-published');
    await a[ledger].withdraw('');
  });

  it('replica ids with odd characters round trip, distinct ids stay distinct', async () => {
    const [a, b] = await pair('odd_ids');
    const ids = [
      'ingress-0.ingress.mcp.svc.cluster.local:50051',
      '10.0.0.7:7001',
      'a b/c*>.$',
      'a:',
      'a=3A',
      'a_',
      '..',
      'ünï©ødé 🚀',
      'line\nbreak "quoted"',
      'x'.repeat(MAX_REPLICA_ID_LENGTH),
    ];
    for (const [i, id] of ids.entries()) await a[ledger].publish(id, { i }, 30_000);
    await readsExactly(b, Object.fromEntries(ids.map((id, i) => [id, { i }])));
  });

  it('rejects hostile publishes with a RangeError naming the problem, before any I/O', async () => {
    const [a, b] = await pair('hostile');
    const big = { blob: 'x'.repeat(MAX_SHARE_VALUE_BYTES) };
    await expect(a[ledger].publish('r', big, 1_000)).rejects.toThrow(RangeError);
    await expect(a[ledger].publish('r', big, 1_000)).rejects.toThrow(/over the 65536-byte bound/);
    // Multi-byte characters count in bytes, not characters.
    await expect(a[ledger].publish('r', { s: 'é'.repeat(MAX_SHARE_VALUE_BYTES / 2) }, 1_000)).rejects.toThrow(
      /bytes of JSON, over/,
    );
    await expect(a[ledger].publish('r', { n: 10n }, 1_000)).rejects.toThrow(/cannot be written as JSON/);
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    await expect(a[ledger].publish('r', cycle, 1_000)).rejects.toThrow(/cannot be written as JSON/);
    await expect(a[ledger].publish('r', undefined, 1_000)).rejects.toThrow(/no JSON form/);
    for (const ttl of [0, -5, 1.5, Number.NaN, MAX_SHARE_TTL_MS + 1]) {
      await expect(a[ledger].publish('r', {}, ttl), String(ttl)).rejects.toThrow(/TTL must be an integer/);
    }
    for (const id of ['', 'x'.repeat(MAX_REPLICA_ID_LENGTH + 1), 'lone \uD800 surrogate']) {
      await expect(a[ledger].publish(id, {}, 1_000), id.slice(0, 20)).rejects.toThrow(RangeError);
    }
    // A value just under the bound goes through intact.
    const nearBound = { blob: 'y'.repeat(MAX_SHARE_VALUE_BYTES - 100) };
    await a[ledger].publish('r', nearBound, 30_000);
    await readsExactly(b, { r: nearBound });
  });

  it.runIf(backend.ledgerExists !== undefined)(
    'sets nothing up on the broker until first used (workers never pay for it)',
    async () => {
      const [a, , namespace] = await pair('lazy');
      expect(await backend.ledgerExists?.(backend.url(), namespace, ledger)).toBe(false);
      await a[ledger].publish('replica-a', { v: 1 }, 30_000);
      expect(await backend.ledgerExists?.(backend.url(), namespace, ledger)).toBe(true);
      // The other ledger of the broker is a bucket (key) of its own, still not set up.
      const other = ledger === 'shares' ? 'roles' : 'shares';
      expect(await backend.ledgerExists?.(backend.url(), namespace, other)).toBe(false);
    },
  );

  it.runIf(backend.spawn !== undefined)(
    'broker stopped: publish and read reject with QUEUE_UNAVAILABLE within the bound; restarted: both work again',
    async () => {
      const server = await (backend.spawn as () => Promise<SpawnedBroker>)();
      servers.push(server);
      const [a, b] = await pair('outage', server.url);
      await a[ledger].publish('replica-a', { v: 'before' }, 30_000);
      await readsExactly(b, { 'replica-a': { v: 'before' } });

      await server.stop();
      for (const [what, op] of [
        ['publish', () => a[ledger].publish('replica-a', { v: 'during' }, 30_000)],
        ['read', () => b[ledger].read()],
      ] as const) {
        const started = Date.now();
        const err = await op().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err, what).toBeInstanceOf(ClusterError);
        expect((err as ClusterError).code, what).toBe('QUEUE_UNAVAILABLE');
        expect(Date.now() - started, what).toBeLessThan(OUTAGE_BOUND_MS);
      }
      const started = Date.now();
      await a[ledger].withdraw('replica-a');
      expect(Date.now() - started).toBeLessThan(OUTAGE_BOUND_MS);

      await server.restart();
      await waitFor(
        'a publish after the restart',
        async () => {
          await a[ledger].publish('replica-a', { v: 'after' }, 30_000);
          return true;
        },
        20_000,
      );
      await readsExactly(b, { 'replica-a': { v: 'after' } }, 20_000);
      await b[ledger].publish('replica-b', { v: 'b' }, 30_000);
      await readsExactly(a, { 'replica-a': { v: 'after' }, 'replica-b': { v: 'b' } }, 20_000);
    },
    60_000,
  );

  it.runIf(backend.spawn !== undefined)(
    'close is bounded while the broker is down',
    async () => {
      const server = await (backend.spawn as () => Promise<SpawnedBroker>)();
      servers.push(server);
      const [a] = await pair('close_down', server.url);
      await a[ledger].publish('replica-a', { v: 1 }, 30_000);
      await a[ledger].read();
      await server.stop();
      const started = Date.now();
      await a[ledger].close();
      await a.close();
      expect(Date.now() - started).toBeLessThan(OUTAGE_BOUND_MS);
    },
    30_000,
  );
});

function sorted(record: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(record).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)));
}
