import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  type Autoscaler,
  type LocalReplica,
  localProvider,
  type MetricsSource,
  metricsProvider,
  type PoolRates,
  policyFromConfig,
  readyPort,
  type ScalingProvider,
  startAutoscaler,
  workerProcessLauncher,
} from '../services/autoscaler/index.js';
import { openBroker } from '../services/cli/index.js';
import {
  type Broker,
  ClusterError,
  clusterMetrics,
  encodeArguments,
  newCallId,
  type ReplicaEntry,
  type ResolvedConfig,
  type ShareLedger,
  type ToolCall,
  ZERO_TENANT,
} from '../services/core/index.js';
import { resolveConfig } from './support/families.js';
import { metricValue } from './support/processes.js';

// The autoscaler's loop with providers and rate sources of our own making (the contracts are ours), over
// the real in-process memory queue. The process-level test with NATS and real workers is autoscaler.test.ts.

const CONFIG = `
cluster: { namespace: scaler-unit }
autoscaler: { interval: 100ms, port: 0 }
pools:
  alpha:
    backend: openai-chat
    endpoints: [{ url: "http://127.0.0.1:9", maxConcurrency: 2 }]
    scaling: { replicaConcurrency: 2, maxReplicas: 6, scaleDownStabilization: 1s, idleToZero: 1s }
  beta:
    backend: openai-chat
    endpoints: [{ url: "http://127.0.0.1:9", maxConcurrency: 2 }]
    scaling: { replicaConcurrency: 2, maxReplicas: 6 }
tools:
  - { name: gen_alpha, template: generate_text, pool: alpha, model: m }
  - { name: gen_beta, template: generate_text, pool: beta, model: m }
`;

function makeCall(pool: string, priority: ToolCall['priority'] = 'normal'): ToolCall {
  const now = Date.now();
  return {
    callId: newCallId(),
    tool: `gen_${pool}`,
    pool,
    argumentsJson: encodeArguments({ prompt: 'x' }),
    tenant: 't',
    sessionKey: 's',
    priority,
    deadlineUnixMs: now + 120_000,
    attempt: 0,
    replyTo: '127.0.0.1:9',
    traceContext: {},
    enqueuedUnixMs: now,
    wantsProgress: false,
    principal: 'anonymous',
    scopes: [],
  };
}

/** A provider that records what it is asked; `fail` and `hold` make a pool's scale() reject or wait. */
class RecordingProvider implements ScalingProvider {
  readonly kind = 'metrics' as const;
  readonly set = new Map<string, number>();
  readonly scaleCalls: { pool: string; replicas: number }[] = [];
  readonly replicaReads = new Map<string, number>();
  readonly fail = new Set<string>();
  readonly hold = new Map<string, Promise<void>>();
  readonly inScale = new Map<string, number>();
  maxConcurrentScale = 0;
  closed = 0;

  async replicas(pool: string): Promise<number> {
    this.replicaReads.set(pool, (this.replicaReads.get(pool) ?? 0) + 1);
    return this.set.get(pool) ?? 0;
  }
  async scale(pool: string, replicas: number): Promise<void> {
    this.scaleCalls.push({ pool, replicas });
    const now = (this.inScale.get(pool) ?? 0) + 1;
    this.inScale.set(pool, now);
    this.maxConcurrentScale = Math.max(this.maxConcurrentScale, now);
    try {
      await this.hold.get(pool);
      if (this.fail.has(pool)) throw new ClusterError('BACKEND_UNAVAILABLE', `orchestrator refused ${pool}`);
      this.set.set(pool, replicas);
    } finally {
      this.inScale.set(pool, (this.inScale.get(pool) ?? 1) - 1);
    }
  }
  async close(): Promise<void> {
    this.closed++;
  }
  callsFor(pool: string) {
    return this.scaleCalls.filter((c) => c.pool === pool);
  }
}

function rates(pool: string, arrivalPerSec: number, meanServiceMs: number): PoolRates {
  return {
    pool,
    arrivalPerSec,
    lowArrivalPerSec: 0,
    completedPerSec: arrivalPerSec,
    meanServiceMs,
    p95ServiceMs: meanServiceMs,
    serviceCs2: Number.NaN,
    meanQueueWaitMs: Number.NaN,
    inFlight: 0,
    queueDepth: 0,
    heldCalls: 0,
    lowQueueDepth: 0,
    lowInFlight: 0,
    oldestWaitMs: 0,
    replicas: 0,
    windowMs: 1000,
  };
}

/** An ingress replica's shares-ledger entry holding `held[pool][tenant]` calls for their fair-queue quota. */
function heldEntry(
  held: Record<string, Record<string, number>>,
  /** Age of each pool's oldest held call, ms (default 0). */
  oldestMs: Record<string, number> = {},
): ReplicaEntry {
  return {
    v: 2,
    pools: Object.fromEntries(
      Object.entries(held).map(([pool, tenants]) => [
        pool,
        {
          servedCostPerS: 100,
          tenants: Object.fromEntries(
            Object.entries(tenants).map(([tenant, heldCalls]) => [
              tenant,
              // Queued and in-flight figures are the broker's business here: only held calls add depth.
              {
                ...ZERO_TENANT,
                queuedCalls: 2,
                queuedCost: 200,
                inFlight: 5,
                heldCalls,
                heldCost: heldCalls * 100,
                oldestHeldMs: heldCalls > 0 ? (oldestMs[pool] ?? 0) : 0,
              },
            ]),
          ),
        },
      ]),
    ),
  };
}

async function until<T>(probe: () => T, what: string, timeoutMs = 10_000): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('autoscaler service loop', () => {
  let config: ResolvedConfig;
  let broker: Broker;
  let scaler: Autoscaler | undefined;
  let provider: RecordingProvider;

  beforeEach(async () => {
    config = resolveConfig(CONFIG, {});
    broker = await openBroker({ url: 'memory:', namespace: 'scaler-unit', pools: ['alpha', 'beta'] });
    provider = new RecordingProvider();
  });
  afterEach(async () => {
    await scaler?.shutdown();
    scaler = undefined;
    await broker.close();
  });

  it('wakes a pool with a queued call on its first look, sets the gauges and counts the change', async () => {
    await broker.queue.enqueue(makeCall('alpha'));
    scaler = await startAutoscaler({ config, broker, provider, serveHttp: false });
    await until(() => provider.set.get('alpha') === 1, 'alpha scaled to 1');
    // The idle pool is observed but never scaled.
    await until(() => scaler && scaler.ticks >= 3, 'three ticks');
    expect(provider.callsFor('beta')).toEqual([]);
    expect(provider.callsFor('alpha')).toEqual([{ pool: 'alpha', replicas: 1 }]);

    const text = await clusterMetrics().registry.metrics();
    expect(metricValue(text, 'mcp_cluster_autoscaler_desired_replicas', { pool: 'alpha' })).toBe(1);
    expect(metricValue(text, 'mcp_cluster_autoscaler_current_replicas', { pool: 'alpha' })).toBe(1);
    expect(metricValue(text, 'mcp_cluster_autoscaler_desired_replicas', { pool: 'beta' })).toBe(0);
    expect(
      metricValue(text, 'mcp_cluster_autoscaler_scaled_total', {
        pool: 'alpha',
        direction: 'up',
        reason: 'wake-from-zero',
      }),
    ).toBeGreaterThanOrEqual(1);
    const alpha = scaler.status().find((s) => s.pool === 'alpha');
    expect(alpha?.observation?.queueDepth).toBe(1);
    expect(alpha?.desired).toBe(1);
    expect(alpha?.changes).toBe(1);
  });

  it('a pool whose provider refuses is retried every interval while the other pools are scaled', async () => {
    provider.fail.add('alpha');
    await broker.queue.enqueue(makeCall('alpha'));
    await broker.queue.enqueue(makeCall('beta'));
    scaler = await startAutoscaler({ config, broker, provider, serveHttp: false });
    await until(() => provider.set.get('beta') === 1, 'beta scaled');
    await until(() => provider.callsFor('alpha').length >= 3, 'alpha retried on later ticks');
    expect(provider.set.has('alpha')).toBe(false);
    const alpha = scaler.status().find((s) => s.pool === 'alpha');
    expect(alpha?.error).toContain('BACKEND_UNAVAILABLE');
    expect(alpha?.changes).toBe(0);
    // Once the orchestrator takes it, the pool is scaled and the error clears.
    provider.fail.delete('alpha');
    await until(() => provider.set.get('alpha') === 1, 'alpha scaled after recovery');
    await until(() => scaler?.status().find((s) => s.pool === 'alpha')?.error === null, 'error cleared');
    expect(scaler.state).toBe('running');
  });

  it('never overlaps a pool with itself: a slow scale is skipped on later ticks while other pools go on', async () => {
    let release: () => void = () => undefined;
    provider.hold.set(
      'alpha',
      new Promise<void>((resolve) => {
        release = resolve;
      }),
    );
    await broker.queue.enqueue(makeCall('alpha'));
    scaler = await startAutoscaler({ config, broker, provider, serveHttp: false });
    await until(() => provider.callsFor('alpha').length === 1, 'alpha scale started');
    const readsBefore = provider.replicaReads.get('beta') ?? 0;
    const ticksBefore = scaler.ticks;
    // The tick that started alpha's scale may still be counting: six more ticks hold five full ones.
    await until(() => scaler && scaler.ticks >= ticksBefore + 6, 'six more ticks');
    // beta was observed on every one of those ticks; alpha was not asked again while its scale hung.
    expect((provider.replicaReads.get('beta') ?? 0) - readsBefore).toBeGreaterThanOrEqual(5);
    expect(provider.callsFor('alpha')).toHaveLength(1);
    expect(provider.maxConcurrentScale).toBe(1);

    await broker.queue.enqueue(makeCall('alpha'));
    await broker.queue.enqueue(makeCall('alpha'));
    await broker.queue.enqueue(makeCall('alpha'));
    release();
    await until(() => (provider.set.get('alpha') ?? 0) >= 2, 'alpha decided again after the slow scale');
    expect(provider.maxConcurrentScale).toBe(1);
  });

  it('sizes from the source rates (λ·S / concurrency, capped per step) and keeps deciding when the source fails', async () => {
    let failing = false;
    const source: Pick<MetricsSource, 'read'> = {
      read: async () => {
        if (failing) throw new ClusterError('BACKEND_UNAVAILABLE', 'every metrics target is down');
        // 10 calls/s of 1 s each on 2 slots per replica: 5 replicas, at most 0 → 4 in one step.
        return new Map([['alpha', rates('alpha', 10, 1000)]]);
      },
    };
    scaler = await startAutoscaler({ config, broker, provider, source, serveHttp: false });
    await until(() => provider.set.get('alpha') === 4, 'alpha to the step cap');
    await until(() => provider.set.get('alpha') === 5, 'alpha to the requirement');
    expect(provider.callsFor('alpha').map((c) => c.replicas)).toEqual([4, 5]);
    expect(scaler.status().find((s) => s.pool === 'alpha')?.reason).toBe('scale-up');

    failing = true;
    await broker.queue.enqueue(makeCall('beta'));
    await until(() => provider.set.get('beta') === 1, 'beta scaled while the source fails');
  });

  it('sizes a low-priority backlog by batchDrainTarget, apart from the interactive figures', async () => {
    // D = 5 s and calls of 1 s on 2 slots: one replica works off 10 batch calls in D (less the
    // oldest call's age: D counts from its enqueue).
    const batchConfig = resolveConfig(
      CONFIG.replace('scaleDownStabilization: 1s', 'batchDrainTarget: 5s, scaleDownStabilization: 1s'),
      {},
    );
    for (let i = 0; i < 35; i++) await broker.queue.enqueue(makeCall('alpha', 'low'));
    await broker.queue.enqueue(makeCall('alpha', 'high'));
    // The job's 35 chunks arrived as a burst of 35/s; the interactive part is the 1 high call.
    const source: Pick<MetricsSource, 'read'> = {
      read: async () => new Map([['alpha', { ...rates('alpha', 36, 1000), lowArrivalPerSec: 35 }]]),
    };
    scaler = await startAutoscaler({ config: batchConfig, broker, provider, source, serveHttp: false });
    await until(() => provider.set.get('alpha') === 4, 'alpha sized for its backlog');
    const alpha = scaler.status().find((s) => s.pool === 'alpha');
    expect(alpha?.policy.batchDrainTargetMs).toBe(5000);
    expect(alpha?.observation).toMatchObject({
      queueDepth: 1,
      batchQueueDepth: 35,
      batchInFlight: 0,
      arrivalRatePerSec: 1,
    });
    // 35 calls / (2 calls/s × 5 s) = 3.5 → 4; the burst read as λ = 36/s would have asked for maxReplicas.
    expect(alpha?.required).toBe(4);
    await until(() => scaler && scaler.ticks >= 3, 'three ticks');
    expect(provider.set.get('alpha')).toBe(4);
  });

  it('counts the calls held at the ingresses (shares ledger, all replicas and tenants) as interactive depth', async () => {
    // Fair queueing keeps a flood at the ingresses: the broker holds 1 interactive call (and a batch
    // chunk) of alpha, two ingress replicas hold 10 more between them, and 2 of beta.
    await broker.queue.enqueue(makeCall('alpha'));
    await broker.queue.enqueue(makeCall('alpha', 'low'));
    await broker.shares.publish(
      'ingress-a',
      heldEntry({ alpha: { acme: 4, other: 3 }, beta: { acme: 2 } }, { alpha: 60_000, beta: 200 }),
      60_000,
    );
    await broker.shares.publish('ingress-b', heldEntry({ alpha: { acme: 3, default: 0 } }), 60_000);
    // Entries of another release or garbage count nothing.
    await broker.shares.publish(
      'ingress-c',
      { v: 99, pools: { alpha: { tenants: { acme: { heldCalls: 50 } } } } },
      60_000,
    );
    await broker.shares.publish('ingress-d', 'not an entry', 60_000);
    // Calls of 1 s, no arrivals: the depth alone sizes the pool. 11 calls × 1 s / 1 s target on 2
    // slots per replica = 6 replicas (5.5 rounded up), reached in two steps (0 → 4 → 6).
    const source: Pick<MetricsSource, 'read'> = {
      read: async () =>
        new Map([
          ['alpha', rates('alpha', 0, 1000)],
          ['beta', rates('beta', 0, 1000)],
        ]),
    };
    scaler = await startAutoscaler({ config, broker, provider, source, serveHttp: false });
    await until(() => provider.set.get('alpha') === 6, 'alpha sized for queued plus held calls');
    await until(() => provider.set.get('beta') === 1, 'beta woken by its held calls alone');
    const alpha = scaler.status().find((s) => s.pool === 'alpha');
    expect(alpha?.observation).toMatchObject({ queueDepth: 11, batchQueueDepth: 1 });
    expect(alpha?.required).toBe(6);
    // A held call waits like a queued one: the oldest held (a minute at ingress-a) is the pool's
    // oldest wait, far above the broker's own call, queued at the start of this test.
    expect(alpha?.observation?.oldestWaitMs).toBe(60_000);
    const beta = scaler.status().find((s) => s.pool === 'beta')?.observation;
    expect(beta).toMatchObject({ queueDepth: 2, oldestWaitMs: 200 });

    // The flood is served: the replicas hold nothing more, and the depth is the broker's again.
    await broker.shares.publish('ingress-a', heldEntry({}), 60_000);
    await broker.shares.withdraw('ingress-b');
    await until(
      () => scaler?.status().find((s) => s.pool === 'alpha')?.observation?.queueDepth === 1,
      'held calls gone from the depth',
    );
  });

  it('keeps scaling from the broker when the shares ledger cannot be read (logged once, counted as 0)', async () => {
    let ledgerDown = true;
    const shares: ShareLedger = {
      publish: (r, v, t) => broker.shares.publish(r, v, t),
      read: async () => {
        if (ledgerDown) throw new ClusterError('QUEUE_UNAVAILABLE', 'shares bucket unreachable');
        return broker.shares.read();
      },
      withdraw: (r) => broker.shares.withdraw(r),
      close: () => broker.shares.close(),
    };
    await broker.shares.publish('ingress-a', heldEntry({ alpha: { acme: 9 } }), 60_000);
    await broker.queue.enqueue(makeCall('beta'));
    const errorsBefore = (await clusterMetrics().shareLedgerErrors.get()).values[0]?.value ?? 0;
    const stderr = vi.spyOn(process.stderr, 'write');
    try {
      scaler = await startAutoscaler({
        config,
        broker: { queue: broker.queue, shares },
        provider,
        serveHttp: false,
      });
      await until(
        () => provider.set.get('beta') === 1,
        'beta scaled from the broker while the ledger is down',
      );
      await until(() => scaler && scaler.ticks >= 4, 'four ticks');
      // alpha's held calls are not seen: no demand, no replica, and no error on the pool.
      expect(provider.callsFor('alpha')).toEqual([]);
      expect(scaler.status().map((s) => s.error)).toEqual([null, null]);
      const lines = () => stderr.mock.calls.map(([chunk]) => String(chunk));
      expect(lines().filter((l) => l.includes('reading the shares ledger failed'))).toHaveLength(1);
      const errorsNow = (await clusterMetrics().shareLedgerErrors.get()).values[0]?.value ?? 0;
      expect(errorsNow - errorsBefore).toBeGreaterThanOrEqual(4);

      // The ledger is back: alpha's held calls wake it, and the recovery is logged once. Nine calls
      // outstanding on 2 slots per replica want 5; one step from zero grows to at most 4.
      ledgerDown = false;
      await until(() => provider.set.get('alpha') === 4, 'alpha woken by its held calls');
      expect(lines().filter((l) => l.includes('reading the shares ledger works again'))).toHaveLength(1);
    } finally {
      stderr.mockRestore();
    }
  });

  it('a pool whose queue figures cannot be read is not decided; the others are', async () => {
    const flaky: Pick<Broker, 'queue'> = {
      queue: {
        ...broker.queue,
        kind: broker.queue.kind,
        stats: async (pool: string) => {
          if (pool === 'alpha') throw new ClusterError('QUEUE_UNAVAILABLE', 'stream info timed out');
          return broker.queue.stats(pool);
        },
        ready: () => broker.queue.ready(),
        enqueue: (c) => broker.queue.enqueue(c),
        consume: (p, o, h) => broker.queue.consume(p, o, h),
        cancel: (id, p) => broker.queue.cancel(id, p),
        close: () => broker.queue.close(),
      },
    };
    await broker.queue.enqueue(makeCall('alpha'));
    await broker.queue.enqueue(makeCall('beta'));
    scaler = await startAutoscaler({ config, broker: flaky, provider, serveHttp: false });
    await until(() => provider.set.get('beta') === 1, 'beta scaled');
    await until(() => scaler && scaler.ticks >= 3, 'three ticks');
    expect(provider.callsFor('alpha')).toEqual([]);
    expect(scaler.status().find((s) => s.pool === 'alpha')?.error).toContain('QUEUE_UNAVAILABLE');
  });

  it('serves /healthz, /readyz, /metrics and /status, and 404 elsewhere', async () => {
    await broker.queue.enqueue(makeCall('alpha'));
    scaler = await startAutoscaler({
      config,
      broker,
      provider,
      describeReplicas: () => [{ pool: 'alpha', id: 'r1' }],
    });
    expect(scaler.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    await until(() => provider.set.get('alpha') === 1, 'alpha scaled');
    expect((await fetch(`${scaler.url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${scaler.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'ready', broker: true, provider: 'metrics' });
    const text = await (await fetch(`${scaler.url}/metrics`)).text();
    expect(metricValue(text, 'mcp_cluster_autoscaler_desired_replicas', { pool: 'alpha' })).toBe(1);
    const status = (await (await fetch(`${scaler.url}/status`)).json()) as {
      pools: { pool: string; desired: number; observation: { serviceTimeMs: number | null } }[];
      replicas: unknown[];
    };
    const alpha = status.pools.find((p) => p.pool === 'alpha');
    expect(alpha?.desired).toBe(1);
    // No source: the service time is unknown, shown as null (NaN is not JSON).
    expect(alpha?.observation.serviceTimeMs).toBeNull();
    expect(status.replicas).toEqual([{ pool: 'alpha', id: 'r1' }]);
    const missing = await fetch(`${scaler.url}/nope`);
    expect(missing.status).toBe(404);
    expect(await missing.text()).toContain('/status');
  });

  it('a taken port is an INVALID_CONFIG error naming the address and the setting', async () => {
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      const taken = resolveConfig(CONFIG.replace('port: 0', `port: ${port}`), {});
      const err = await startAutoscaler({ config: taken, broker, provider }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ClusterError);
      expect((err as ClusterError).code).toBe('INVALID_CONFIG');
      expect((err as ClusterError).message).toContain(`127.0.0.1:${port}`);
      expect((err as ClusterError).message).toContain('autoscaler.port');
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });

  it('shutdown stops the loop and closes the provider once', async () => {
    scaler = await startAutoscaler({ config, broker, provider, serveHttp: false });
    await until(() => scaler && scaler.ticks >= 2, 'two ticks');
    await scaler.shutdown();
    await scaler.shutdown();
    expect(scaler.state).toBe('stopped');
    expect(provider.closed).toBe(1);
    const ticks = scaler.ticks;
    await new Promise((r) => setTimeout(r, 350));
    expect(scaler.ticks).toBe(ticks);
  });

  it('rejects a pool that is not in the configuration', async () => {
    await expect(
      startAutoscaler({ config, broker, provider, serveHttp: false, pools: ['gamma'] }),
    ).rejects.toThrow(/no pool "gamma".*alpha, beta/);
  });
});

describe('policyFromConfig', () => {
  it('maps every scaling setting of a pool onto the control law', () => {
    const config = resolveConfig(
      `${CONFIG}
`.replace(
        'scaling: { replicaConcurrency: 2, maxReplicas: 6, scaleDownStabilization: 1s, idleToZero: 1s }',
        'scaling: { minReplicas: 1, maxReplicas: 7, targetQueueWait: 250ms, scaleDownStabilization: 3s, idleToZero: 4s, maxScaleUpFactor: 3, maxScaleUpStep: 2, replicaConcurrency: 5 }',
      ),
      {},
    );
    expect(policyFromConfig(config.pools.alpha as ResolvedConfig['pools'][string])).toEqual({
      minReplicas: 1,
      maxReplicas: 7,
      targetQueueWaitMs: 250,
      batchDrainTargetMs: 3_600_000,
      scaleDownStabilizationMs: 3000,
      idleToZeroMs: 4000,
      maxScaleUpPerStep: { factor: 3, absolute: 2 },
      perReplicaConcurrency: 5,
    });
  });

  it('names the pool setting when a value is outside the law', () => {
    const pool = resolveConfig(CONFIG, {}).pools.alpha as ResolvedConfig['pools'][string];
    const bad = { ...pool, scaling: { ...pool.scaling, minReplicas: 9, maxReplicas: 2 } };
    expect(() => policyFromConfig(bad)).toThrow(
      /pools\.alpha\.scaling: minReplicas \(9\) > maxReplicas \(2\)/,
    );
  });
});

describe('metrics provider', () => {
  const config = resolveConfig(CONFIG.replace('maxReplicas: 6 }', 'maxReplicas: 6, minReplicas: 2 }'), {});

  it('starts at minReplicas, or at the replicas seen running, and answers the last desired count', async () => {
    const p = metricsProvider(config, { initial: { alpha: 3 } });
    expect(p.kind).toBe('metrics');
    expect(await p.replicas('alpha')).toBe(3);
    expect(await p.replicas('beta')).toBe(2);
    await p.scale('beta', 5);
    expect(await p.replicas('beta')).toBe(5);
    await p.close();
  });

  it('ignores a seed that is not a replica count and caps one above maxReplicas', async () => {
    const p = metricsProvider(config, { initial: { alpha: -1, beta: 99 } });
    expect(await p.replicas('alpha')).toBe(0);
    expect(await p.replicas('beta')).toBe(6);
    const nan = metricsProvider(config, { initial: { alpha: Number.NaN } });
    expect(await nan.replicas('alpha')).toBe(0);
  });

  it('rejects an unknown pool and a count that is not a non-negative integer', async () => {
    const p = metricsProvider(config);
    await expect(p.replicas('gamma')).rejects.toThrow(/no pool "gamma"/);
    await expect(p.scale('alpha', 1.5)).rejects.toThrow(/non-negative integer/);
    await expect(p.scale('alpha', -1)).rejects.toThrow(/non-negative integer/);
  });
});

/** An in-memory replica whose drain and crash the test controls. */
interface TestReplica extends LocalReplica {
  drained: boolean;
  crash(): void;
}

function testLauncher() {
  const started: TestReplica[] = [];
  let n = 0;
  let failNext = 0;
  let attempts = 0;
  const launch = async (pool: string): Promise<LocalReplica> => {
    attempts++;
    await new Promise((r) => setTimeout(r, 5));
    if (failNext > 0) {
      failNext--;
      throw new ClusterError('INVALID_CONFIG', `pool ${pool} has no backend endpoints`);
    }
    let exit: () => void = () => undefined;
    const exited = new Promise<void>((resolve) => {
      exit = resolve;
    });
    const replica: TestReplica = {
      id: `${pool}#${++n}`,
      pid: undefined,
      metricsUrl: `http://127.0.0.1:${9000 + n}/metrics`,
      exited,
      drained: false,
      drain: async () => {
        replica.drained = true;
        exit();
      },
      crash: () => exit(),
    };
    started.push(replica);
    return replica;
  };
  return {
    launch,
    started,
    attempts: () => attempts,
    failNext: (k: number) => {
      failNext = k;
    },
  };
}

describe('local provider', () => {
  it('launches replicas on scale up, drains the newest first on scale down, never counting a draining one', async () => {
    const l = testLauncher();
    const p = localProvider({ launch: l.launch });
    expect(p.kind).toBe('local');
    expect(await p.replicas('alpha')).toBe(0);
    await p.scale('alpha', 3);
    expect(await p.replicas('alpha')).toBe(3);
    expect(p.metricsUrls()).toEqual(l.started.map((r) => r.metricsUrl));
    await p.scale('alpha', 1);
    expect(await p.replicas('alpha')).toBe(1);
    expect(l.started.map((r) => r.drained)).toEqual([false, true, true]);
    expect(p.list().filter((r) => r.state === 'running')).toEqual([
      { pool: 'alpha', id: 'alpha#1', pid: undefined, state: 'running' },
    ]);
    expect(p.metricsUrls()).toEqual([l.started[0]?.metricsUrl]);
    await p.close();
  });

  it('a replica that exits on its own leaves the count, so the next decision replaces it', async () => {
    const l = testLauncher();
    const p = localProvider({ launch: l.launch });
    await p.scale('alpha', 2);
    l.started[0]?.crash();
    await until(() => p.list().length === 1, 'the crashed replica removed');
    expect(await p.replicas('alpha')).toBe(1);
    await p.scale('alpha', 2);
    expect(await p.replicas('alpha')).toBe(2);
    expect(l.started).toHaveLength(3);
    await p.close();
  });

  it('a failed launch rejects with its reason and keeps the replicas that did start', async () => {
    const l = testLauncher();
    const p = localProvider({ launch: l.launch });
    l.failNext(1);
    const err = await p.scale('alpha', 3).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClusterError);
    expect((err as ClusterError).code).toBe('INVALID_CONFIG');
    expect((err as ClusterError).message).toMatch(
      /could not start 1 of 3 replicas of pool alpha: .*no backend/,
    );
    expect(await p.replicas('alpha')).toBe(2);
    await p.close();
  });

  it('after a failed start the pool backs off before launching again; other pools are not held', async () => {
    const l = testLauncher();
    const p = localProvider({ launch: l.launch, retryBackoffMs: 300 });
    l.failNext(1);
    await expect(p.scale('alpha', 1)).rejects.toThrow(/could not start 1 of 1 replicas of pool alpha/);
    expect(l.attempts()).toBe(1);
    await expect(p.scale('alpha', 1)).rejects.toThrow(
      /not starting replicas of pool alpha for another \d+ ms after 1 failed start\(s\); the last: .*no backend/,
    );
    expect(l.attempts()).toBe(1);
    await p.scale('beta', 1);
    expect(await p.replicas('beta')).toBe(1);
    // A scale-down needs no launch and is not held by the back-off.
    await p.scale('alpha', 0);
    await new Promise((r) => setTimeout(r, 350));
    await p.scale('alpha', 1);
    expect(await p.replicas('alpha')).toBe(1);
    await p.close();
  });

  it('scale calls of one pool run one after the other; close drains everything and refuses more', async () => {
    const l = testLauncher();
    const p = localProvider({ launch: l.launch });
    await Promise.all([p.scale('alpha', 2), p.scale('alpha', 4), p.scale('beta', 1)]);
    expect(await p.replicas('alpha')).toBe(4);
    expect(await p.replicas('beta')).toBe(1);
    await p.close();
    await p.close();
    expect(l.started.every((r) => r.drained)).toBe(true);
    expect(await p.replicas('alpha')).toBe(0);
    await expect(p.scale('alpha', 1)).rejects.toMatchObject({ code: 'SHUTTING_DOWN' });
    await expect(localProvider({ launch: l.launch }).scale('alpha', -2)).rejects.toThrow(/non-negative/);
  });
});

describe('worker ready line', () => {
  it.each([
    ['{"role":"worker","pool":"alpha","port":4100}', 4100],
    ['  {"role":"worker","pool":"alpha","port":4100}  ', undefined],
    ['{"role":"worker","pool":"beta","port":4100}', undefined],
    ['{"role":"ingress","pool":"alpha","port":4100}', undefined],
    ['{"role":"worker","pool":"alpha","port":0}', undefined],
    ['{"role":"worker","pool":"alpha","port":70000}', undefined],
    ['{"role":"worker","pool":"alpha","port":"4100"}', undefined],
    ['{"role":"worker","pool":"alpha","port":41.5}', undefined],
    ['{"role":"worker","pool":"alpha"', undefined],
    ['null', undefined],
    ['{}', undefined],
    ['[1,2]', undefined],
    ['not json at all', undefined],
  ])('%s → %s', (line, port) => {
    expect(readyPort(line, 'alpha')).toBe(port);
  });
});

describe('worker process launcher', () => {
  /** A stand-in for `mcp-cluster worker`, so the launcher's process handling is tested on its own. */
  const fakeCli = (body: string): string => {
    const dir = mkdtempSync(join(tmpdir(), 'mcp-cluster-fake-worker-'));
    const path = join(dir, 'fake-cli.mjs');
    writeFileSync(path, `const pool = process.argv[4];\n${body}\n`);
    chmodSync(path, 0o755);
    return path;
  };
  const quiet = new Writable({
    write(_chunk, _enc, done) {
      done();
    },
  });

  it('resolves on the ready line (after other output), and drains with SIGTERM', async () => {
    const cli = fakeCli(`
      console.log('starting up');
      console.log(JSON.stringify({ role: 'worker', pool: 'other', port: 1 }));
      console.log(JSON.stringify({ role: 'worker', pool, port: 4567, args: process.argv.slice(2) }));
      process.on('SIGTERM', () => { console.error('draining'); process.exit(0); });
      setInterval(() => {}, 1000);
    `);
    const launch = workerProcessLauncher({ cliPath: cli, args: ['--config', '/x.yaml'], stderr: quiet });
    const replica = await launch('alpha');
    expect(replica.pid).toBeGreaterThan(0);
    expect(replica.metricsUrl).toBe('http://127.0.0.1:4567/metrics');
    expect(replica.id).toContain('alpha');
    await replica.drain();
    await replica.exited;
    expect(() => process.kill(replica.pid as number, 0)).toThrow();
  });

  it('kills a worker that ignores SIGTERM after killAfterMs', async () => {
    const cli = fakeCli(`
      process.on('SIGTERM', () => {});
      console.log(JSON.stringify({ role: 'worker', pool, port: 4567 }));
      setInterval(() => {}, 1000);
    `);
    const replica = await workerProcessLauncher({ cliPath: cli, args: [], killAfterMs: 300, stderr: quiet })(
      'alpha',
    );
    await replica.drain();
    expect(() => process.kill(replica.pid as number, 0)).toThrow();
  });

  it("a worker that exits before it is ready rejects with the worker's own message", async () => {
    const cli = fakeCli(`
      process.stderr.write('mcp-cluster: INVALID_CONFIG: pool "alpha" has no backend endpoints (set pools.alpha.endpoints)\\n');
      process.exit(2);
    `);
    const err = await workerProcessLauncher({ cliPath: cli, args: [], stderr: quiet })('alpha').catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ClusterError);
    expect((err as ClusterError).code).toBe('INVALID_CONFIG');
    expect((err as ClusterError).message).toContain('exited (code 2) before it was ready');
    expect((err as ClusterError).message).toContain('has no backend endpoints');
  });

  it('a worker that never prints a ready line is killed after readyTimeoutMs', async () => {
    const cli = fakeCli(`
      console.log('{"role":"worker","pool":"alpha","port":"nope"}');
      setInterval(() => {}, 1000);
    `);
    const err = await workerProcessLauncher({ cliPath: cli, args: [], readyTimeoutMs: 500, stderr: quiet })(
      'alpha',
    ).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/worker of pool alpha printed no ready line within 500 ms/);
  });

  it('a missing CLI script is reported, not thrown past the launcher', async () => {
    const err = await workerProcessLauncher({
      cliPath: join(tmpdir(), 'no-such-dir', 'main.js'),
      args: [],
      stderr: quiet,
    })('alpha').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClusterError);
    expect((err as Error).message).toMatch(/exited \(code 1\) before it was ready.*Cannot find module/s);
  });
});
