import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBroker } from '../services/cli/brokers.js';
import type { Broker } from '../services/core/index.js';
import { generateTokens } from '../workers/sim/index.js';
import { startNatsServer, startRedisServer } from './support/brokers.js';
import { type SimCluster, startSimCluster } from './support/cluster.js';
import { connectClient, type TestClient } from './support/mcp-clients.js';
import { metricValue, type RoleProcess } from './support/processes.js';
import { sleep, waitFor } from './support/wait.js';

// The faults an operator meets, each injected into a cluster of separate OS processes under load
// from a mix of 2025-era (v1) and 2026-era (v2) clients, on both brokers. Each test checks the
// promises of the failure semantics (docs/operations.md): no call lost, no answer wrong or given twice (the
// simulator's output is a function of the prompt, so every answer is checked word for word),
// the queue empty afterwards, and every role exiting cleanly within its grace period.
// (The broker outage with SIGTERM of every role is in broker-outage.test.ts, the backend
// outage in backend-outage.test.ts.)

/** The text the simulated vLLM answers `generate_text(prompt, max_tokens)` with. */
function expectedText(prompt: string, maxTokens: number): string {
  const messages = [{ role: 'user', content: prompt }];
  return generateTokens(JSON.stringify({ messages, max_tokens: maxTokens }), maxTokens).join('');
}

interface SimStats {
  requests: number;
  completed: number;
  aborted: number;
}

/** What one call of a load ended with. */
interface Outcome {
  prompt: string;
  maxTokens: number;
  text?: string;
  error?: string;
}

const GRACE_MS = 2_000;

describe.each([
  ['NATS JetStream', () => startNatsServer()],
  // Redis as we ship it: append-only file on (deploy/compose.bullmq.yaml, the Kubernetes overlay).
  ['BullMQ on Redis', () => startRedisServer({ persistent: true })],
] as const)('faults across processes on %s', (_label, startBroker) => {
  let cluster: SimCluster;
  let observer: Broker | undefined;
  const ingresses: RoleProcess[] = [];
  const workers: RoleProcess[] = [];
  let workerCount = 0;

  const simStats = async (): Promise<SimStats> =>
    (await fetch(`${cluster.simUrl}/sim/stats`)).json() as Promise<SimStats>;
  /** Backend requests open right now (running or waiting for a sequence slot). */
  const openRequests = async () => {
    const s = await simStats();
    return s.requests - s.completed - s.aborted;
  };
  const startWorker = async () => {
    workerCount += 1;
    const worker = await cluster.worker(`worker-inference-${workerCount}`, 'inference');
    workers.push(worker);
    return worker;
  };
  const dumpLogs = () => {
    for (const p of [...ingresses, ...workers])
      process.stderr.write(`==== ${p.name}\n${p.logs().slice(-3000)}\n`);
  };

  /**
   * Runs `agents` agents, each calling generate_text `callsEach` times back to back through
   * ingress `agent % ingresses` with a v1 or a v2 client (alternating), while `during` injects
   * the fault. Every prompt is unique, so every answer can be checked on its own.
   */
  const runLoad = async (options: {
    tag: string;
    agents: number;
    callsEach: number;
    maxTokens: number;
    ingressUrls: string[];
    /** Client of agent `a`: `clientKinds[a % length]`. Default v2 and v1 alternating. */
    clientKinds?: ('v1' | 'v2')[];
    during?: () => Promise<void>;
  }): Promise<Outcome[]> => {
    const outcomes: Outcome[] = [];
    const clients: TestClient[] = [];
    try {
      for (let a = 0; a < options.agents; a++) {
        const url = options.ingressUrls[a % options.ingressUrls.length] as string;
        const kinds = options.clientKinds ?? ['v2', 'v1'];
        clients.push(await connectClient(kinds[a % kinds.length] as 'v1' | 'v2', url));
      }
      const agent = async (a: number) => {
        const client = clients[a] as TestClient;
        for (let c = 0; c < options.callsEach; c++) {
          const prompt = `${options.tag} agent ${a} call ${c} ${randomUUID()}`;
          const outcome: Outcome = { prompt, maxTokens: options.maxTokens };
          try {
            const result = await client.callTool(
              'generate_text',
              { prompt, max_tokens: options.maxTokens },
              { timeoutMs: 45_000 },
            );
            const text = (result.content[0] as { text?: string } | undefined)?.text ?? '';
            if (result.isError) outcome.error = text;
            else outcome.text = text;
          } catch (err) {
            outcome.error = err instanceof Error ? err.message : String(err);
          }
          outcomes.push(outcome);
        }
      };
      await Promise.all([
        ...clients.map((_, a) => agent(a)),
        (async () => {
          await options.during?.();
        })(),
      ]);
    } finally {
      await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    }
    return outcomes;
  };

  /** Every call answered once with exactly the text the backend generates for it. */
  const expectAllRight = (outcomes: Outcome[], calls: number) => {
    expect(outcomes).toHaveLength(calls);
    const failed = outcomes.filter((o) => o.error !== undefined);
    if (failed.length > 0) dumpLogs();
    expect(failed.map((o) => o.error)).toEqual([]);
    for (const o of outcomes) expect(o.text).toBe(expectedText(o.prompt, o.maxTokens));
  };

  /** Nothing waits in or is held from the pool's queue, and the backend runs nothing. */
  const expectDrained = async () => {
    observer ??= await openBroker({
      url: cluster.broker.url,
      namespace: cluster.namespace,
      pools: ['inference'],
    });
    const queue = observer.queue;
    await waitFor(
      'the inference queue to be empty',
      async () => (await queue.stats('inference')).every((s) => s.depth === 0 && s.inFlight === 0),
      20_000,
    );
    await waitFor('the backend to run nothing', async () => (await openRequests()) === 0, 10_000);
  };

  beforeAll(async () => {
    cluster = await startSimCluster({
      name: 'faults',
      startBroker,
      // 200 tokens/s per sequence: a 40-token answer takes about 0.2 s, so a load of a few
      // hundred calls spans the fault; 32 sequences at once.
      sim: { ttftMs: 10, tokensPerSecond: 200, maxNumSeqs: 32 },
      config: (simUrl) => `
worker: { ackWait: 2s, deliveryConnectTimeout: 2s, drainGrace: ${GRACE_MS}ms }
pools:
  inference: { backend: openai-chat, endpoints: [{ url: "${simUrl}", maxConcurrency: 16 }] }
tools:
  - { name: generate_text, template: generate_text, pool: inference, model: sim-llm }
`,
    });
    ingresses.push(...(await Promise.all([cluster.ingress('ingress-a'), cluster.ingress('ingress-b')])));
    await Promise.all([startWorker(), startWorker()]);
  }, 90_000);

  afterAll(async () => {
    await observer?.close().catch(() => undefined);
    await Promise.all([...ingresses, ...workers].map((p) => p.kill()));
    await cluster?.stop();
  }, 60_000);

  const urls = () => ingresses.map((i) => String(i.ready.url));

  it('a worker killed with SIGKILL under load: every call answered once and right by the others', async () => {
    const victim = workers[0] as RoleProcess;
    const outcomes = await runLoad({
      tag: 'kill',
      agents: 16,
      callsEach: 6,
      maxTokens: 40,
      ingressUrls: urls(),
      during: async () => {
        await waitFor('the victim to run calls', async () => (await simStats()).completed >= 16, 20_000);
        await victim.kill();
        await startWorker();
      },
    });
    expectAllRight(outcomes, 96);
    // The victim's calls were taken over, not only calls it had not yet taken.
    let redelivered = 0;
    for (const w of workers.filter((p) => p !== victim)) {
      const text = await (await fetch(`http://127.0.0.1:${String(w.ready.port)}/metrics`)).text();
      redelivered += metricValue(text, 'mcp_cluster_worker_redelivered_total', { pool: 'inference' });
    }
    expect(redelivered).toBeGreaterThan(0);
    await expectDrained();
  }, 90_000);

  it('the broker killed and restarted under load: every call answered once and right', async () => {
    const outcomes = await runLoad({
      tag: 'restart',
      agents: 16,
      callsEach: 6,
      maxTokens: 40,
      ingressUrls: urls(),
      during: async () => {
        const before = (await simStats()).completed;
        await waitFor('calls to flow', async () => (await simStats()).completed >= before + 16, 20_000);
        // SIGKILL: no chance to flush anything the broker has not already made durable.
        process.kill(cluster.broker.pid, 'SIGKILL');
        await cluster.broker.restart();
      },
    });
    expectAllRight(outcomes, 96);
    await expectDrained();
  }, 90_000);

  it('a storm of 2025-era cancels: no cancelled call keeps the GPU busy or gets an answer', async () => {
    const clients = await Promise.all(urls().map((url) => connectClient('v1', url)));
    const before = await simStats();
    try {
      // 100 calls that would each stream for 10 s, each cancelled after 50-500 ms: the v1
      // client sends notifications/cancelled, which may overtake the call or land while it
      // is queued, running, or on another replica's worker.
      const outcomes = await Promise.all(
        Array.from({ length: 100 }, async (_, i) => {
          const abort = new AbortController();
          const client = clients[i % clients.length] as TestClient;
          // The outcome is taken at once: a call refused while this one sleeps (an OVERLOADED
          // admission) would otherwise be a rejection nobody handles yet.
          const outcome = client
            .callTool(
              'generate_text',
              { prompt: `cancel storm ${i} ${randomUUID()}`, max_tokens: 2000 },
              { signal: abort.signal, timeoutMs: 45_000 },
            )
            .then(
              () => 'answered',
              () => 'cancelled',
            );
          await sleep(50 + ((i * 37) % 451));
          abort.abort('the user pressed stop');
          return outcome;
        }),
      );
      expect(outcomes.filter((o) => o === 'answered')).toEqual([]);
      // Nothing still generates: a leaked call would run its full 10 s.
      await waitFor(
        () => 'the backend to stop every cancelled call',
        async () => (await openRequests()) === 0,
        8_000,
      );
      const after = await simStats();
      // The storm reached the GPU (it is not only cancels of queued calls), and none of it ran to the end.
      expect(after.requests).toBeGreaterThan(before.requests);
      expect(after.aborted).toBe(before.aborted + (after.requests - before.requests));
      expect(after.completed).toBe(before.completed);
    } finally {
      await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    }
    await expectDrained();
  }, 90_000);

  it('an ingress replica killed under load: its work stops, the other replica answers every call right', async () => {
    const doomed = await cluster.ingress('ingress-doomed');
    ingresses.push(doomed);
    const survivors = urls().filter((u) => u !== String(doomed.ready.url));
    let doomedOutcomes: Outcome[] = [];
    const doomedLoad = runLoad({
      tag: 'doomed',
      // v2 clients only: a v1 client whose server vanished rejects a promise of its own that
      // nobody awaits (its session DELETE), which the test runner would report.
      clientKinds: ['v2'],
      agents: 8,
      callsEach: 1,
      // 20 s of generation each: only a stopped call ends before the test does.
      maxTokens: 4000,
      ingressUrls: [String(doomed.ready.url)],
    }).then((o) => {
      doomedOutcomes = o;
    });
    // Only the doomed replica's calls run yet: wait until all 8 generate.
    await waitFor(
      'the doomed replica to have calls running',
      async () => (await openRequests()) >= 8,
      20_000,
    );
    const outcomes = await runLoad({
      tag: 'survivor',
      agents: 8,
      callsEach: 6,
      maxTokens: 40,
      ingressUrls: survivors,
      during: async () => {
        const before = (await simStats()).completed;
        await waitFor(
          'survivor calls to flow',
          async () => (await simStats()).completed >= before + 8,
          20_000,
        );
        await doomed.kill();
      },
    });
    await doomedLoad;
    expectAllRight(outcomes, 48);
    expect(doomedOutcomes).toHaveLength(8);
    expect(doomedOutcomes.every((o) => o.error !== undefined)).toBe(true);
    await expectDrained();
  }, 90_000);

  it('SIGTERM on every role: each exits 0 within its grace period', async () => {
    const live = [...ingresses, ...workers].filter(
      (p) => p.child.exitCode === null && p.child.signalCode === null,
    );
    const exits = await Promise.all(
      live.map(async (p) => {
        const started = Date.now();
        const exited = new Promise<number | null>((resolve) => p.child.once('exit', (code) => resolve(code)));
        p.child.kill('SIGTERM');
        const code = await Promise.race([exited, sleep(GRACE_MS + 8_000).then(() => 'hung' as const)]);
        return { name: p.name, code, ms: Date.now() - started };
      }),
    );
    for (const e of exits) expect({ name: e.name, code: e.code }).toEqual({ name: e.name, code: 0 });
  }, 30_000);
});
