import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SpawnedBroker, startNatsServer, startRedisServer } from './support/brokers.js';
import { connectClient, type TestClient } from './support/mcp-clients.js';
import { metricValue, type RoleProcess, startRole, writeConfig } from './support/processes.js';
import { sleep, waitFor } from './support/wait.js';

// A real backend outage across separate OS processes: an ingress, two inference workers and a
// simulated vLLM server that is killed mid-calls and started again on the same port ~6 s later.
// Every call in flight must end with its own answer, once, and nothing may be left in the queue.

/** Calls in flight when the backend goes away: 4 clients with 8 each. */
const CLIENTS = 4;
const CALLS_PER_CLIENT = 8;
/** 40 tokens at 40 tokens/s: each call streams for about a second. */
const MAX_TOKENS = 40;
/** How long the backend is gone, in milliseconds. */
const OUTAGE_MS = 6000;

const simArgs = (port: number) => [
  'sim',
  '--port',
  String(port),
  '--ttft-ms',
  '20',
  '--tokens-per-second',
  '40',
  '--max-num-seqs',
  '16',
];

/**
 * The sim's own answer to a generate_text call (one user message, no system prompt), asked for
 * directly and unstreamed: its output is seeded by the messages and max_tokens, so the answer
 * through the cluster must be exactly this.
 */
async function expectedText(simUrl: string, prompt: string): Promise<string> {
  const res = await fetch(`${simUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'sim-llm',
      messages: [{ role: 'user', content: prompt }],
      max_tokens: MAX_TOKENS,
    }),
  });
  expect(res.status).toBe(200);
  const body = (await res.json()) as { choices: { message: { content: string } }[] };
  return body.choices[0]?.message.content ?? '';
}

describe.each([
  ['NATS JetStream', startNatsServer],
  ['BullMQ on Redis', startRedisServer],
] as const)('backend outage across processes on %s', (label, startBroker) => {
  let broker: SpawnedBroker;
  let sim: RoleProcess | undefined;
  let simPort = 0;
  let ingress: RoleProcess;
  const workers: RoleProcess[] = [];

  beforeAll(async () => {
    broker = await startBroker();
    sim = await startRole('sim', simArgs(0));
    simPort = Number(new URL(String(sim.ready.url)).port);
    // The defaults a deployment has, but for short ack waits: a 5 s routine health probe,
    // 5 deliveries, a 60 s deadline.
    const configPath = writeConfig(`
cluster: { namespace: outage${randomUUID().slice(0, 8)} }
broker: { url: "${broker.url}" }
ingress: { port: 0 }
worker: { ackWait: 2s, deliveryConnectTimeout: 2s }
pools:
  inference: { backend: openai-chat, endpoints: [{ url: "${String(sim.ready.url)}", maxConcurrency: 8 }] }
tools:
  - { name: generate_text, template: generate_text, pool: inference, model: sim-llm }
`);
    const started = await Promise.all([
      startRole('ingress', ['ingress', '--config', configPath]),
      startRole('worker-inference-1', ['worker', '--pool', 'inference', '--config', configPath]),
      startRole('worker-inference-2', ['worker', '--pool', 'inference', '--config', configPath]),
    ]);
    ingress = started[0] as RoleProcess;
    workers.push(...started.slice(1));
  }, 60_000);

  afterAll(async () => {
    await Promise.all([ingress, ...workers].map((p) => p?.stop()));
    await sim?.stop();
    await broker?.stop();
  }, 60_000);

  const workerMetrics = async (w: RoleProcess) =>
    (await fetch(`http://127.0.0.1:${String(w.ready.port)}/metrics`)).text();
  const simRunning = async () =>
    ((await (await fetch(`http://127.0.0.1:${simPort}/sim/stats`)).json()) as { running: number }).running;

  it('answers every call in flight once, with its own answer, after the backend comes back', async () => {
    const clients: TestClient[] = [];
    for (let i = 0; i < CLIENTS; i++)
      clients.push(await connectClient(i % 2 === 0 ? 'v2' : 'v1', String(ingress.ready.url)));
    try {
      // The same load without an outage, for comparison: how long 32 calls take at all.
      const baselineStart = performance.now();
      await Promise.all(
        Array.from({ length: CLIENTS * CALLS_PER_CLIENT }, (_, i) =>
          (clients[i % CLIENTS] as TestClient).callTool('generate_text', {
            prompt: `baseline ${label} ${i}`,
            max_tokens: MAX_TOKENS,
          }),
        ),
      );
      const baselineMs = Math.round(performance.now() - baselineStart);

      const prompts = Array.from({ length: CLIENTS * CALLS_PER_CLIENT }, (_, i) => `outage ${label} ${i}`);
      const answeredAt: number[] = [];
      const calls = prompts.map(async (prompt, i) => {
        const client = clients[i % CLIENTS] as TestClient;
        const result = await client.callTool('generate_text', { prompt, max_tokens: MAX_TOKENS });
        answeredAt.push(performance.now());
        return result;
      });

      // The backend dies with 16 sequences streaming and 16 calls queued behind them.
      await waitFor('the sim to run 16 sequences', async () => (await simRunning()) >= 16);
      await sim?.kill();
      await sleep(OUTAGE_MS);
      sim = await startRole('sim', simArgs(simPort));
      const backAt = performance.now();

      const results = await Promise.all(calls);
      const recoveryMs = Math.round(Math.max(...answeredAt) - backAt);
      console.log(
        `${label}: backend back to last answer ${recoveryMs} ms; the same 32 calls without an outage ${baselineMs} ms`,
      );

      const expected = await Promise.all(prompts.map((p) => expectedText(String(sim?.ready.url), p)));
      results.forEach((result, i) => {
        expect(result.isError, JSON.stringify(result.content)).toBeFalsy();
        expect((result.content[0] as { text: string }).text).toBe(expected[i]);
      });

      const ingressText = await (await fetch(new URL('/metrics', String(ingress.ready.url)))).text();
      // Answered once each (the baseline's calls too): one answer per call, all good.
      expect(metricValue(ingressText, 'mcp_cluster_ingress_calls_total', { tool: 'generate_text' })).toBe(
        2 * prompts.length,
      );
      expect(
        metricValue(ingressText, 'mcp_cluster_ingress_calls_total', { tool: 'generate_text', outcome: 'ok' }),
      ).toBe(2 * prompts.length);

      // Nothing left in the queue, nothing held by a worker.
      await waitFor('the queue to be empty', async () => {
        for (const w of workers) {
          const text = await workerMetrics(w);
          const left =
            metricValue(text, 'mcp_cluster_queue_depth', { pool: 'inference' }) +
            metricValue(text, 'mcp_cluster_queue_inflight', { pool: 'inference' }) +
            metricValue(text, 'mcp_cluster_worker_inflight_calls', { pool: 'inference' });
          if (left !== 0) return false;
        }
        return true;
      });
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  }, 90_000);
});
