import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager, StorageType } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openJobStore } from '../services/cli/index.js';
import { ClusterError, type JobStore } from '../services/core/index.js';
import {
  freePort,
  type SpawnedBroker,
  startNatsServer,
  startRedisServer,
  uniqueNamespace,
} from './support/brokers.js';
import { removeTempDir, trackTempDir } from './support/process-guard.js';
import { waitFor } from './support/wait.js';

/**
 * The one contract suite of `JobStore`, run unchanged against every implementation: the memory
 * store on the heap and in a directory, JetStream KV + Object Store, and Redis. The networked ones
 * run against brokers this file spawns (one per suite, a private one for the outage test), each
 * test in a namespace of its own.
 */

interface Backend {
  name: string;
  kind: JobStore['kind'];
  /** Starts what the suite shares (a broker, a directory). */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Opens a store in `namespace` on the shared broker (or directory). */
  open(namespace: string): Promise<JobStore>;
  /** Spawns a private broker that keeps its data across `restart()` (networked backends only). */
  spawn?: () => Promise<SpawnedBroker>;
  /** The URL scheme, for a URL where nothing listens. */
  scheme?: string;
}

function networked(kind: 'nats' | 'redis', spawn: () => Promise<SpawnedBroker>): Backend {
  let server: SpawnedBroker | undefined;
  return {
    name: kind,
    kind,
    start: async () => {
      server = await spawn();
    },
    stop: async () => {
      await server?.dispose();
    },
    open: (namespace) => {
      if (!server) throw new Error(`${kind} broker not started`);
      return openJobStore({ url: server.url, namespace });
    },
    spawn,
    scheme: kind,
  };
}

function inDirectory(): Backend {
  let dir: string | undefined;
  return {
    name: 'memory with a directory',
    kind: 'memory',
    start: async () => {
      dir = mkdtempSync(join(tmpdir(), 'mcp-cluster-jobstore-'));
      trackTempDir(dir);
    },
    stop: async () => {
      if (dir) removeTempDir(dir);
    },
    open: (namespace) => {
      if (!dir) throw new Error('directory not created');
      return openJobStore({ url: 'memory:', namespace, directory: join(dir, namespace) });
    },
  };
}

const backends: Backend[] = [
  {
    name: 'memory',
    kind: 'memory',
    start: async () => undefined,
    stop: async () => undefined,
    open: (namespace) => openJobStore({ url: 'memory:', namespace }),
  },
  inDirectory(),
  // JetStream keeps its file store in the server's store directory across a restart.
  networked('nats', () => startNatsServer()),
  // Persistent (append-only file), or the outage test could not check that data survives a restart.
  networked('redis', () => startRedisServer({ persistent: true })),
];

const text = (value: string) => new TextEncoder().encode(value);
const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const sorted = (names: string[]) => [...names].sort();

/** Whether two byte arrays hold the same bytes (fast for 20 MB, with a readable failure). */
function expectSameBytes(actual: Uint8Array | undefined, expected: Uint8Array): void {
  expect(actual).toBeDefined();
  const got = actual as Uint8Array;
  expect(got.byteLength).toBe(expected.byteLength);
  expect(Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(expected))).toBe(true);
}

/** What `promise` settles to within `ms`: its value, its error, or a `hung` marker. */
async function settleWithin<T>(
  promise: Promise<T>,
  ms: number,
): Promise<{ ok: true; value: T } | { ok: false; error: unknown } | { hung: true }> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<{ hung: true }>((resolve) => {
    timer = setTimeout(() => resolve({ hung: true }), ms);
  });
  try {
    return await Promise.race([
      promise.then(
        (value) => ({ ok: true as const, value }),
        (error: unknown) => ({ ok: false as const, error }),
      ),
      hung,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** How long an operation may take to fail while the broker is down (the store's own bound is ~3-5 s). */
const OUTAGE_BOUND_MS = 10_000;

describe.each(backends)('JobStore contract: $name', (backend) => {
  const opened: JobStore[] = [];

  beforeAll(async () => {
    await backend.start();
  });

  afterEach(async () => {
    await Promise.allSettled(opened.splice(0).map((s) => s.close()));
  });

  afterAll(async () => {
    await backend.stop();
  });

  async function open(label: string): Promise<JobStore> {
    const store = await backend.open(uniqueNamespace(label));
    opened.push(store);
    return store;
  }

  it('creates, reads, updates by revision and deletes records', async () => {
    const store = await open('records');
    expect(store.kind).toBe(backend.kind);

    expect(await store.get('job.1')).toBeUndefined();
    expect(await store.create('job.1', text('first'))).toBe(true);
    expect(await store.create('job.1', text('second'))).toBe(false);
    const created = await store.get('job.1');
    expect(created && decode(created.value)).toBe('first');
    const r1 = created?.revision ?? 0;
    expect(Number.isSafeInteger(r1) && r1 > 0).toBe(true);

    const r2 = await store.update('job.1', text('updated'), r1);
    expect(r2).not.toBe(false);
    expect(r2 as number).toBeGreaterThan(r1);
    expect(await store.get('job.1')).toEqual({ value: text('updated'), revision: r2 });

    // A stale revision loses and changes nothing.
    expect(await store.update('job.1', text('stale'), r1)).toBe(false);
    expect(decode((await store.get('job.1'))?.value ?? text(''))).toBe('updated');
    // So does an update of a key that never existed, or with a revision that cannot be one.
    expect(await store.update('job.none', text('x'), 1)).toBe(false);
    expect(await store.update('job.1', text('x'), 0)).toBe(false);
    expect(await store.update('job.1', text('x'), -1)).toBe(false);

    await store.delete('job.1');
    expect(await store.get('job.1')).toBeUndefined();
    expect(await store.keys('job.')).toEqual([]);
    await store.delete('job.1');
    await store.delete('job.never');
    expect(await store.update('job.1', text('after delete'), r2 as number)).toBe(false);

    // Re-created, the key gets a revision above every earlier one: a revision read before the
    // delete never matches the new record.
    expect(await store.create('job.1', text('again'))).toBe(true);
    const again = await store.get('job.1');
    expect(again?.revision).toBeGreaterThan(r2 as number);
    expect(await store.update('job.1', text('stale'), r1)).toBe(false);
    expect(await store.update('job.1', text('stale'), r2 as number)).toBe(false);
    expect(decode(again?.value ?? text(''))).toBe('again');
  });

  it('stores empty and binary values byte-exact, and keys up to 200 characters', async () => {
    const store = await open('values');
    expect(await store.create('empty', new Uint8Array(0))).toBe(true);
    const empty = await store.get('empty');
    expect(empty?.value.byteLength).toBe(0);
    expect(empty?.revision).toBeGreaterThan(0);

    const binary = Uint8Array.from({ length: 256 }, (_, i) => i);
    expect(await store.create('binary', binary)).toBe(true);
    expectSameBytes((await store.get('binary'))?.value, binary);

    // A view into a larger buffer is stored as its own bytes only.
    const backing = randomBytes(64);
    const view = new Uint8Array(backing.buffer, backing.byteOffset + 8, 16);
    expect(await store.create('view', view)).toBe(true);
    expectSameBytes((await store.get('view'))?.value, Uint8Array.from(view));

    const longest = `k${'.x'.repeat(99)}y`;
    expect(longest.length).toBe(200);
    expect(await store.create(longest, text('long'))).toBe(true);
    expect(decode((await store.get(longest))?.value ?? text(''))).toBe('long');
  });

  it('gives every write a higher revision than the one before', async () => {
    const store = await open('revisions');
    expect(await store.create('job.a', text('0'))).toBe(true);
    expect(await store.create('job.b', text('0'))).toBe(true);
    let last = 0;
    for (let i = 1; i <= 10; i++) {
      const key = i % 2 ? 'job.a' : 'job.b';
      const current = await store.get(key);
      const next = await store.update(key, text(String(i)), current?.revision ?? -1);
      expect(next).not.toBe(false);
      expect(next as number).toBeGreaterThan(current?.revision ?? 0);
      expect(next as number).toBeGreaterThan(last);
      last = next as number;
    }
  });

  it('applies exactly one increment per writer when 20 writers compare-and-set one key', async () => {
    const store = await open('cas');
    expect(await store.create('job.counter', text('0'))).toBe(true);
    const writers = 20;
    let applied = 0;
    let conflicts = 0;
    const increment = async () => {
      for (let attempt = 0; attempt < 200; attempt++) {
        const current = await store.get('job.counter');
        if (!current) throw new Error('the counter vanished');
        const next = String(Number(decode(current.value)) + 1);
        if ((await store.update('job.counter', text(next), current.revision)) !== false) {
          applied++;
          return;
        }
        conflicts++;
      }
      throw new Error('no update won in 200 attempts');
    };
    await Promise.all(Array.from({ length: writers }, increment));
    expect(applied).toBe(writers);
    expect(decode((await store.get('job.counter'))?.value ?? text(''))).toBe(String(writers));
    // All 20 first reads leave before any write, so the writers did collide (what the test is for).
    expect(conflicts).toBeGreaterThan(0);
  });

  it('lists exactly the keys under a prefix, split on the dot', async () => {
    const store = await open('keys');
    const all = ['job.1', 'job.1.a', 'job.1.b.c', 'job.1x.a', 'job.10.a', 'jobx.1', 'other.1.a'];
    for (const key of all) expect(await store.create(key, text(key))).toBe(true);

    expect(sorted(await store.keys('job.1.'))).toEqual(['job.1.a', 'job.1.b.c']);
    expect(sorted(await store.keys('job.1x.'))).toEqual(['job.1x.a']);
    expect(sorted(await store.keys('job.1.b.'))).toEqual(['job.1.b.c']);
    expect(sorted(await store.keys('job.'))).toEqual([
      'job.1',
      'job.1.a',
      'job.1.b.c',
      'job.10.a',
      'job.1x.a',
    ]);
    expect(await store.keys('nothing.')).toEqual([]);

    await store.delete('job.1.a');
    expect(sorted(await store.keys('job.1.'))).toEqual(['job.1.b.c']);
    // Blobs are another space: no key shows up as a blob name.
    expect(await store.blobNames('job.')).toEqual([]);
  });

  it('keeps stores of two namespaces apart', async () => {
    const a = await open('apart_a');
    const b = await open('apart_b');
    expect(await a.create('job.1', text('a'))).toBe(true);
    await a.putBlob('job.1.in', text('a'));
    expect(await b.get('job.1')).toBeUndefined();
    expect(await b.keys('job.')).toEqual([]);
    expect(await b.getBlob('job.1.in')).toBeUndefined();
    expect(await b.blobNames('job.')).toEqual([]);
    expect(await b.create('job.1', text('b'))).toBe(true);
    expect(decode((await a.get('job.1'))?.value ?? text(''))).toBe('a');
  });

  it('round-trips blobs of 0 bytes, 1 byte and 20 MB byte-exact, replaces and deletes them', async () => {
    const store = await open('blobs');
    const big = randomBytes(20 * 1024 * 1024);
    const blobs: Record<string, Uint8Array> = {
      'job.1.empty': new Uint8Array(0),
      'job.1.one': Uint8Array.of(0xff),
      'job.1.big': new Uint8Array(big.buffer, big.byteOffset, big.byteLength),
    };
    expect(await store.getBlob('job.1.one')).toBeUndefined();
    for (const [name, bytes] of Object.entries(blobs)) await store.putBlob(name, bytes);
    for (const [name, bytes] of Object.entries(blobs)) expectSameBytes(await store.getBlob(name), bytes);

    // A put replaces the blob of that name, whatever the sizes.
    const smaller = randomBytes(300 * 1024);
    await store.putBlob('job.1.big', smaller);
    expectSameBytes(await store.getBlob('job.1.big'), smaller);
    await store.putBlob('job.1.one', big.subarray(0, 5 * 1024 * 1024));
    expectSameBytes(await store.getBlob('job.1.one'), big.subarray(0, 5 * 1024 * 1024));

    await store.deleteBlob('job.1.big');
    expect(await store.getBlob('job.1.big')).toBeUndefined();
    await store.deleteBlob('job.1.big');
    await store.deleteBlob('job.never');
    expect(sorted(await store.blobNames('job.1.'))).toEqual(['job.1.empty', 'job.1.one']);

    // A deleted name can be written again.
    await store.putBlob('job.1.big', Uint8Array.of(1, 2, 3));
    expectSameBytes(await store.getBlob('job.1.big'), Uint8Array.of(1, 2, 3));
  });

  it('lists exactly the blob names under a prefix, split on the dot', async () => {
    const store = await open('blobnames');
    const all = ['job.1.in.0', 'job.1.out.0', 'job.1x.in.0', 'job.10.in.0', 'job.1', 'jobx.1.in.0'];
    for (const name of all) await store.putBlob(name, text(name));
    expect(sorted(await store.blobNames('job.1.'))).toEqual(['job.1.in.0', 'job.1.out.0']);
    expect(sorted(await store.blobNames('job.1.in.'))).toEqual(['job.1.in.0']);
    expect(sorted(await store.blobNames('job.1x.'))).toEqual(['job.1x.in.0']);
    expect(await store.blobNames('nothing.')).toEqual([]);
    // Blob names are not keys.
    expect(await store.keys('job.')).toEqual([]);
  });

  it('rejects invalid names and prefixes with a RangeError', async () => {
    const store = await open('names');
    const badNames = ['', 'a b', 'a..b', '.a', 'a.', 'a/b', 'a*', 'a>', 'a:b', 'é', 'x'.repeat(201)];
    const badPrefixes = ['', '.', 'job', 'job..', '.job.', 'a*.', 'a>.', 'a b.'];
    for (const name of badNames) {
      await expect(store.get(name), name).rejects.toThrow(RangeError);
      await expect(store.create(name, text('x')), name).rejects.toThrow(RangeError);
      await expect(store.update(name, text('x'), 1), name).rejects.toThrow(RangeError);
      await expect(store.delete(name), name).rejects.toThrow(RangeError);
      await expect(store.putBlob(name, text('x')), name).rejects.toThrow(RangeError);
      await expect(store.getBlob(name), name).rejects.toThrow(RangeError);
      await expect(store.deleteBlob(name), name).rejects.toThrow(RangeError);
    }
    for (const prefix of badPrefixes) {
      await expect(store.keys(prefix), prefix).rejects.toThrow(RangeError);
      await expect(store.blobNames(prefix), prefix).rejects.toThrow(RangeError);
    }
    // Nothing was written on the way.
    expect(await store.keys('a.')).toEqual([]);
  });

  it.runIf(backend.scheme !== undefined)('refuses to open on a URL where nothing listens', async () => {
    const url = `${backend.scheme}://127.0.0.1:${await freePort()}`;
    const started = Date.now();
    const error = await openJobStore({ url, namespace: uniqueNamespace('dead') }).then(
      (store) => {
        opened.push(store);
        return undefined;
      },
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(ClusterError);
    expect((error as ClusterError).code).toBe('QUEUE_UNAVAILABLE');
    expect(Date.now() - started).toBeLessThan(OUTAGE_BOUND_MS);
  });

  it.runIf(backend.spawn !== undefined)(
    'fails fast with QUEUE_UNAVAILABLE while the broker is down, and has its data back after a restart',
    async () => {
      const server = await (backend.spawn as () => Promise<SpawnedBroker>)();
      try {
        const store = await openJobStore({ url: server.url, namespace: uniqueNamespace('outage') });
        opened.push(store);
        expect(await store.create('job.1', text('before'))).toBe(true);
        const before = await store.get('job.1');
        const blob = randomBytes(1024 * 1024);
        await store.putBlob('job.1.in.0', blob);

        await server.stop();

        // Every kind of operation settles, rejecting with QUEUE_UNAVAILABLE, instead of hanging.
        const started = Date.now();
        const outcomes = await Promise.all(
          [
            store.get('job.1'),
            store.create('job.2', text('x')),
            store.update('job.1', text('x'), before?.revision ?? 1),
            store.delete('job.3'),
            store.keys('job.'),
            store.putBlob('job.1.out.0', text('x')),
            store.getBlob('job.1.in.0'),
            store.deleteBlob('job.9'),
            store.blobNames('job.'),
          ].map((op) => settleWithin<unknown>(op, OUTAGE_BOUND_MS + 2_000)),
        );
        const elapsedMs = Date.now() - started;
        for (const outcome of outcomes) {
          expect(outcome).not.toHaveProperty('hung');
          expect(outcome).toHaveProperty('ok', false);
          const error = (outcome as { error: unknown }).error;
          expect(error).toBeInstanceOf(ClusterError);
          expect((error as ClusterError).code).toBe('QUEUE_UNAVAILABLE');
        }
        expect(elapsedMs).toBeLessThan(OUTAGE_BOUND_MS);
        // The message names what failed and the key.
        expect(((outcomes[0] as { error: Error }).error as Error).message).toMatch(/get .*\(job\.1\)/);

        // Invalid names are still refused at once, without waiting for the broker.
        const refusedAt = Date.now();
        await expect(store.get('a..b')).rejects.toThrow(RangeError);
        expect(Date.now() - refusedAt).toBeLessThan(500);

        await server.restart();
        // The store's connections come back by themselves.
        const after = await waitFor('the record after the restart', () => store.get('job.1'), 20_000);
        expect(after).toEqual(before);
        expectSameBytes(await store.getBlob('job.1.in.0'), blob);
        const r = await store.update('job.1', text('after'), after.revision);
        expect(r).not.toBe(false);
        expect(await store.create('job.2', text('new'))).toBe(true);
        expect(sorted(await store.keys('job.'))).toEqual(['job.1', 'job.2']);
        expect(await store.blobNames('job.1.')).toEqual(['job.1.in.0']);
      } finally {
        await server.dispose();
      }
    },
    90_000,
  );
});

/** What the contract leaves open, checked where it matters: bucket settings and key layout. */
describe('JobStore on NATS: buckets', () => {
  let server: SpawnedBroker | undefined;
  const closers: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    server = await startNatsServer();
  });

  afterEach(async () => {
    await Promise.allSettled(closers.splice(0).map((close) => close()));
  });

  afterAll(async () => {
    await server?.dispose();
  });

  async function openBoth(namespace: string) {
    const url = (server as SpawnedBroker).url;
    const store = await openJobStore({ url, namespace });
    closers.push(() => store.close());
    const nc = await connect({ servers: url });
    closers.push(() => nc.close());
    const jsm = await jetstreamManager(nc);
    return { store, jsm, js: jsm.jetstream() };
  }

  it('keeps one revision per key on file storage with one replica, in both buckets', async () => {
    const namespace = uniqueNamespace('buckets');
    const { jsm } = await openBoth(namespace);
    const records = await jsm.streams.info(`KV_${namespace}_jobs`);
    expect(records.config.storage).toBe(StorageType.File);
    expect(records.config.num_replicas).toBe(1);
    expect(records.config.max_msgs_per_subject).toBe(1);
    const blobs = await jsm.streams.info(`OBJ_${namespace}_job_blobs`);
    expect(blobs.config.storage).toBe(StorageType.File);
    expect(blobs.config.num_replicas).toBe(1);
  });

  it('leaves no message behind for a deleted key or blob', async () => {
    const namespace = uniqueNamespace('purge');
    const { store, jsm } = await openBoth(namespace);
    expect(await store.create('job.1', text('x'))).toBe(true);
    await store.delete('job.1');
    await store.putBlob('job.1.in.0', randomBytes(300 * 1024));
    await store.deleteBlob('job.1.in.0');
    expect((await jsm.streams.info(`KV_${namespace}_jobs`)).state.messages).toBe(0);
    expect((await jsm.streams.info(`OBJ_${namespace}_job_blobs`)).state.messages).toBe(0);
  });

  it("treats another client's delete marker as absent and creates over it", async () => {
    const namespace = uniqueNamespace('marker');
    const { store, js } = await openBoth(namespace);
    expect(await store.create('job.1', text('x'))).toBe(true);
    const kv = await new Kvm(js).open(`${namespace}_jobs`);
    await kv.delete('job.1');
    expect(await store.get('job.1')).toBeUndefined();
    expect(await store.keys('job.')).toEqual([]);
    expect(await store.create('job.1', text('again'))).toBe(true);
    expect(decode((await store.get('job.1'))?.value ?? text(''))).toBe('again');
  });
});

describe('JobStore on Redis: key layout', () => {
  let server: SpawnedBroker | undefined;
  const closers: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    server = await startRedisServer();
  });

  afterEach(async () => {
    await Promise.allSettled(closers.splice(0).map((close) => close()));
  });

  afterAll(async () => {
    await server?.dispose();
  });

  it('keeps records as hashes under <ns>:jobs: and blobs as strings under <ns>:jobblobs:', async () => {
    const url = (server as SpawnedBroker).url;
    const namespace = uniqueNamespace('layout');
    const store = await openJobStore({ url, namespace });
    closers.push(() => store.close());
    const redis = new Redis(url, { maxRetriesPerRequest: 1 });
    closers.push(async () => redis.disconnect());
    expect(await store.create('job.1', text('x'))).toBe(true);
    await store.putBlob('job.1.in.0', text('blob'));
    expect(await redis.type(`${namespace}:jobs:job.1`)).toBe('hash');
    expect(await redis.type(`${namespace}:jobblobs:job.1.in.0`)).toBe('string');
    // The revision counter sits beside the records, outside every listing.
    expect(await redis.get(`${namespace}:jobs-revision`)).toBe('1');
    expect(await store.keys('job.')).toEqual(['job.1']);
  });
});
