import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BROKER_RECONNECT_GRACE_MS } from '../services/core/index.js';
import { type SpawnedBroker, startBrokerServer } from './support/brokers.js';
import { connectClient, type TestClient } from './support/mcp-clients.js';
import { metricValue, type RoleProcess, startRole, writeConfig } from './support/processes.js';
import { sleep, waitFor } from './support/wait.js';

// A broker that goes away, across separate OS processes: every role still exits on SIGTERM within
// its grace period, an enqueue waits a bounded time for the broker and then fails with a retryable
// error, and a Redis that restarts without its data fails the calls it lost at once instead of at
// their deadline (with persistence, nothing is lost).

/** Grace period of every role here (ingress and worker drainGrace), in milliseconds. */
const GRACE_MS = 2_000;
/**
 * What a role may take past its grace period to exit once the broker is gone: a call stopped at
 * the end of the grace is handed back within BROKER_RECONNECT_GRACE_MS (then abandoned), and
 * closing the connections takes no broker round trip. Generous: process exit under a loaded CI.
 */
const EXIT_MARGIN_MS = BROKER_RECONNECT_GRACE_MS + 4_000;

type BrokerKind = 'nats' | 'redis';

describe.each([
  ['NATS JetStream', 'nats'],
  ['BullMQ on Redis', 'redis'],
] as const)('a broker outage on %s', (_label, kind: BrokerKind) => {
  let sim: RoleProcess;
  const roles: RoleProcess[] = [];
  const brokers: SpawnedBroker[] = [];
  const clients: TestClient[] = [];

  beforeAll(async () => {
    // 25 tokens/s: a 100-token answer runs for 4 s, so it is still running when the broker goes.
    sim = await startRole('sim', ['sim', '--port', '0', '--ttft-ms', '20', '--tokens-per-second', '25']);
  }, 30_000);

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close().catch(() => undefined)));
    await Promise.all(roles.splice(0).map((r) => r.kill()));
    await Promise.all(brokers.splice(0).map((b) => b.dispose()));
  }, 30_000);

  afterAll(async () => {
    await sim?.stop();
  });

  const startBroker = async (persistent = false) => {
    const broker = await startBrokerServer(kind, { persistent });
    brokers.push(broker);
    return broker;
  };
  const configFor = (broker: SpawnedBroker) =>
    writeConfig(`
cluster: { namespace: outage${randomUUID().slice(0, 8)} }
broker: { url: "${broker.url}" }
ingress: { port: 0, sessionSecret: "outage-${randomUUID()}", drainGrace: ${GRACE_MS}ms }
worker: { ackWait: 3s, drainGrace: ${GRACE_MS}ms, deliveryConnectTimeout: 2s }
autoscaler: { provider: metrics, interval: 500ms, port: 0 }
pools:
  inference: { backend: openai-chat, endpoints: [{ url: "${String(sim.ready.url)}", maxConcurrency: 8 }] }
  idle: { backend: openai-chat, endpoints: [{ url: "${String(sim.ready.url)}", maxConcurrency: 8 }] }
tools:
  - { name: generate_text, template: generate_text, pool: inference, model: sim-llm }
  - { name: generate_text_idle, template: generate_text, pool: idle, model: sim-llm }
`);
  const start = async (name: string, args: string[]) => {
    const role = await startRole(name, args);
    roles.push(role);
    return role;
  };
  const client = async (ingress: RoleProcess) => {
    const c = await connectClient('v2', String(ingress.ready.url));
    clients.push(c);
    return c;
  };
  const textOf = (result: { content: unknown[] }) => (result.content[0] as { text: string }).text;
  /** Calls enqueued by an ingress so far, from its /metrics. */
  const enqueued = async (ingress: RoleProcess) =>
    metricValue(
      await (await fetch(new URL('/metrics', String(ingress.ready.url)))).text(),
      'mcp_cluster_queue_enqueued_total',
    );

  it('every role exits within its grace period once the broker is gone for good', async () => {
    const broker = await startBroker();
    const config = configFor(broker);
    const [ingress, ...others] = await Promise.all([
      start('ingress', ['ingress', '--config', config]),
      start('worker-inference', ['worker', '--pool', 'inference', '--config', config]),
      start('worker-idle', ['worker', '--pool', 'idle', '--config', config]),
      start('autoscaler', ['autoscaler', '--config', config]),
    ]);
    const c = await client(ingress!);
    // Calls running on a worker when the broker goes: its worker must hand them back (or give up
    // on that) within the bounds too.
    for (let i = 0; i < 3; i++) {
      c.callTool('generate_text', { prompt: `outlive the broker ${i}`, max_tokens: 100 }).catch(
        () => undefined,
      );
    }
    await waitFor('the calls to be queued', async () => (await enqueued(ingress!)) >= 3);
    await sleep(300);
    await broker.stop();

    const exits = await Promise.all(
      [ingress!, ...others].map(async (role) => {
        const began = performance.now();
        await role.stop(30_000);
        return {
          name: role.name,
          ms: performance.now() - began,
          code: role.child.exitCode,
          logs: role.logs(),
        };
      }),
    );
    for (const exit of exits) {
      expect(exit.ms, `${exit.name} took ${Math.round(exit.ms)} ms to exit`).toBeLessThan(
        GRACE_MS + EXIT_MARGIN_MS,
      );
      expect(exit.code, `${exit.name} exit code; logs:\n${exit.logs.slice(-3000)}`).toBe(0);
      expect(exit.logs, `${exit.name} logged no error`).not.toMatch(/"level":"error"/);
    }
    // The hand-backs the broker could not take: one warning for the outage, not one per call.
    const worker = exits.find((e) => e.name === 'worker-inference')!;
    expect(worker.logs.match(/did not confirm settles/g) ?? [], worker.logs.slice(-3000)).toHaveLength(1);
    expect(worker.logs).toContain('"failures":1');
  }, 60_000);

  it('an enqueue waits out a short outage, and fails with a retryable error after the bound when the broker stays away', async () => {
    const broker = await startBroker(true);
    const config = configFor(broker);
    const [ingress] = await Promise.all([
      start('ingress', ['ingress', '--config', config]),
      start('worker-inference', ['worker', '--pool', 'inference', '--config', config]),
    ]);
    const c = await client(ingress!);

    await broker.stop();
    const began = performance.now();
    const failed = await c.callTool('generate_text', { prompt: 'nobody takes me', max_tokens: 4 });
    const waitedMs = performance.now() - began;
    expect(failed.isError).toBe(true);
    expect(textOf(failed)).toMatch(/^QUEUE_UNAVAILABLE: /);
    expect(textOf(failed)).toContain(broker.url.replace(/^\w+:\/\//, ''));
    // About the bound: not at once, and far from the call's deadline (minutes).
    expect(waitedMs).toBeGreaterThan(BROKER_RECONNECT_GRACE_MS - 500);
    expect(waitedMs).toBeLessThan(BROKER_RECONNECT_GRACE_MS + 5_000);

    // A broker back within the bound: the call waits for it and completes.
    const call = c.callTool('generate_text', { prompt: 'wait for the broker', max_tokens: 4 });
    await sleep(BROKER_RECONNECT_GRACE_MS / 3);
    await broker.restart();
    const result = await call;
    expect(result.isError, textOf(result)).toBeFalsy();
  }, 60_000);

  it('calls queued when the broker restarts with its data complete once a worker runs', async () => {
    const broker = await startBroker(true);
    const config = configFor(broker);
    const ingress = await start('ingress', ['ingress', '--config', config]);
    const c = await client(ingress);
    const calls = [1, 2, 3].map((i) =>
      c.callTool('generate_text_idle', { prompt: `keep me ${i}`, max_tokens: 4 }),
    );
    await waitFor('three calls queued', async () => (await enqueued(ingress)) >= 3);
    await broker.restart();
    await start('worker-idle', ['worker', '--pool', 'idle', '--config', config]);
    for (const result of await Promise.all(calls)) expect(result.isError, textOf(result)).toBeFalsy();
  }, 60_000);

  it.runIf(kind === 'redis')(
    'calls queued in a Redis that restarts without its data fail at once with a retryable error',
    async () => {
      const broker = await startBroker(false);
      const config = configFor(broker);
      const ingress = await start('ingress', ['ingress', '--config', config]);
      const c = await client(ingress);
      const calls = [1, 2, 3].map((i) =>
        c.callTool('generate_text_idle', { prompt: `lose me ${i}`, max_tokens: 4 }),
      );
      await waitFor('three calls queued', async () => (await enqueued(ingress)) >= 3);
      const restarted = performance.now();
      await broker.restart();
      for (const result of await Promise.all(calls)) {
        expect(result.isError).toBe(true);
        expect(textOf(result)).toMatch(/^QUEUE_UNAVAILABLE: the broker lost this queued call/);
      }
      // Seconds (a reconnect), not the calls' deadline (minutes).
      expect(performance.now() - restarted).toBeLessThan(10_000);
      // The ingress takes new calls on the restarted Redis.
      await start('worker-idle', ['worker', '--pool', 'idle', '--config', config]);
      const again = await c.callTool('generate_text_idle', { prompt: 'retry me', max_tokens: 4 });
      expect(again.isError, textOf(again)).toBeFalsy();
    },
    60_000,
  );
});
