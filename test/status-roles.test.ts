import { hostname } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  endpointOf,
  MAX_ROLE_BACKENDS,
  MAX_ROLE_TEXT,
  ROLE_ENTRY_VERSION,
  readRoleEntry,
} from '../services/core/index.js';
import type { StatusSnapshot } from '../services/ingress/index.js';
import { freePort, startNatsServer, startRedisServer } from './support/brokers.js';
import { type SimCluster, startSimCluster } from './support/cluster.js';
import { connectClient, type TestClient } from './support/mcp-clients.js';
import { type RoleProcess, startRole } from './support/processes.js';
import { waitFor } from './support/wait.js';

// The status page of a distributed cluster: ingress, workers and autoscaler each in an OS process of
// its own, on a broker spawned for the suite. Every worker publishes its state and backends, the
// autoscaler its decisions, to the broker's roles ledger; the ingress's /status/data must show them
// all, follow calls in flight, drop a worker that is killed (its entry's TTL) or stopped, and say
// that the figures are unavailable (not fail) while the broker is down.
describe.each([
  ['NATS JetStream', startNatsServer],
  ['BullMQ on Redis', startRedisServer],
] as const)('status page of a cluster across processes on %s', (_label, startBroker) => {
  let cluster: SimCluster;
  let ingress: RoleProcess;
  let scaler: RoleProcess;
  const workers: RoleProcess[] = [];
  let client: TestClient | undefined;
  let deadUrl = '';

  /** The id a `mcp-cluster worker` process gives itself (`<host>-<pid>-<pool>`). */
  const workerId = (w: RoleProcess, pool: string) => `${hostname()}-${String(w.child.pid)}-${pool}`;
  const data = async (): Promise<StatusSnapshot> => {
    const res = await fetch(new URL('/status/data', String(ingress.ready.url)));
    expect(res.status).toBe(200);
    return (await res.json()) as StatusSnapshot;
  };
  /** Polls /status/data until `check` holds; the timeout error shows the last figures seen. */
  const dataWhere = async (what: string, check: (s: StatusSnapshot) => boolean, timeoutMs = 20_000) => {
    let last: StatusSnapshot | undefined;
    return waitFor(
      () =>
        `${what}; last seen ${JSON.stringify({ workers: last?.workers, backends: last?.backends, autoscaler: last?.autoscaler, problems: last?.problems })}`,
      async () => {
        last = await data();
        return check(last) ? last : undefined;
      },
      timeoutMs,
    );
  };

  beforeAll(async () => {
    // Nothing listens there: the `idle` pool's backend is unhealthy.
    deadUrl = `http://127.0.0.1:${await freePort()}`;
    cluster = await startSimCluster({
      name: 'roles',
      startBroker,
      // 20 tokens/s per sequence: a 200-token answer streams for about 10 s.
      sim: { ttftMs: 20, tokensPerSecond: 20, maxNumSeqs: 16 },
      config: (simUrl) => `
worker: { ackWait: 2s, deliveryConnectTimeout: 2s }
autoscaler: { provider: metrics, interval: 200ms, port: 0 }
pools:
  inference:
    backend: openai-chat
    endpoints:
      - { url: "${simUrl}", maxConcurrency: 4 }
      - { url: "${simUrl}/v1?token=s3cret", maxConcurrency: 2 }
  idle: { backend: openai-chat, endpoints: [{ url: "${deadUrl}", maxConcurrency: 1 }] }
tools:
  - { name: generate_text, template: generate_text, pool: inference, model: sim-llm }
  - { name: generate_text_idle, template: generate_text, pool: idle, model: sim-llm }
`,
    });
    const started = await Promise.all([
      cluster.ingress('ingress'),
      cluster.worker('worker-inference-1', 'inference'),
      cluster.worker('worker-inference-2', 'inference'),
      cluster.worker('worker-idle', 'idle'),
      startRole('autoscaler', ['autoscaler', '--config', cluster.configPath]),
    ]);
    ingress = started[0];
    workers.push(...started.slice(1, 4));
    scaler = started[4];
    client = await connectClient('v2', String(ingress.ready.url));
  }, 60_000);

  afterAll(async () => {
    await client?.close().catch(() => undefined);
    // Killed, not stopped: the last test leaves the broker down, and a drain would wait for it.
    await Promise.all([ingress, scaler, ...workers].map((r) => r?.kill()));
    await cluster?.stop();
  }, 30_000);

  it('shows every worker process, each backend as its worker sees it, and the autoscaler’s decisions', async () => {
    const [w1, w2, idle] = workers as [RoleProcess, RoleProcess, RoleProcess];
    const expected = [
      workerId(idle, 'idle'),
      ...[workerId(w1, 'inference'), workerId(w2, 'inference')].sort((a, b) => a.localeCompare(b)),
    ];
    const snapshot = await dataWhere(
      'all three workers, the idle backend unhealthy, a decision for both pools',
      (s) =>
        JSON.stringify(s.workers?.map((w) => w.worker)) === JSON.stringify(expected) &&
        s.backends?.some((b) => b.pool === 'idle' && !b.healthy) === true &&
        (s.autoscaler ?? []).filter((a) => a.desired !== null).length === 2,
    );
    expect(snapshot.problems).toEqual([]);
    for (const w of snapshot.workers ?? []) {
      expect(w).toMatchObject({ state: 'running', inFlight: 0 });
      expect(w.maxInFlight).toBe(w.pool === 'inference' ? 6 : 1);
    }
    // Each inference worker sees both endpoints of its pool, healthy, breakers closed, idle.
    for (const w of [w1, w2]) {
      const theirs = snapshot.backends?.filter((b) => b.worker === workerId(w, 'inference'));
      expect(theirs?.map((b) => [b.backend, b.healthy, b.breaker, b.inFlight, b.maxConcurrency])).toEqual([
        ['0', true, 'closed', 0, 4],
        ['1', true, 'closed', 0, 2],
      ]);
      // Endpoints by host:port: the second endpoint's path and query (a token) stay on the worker.
      const simHost = new URL(cluster.simUrl).host;
      expect(theirs?.map((b) => b.endpoint)).toEqual([simHost, simHost]);
    }
    expect(JSON.stringify(snapshot)).not.toContain('s3cret');
    expect(snapshot.backends?.find((b) => b.pool === 'idle')).toMatchObject({
      worker: workerId(idle, 'idle'),
      backend: '0',
      endpoint: new URL(deadUrl).host,
      healthy: false,
    });
    // The autoscaler process's last decision of each pool.
    const scalerId = `${hostname()}-${String(scaler.child.pid)}`;
    expect(snapshot.autoscaler?.map((a) => [a.pool, a.autoscaler, a.provider])).toEqual([
      ['idle', scalerId, 'metrics'],
      ['inference', scalerId, 'metrics'],
    ]);
    for (const a of snapshot.autoscaler ?? []) {
      expect(a.reason).not.toBeNull();
      expect(a.error).toBeNull();
    }
  }, 40_000);

  it('follows the calls in flight at the workers and their backends', async () => {
    const c = client as TestClient;
    const calls = Array.from({ length: 4 }, (_, i) =>
      c.callTool('generate_text', { prompt: `in flight ${i}`, max_tokens: 200 }),
    );
    const sum = (items: { inFlight: number }[] | null | undefined) =>
      (items ?? []).reduce((n, item) => n + item.inFlight, 0);
    const inference = (s: StatusSnapshot) => ({
      workers: s.workers?.filter((w) => w.pool === 'inference'),
      backends: s.backends?.filter((b) => b.pool === 'inference'),
    });
    await dataWhere('4 calls held by the inference workers and running at their backends', (s) => {
      const { workers: w, backends: b } = inference(s);
      return sum(w) === 4 && sum(b) === 4;
    });
    const results = await Promise.all(calls);
    for (const result of results) expect(result.isError, JSON.stringify(result.content)).toBeFalsy();
    const after = await dataWhere('no call held once all are answered', (s) => {
      const { workers: w, backends: b } = inference(s);
      return w?.length === 2 && sum(w) === 0 && sum(b) === 0;
    });
    expect(after.backends?.every((b) => b.pool !== 'inference' || b.breaker === 'closed')).toBe(true);
  }, 60_000);

  it('drops a worker that is killed once its entry’s TTL passes, and one that stops at once', async () => {
    const [w1, w2, idle] = workers as [RoleProcess, RoleProcess, RoleProcess];
    const killed = workerId(w2, 'inference');
    await w2.kill();
    const without = await dataWhere(
      'the killed worker and its backends gone',
      (s) => s.workers?.some((w) => w.worker === killed) === false,
    );
    expect(without.backends?.some((b) => b.worker === killed)).toBe(false);
    expect(without.workers?.map((w) => w.worker)).toEqual([
      workerId(idle, 'idle'),
      workerId(w1, 'inference'),
    ]);

    const stopped = workerId(w1, 'inference');
    await w1.stop();
    const after = await dataWhere(
      'the stopped worker gone',
      (s) => s.workers?.some((w) => w.worker === stopped) === false,
    );
    expect(after.workers?.map((w) => w.worker)).toEqual([workerId(idle, 'idle')]);
    expect(after.backends?.map((b) => b.worker)).toEqual([workerId(idle, 'idle')]);
  }, 40_000);

  it('says the figures are unavailable while the broker is down, with 200 and no crash', async () => {
    await cluster.broker.stop();
    const snapshot = await dataWhere('the roles ledger reported unreadable', (s) =>
      s.problems.some((p) => p.includes('roles ledger cannot be read')),
    );
    expect(snapshot.workers).toBeNull();
    expect(snapshot.backends).toBeNull();
    expect(snapshot.autoscaler).toBeNull();
    // The page's shell is served as ever.
    expect((await fetch(new URL('/status', String(ingress.ready.url)))).status).toBe(200);
  }, 40_000);
});

// The entries as another process may have left them: read, never trusted.
describe('roles ledger entries', () => {
  it('reads a worker entry, with bad figures as 0, a bad state as stopped and a bad breaker as open', () => {
    const entry = readRoleEntry({
      v: ROLE_ENTRY_VERSION,
      role: 'worker',
      worker: 'w-1',
      pool: 'inference',
      state: 'dancing',
      inFlight: -3,
      maxInFlight: Number.NaN,
      backends: [
        {
          index: 0,
          endpoint: 'gpu-0:8000',
          healthy: true,
          breaker: 'closed',
          inFlight: 2,
          maxConcurrency: 4,
        },
        { index: '1', endpoint: 7, healthy: 'yes', breaker: 'ajar', inFlight: 'many' },
        'not a backend',
      ],
      backendsOmitted: 'x',
    });
    expect(entry).toEqual({
      v: ROLE_ENTRY_VERSION,
      role: 'worker',
      worker: 'w-1',
      pool: 'inference',
      state: 'stopped',
      inFlight: 0,
      maxInFlight: 0,
      backends: [
        {
          index: 0,
          endpoint: 'gpu-0:8000',
          healthy: true,
          breaker: 'closed',
          inFlight: 2,
          maxConcurrency: 4,
        },
        { index: 0, endpoint: '', healthy: false, breaker: 'open', inFlight: 0, maxConcurrency: 0 },
      ],
      backendsOmitted: 0,
    });
  });

  it('cuts long lists and texts at their bounds', () => {
    const backends = Array.from({ length: MAX_ROLE_BACKENDS + 5 }, (_, index) => ({
      index,
      endpoint: 'h'.repeat(MAX_ROLE_TEXT + 50),
      healthy: true,
      breaker: 'closed',
      inFlight: 0,
      maxConcurrency: 1,
    }));
    const entry = readRoleEntry({
      v: ROLE_ENTRY_VERSION,
      role: 'worker',
      worker: 'w',
      pool: 'p',
      state: 'running',
      inFlight: 1,
      maxInFlight: 2,
      backends,
      backendsOmitted: 10,
    });
    expect(entry?.role).toBe('worker');
    if (entry?.role !== 'worker') return;
    expect(entry.backends).toHaveLength(MAX_ROLE_BACKENDS);
    expect(entry.backendsOmitted).toBe(15);
    expect(entry.backends[0]?.endpoint).toHaveLength(MAX_ROLE_TEXT);
  });

  it('reads an autoscaler entry, null decisions kept, bad ones as 0 or null', () => {
    expect(
      readRoleEntry({
        v: ROLE_ENTRY_VERSION,
        role: 'autoscaler',
        autoscaler: 'host-1',
        provider: 'metrics',
        pools: [
          { pool: 'inference', desired: 3, current: 2, reason: 'backlog', error: null, changes: 4 },
          { pool: 'idle', desired: null, current: null, reason: null, error: 42, changes: -1 },
          { desired: 1 },
        ],
      }),
    ).toEqual({
      v: ROLE_ENTRY_VERSION,
      role: 'autoscaler',
      autoscaler: 'host-1',
      provider: 'metrics',
      pools: [
        { pool: 'inference', desired: 3, current: 2, reason: 'backlog', error: null, changes: 4 },
        { pool: 'idle', desired: null, current: null, reason: null, error: null, changes: 0 },
      ],
    });
  });

  it('ignores entries of another version, another role, or no entry at all', () => {
    for (const value of [
      null,
      'text',
      [1, 2],
      { v: ROLE_ENTRY_VERSION + 1, role: 'worker', worker: 'w', pool: 'p' },
      { v: ROLE_ENTRY_VERSION, role: 'ingress' },
      { v: ROLE_ENTRY_VERSION, role: 'worker', worker: 7, pool: 'p' },
      { v: ROLE_ENTRY_VERSION, role: 'autoscaler', autoscaler: 'a', pools: 'all' },
    ]) {
      expect(readRoleEntry(value), JSON.stringify(value)).toBeUndefined();
    }
  });

  it('names an endpoint by host:port, never its credentials, path or query', () => {
    expect(endpointOf('http://ops:s3cret@gpu-1.internal:8000/v1?token=abc')).toBe('gpu-1.internal:8000');
    expect(endpointOf('https://[::1]/')).toBe('[::1]');
    expect(endpointOf('not a url')).toBe('unparsable URL');
  });
});
