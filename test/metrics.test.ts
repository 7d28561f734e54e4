import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBroker } from '../services/cli/index.js';
import {
  type Broker,
  clusterMetrics,
  encodeArguments,
  inProcessDelivery,
  LIFECYCLE_STATES,
  newCallId,
  type Priority,
  type QueuedCall,
  type ResolvedConfig,
  type ToolCall,
} from '../services/core/index.js';
import { type Ingress, startIngress } from '../services/ingress/index.js';
import { embedAdapter } from '../workers/embeddings/index.js';
import { inferenceAdapters } from '../workers/inference/index.js';
import { startWorker, type Worker } from '../workers/runtime/index.js';
import { type SimBackend, startSimBackend } from '../workers/sim/index.js';
import { type SpawnedBroker, startNatsServer, startRedisServer, uniqueNamespace } from './support/brokers.js';
import { resolveConfig } from './support/families.js';
import { connectClient, type TestClient } from './support/mcp-clients.js';
import { waitFor } from './support/wait.js';

// The metrics capacity planners read, checked the way Prometheus sees them: real calls through an
// embedded cluster (ingress, memory queue, workers, simulated backends in this process), then the
// `/metrics` text of the ingress or of a worker, compared before and after.

/** One sample of the Prometheus text format. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition (comments skipped). */
function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1] as string] = l[2] as string;
    }
    samples.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return samples;
}

/** A scrape, summed over the series of `name` whose labels include `labels`. */
class Scrape {
  constructor(readonly samples: Sample[]) {}

  value(name: string, labels: Record<string, string> = {}): number {
    return this.samples
      .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
      .reduce((sum, s) => sum + s.value, 0);
  }

  has(name: string, labels: Record<string, string> = {}): boolean {
    return this.samples.some(
      (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
    );
  }
}

async function scrape(url: string): Promise<Scrape> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
  return new Scrape(parseExposition(await res.text()));
}

/** The process registry as a scrape would read it (for the queue-level tests, which serve no HTTP). */
async function readRegistry(): Promise<Scrape> {
  return new Scrape(parseExposition(await clusterMetrics().registry.metrics()));
}

const PHASES = ['queue', 'batch', 'backend', 'delivery'] as const;

describe('metrics of an embedded cluster', () => {
  let sim: SimBackend;
  /** Serves pool `slow`: one call at a time, 20 tokens a second. */
  let slowSim: SimBackend;
  /** Serves pool `flaky`, whose failures the breaker test turns on. */
  let flakySim: SimBackend;
  let config: ResolvedConfig;
  let broker: Broker;
  let ingress: Ingress;
  const delivery = inProcessDelivery();
  const workers: Record<string, Worker> = {};
  const clients: TestClient[] = [];

  const ingressMetrics = () => scrape(new URL('/metrics', ingress.url).href);
  const workerMetrics = (pool: string) => scrape(`http://127.0.0.1:${workers[pool]?.port}/metrics`);
  const client = async (kind: 'v1' | 'v2' = 'v2') => {
    const c = await connectClient(kind, ingress.url);
    clients.push(c);
    return c;
  };
  const queueTotals = async (pool: string) => {
    const stats = await broker.queue.stats(pool);
    return {
      depth: stats.reduce((n, s) => n + s.depth, 0),
      inFlight: stats.reduce((n, s) => n + s.inFlight, 0),
    };
  };

  beforeAll(async () => {
    sim = await startSimBackend({ ttftMs: 5, tokensPerSecond: 400 });
    slowSim = await startSimBackend({ ttftMs: 5, tokensPerSecond: 20 });
    flakySim = await startSimBackend({ ttftMs: 5, tokensPerSecond: 400 });
    const namespace = uniqueNamespace('metrics');
    config = resolveConfig(
      JSON.stringify({
        cluster: { namespace },
        ingress: { port: 0 },
        worker: { port: 0, drainGrace: '30s', maxDeliveries: 5 },
        pools: {
          inference: { backend: 'openai-chat', endpoints: [{ url: sim.url, maxConcurrency: 8 }] },
          embeddings: { backend: 'openai-embeddings', endpoints: [{ url: sim.url, maxConcurrency: 8 }] },
          slow: {
            backend: 'openai-chat',
            endpoints: [{ url: slowSim.url, maxConcurrency: 1 }],
            maxInFlight: 1,
            // The broker's own depth figures are under test here: no call waits at the ingress
            // for a fair share (at 20 tokens/s the fair queue's room is under one call).
            fairQueue: { size: 0 },
          },
          flaky: { backend: 'openai-chat', endpoints: [{ url: flakySim.url, maxConcurrency: 8 }] },
        },
        tools: [
          { name: 'generate_text', template: 'generate_text', pool: 'inference', model: 'sim-llm' },
          { name: 'embed', template: 'embed', pool: 'embeddings', model: 'sim-embed' },
          // An operator's schema that lets anything through: the worker is the one to refuse.
          {
            name: 'embed_loose',
            template: 'embed',
            pool: 'embeddings',
            model: 'sim-embed',
            inputSchema: { type: 'object' },
          },
          { name: 'slow_text', template: 'generate_text', pool: 'slow', model: 'sim-llm' },
          { name: 'flaky_text', template: 'generate_text', pool: 'flaky', model: 'sim-llm' },
        ],
      }),
      {},
    );
    broker = await openBroker({ url: 'memory:', namespace, pools: Object.keys(config.pools) });
    ingress = await startIngress(config, broker, delivery);
    const adapters = { ...inferenceAdapters, embed: embedAdapter };
    for (const pool of Object.keys(config.pools)) {
      workers[pool] = await startWorker({ config, pool, broker, adapters, delivery, workerId: `w-${pool}` });
    }
  });

  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await ingress?.shutdown();
    await Promise.all(Object.values(workers).map((w) => w.shutdown()));
    await broker?.close();
    await Promise.all([sim, slowSim, flakySim].map((s) => s?.close()));
  });

  it('N answered calls: enqueued, dequeued, ok outcomes and every call phase move by N', async () => {
    const n = 6;
    const before = await ingressMetrics();
    const c = await client();
    const results = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        c.callTool('generate_text', { prompt: `count ${i}`, max_tokens: 8 }),
      ),
    );
    for (const r of results) expect(r.isError).toBeFalsy();
    const after = await ingressMetrics();
    const delta = (name: string, labels: Record<string, string>) =>
      after.value(name, labels) - before.value(name, labels);

    const queue = { pool: 'inference', priority: 'normal' };
    expect(delta('mcp_cluster_queue_enqueued_total', queue)).toBe(n);
    expect(delta('mcp_cluster_queue_dequeued_total', queue)).toBe(n);
    expect(delta('mcp_cluster_worker_redelivered_total', queue)).toBe(0);
    expect(delta('mcp_cluster_ingress_calls_total', { tool: 'generate_text', outcome: 'ok' })).toBe(n);
    expect(delta('mcp_cluster_call_duration_seconds_count', { tool: 'generate_text', outcome: 'ok' })).toBe(
      n,
    );
    for (const phase of PHASES) {
      expect(delta('mcp_cluster_call_phase_seconds_count', { tool: 'generate_text', phase }), phase).toBe(n);
    }
    // The backend phase is the time the sim took: decode of 8 tokens at 400 tokens/s at least.
    expect(
      delta('mcp_cluster_call_phase_seconds_sum', { tool: 'generate_text', phase: 'backend' }),
    ).toBeGreaterThan(0);
    // One call per backend request: inference does not report batch sizes.
    expect(after.has('mcp_cluster_batch_size_calls_count', { tool: 'generate_text' })).toBe(false);
  });

  it('embed calls report how many calls each backend request carried', async () => {
    const n = 8;
    const before = await ingressMetrics();
    const c = await client();
    const results = await Promise.all(
      Array.from({ length: n }, (_, i) => c.callTool('embed', { texts: [`text ${i} a`, `text ${i} b`] })),
    );
    for (const r of results) expect(r.isError).toBeFalsy();
    const after = await ingressMetrics();
    const delta = (name: string, labels: Record<string, string>) =>
      after.value(name, labels) - before.value(name, labels);
    const embed = { pool: 'embeddings', tool: 'embed' };

    // Each call's two texts went out together in one request (2n texts stay under the batch's
    // 32), so the calls observed sum to n while the texts sum to 2n.
    expect(delta('mcp_cluster_batch_size_calls_sum', embed)).toBe(n);
    expect(delta('mcp_cluster_batch_size_sum', embed)).toBe(2 * n);
    const requests = delta('mcp_cluster_batch_size_calls_count', embed);
    expect(requests).toBeGreaterThanOrEqual(1);
    expect(requests).toBeLessThanOrEqual(n);
    // One observation per backend request, the same requests the texts-per-request histogram sees.
    expect(requests).toBe(delta('mcp_cluster_batch_size_count', embed));
    expect(delta('mcp_cluster_queue_enqueued_total', { pool: 'embeddings', priority: 'normal' })).toBe(n);
    expect(delta('mcp_cluster_queue_dequeued_total', { pool: 'embeddings', priority: 'normal' })).toBe(n);
    expect(delta('mcp_cluster_ingress_calls_total', { tool: 'embed', outcome: 'ok' })).toBe(n);
    for (const phase of PHASES) {
      expect(delta('mcp_cluster_call_phase_seconds_count', { tool: 'embed', phase }), phase).toBe(n);
    }
  });

  it('a call the backend refuses counts as tool_error, with its phases', async () => {
    const before = await ingressMetrics();
    const result = await (await client()).callTool('embed', { texts: ['x'], model: 'no-such-model' });
    expect(result.isError).toBe(true);
    const after = await ingressMetrics();
    const delta = (name: string, labels: Record<string, string>) =>
      after.value(name, labels) - before.value(name, labels);
    expect(delta('mcp_cluster_ingress_calls_total', { tool: 'embed', outcome: 'tool_error' })).toBe(1);
    expect(delta('mcp_cluster_ingress_calls_total', { tool: 'embed', outcome: 'ok' })).toBe(0);
    expect(delta('mcp_cluster_call_phase_seconds_count', { tool: 'embed', phase: 'backend' })).toBe(1);
  });

  it('invalid arguments and unknown tools count as rejected and never reach the queue', async () => {
    const before = await ingressMetrics();
    const c = await client();
    const bad = await c.callTool('generate_text', { prompt: 42 });
    expect(bad.isError).toBe(true);
    const badDeadline = await c.callTool(
      'generate_text',
      { prompt: 'x' },
      { meta: { 'mcp-cluster/timeout-ms': -1 } },
    );
    expect(badDeadline.isError).toBe(true);
    await expect(c.callTool('no_such_tool', {})).rejects.toThrow(/unknown tool/);
    const after = await ingressMetrics();
    const delta = (name: string, labels: Record<string, string>) =>
      after.value(name, labels) - before.value(name, labels);
    expect(delta('mcp_cluster_ingress_calls_total', { tool: 'generate_text', outcome: 'rejected' })).toBe(2);
    expect(delta('mcp_cluster_ingress_calls_total', { tool: 'unknown', outcome: 'rejected' })).toBe(1);
    expect(delta('mcp_cluster_queue_enqueued_total', { pool: 'inference' })).toBe(0);
    // The unknown name is not a label value: label sets stay bounded.
    expect(after.has('mcp_cluster_ingress_calls_total', { tool: 'no_such_tool' })).toBe(false);
  });

  it('arguments a worker refuses (the schema let them through) count as rejected', async () => {
    const before = await ingressMetrics();
    const result = await (await client()).callTool('embed_loose', { texts: 'not a list' });
    expect(result.isError).toBe(true);
    expect((result.content[0] as { text: string }).text).toMatch(/^INVALID_ARGUMENTS: texts must be/);
    const after = await ingressMetrics();
    const delta = (name: string, labels: Record<string, string>) =>
      after.value(name, labels) - before.value(name, labels);
    expect(delta('mcp_cluster_ingress_calls_total', { tool: 'embed_loose', outcome: 'rejected' })).toBe(1);
    expect(delta('mcp_cluster_ingress_calls_total', { tool: 'embed_loose', outcome: 'tool_error' })).toBe(0);
    expect(delta('mcp_cluster_queue_enqueued_total', { pool: 'embeddings' })).toBe(1);
  });

  it('a call past its deadline counts as timeout', async () => {
    const before = await ingressMetrics();
    const result = await (await client()).callTool(
      'slow_text',
      { prompt: 'a long story', max_tokens: 400 },
      { meta: { 'mcp-cluster/timeout-ms': 300 } },
    );
    expect(result.isError).toBe(true);
    expect((result.content[0] as { text: string }).text).toMatch(/^DEADLINE_EXCEEDED/);
    const after = await ingressMetrics();
    expect(
      after.value('mcp_cluster_ingress_calls_total', { tool: 'slow_text', outcome: 'timeout' }) -
        before.value('mcp_cluster_ingress_calls_total', { tool: 'slow_text', outcome: 'timeout' }),
    ).toBe(1);
    await waitFor('the slow pool to be idle', async () => (await queueTotals('slow')).inFlight === 0);
  });

  it('a worker exports its own queue figures; cancelled calls count as cancelled', async () => {
    const before = await ingressMetrics();
    // One runs (the slow pool takes one call at a time), two wait; one caller speaks 2025 MCP and
    // cancels with notifications/cancelled, the others close their request.
    const callers = await Promise.all([client('v2'), client('v1'), client('v2')]);
    const aborts = callers.map(() => new AbortController());
    const streamed = callers.map(() => false);
    const calls = callers.map((c, i) =>
      c.callTool(
        'slow_text',
        { prompt: `story ${i}`, max_tokens: 400 },
        {
          signal: (aborts[i] as AbortController).signal,
          onProgress: () => {
            streamed[i] = true;
          },
        },
      ),
    );
    // Each call's end is taken as it happens: an aborted call rejects at once, before the waits below.
    const ends = calls.map((call) =>
      call.then(
        () => undefined,
        (err: unknown) => err,
      ),
    );
    await waitFor('one slow call running and two waiting', async () => {
      const t = await queueTotals('slow');
      return t.depth === 2 && t.inFlight === 1;
    });
    await waitFor('the running call to stream', () => streamed.includes(true));
    // Only the worker is scraped here: these figures come from its own refresh.
    const fromWorker = await workerMetrics('slow');
    expect(fromWorker.value('mcp_cluster_queue_depth', { pool: 'slow', priority: 'normal' })).toBe(2);
    expect(fromWorker.value('mcp_cluster_queue_inflight', { pool: 'slow', priority: 'normal' })).toBe(1);
    expect(
      fromWorker.value('mcp_cluster_queue_oldest_age_seconds', { pool: 'slow', priority: 'normal' }),
    ).toBeGreaterThan(0);

    // The waiting calls first: once the running one stops, the worker would take the next one
    // at once, possibly before the ingress heard that caller leave.
    const running = streamed.indexOf(true);
    aborts.forEach((a, i) => {
      if (i !== running) a.abort();
    });
    await waitFor(
      'the waiting calls to leave the queue',
      async () => (await queueTotals('slow')).depth === 0,
    );
    aborts[running]?.abort();
    for (const end of ends) expect(await end).toBeInstanceOf(Error);
    const cancelled = async () =>
      (await ingressMetrics()).value('mcp_cluster_ingress_calls_total', {
        tool: 'slow_text',
        outcome: 'cancelled',
      }) - before.value('mcp_cluster_ingress_calls_total', { tool: 'slow_text', outcome: 'cancelled' });
    await waitFor('three cancelled calls', async () => (await cancelled()) === 3);
    await waitFor('the slow pool to be empty', async () => {
      const t = await queueTotals('slow');
      return t.depth === 0 && t.inFlight === 0;
    });
    const after = await ingressMetrics();
    expect(after.value('mcp_cluster_queue_depth', { pool: 'slow' })).toBe(0);
    // The waiting calls were taken off the queue, never delivered.
    expect(
      after.value('mcp_cluster_queue_dequeued_total', { pool: 'slow' }) -
        before.value('mcp_cluster_queue_dequeued_total', { pool: 'slow' }),
    ).toBe(1);
    expect(after.value('mcp_cluster_ingress_cancels_total', { source: 'notification' })).toBeGreaterThan(
      before.value('mcp_cluster_ingress_cancels_total', { source: 'notification' }),
    );
  });

  it('an expired call is shed, counted with its priority', async () => {
    const before = await workerMetrics('inference');
    const call: ToolCall = {
      callId: newCallId(),
      tool: 'generate_text',
      pool: 'inference',
      argumentsJson: encodeArguments({ prompt: 'too late' }),
      tenant: 'test',
      sessionKey: '',
      priority: 'high',
      deadlineUnixMs: Date.now() - 1,
      attempt: 0,
      replyTo: ingress.deliveryAddress,
      traceContext: {},
      enqueuedUnixMs: Date.now() - 1000,
      wantsProgress: false,
      principal: 'anonymous',
      scopes: [],
    };
    await broker.queue.enqueue(call);
    const high = { pool: 'inference', priority: 'high' };
    await waitFor(
      'the call to be shed',
      async () =>
        (await workerMetrics('inference')).value('mcp_cluster_worker_shed_total', high) ===
        before.value('mcp_cluster_worker_shed_total', high) + 1,
    );
    const after = await workerMetrics('inference');
    expect(
      after.value('mcp_cluster_queue_dequeued_total', high) -
        before.value('mcp_cluster_queue_dequeued_total', high),
    ).toBe(1);
    expect(after.value('mcp_cluster_worker_shed_total', { pool: 'inference', priority: 'normal' })).toBe(
      before.value('mcp_cluster_worker_shed_total', { pool: 'inference', priority: 'normal' }),
    );
  });

  it('a backend that fails repeatedly opens its breaker (state 2); calls are redelivered, then time out', async () => {
    const breaker = { pool: 'flaky', backend: '0' };
    const before = await workerMetrics('flaky');
    expect(before.value('mcp_cluster_backend_breaker_state', breaker)).toBe(0);
    flakySim.setFailure('5xx');
    try {
      const c = await client();
      // Five failures in a row open the breaker (the actor's default); the calls are handed back
      // and come again after 1 s, 2 s, ... until their deadline.
      const results = await Promise.all(
        Array.from({ length: 5 }, (_, i) =>
          c.callTool(
            'flaky_text',
            { prompt: `fail ${i}`, max_tokens: 8 },
            { meta: { 'mcp-cluster/timeout-ms': 4000 } },
          ),
        ),
      );
      for (const r of results) expect((r.content[0] as { text: string }).text).toMatch(/^DEADLINE_EXCEEDED/);
      const after = await workerMetrics('flaky');
      expect(after.value('mcp_cluster_backend_breaker_state', breaker)).toBe(2);
      expect(
        after.value('mcp_cluster_ingress_calls_total', { tool: 'flaky_text', outcome: 'timeout' }) -
          before.value('mcp_cluster_ingress_calls_total', { tool: 'flaky_text', outcome: 'timeout' }),
      ).toBe(5);
      const queue = { pool: 'flaky', priority: 'normal' };
      const redelivered =
        after.value('mcp_cluster_worker_redelivered_total', queue) -
        before.value('mcp_cluster_worker_redelivered_total', queue);
      expect(redelivered).toBeGreaterThan(0);
      // Every delivery past the first of a call is a redelivery.
      expect(
        after.value('mcp_cluster_queue_dequeued_total', queue) -
          before.value('mcp_cluster_queue_dequeued_total', queue),
      ).toBe(5 + redelivered);
    } finally {
      flakySim.setFailure('none');
    }
  });

  it('labels stay bounded: no call ids, no URLs', async () => {
    const allowed = new Set([
      'pool',
      'priority',
      'tool',
      'outcome',
      'phase',
      'backend',
      'state',
      'reason',
      'source',
      'side',
      'le',
      'direction',
      'tenant',
    ]);
    const samples = (await ingressMetrics()).samples.filter(
      (s) => s.name.startsWith('mcp_cluster_') && !s.name.startsWith('mcp_cluster_process_'),
    );
    expect(samples.length).toBeGreaterThan(0);
    for (const s of samples) {
      for (const [k, v] of Object.entries(s.labels)) {
        expect(allowed.has(k), `${s.name} label ${k}`).toBe(true);
        expect(v, `${s.name} ${k}`).not.toMatch(/:\/\/|^[0-9a-f-]{32,}$/);
      }
    }
  });

  // Last: it stops the slow pool's worker.
  it('a worker reports running, then draining while it finishes, then drained and stopped', async () => {
    const states = (s: Scrape) =>
      Object.fromEntries(
        LIFECYCLE_STATES.map((state) => [
          state,
          s.value('mcp_cluster_worker_replicas', { pool: 'slow', state }),
        ]),
      );
    expect(states(await workerMetrics('slow'))).toEqual({
      starting: 0,
      running: 1,
      draining: 0,
      drained: 0,
      stopped: 0,
    });

    const abort = new AbortController();
    const call = (await client()).callTool(
      'slow_text',
      { prompt: 'finish me', max_tokens: 400 },
      { signal: abort.signal },
    );
    await waitFor('the slow call to run', async () => (await queueTotals('slow')).inFlight === 1);
    const worker = workers.slow as Worker;
    const stopping = worker.shutdown();
    // The drain waits for the running call, and the worker still answers scrapes meanwhile.
    expect(states(await workerMetrics('slow'))).toEqual({
      starting: 0,
      running: 0,
      draining: 1,
      drained: 0,
      stopped: 0,
    });
    abort.abort();
    await expect(call).rejects.toThrow();
    await stopping;
    expect(worker.state).toBe('stopped');
    expect(states(await ingressMetrics())).toEqual({
      starting: 0,
      running: 0,
      draining: 0,
      drained: 0,
      stopped: 1,
    });
    // The other pools' workers are untouched.
    expect(
      (await ingressMetrics()).value('mcp_cluster_worker_replicas', { pool: 'inference', state: 'running' }),
    ).toBe(1);
  });

  it('counts several workers of one pool in one process (up --autoscale) per state', async () => {
    const running = async () =>
      (await ingressMetrics()).value('mcp_cluster_worker_replicas', { pool: 'inference', state: 'running' });
    const adapters = { ...inferenceAdapters, embed: embedAdapter };
    const second = await startWorker({
      config,
      pool: 'inference',
      broker,
      adapters,
      delivery,
      workerId: 'w-inference-2',
    });
    try {
      expect(await running()).toBe(2);
    } finally {
      await second.shutdown();
    }
    expect(await running()).toBe(1);
  });
});

describe('dead letters', () => {
  const POOL = 'dlq';

  function makeCall(priority: Priority): ToolCall {
    const now = Date.now();
    return {
      callId: newCallId(),
      tool: 'echo',
      pool: POOL,
      argumentsJson: encodeArguments({}),
      tenant: 'test',
      sessionKey: '',
      priority,
      deadlineUnixMs: now + 60_000,
      attempt: 0,
      replyTo: '127.0.0.1:1',
      traceContext: {},
      enqueuedUnixMs: now,
      wantsProgress: false,
      principal: 'anonymous',
      scopes: [],
    };
  }

  /** Enqueues one call and nacks every delivery of it until the queue gives up on it. */
  async function nackUntilDead(broker: Broker, priority: Priority): Promise<number> {
    const labels = { pool: POOL, priority };
    const before = (await readRegistry()).value('mcp_cluster_queue_dead_lettered_total', labels);
    let deliveries = 0;
    const consumer = broker.queue.consume(POOL, { maxInFlight: 1, maxDeliveries: 2 }, (m: QueuedCall) => {
      deliveries += 1;
      void m.nack(0);
    });
    try {
      await broker.queue.enqueue(makeCall(priority));
      await waitFor(
        'the call to be dead-lettered',
        async () =>
          (await readRegistry()).value('mcp_cluster_queue_dead_lettered_total', labels) === before + 1,
        20_000,
      );
    } finally {
      await consumer.stop();
    }
    return deliveries;
  }

  it('the memory queue counts a call nacked past maxDeliveries, by pool and priority', async () => {
    const broker = await openBroker({ url: 'memory:', namespace: uniqueNamespace('dlq'), pools: [POOL] });
    try {
      const before = await readRegistry();
      expect(await nackUntilDead(broker, 'low')).toBe(2);
      const after = await readRegistry();
      expect(after.value('mcp_cluster_queue_dead_lettered_total', { pool: POOL, priority: 'normal' })).toBe(
        before.value('mcp_cluster_queue_dead_lettered_total', { pool: POOL, priority: 'normal' }),
      );
    } finally {
      await broker.close();
    }
  });

  describe('NATS JetStream on a real nats-server', () => {
    let nats: SpawnedBroker;
    beforeAll(async () => {
      nats = await startNatsServer();
    });
    afterAll(async () => {
      await nats?.stop();
    });

    it('counts a call nacked past maxDeliveries by pool and priority', async () => {
      const broker = await openBroker({ url: nats.url, namespace: uniqueNamespace('dlq'), pools: [POOL] });
      try {
        expect(await nackUntilDead(broker, 'high')).toBe(2);
      } finally {
        await broker.close();
      }
    });
  });

  describe('BullMQ on a real redis-server', () => {
    let redis: SpawnedBroker;
    beforeAll(async () => {
      redis = await startRedisServer();
    });
    afterAll(async () => {
      await redis?.stop();
    });

    it('counts a call nacked past maxDeliveries, and an undecodable job, by pool and priority', async () => {
      const namespace = uniqueNamespace('dlq');
      const broker = await openBroker({ url: redis.url, namespace, pools: [POOL] });
      try {
        expect(await nackUntilDead(broker, 'high')).toBe(2);

        // A job that is not a ToolCall envelope, put there behind the queue's back at priority 2
        // (normal): the consumer fails it at once.
        const normal = { pool: POOL, priority: 'normal' };
        const before = (await readRegistry()).value('mcp_cluster_queue_dead_lettered_total', normal);
        const connection = new Redis(redis.url, { maxRetriesPerRequest: 1 });
        const queue = new Queue(`calls-${POOL}`, { connection, prefix: namespace });
        try {
          await queue.add(
            'garbage',
            { envelope: Buffer.from([0xff, 0xff, 0x01]).toString('base64') },
            { jobId: 'garbage-1', priority: 2 },
          );
        } finally {
          await queue.close();
          connection.disconnect();
        }
        let handed = 0;
        const consumer = broker.queue.consume(POOL, { maxInFlight: 1 }, (m) => {
          handed += 1;
          void m.ack();
        });
        try {
          await waitFor(
            'the garbage job to be dead-lettered',
            async () =>
              (await readRegistry()).value('mcp_cluster_queue_dead_lettered_total', normal) === before + 1,
            20_000,
          );
        } finally {
          await consumer.stop();
        }
        expect(handed).toBe(0);
      } finally {
        await broker.close();
      }
    });
  });
});
