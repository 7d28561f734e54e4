import { randomUUID } from 'node:crypto';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { openBroker } from '../services/cli/index.js';
import {
  type Broker,
  type ChunkReceived,
  clusterMetrics,
  createLogger,
  inProcessDelivery,
  type ToolCall,
  type ToolConfig,
} from '../services/core/index.js';
import { chatAdapter, generateTextAdapter } from '../workers/inference/index.js';
import { type BackendActor, retryDelayMs, startWorker } from '../workers/runtime/index.js';
import { type SimBackend, type SimOptions, startSimBackend } from '../workers/sim/index.js';
import {
  adapterContext,
  cleanupAfterEach,
  rejection,
  startActor,
  textOf,
  toolCall,
} from './support/adapter-harness.js';
import { resolveConfig } from './support/families.js';
import { sleep, waitFor } from './support/wait.js';

// How the pool runtime rides out a backend outage, with real parts only: the simulated vLLM
// backend over HTTP, closed and started again on the same port; the memory queue; an in-process
// delivery server standing in for the ingress.

const POOL = 'inference';
const metrics = clusterMetrics();
const cleanups = cleanupAfterEach();
const log = createLogger('backend-recovery-test');

/** A sim on `port` (0: a free one), closed after the test. */
async function sim(port = 0, options: Partial<SimOptions> = {}): Promise<SimBackend> {
  const backend = await startSimBackend({ port, ttftMs: 1, tokensPerSecond: 2000, ...options });
  cleanups.push(() => backend.close());
  return backend;
}

const chatTool = resolveConfig('', {}).tools.find((t) => t.name === 'chat') as ToolConfig;
const turn = (a: BackendActor) =>
  a.run((url) =>
    chatAdapter.run(
      adapterContext(chatTool, { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4 }, url, {
        backendTimeoutMs: 500,
      }),
    ),
  );

describe('hand-back delay', () => {
  it('is a random point in the upper half of a doubling ceiling, at most 15 s', () => {
    const ceilings = [1000, 2000, 4000, 8000, 15_000, 15_000];
    ceilings.forEach((ceiling, i) => {
      expect(retryDelayMs(i + 1, () => 0)).toBe(ceiling / 2);
      expect(retryDelayMs(i + 1, () => 0.999_999)).toBe(ceiling);
    });
    for (let i = 0; i < 200; i++) {
      const d = retryDelayMs(3);
      expect(d).toBeGreaterThanOrEqual(2000);
      expect(d).toBeLessThanOrEqual(4000);
    }
  });

  it('keeps 7.5 to 15 s between the first and the fifth delivery (the doc comment promise)', () => {
    const total = (random: () => number) => [1, 2, 3, 4].reduce((sum, n) => sum + retryDelayMs(n, random), 0);
    expect(total(() => 0)).toBe(7500);
    expect(total(() => 0.999_999)).toBe(15_000);
  });
});

describe('BackendActor recovery', () => {
  it('probes a failed backend at its recovery pace and closes its breaker as soon as it is back', async () => {
    const first = await sim();
    // A routine probe a minute apart and a minute of half-open wait: only the recovery probe can
    // bring the backend back within the test.
    const actor = startActor(cleanups, log, first.url, {
      healthIntervalMs: 60_000,
      recoveryProbeIntervalMs: 100,
      breakerFailures: 2,
      breakerHalfOpenMs: 60_000,
    });
    actor.startProbe();
    textOf(await turn(actor));

    await first.close();
    for (let i = 0; i < 2; i++) expect((await rejection(turn(actor))).code).toBe('BACKEND_UNAVAILABLE');
    expect(actor.view().available).toBe(false);
    await waitFor('the probe to see the backend down', () => !actor.isHealthy);
    const refused = await rejection(turn(actor));
    expect(refused.message).toMatch(/circuit breaker is open/);

    const changes: boolean[] = [];
    actor.onChange(() => changes.push(actor.view().available));
    const again = await sim(first.port);
    await waitFor('the probe to see the backend back', () => actor.view().available);
    expect(actor.isHealthy).toBe(true);
    expect(changes).toContain(true);
    // Closed for every call at once: four run side by side.
    const texts = await Promise.all([1, 2, 3, 4].map(() => turn(actor)));
    for (const result of texts) textOf(result);
    expect(actor.view().available).toBe(true);
    expect(again.stats()).toMatchObject({ chatRequests: 4, completed: 4 });

    // A second outage, after which the backend's first request still fails: closed by the
    // probe, the breaker still counts the earlier failures, so that one opens it again, as a
    // failed trial call would.
    await again.close();
    for (let i = 0; i < 2; i++) expect((await rejection(turn(actor))).code).toBe('BACKEND_UNAVAILABLE');
    await waitFor('the probe to see the backend down', () => !actor.isHealthy);
    const third = await sim(first.port);
    third.setFailure('5xx', 1);
    await waitFor('the probe to see the backend back', () => actor.view().available);
    expect((await rejection(turn(actor))).code).toBe('BACKEND_UNAVAILABLE');
    expect(actor.view().available).toBe(false);
  });

  it('counts a failed probe that was already out when the breaker opened', async () => {
    // A backend whose health check answers only when the test lets it: the probe that the first
    // failed call brings forward is still out when the second failed call opens the breaker.
    let up = true;
    const held: ServerResponse[] = [];
    const server = createServer((req, res) => {
      req.resume();
      if (req.url === '/health' && !up) held.push(res);
      else if (req.url === '/health') res.writeHead(200).end();
      else res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"down"}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    );
    const { port } = server.address() as AddressInfo;
    const actor = startActor(cleanups, log, `http://127.0.0.1:${port}`, {
      healthIntervalMs: 60_000,
      recoveryProbeIntervalMs: 50,
      breakerFailures: 2,
      breakerHalfOpenMs: 60_000,
    });
    actor.startProbe();
    await waitFor('the first probe', () => actor.isHealthy);
    up = false;
    expect((await rejection(turn(actor))).code).toBe('BACKEND_UNAVAILABLE');
    await waitFor('a probe out', () => held.length === 1);
    expect((await rejection(turn(actor))).code).toBe('BACKEND_UNAVAILABLE');
    expect(actor.view().available).toBe(false);
    (held.shift() as ServerResponse).writeHead(503).end();
    await waitFor('the probe to see the backend down', () => !actor.isHealthy);
    up = true;
    for (const res of held.splice(0)) res.writeHead(200).end();
    // Without the failed probe counted, only the half-open wait (a minute) would bring it back.
    await waitFor('the probe to see the backend back', () => actor.view().available);
    expect(actor.isHealthy).toBe(true);
  });

  it('waits the half-open time when the probe never saw the backend down', async () => {
    const backend = await sim();
    const actor = startActor(cleanups, log, backend.url, {
      healthIntervalMs: 60_000,
      recoveryProbeIntervalMs: 50,
      breakerFailures: 2,
      breakerHalfOpenMs: 60_000,
    });
    actor.startProbe();
    // Its requests fail while its health endpoint answers: the probe proves nothing.
    backend.setFailure('5xx', 2);
    for (let i = 0; i < 2; i++) expect((await rejection(turn(actor))).code).toBe('BACKEND_UNAVAILABLE');
    const probes = () => backend.recentRequests().filter((r) => r.path === '/health').length;
    const probesBefore = probes();
    await waitFor('several recovery probes', () => probes() >= probesBefore + 3);
    expect(actor.isHealthy).toBe(true);
    expect(actor.view().available).toBe(false);
  });
});

/** The ingress side of delivery: records every chunk and confirms final and error chunks. */
async function startIngressStandIn() {
  const delivery = inProcessDelivery();
  const chunks: ChunkReceived[] = [];
  const server = await delivery.serve({
    onChunk: (chunk, link) => {
      chunks.push(chunk);
      if (chunk.body === 'final' || chunk.body === 'error')
        link.send({ callId: chunk.callId, delivered: { known: true } });
    },
  });
  cleanups.push(() => server.close(200));
  return { delivery, chunks, address: server.address };
}

async function queueEmpty(broker: Broker): Promise<boolean> {
  const stats = await broker.queue.stats(POOL);
  return stats.every((s) => s.depth === 0 && s.inFlight === 0);
}

/** A worker of pool `inference` with one sim endpoint (8 at once), its probe every 200 ms. */
async function startPool(backend: SimBackend, worker: Record<string, string | number>) {
  const ingress = await startIngressStandIn();
  const namespace = `br-${randomUUID().slice(0, 8)}`;
  const config = resolveConfig(
    JSON.stringify({
      cluster: { namespace },
      broker: { url: 'memory:' },
      pools: {
        [POOL]: {
          backend: 'openai-chat',
          endpoints: [{ url: backend.url, maxConcurrency: 8 }],
          healthInterval: '200ms',
        },
      },
      tools: [{ name: 'generate_text', template: 'generate_text', pool: POOL, model: 'sim-llm' }],
      worker: { ackWait: '1s', deliveryConnectTimeout: '300ms', deliveryAckTimeout: '1s', ...worker },
    }),
    {},
  );
  const broker = await openBroker({ url: 'memory:', namespace, pools: [POOL] });
  cleanups.push(() => broker.close());
  const w = await startWorker({
    config,
    pool: POOL,
    broker,
    adapters: { generate_text: generateTextAdapter },
    delivery: ingress.delivery,
    workerId: `worker-${namespace}`,
    serveHttp: false,
  });
  cleanups.push(() => w.shutdown());
  const enqueue = async (maxTokens: number): Promise<ToolCall> => {
    const call = toolCall(
      { name: 'generate_text', pool: POOL },
      { prompt: `Outage ${randomUUID()}`, max_tokens: maxTokens },
      { attempt: 0, replyTo: ingress.address, wantsProgress: false },
    );
    await broker.queue.enqueue(call);
    return call;
  };
  const terminal = (kind: 'final' | 'error') => ingress.chunks.filter((c) => c.body === kind);
  return { worker: w, broker, ingress, enqueue, terminal };
}

const backendHealthy = async () =>
  (await metrics.backendHealthy.get()).values.find((v) => v.labels.pool === POOL && v.labels.backend === '0')
    ?.value;

describe('worker during a backend outage', () => {
  it('holds a call on its last delivery until the backend is back, then runs it once', async () => {
    const first = await sim();
    // Every delivery is the last one: before, a call finding no backend failed at once.
    const pool = await startPool(first, { maxDeliveries: 1 });
    await first.close();
    await waitFor('the worker to see the backend down', async () => (await backendHealthy()) === 0);

    const calls = await Promise.all([1, 2, 3].map(() => pool.enqueue(8)));
    await waitFor('the worker to hold the calls', () => pool.worker.inFlight === 3);
    // Three ack waits: the heartbeats keep the held calls from being delivered again.
    await sleep(3000);
    expect(pool.worker.inFlight).toBe(3);
    expect(pool.terminal('final')).toEqual([]);
    expect(pool.terminal('error')).toEqual([]);

    await sim(first.port);
    await waitFor('every final chunk', () => pool.terminal('final').length === 3);
    await waitFor('the queue to be empty', () => queueEmpty(pool.broker));
    expect(pool.terminal('error')).toEqual([]);
    expect(new Set(pool.terminal('final').map((c) => c.callId))).toEqual(new Set(calls.map((c) => c.callId)));
    expect(pool.ingress.chunks.every((c) => c.attempt === 1)).toBe(true);
  });

  it('runs the calls held on their last delivery once the backend is back, refusing none', async () => {
    const first = await sim(0, { tokensPerSecond: 20 });
    // The second delivery is the last: a breaker refusal or "no backend" there would fail the call.
    const pool = await startPool(first, { maxDeliveries: 2 });
    // Eight long generations running when the backend goes away: their failures open the breaker.
    const calls = await Promise.all(Array.from({ length: 8 }, () => pool.enqueue(400)));
    await waitFor('the calls to run at the backend', () => first.stats().running === 8);
    await first.close();
    await waitFor(
      'every call to be on its last delivery',
      () => pool.ingress.chunks.filter((c) => c.body === 'accepted' && c.attempt === 2).length === 8,
    );

    const again = await sim(first.port);
    await waitFor('every final chunk', () => pool.terminal('final').length === 8, 20_000);
    await waitFor('the queue to be empty', () => queueEmpty(pool.broker));
    expect(pool.terminal('error')).toEqual([]);
    expect(pool.terminal('final').every((c) => c.attempt === 2)).toBe(true);
    expect(new Set(pool.terminal('final').map((c) => c.callId)).size).toBe(calls.length);
    expect(again.stats()).toMatchObject({ chatRequests: 8, completed: 8 });
  });
});
