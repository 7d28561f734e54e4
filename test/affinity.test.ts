import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { openBroker } from '../services/cli/index.js';
import {
  type ChunkReceived,
  ClusterError,
  clusterMetrics,
  createLogger,
  type DeliveryTransport,
  finalToJson,
  inProcessDelivery,
  newCallId,
  type ToolConfig,
} from '../services/core/index.js';
import { chatAdapter, inferenceAdapters } from '../workers/inference/index.js';
import {
  AFFINITY_LOAD_FACTOR,
  type BackendActor,
  pickBackend,
  rendezvousOrder,
  startWorker,
  type ToolResult,
} from '../workers/runtime/index.js';
import { type SimBackend, type SimOptions, startSimBackend } from '../workers/sim/index.js';
import {
  adapterContext,
  cleanupAfterEach,
  FAST_SIM,
  startActor,
  toolCall,
} from './support/adapter-harness.js';
import { resolveConfig } from './support/families.js';
import { waitFor } from './support/wait.js';

// Session affinity over four simulated vLLM backends: which sim served each call is read from
// the sims' own counters. First the router and four BackendActors driven as the worker drives
// them (pick, run through the actor, retry a retryable failure elsewhere), then the real worker
// runtime (memory queue, gRPC delivery to a stand-in ingress).

const chatTool = resolveConfig('', {}).tools.find((t) => t.name === 'chat') as ToolConfig;
const log = createLogger('affinity-test');

const cleanups = cleanupAfterEach();

async function startSims(count: number, options: Partial<SimOptions> = {}): Promise<SimBackend[]> {
  const sims = await Promise.all(
    Array.from({ length: count }, () => startSimBackend({ ...FAST_SIM, ...options })),
  );
  cleanups.push(async () => {
    await Promise.all(sims.map((s) => s.close()));
  });
  return sims;
}

type Message = { role: 'user' | 'assistant'; content: string };

/** One multi-turn conversation: each turn sends the history plus a new user message. */
class Conversation {
  readonly messages: Message[] = [];
  private turns = 0;
  constructor(readonly key: string) {}

  next(): Message[] {
    this.turns += 1;
    this.messages.push({
      role: 'user',
      content: `Turn ${this.turns} of ${this.key}: tell me more about queues and caches, in detail.`,
    });
    return [...this.messages];
  }

  answered(result: ToolResult): void {
    const text = (result.content[0] as { text: string }).text;
    this.messages.push({ role: 'assistant', content: text });
  }
}

/**
 * Session keys whose first rendezvous choices over `ids` are distinct backends, found by trying
 * `session-0`, `session-1`, … in order (deterministic).
 */
function keysWithDistinctHomes(ids: readonly string[], count: number): string[] {
  const keys: string[] = [];
  const homes = new Set<string>();
  for (let i = 0; keys.length < count; i++) {
    const key = `session-${i}`;
    const home = rendezvousOrder(ids, key)[0] as string;
    if (homes.has(home)) continue;
    homes.add(home);
    keys.push(key);
  }
  return keys;
}

/** Four sims behind four BackendActors of one pool, driven as the worker drives them. */
async function startPool(
  options: { sim?: Partial<SimOptions>; healthIntervalMs?: number; maxConcurrency?: number } = {},
) {
  const sims = await startSims(4, options.sim);
  const actors = sims.map((sim, index) =>
    startActor(cleanups, log, sim.url, {
      index,
      maxConcurrency: options.maxConcurrency ?? 16,
      healthIntervalMs: options.healthIntervalMs ?? 60_000,
      breakerFailures: 3,
      breakerHalfOpenMs: 200,
    }),
  );
  const ids = sims.map((s) => s.url);
  const served = () => sims.map((s) => s.stats().chatRequests);

  /** Runs one call of `conversation` on `actor`; rejects with the backend's error. */
  const runOn = (
    actor: BackendActor,
    conversation: Conversation,
    messages: Message[],
  ): Promise<ToolResult> => {
    const args = { messages, max_tokens: 8 };
    const call = toolCall(chatTool, args, { sessionKey: conversation.key, wantsProgress: false });
    return actor.run((endpointUrl) =>
      chatAdapter.run(adapterContext(chatTool, args, endpointUrl, { backendTimeoutMs: 5_000, call })),
    );
  };

  /**
   * Routes one call of `conversation` as the worker does and runs it; rejects with the
   * backend's error. The actor counts the call in flight before this returns.
   */
  const dispatch = (conversation: Conversation, messages: Message[]): Promise<ToolResult> => {
    const index = pickBackend(
      actors.map((a) => a.view()),
      conversation.key,
    );
    const actor = index === undefined ? undefined : actors[index];
    if (!actor) return Promise.reject(new ClusterError('BACKEND_UNAVAILABLE', 'no backend available'));
    return runOn(actor, conversation, messages);
  };

  /**
   * One turn of `conversation`, retried on BACKEND_UNAVAILABLE as the worker's redelivery would.
   * Returns the index of the sim that served it and how many attempts failed first.
   */
  const turn = async (conversation: Conversation): Promise<{ servedBy: number; failedAttempts: number }> => {
    const messages = conversation.next();
    for (let failedAttempts = 0; failedAttempts < 10; failedAttempts++) {
      const before = served();
      try {
        const result = await dispatch(conversation, messages);
        conversation.answered(result);
        const after = served();
        const servedBy = after.findIndex((n, i) => n > (before[i] ?? 0));
        return { servedBy, failedAttempts };
      } catch (err) {
        if (!(err instanceof ClusterError) || err.code !== 'BACKEND_UNAVAILABLE') throw err;
      }
    }
    throw new Error(`turn of ${conversation.key} failed 10 times`);
  };

  /** Index of the sim that `key` prefers when all four are available. */
  const home = (key: string) => ids.indexOf(rendezvousOrder(ids, key)[0] as string);
  /** Index of the sim that `key` prefers among `available` ids. */
  const preferredAmong = (key: string, available: number[]) =>
    ids.indexOf(
      rendezvousOrder(
        available.map((i) => ids[i] as string),
        key,
      )[0] as string,
    );

  return { sims, actors, ids, runOn, dispatch, turn, home, preferredAmong, served };
}

describe('session affinity over four backends (router and backend actors)', () => {
  it("keeps each session's follow-up turns on its first backend, which reuses its prefix cache", async () => {
    const pool = await startPool();
    const [a, b] = keysWithDistinctHomes(pool.ids, 2).map((k) => new Conversation(k)) as [
      Conversation,
      Conversation,
    ];
    const servedA: number[] = [];
    const servedB: number[] = [];
    for (let i = 0; i < 5; i++) {
      servedA.push((await pool.turn(a)).servedBy);
      servedB.push((await pool.turn(b)).servedBy);
    }
    expect(servedA).toEqual(Array(5).fill(pool.home(a.key)));
    expect(servedB).toEqual(Array(5).fill(pool.home(b.key)));
    expect(pool.home(a.key)).not.toBe(pool.home(b.key));
    // Every follow-up turn found its history in that backend's prefix cache.
    for (const key of [a.key, b.key]) {
      expect(pool.sims[pool.home(key)]?.stats()).toMatchObject({ chatRequests: 5, prefixCacheHits: 4 });
    }
    expect(pool.served().reduce((sum, n) => sum + n, 0)).toBe(10);
  });

  it('moves a session off its backend while the health probe fails it, and back once it recovers', async () => {
    const pool = await startPool({ healthIntervalMs: 50 });
    for (const actor of pool.actors) actor.startProbe();
    const [a, b] = keysWithDistinctHomes(pool.ids, 2).map((k) => new Conversation(k)) as [
      Conversation,
      Conversation,
    ];
    const homeA = pool.home(a.key);
    const homeB = pool.home(b.key);
    expect((await pool.turn(a)).servedBy).toBe(homeA);
    expect((await pool.turn(b)).servedBy).toBe(homeB);

    pool.sims[homeA]?.setFailure('health-down');
    await waitFor('the probe to mark the backend unhealthy', () => !pool.actors[homeA]?.isHealthy);
    expect(pool.actors[homeA]?.view().available).toBe(false);
    // On an idle pool every healthy backend is least loaded; among them the session's next
    // rendezvous choice takes it, the same one on every turn, so its cache there stays warm.
    const healthy = [0, 1, 2, 3].filter((i) => i !== homeA);
    const fallback = pool.preferredAmong(a.key, healthy);
    const duringOutage: number[] = [];
    for (let i = 0; i < 3; i++) duringOutage.push((await pool.turn(a)).servedBy);
    expect(duringOutage).toEqual([fallback, fallback, fallback]);
    expect(fallback).not.toBe(homeA);
    // The other session is not disturbed.
    expect((await pool.turn(b)).servedBy).toBe(homeB);
    expect(pool.sims[homeA]?.stats().chatRequests).toBe(1);

    pool.sims[homeA]?.setFailure('none');
    await waitFor('the probe to pass again', () => pool.actors[homeA]?.isHealthy === true);
    const hitsBefore = pool.sims[homeA]?.stats().prefixCacheHits ?? 0;
    expect((await pool.turn(a)).servedBy).toBe(homeA);
    expect((await pool.turn(a)).servedBy).toBe(homeA);
    // Back home, its first turn still found the history it left there before the outage.
    expect(pool.sims[homeA]?.stats().prefixCacheHits).toBe(hitsBefore + 2);
  });

  it('moves a session off its backend while the breaker is open, and back after a trial call', async () => {
    const pool = await startPool();
    const a = new Conversation(keysWithDistinctHomes(pool.ids, 1)[0] as string);
    const homeA = pool.home(a.key);
    expect((await pool.turn(a)).servedBy).toBe(homeA);

    pool.sims[homeA]?.setFailure('5xx');
    // Three failures on the home backend (breakerFailures 3) open its breaker; the retry then
    // lands on the fallback.
    const fallback = pool.preferredAmong(
      a.key,
      [0, 1, 2, 3].filter((i) => i !== homeA),
    );
    expect(await pool.turn(a)).toEqual({ servedBy: fallback, failedAttempts: 3 });
    expect(pool.actors[homeA]?.view().available).toBe(false);
    expect(await pool.turn(a)).toEqual({ servedBy: fallback, failedAttempts: 0 });
    expect(pool.sims[homeA]?.stats().failuresInjected).toBe(3);

    pool.sims[homeA]?.setFailure('none');
    await waitFor('the breaker to admit a trial call', () => pool.actors[homeA]?.view().available === true);
    expect(await pool.turn(a)).toEqual({ servedBy: homeA, failedAttempts: 0 });
    expect(await pool.turn(a)).toEqual({ servedBy: homeA, failedAttempts: 0 });
    expect(pool.actors[homeA]?.view().available).toBe(true);
  });

  it('spills a hot session over the bound to other backends, then returns it home', async () => {
    // Slow prefill, so a burst of calls is in flight at once.
    const pool = await startPool({ sim: { ttftMs: 300, tokensPerSecond: 5000 } });
    const hot = new Conversation(keysWithDistinctHomes(pool.ids, 1)[0] as string);
    const home = pool.home(hot.key);
    const order = rendezvousOrder(pool.ids, hot.key).map((id) => pool.ids.indexOf(id));
    expect(order[0]).toBe(home);
    const messages = hot.next();

    const burst = Array.from({ length: 8 }, () => pool.dispatch(hot, messages));
    const settled = Promise.allSettled(burst);
    // Routed at once with bounded load (c = 1.25): call k may go to a backend only while it
    // carries fewer than ceil(k / 4 × c) calls, so the key's first choices fill up in turn:
    // 3, 3, 2 and 0 calls in the key's order, none above ceil(8 / 4 × c) = 3.
    const inFlight = pool.actors.map((a) => a.view().inFlight);
    expect(order.map((i) => inFlight[i])).toEqual([3, 3, 2, 0]);
    expect(Math.max(...inFlight)).toBeLessThanOrEqual(Math.ceil((8 / 4) * AFFINITY_LOAD_FACTOR));
    expect((await settled).every((r) => r.status === 'fulfilled')).toBe(true);
    expect(pool.served()).toEqual(inFlight);

    // Load gone: the session's next turn is home again.
    const before = pool.served();
    await pool.dispatch(hot, messages);
    const after = pool.served();
    expect(after.findIndex((n, i) => n > (before[i] ?? 0))).toBe(home);
  });

  it('spills a session whose home is busy with other work to its next choice within the bound', async () => {
    const pool = await startPool({ sim: { ttftMs: 300, tokensPerSecond: 5000 } });
    const key = keysWithDistinctHomes(pool.ids, 1)[0] as string;
    const home = pool.home(key);
    const order = rendezvousOrder(pool.ids, key).map((id) => pool.ids.indexOf(id));
    const homeActor = pool.actors[home] as BackendActor;
    // Two calls of other sessions already run on this session's home.
    const other = new Conversation('other');
    const busy = [pool.runOn(homeActor, other, other.next()), pool.runOn(homeActor, other, other.next())];
    expect(homeActor.view().inFlight).toBe(2);

    // 2 in flight, so the bound is ceil(3 / 4 × 1.25) = 1: home is over it, the key's second
    // choice (idle, so among the least loaded) is not.
    const s = new Conversation(key);
    const spilled = pool.dispatch(s, s.next());
    const settled = Promise.allSettled([spilled, ...busy]);
    const inFlight = pool.actors.map((a) => a.view().inFlight);
    expect(inFlight[home]).toBe(2);
    expect(inFlight[order[1] as number]).toBe(1);
    expect((await settled).every((r) => r.status === 'fulfilled')).toBe(true);
    expect(pool.sims[order[1] as number]?.stats().chatRequests).toBe(1);

    // Home idle again: the next turn goes there.
    const before = pool.served();
    s.answered(await spilled);
    await pool.dispatch(s, s.next());
    const after = pool.served();
    expect(after.findIndex((n, i) => n > (before[i] ?? 0))).toBe(home);
  });
});

describe('session affinity through the worker runtime', () => {
  /** A stand-in ingress that confirms every final and error chunk and hands back results. */
  async function startIngress(delivery: DeliveryTransport) {
    const finals = new Map<string, (chunk: ChunkReceived) => void>();
    const server = await delivery.serve({
      onChunk: (chunk, link) => {
        if (chunk.body !== 'final' && chunk.body !== 'error') return;
        link.send({ callId: chunk.callId, delivered: { known: true } });
        finals.get(chunk.callId)?.(chunk);
      },
    });
    cleanups.push(() => server.close(200));
    return {
      address: server.address,
      /** Resolves with the final or error chunk of `callId`. */
      answer: (callId: string) =>
        new Promise<ChunkReceived>((resolve) => {
          finals.set(callId, resolve);
        }),
    };
  }

  it('routes the turns of each session to the same sim, its first choice, with the key as user', async () => {
    const sims = await startSims(4);
    const delivery = inProcessDelivery();
    const ingress = await startIngress(delivery);
    const namespace = `aff-${randomUUID().slice(0, 8)}`;
    const config = resolveConfig(
      JSON.stringify({
        cluster: { namespace },
        broker: { url: 'memory:' },
        pools: {
          inference: {
            backend: 'openai-chat',
            endpoints: sims.map((s) => ({ url: s.url, maxConcurrency: 8 })),
            healthInterval: '100ms',
          },
        },
        tools: [{ name: 'chat', template: 'chat', pool: 'inference', model: 'sim-llm' }],
        worker: { ackWait: '5s', deliveryConnectTimeout: '1s', deliveryAckTimeout: '2s', drainGrace: '1s' },
      }),
      {},
    );
    const broker = await openBroker({ url: 'memory:', namespace, pools: ['inference'] });
    cleanups.push(() => broker.close());
    const worker = await startWorker({
      config,
      pool: 'inference',
      broker,
      adapters: inferenceAdapters,
      delivery,
      workerId: `worker-${namespace}`,
      serveHttp: false,
    });
    cleanups.push(() => worker.shutdown());

    const ids = sims.map((s) => s.url);
    const served = () => sims.map((s) => s.stats().chatRequests);
    /** What the worker's last health probe of backend `index` said: 1 healthy, 0 not. */
    const healthOf = async (index: number): Promise<number | undefined> =>
      (await clusterMetrics().backendHealthy.get()).values.find(
        (v) => v.labels.pool === 'inference' && v.labels.backend === String(index),
      )?.value;
    const turn = async (conversation: Conversation): Promise<number> => {
      const before = served();
      const callId = newCallId();
      const answer = ingress.answer(callId);
      await broker.queue.enqueue(
        toolCall(
          chatTool,
          { messages: conversation.next(), max_tokens: 8 },
          {
            callId,
            sessionKey: conversation.key,
            deadlineUnixMs: Date.now() + 30_000,
            attempt: 0,
            replyTo: ingress.address,
            wantsProgress: false,
          },
        ),
      );
      const chunk = await answer;
      expect(chunk.body).toBe('final');
      conversation.answered(JSON.parse((chunk.final && finalToJson(chunk.final)) ?? '{}') as ToolResult);
      const after = served();
      return after.findIndex((n, i) => n > (before[i] ?? 0));
    };

    const conversations = keysWithDistinctHomes(ids, 2).map((k) => new Conversation(k));
    for (const conversation of conversations) {
      const home = ids.indexOf(rendezvousOrder(ids, conversation.key)[0] as string);
      const servedBy: number[] = [];
      for (let i = 0; i < 3; i++) servedBy.push(await turn(conversation));
      expect(servedBy).toEqual([home, home, home]);
      expect(sims[home]?.stats()).toMatchObject({ chatRequests: 3, prefixCacheHits: 2 });
    }

    // The first session's home fails its health check: once the worker's probe has seen it, the
    // turns go to the key's next choice and stay there.
    const first = conversations[0] as Conversation;
    const order = rendezvousOrder(ids, first.key).map((id) => ids.indexOf(id));
    const home = order[0] as number;
    sims[home]?.setFailure('health-down');
    await waitFor(
      'the worker to mark the failed backend unhealthy',
      async () => (await healthOf(home)) === 0,
    );
    const away = await turn(first);
    expect(away).toBe(order[1]);
    expect(await turn(first)).toBe(away);

    // Healthy again: once the next probe passes (every 100 ms), the turns go home and stay.
    sims[home]?.setFailure('none');
    await waitFor('the worker to mark the backend healthy again', async () => (await healthOf(home)) === 1);
    expect(await turn(first)).toBe(home);
    expect(await turn(first)).toBe(home);
  });
});
