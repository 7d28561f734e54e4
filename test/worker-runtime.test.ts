import { randomUUID } from 'node:crypto';
import type { Counter } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { openBroker } from '../services/cli/index.js';
import {
  type Broker,
  type CallConsumer,
  type ChunkReceived,
  clusterMetrics,
  type DeliveryServer,
  type DeliveryTransport,
  encodeArguments,
  finalToJson,
  inProcessDelivery,
  type ResolvedConfig,
  type ToolCall,
  type WorkerLink,
} from '../services/core/index.js';
import { embedAdapter } from '../workers/embeddings/index.js';
import { generateTextAdapter } from '../workers/inference/index.js';
import { startWorker, type Worker } from '../workers/runtime/index.js';
import { type SimBackend, type SimOptions, startSimBackend } from '../workers/sim/index.js';
import { cleanupAfterEach, toolCall } from './support/adapter-harness.js';
import { resolveConfig } from './support/families.js';
import { sleep, waitFor } from './support/wait.js';

// The pool runtime end to end inside one process, with real parts only: the memory queue, the
// simulated vLLM backend over HTTP, and an in-process delivery server standing in for the ingress.

const POOL = 'inference';
const metrics = clusterMetrics();

const cleanups = cleanupAfterEach();

/** The ingress side of delivery: records every chunk and answers as `answer` says. */
interface IngressStandIn {
  readonly address: string;
  readonly chunks: ChunkReceived[];
  /** Decides the answer to each chunk; the default confirms final and error chunks. */
  answer: (chunk: ChunkReceived, link: WorkerLink) => void;
  chunksOf(callId: string): ChunkReceived[];
}

const confirmTerminal = (chunk: ChunkReceived, link: WorkerLink) => {
  if (chunk.body === 'final' || chunk.body === 'error') {
    link.send({ callId: chunk.callId, delivered: { known: true } });
  }
};

async function startIngressStandIn(delivery: DeliveryTransport): Promise<IngressStandIn> {
  const chunks: ChunkReceived[] = [];
  const standIn = {
    chunks,
    answer: confirmTerminal,
    chunksOf: (callId: string) => chunks.filter((c) => c.callId === callId),
  };
  const server: DeliveryServer = await delivery.serve({
    onChunk: (chunk, link) => {
      chunks.push(chunk);
      standIn.answer(chunk, link);
    },
  });
  cleanups.push(() => server.close(200));
  return Object.assign(standIn, { address: server.address });
}

interface Cluster {
  sim: SimBackend;
  ingress: IngressStandIn;
  broker: Broker;
  config: ResolvedConfig;
  worker: Worker;
  /** Enqueues a generate_text call owned by the stand-in ingress. */
  enqueue(overrides?: Partial<ToolCall>): Promise<ToolCall>;
}

async function startCluster(
  options: { sim?: Partial<SimOptions>; worker?: Record<string, string | number> } = {},
): Promise<Cluster> {
  const sim = await startSimBackend({ ttftMs: 5, tokensPerSecond: 200, ...options.sim });
  cleanups.push(() => sim.close());
  const delivery = inProcessDelivery();
  const ingress = await startIngressStandIn(delivery);
  const namespace = `wr-${randomUUID().slice(0, 8)}`;
  // JSON is YAML: the worker's small timeouts written as a person would in the config file.
  const config = resolveConfig(
    JSON.stringify({
      cluster: { namespace },
      broker: { url: 'memory:' },
      pools: {
        [POOL]: {
          backend: 'openai-chat',
          endpoints: [{ url: sim.url, maxConcurrency: 4 }],
          healthInterval: '1s',
        },
      },
      tools: [{ name: 'generate_text', template: 'generate_text', pool: POOL, model: 'sim-llm' }],
      worker: {
        ackWait: '2s',
        deliveryConnectTimeout: '300ms',
        deliveryAckTimeout: '500ms',
        drainGrace: '2s',
        ...options.worker,
      },
    }),
    {},
  );
  const broker = await openBroker({ url: 'memory:', namespace, pools: [POOL] });
  cleanups.push(() => broker.close());
  const worker = await startWorker({
    config,
    pool: POOL,
    broker,
    adapters: { generate_text: generateTextAdapter, embed: embedAdapter },
    delivery,
    workerId: `worker-${namespace}`,
    serveHttp: false,
  });
  cleanups.push(() => worker.shutdown());
  return {
    sim,
    ingress,
    broker,
    config,
    worker,
    async enqueue(overrides = {}) {
      const call = toolCall(
        { name: 'generate_text', pool: POOL },
        { prompt: 'Explain work queues.', max_tokens: 40 },
        { attempt: 0, replyTo: ingress.address, ...overrides },
      );
      await broker.queue.enqueue(call);
      return call;
    },
  };
}

/**
 * Longer than the worker's back-off before a handed-back call is offered again (1 s), so a call
 * that was given back rather than finished would have reappeared by then.
 */
const QUIET_MS = 1500;

async function queueTotals(broker: Broker): Promise<{ depth: number; inFlight: number }> {
  const stats = await broker.queue.stats(POOL);
  return {
    depth: stats.reduce((sum, s) => sum + s.depth, 0),
    inFlight: stats.reduce((sum, s) => sum + s.inFlight, 0),
  };
}

async function queueEmpty(broker: Broker): Promise<boolean> {
  const { depth, inFlight } = await queueTotals(broker);
  return depth === 0 && inFlight === 0;
}

/** A counter's value summed over the series whose labels include `labels`. */
async function count<T extends string>(
  metric: Counter<T>,
  labels: Partial<Record<T, string>>,
): Promise<number> {
  const { values } = await metric.get();
  return values
    .filter((v) =>
      Object.entries(labels).every(([k, want]) => (v.labels as Record<string, unknown>)[k] === want),
    )
    .reduce((sum, v) => sum + v.value, 0);
}

const bodies = (chunks: ChunkReceived[]) => chunks.map((c) => c.body);

describe('worker runtime (memory queue, gRPC delivery, simulated backend)', () => {
  it('streams accepted, progress and final chunks, and acks once the ingress confirmed', async () => {
    const c = await startCluster();
    const okBefore = await count(metrics.workerCalls, { pool: POOL, outcome: 'ok' });
    const call = await c.enqueue({
      argumentsJson: encodeArguments({ prompt: 'Explain work queues.', max_tokens: 60 }),
    });

    await waitFor('the final chunk', () => c.ingress.chunksOf(call.callId).some((k) => k.body === 'final'));
    await waitFor('the message to be acked', () => queueEmpty(c.broker));
    expect(c.worker.inFlight).toBe(0);

    const chunks = c.ingress.chunksOf(call.callId);
    const kinds = bodies(chunks);
    expect(kinds[0]).toBe('accepted');
    expect(kinds.at(-1)).toBe('final');
    const middle = kinds.slice(1, -1);
    expect(middle.length).toBeGreaterThan(0);
    expect(middle.every((k) => k === 'progress')).toBe(true);
    expect(chunks.every((k) => k.attempt === 1)).toBe(true);
    expect(chunks[0]?.accepted?.workerId).toBe(`worker-${c.config.namespace}`);

    const final = chunks.at(-1);
    const result = JSON.parse((final?.final && finalToJson(final.final)) ?? '{}') as {
      content: { type: string; text: string }[];
    };
    const text = result.content[0]?.text ?? '';
    expect(text.length).toBeGreaterThan(0);
    const lastProgress = chunks.at(-2)?.progress;
    expect(lastProgress?.total).toBe(60);
    expect(text.startsWith(lastProgress?.message ?? '\u0000')).toBe(true);
    expect(final?.timing?.backendMs).toBeGreaterThan(0);

    expect(c.sim.stats()).toMatchObject({ chatRequests: 1, completed: 1, aborted: 0 });
    expect(await count(metrics.workerCalls, { pool: POOL, outcome: 'ok' })).toBe(okBefore + 1);
  });

  it('sends no progress chunks when the caller did not ask for progress', async () => {
    const c = await startCluster();
    const call = await c.enqueue({
      wantsProgress: false,
      argumentsJson: encodeArguments({ prompt: 'Quietly.', max_tokens: 60 }),
    });
    await waitFor('the final chunk', () => c.ingress.chunksOf(call.callId).some((k) => k.body === 'final'));
    await waitFor('the message to be acked', () => queueEmpty(c.broker));
    expect(bodies(c.ingress.chunksOf(call.callId))).toEqual(['accepted', 'final']);
  });

  it('answers a call whose arguments are not a JSON object with INVALID_ARGUMENTS, without running it', async () => {
    const c = await startCluster();
    const call = await c.enqueue({ argumentsJson: Buffer.from('["not", "an", "object"]') });
    await waitFor('the error chunk', () => c.ingress.chunksOf(call.callId).some((k) => k.body === 'error'));
    await waitFor('the message to be settled', () => queueEmpty(c.broker));
    const [chunk] = c.ingress.chunksOf(call.callId);
    expect(chunk?.error?.code).toBe('INVALID_ARGUMENTS');
    expect(bodies(c.ingress.chunksOf(call.callId))).toEqual(['error']);
    expect(c.sim.stats().chatRequests).toBe(0);
  });

  it('sheds a call whose deadline passed before dispatch: never run, never delivered again', async () => {
    const c = await startCluster();
    const shedBefore = await count(metrics.workerShed, { pool: POOL });
    const redeliveredBefore = await count(metrics.workerRedelivered, { pool: POOL });
    const call = await c.enqueue({ deadlineUnixMs: Date.now() - 1000 });

    await waitFor(
      'the shed counter',
      async () => (await count(metrics.workerShed, { pool: POOL })) === shedBefore + 1,
    );
    await waitFor('the message to be settled', () => queueEmpty(c.broker));
    await sleep(QUIET_MS);
    expect(await queueTotals(c.broker)).toEqual({ depth: 0, inFlight: 0 });
    expect(c.ingress.chunksOf(call.callId)).toEqual([]);
    expect(c.sim.stats().chatRequests).toBe(0);
    expect(await count(metrics.workerShed, { pool: POOL })).toBe(shedBefore + 1);
    expect(await count(metrics.workerRedelivered, { pool: POOL })).toBe(redeliveredBefore);
  });

  it('drops a call whose owning ingress cannot be reached, without running it', async () => {
    const c = await startCluster();
    const undeliverableBefore = await count(metrics.workerUndeliverable, { pool: POOL });
    const redeliveredBefore = await count(metrics.workerRedelivered, { pool: POOL });
    // No replica serves this address (the contract suite checks a closed one's, on every transport).
    const call = await c.enqueue({ replyTo: 'inproc:ingress-gone' });

    await waitFor(
      'the undeliverable counter',
      async () => (await count(metrics.workerUndeliverable, { pool: POOL })) === undeliverableBefore + 1,
    );
    await waitFor('the message to be settled', () => queueEmpty(c.broker));
    await sleep(QUIET_MS);
    expect(await queueTotals(c.broker)).toEqual({ depth: 0, inFlight: 0 });
    expect(await count(metrics.workerUndeliverable, { pool: POOL })).toBe(undeliverableBefore + 1);
    expect(await count(metrics.workerRedelivered, { pool: POOL })).toBe(redeliveredBefore);
    expect(c.sim.stats().chatRequests).toBe(0);
    expect(c.ingress.chunksOf(call.callId)).toEqual([]);
  });

  it('aborts the backend request on a cancel order from the ingress and does not run the call again', async () => {
    // About 20 s of generation: only the cancel can end it within the test.
    const c = await startCluster({ sim: { tokensPerSecond: 20 } });
    const cancelledBefore = await count(metrics.workerCalls, { pool: POOL, outcome: 'cancelled' });
    const redeliveredBefore = await count(metrics.workerRedelivered, { pool: POOL });
    let cancelSent = false;
    c.ingress.answer = (chunk, link) => {
      // Once the call is accepted and its stream is running at the backend, the caller leaves.
      if (chunk.body === 'progress' && !cancelSent) {
        cancelSent = true;
        link.send({ callId: chunk.callId, cancel: { reason: 'client' } });
      }
      confirmTerminal(chunk, link);
    };
    const call = await c.enqueue({
      argumentsJson: encodeArguments({ prompt: 'A very long essay.', max_tokens: 400 }),
    });

    await waitFor('the sim to see the sequence aborted', () => c.sim.stats().aborted === 1);
    await waitFor(
      'the call to be counted as cancelled',
      async () =>
        (await count(metrics.workerCalls, { pool: POOL, outcome: 'cancelled' })) === cancelledBefore + 1,
    );
    await waitFor('the message to be settled', () => queueEmpty(c.broker));
    expect(c.worker.inFlight).toBe(0);
    await sleep(QUIET_MS);

    const kinds = bodies(c.ingress.chunksOf(call.callId));
    expect(kinds[0]).toBe('accepted');
    expect(kinds).not.toContain('final');
    expect(kinds).not.toContain('error');
    expect(c.ingress.chunksOf(call.callId).every((k) => k.attempt === 1)).toBe(true);
    expect(await queueTotals(c.broker)).toEqual({ depth: 0, inFlight: 0 });
    expect(c.sim.stats()).toMatchObject({ chatRequests: 1, completed: 0, aborted: 1, running: 0 });
    expect(await count(metrics.workerRedelivered, { pool: POOL })).toBe(redeliveredBefore);
  });

  it('hands the call back when the ingress never confirms the final chunk', async () => {
    const c = await startCluster();
    const redeliveredBefore = await count(metrics.workerRedelivered, { pool: POOL });
    let heldAtSecondFinal: number | undefined;
    c.ingress.answer = (chunk, link) => {
      if (chunk.body === 'final' && chunk.attempt === 1) return; // lost on the way: no answer
      if (chunk.body === 'final') heldAtSecondFinal = c.worker.inFlight;
      confirmTerminal(chunk, link);
    };
    const call = await c.enqueue();

    await waitFor('the second final chunk', () =>
      c.ingress.chunksOf(call.callId).some((k) => k.body === 'final' && k.attempt === 2),
    );
    await waitFor('the message to be acked', () => queueEmpty(c.broker));

    const chunks = c.ingress.chunksOf(call.callId);
    const byAttempt = (n: number) => bodies(chunks.filter((k) => k.attempt === n));
    expect(byAttempt(1)[0]).toBe('accepted');
    expect(byAttempt(1).at(-1)).toBe('final');
    expect(byAttempt(2)[0]).toBe('accepted');
    expect(byAttempt(2).at(-1)).toBe('final');
    expect(chunks.some((k) => k.attempt > 2)).toBe(false);
    // The second run is held (and would be drained or handed back) like any other.
    expect(heldAtSecondFinal).toBe(1);
    expect(c.worker.inFlight).toBe(0);
    expect(c.sim.stats()).toMatchObject({ chatRequests: 2, completed: 2 });
    expect(await count(metrics.workerRedelivered, { pool: POOL })).toBe(redeliveredBefore + 1);
  });

  it('lets a running call finish during shutdown within the drain grace', async () => {
    // About 500 ms of generation, well inside a 10 s grace.
    const c = await startCluster({ sim: { tokensPerSecond: 100 }, worker: { drainGrace: '10s' } });
    const call = await c.enqueue({
      argumentsJson: encodeArguments({ prompt: 'Finish this.', max_tokens: 50 }),
    });
    await waitFor('the call to stream', () =>
      c.ingress.chunksOf(call.callId).some((k) => k.body === 'progress'),
    );

    await c.worker.shutdown();
    expect(c.worker.state).toBe('stopped');
    expect(c.worker.inFlight).toBe(0);
    const kinds = bodies(c.ingress.chunksOf(call.callId));
    expect(kinds.at(-1)).toBe('final');
    expect(kinds.filter((k) => k === 'final')).toHaveLength(1);
    expect(await queueTotals(c.broker)).toEqual({ depth: 0, inFlight: 0 });
    expect(c.sim.stats()).toMatchObject({ chatRequests: 1, completed: 1, aborted: 0 });
  });

  it('hands a running call back at shutdown when the drain grace runs out', async () => {
    const c = await startCluster({ sim: { tokensPerSecond: 20 }, worker: { drainGrace: '1ms' } });
    const shutdownBefore = await count(metrics.workerCalls, { pool: POOL, outcome: 'shutdown' });
    const call = await c.enqueue({
      argumentsJson: encodeArguments({ prompt: 'A very long essay.', max_tokens: 400 }),
    });
    await waitFor('the call to stream', () =>
      c.ingress.chunksOf(call.callId).some((k) => k.body === 'progress'),
    );

    // Another worker of the pool, on the same broker.
    const received: ToolCall[] = [];
    const other: CallConsumer = c.broker.queue.consume(
      POOL,
      { maxInFlight: 1, ackWaitMs: 10_000 },
      (message) => {
        received.push(message.call);
        void message.ack();
      },
    );
    cleanups.push(() => other.stop());

    await c.worker.shutdown();
    expect(c.worker.state).toBe('stopped');
    await waitFor('the other consumer to receive the call', () => received.length === 1);
    expect(received[0]).toMatchObject({ callId: call.callId, attempt: 2 });
    await waitFor('the sim to see the sequence aborted', () => c.sim.stats().aborted === 1);
    expect(c.sim.stats()).toMatchObject({ chatRequests: 1, completed: 0 });
    const kinds = bodies(c.ingress.chunksOf(call.callId));
    expect(kinds).not.toContain('final');
    expect(kinds).not.toContain('error');
    expect(await count(metrics.workerCalls, { pool: POOL, outcome: 'shutdown' })).toBe(shutdownBefore + 1);
    await waitFor('the message to be settled', () => queueEmpty(c.broker));
  });
});
