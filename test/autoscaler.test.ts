import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, type SpawnedBroker, startNatsServer } from './support/brokers.js';
import { connectClient, runAgents, type TestClient } from './support/mcp-clients.js';
import {
  metricValue,
  type RoleProcess,
  runCli,
  STACK_TRACE,
  startRole,
  startUp as startUpProcess,
  writeConfig,
} from './support/processes.js';
import { waitFor } from './support/wait.js';

// The built-in autoscaler with the local provider, end to end: NATS JetStream, an ingress process, a
// simulated vLLM whose calls take ~340 ms, and `mcp-cluster autoscaler` starting and stopping real
// `mcp-cluster worker` processes. Each replica serves 2 calls at once, so a step of 40 calls needs
// several. Assertions read the autoscaler's /metrics and /status, its decision log and the OS process
// table; the only times compared are those of the law's own stabilisation window, in its own log.

const POOL = 'inference';
const STABILIZATION_MS = 2_000;

interface ScaleLog {
  /** When the law decided, ms since the epoch. */
  time: number;
  msg: 'scaled up' | 'scaled down';
  from: number;
  to: number;
  reason: string;
}

/** Pids of the `mcp-cluster worker` processes whose parent is `parentPid`. */
function workerPids(parentPid: number): number[] {
  const table = execFileSync('ps', ['-e', '-o', 'pid=,ppid=,args='], { encoding: 'utf8' });
  const pids: number[] = [];
  for (const line of table.split('\n')) {
    const m = /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(line);
    if (m && Number(m[2]) === parentPid && m[3]?.includes(` worker --pool ${POOL}`)) pids.push(Number(m[1]));
  }
  return pids;
}

describe('autoscaler with the local provider on NATS JetStream', () => {
  let broker: SpawnedBroker;
  let sim: RoleProcess;
  let ingress: RoleProcess;
  let scaler: RoleProcess;
  let ingressUrl = '';
  let scalerUrl = '';
  const clients: TestClient[] = [];

  const gauge = async (name: string) =>
    metricValue(await (await fetch(`${scalerUrl}/metrics`)).text(), name, { pool: POOL });
  const current = () => gauge('mcp_cluster_autoscaler_current_replicas');
  const scalerPid = () => scaler.child.pid as number;
  const scaleLog = (): ScaleLog[] =>
    scaler
      .logs()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.component === 'autoscaler' && (l.msg === 'scaled up' || l.msg === 'scaled down'))
      .map((l) => ({
        time: Date.parse(String(l.decidedAt)),
        msg: l.msg as ScaleLog['msg'],
        from: Number(l.from),
        to: Number(l.to),
        reason: String(l.reason),
      }));
  const generate = async (client: TestClient, label: string) => {
    const result = await client.callTool('generate_text', { prompt: label, max_tokens: 8 });
    expect(result.isError, JSON.stringify(result.content)).toBeFalsy();
    expect((result.content[0] as { text: string }).text.length).toBeGreaterThan(0);
    return result;
  };

  beforeAll(async () => {
    broker = await startNatsServer();
    // 20 ms to the first token, then 8 tokens at 25 tokens/s with no batching slowdown: ~340 ms a call.
    sim = await startRole('sim', [
      'sim',
      '--port',
      '0',
      '--ttft-ms',
      '20',
      '--tokens-per-second',
      '25',
      '--batch-penalty',
      '0',
      '--max-num-seqs',
      '64',
    ]);
    const ingressPort = await freePort();
    const config = writeConfig(`
cluster: { namespace: scale${randomUUID().slice(0, 8)} }
broker: { url: "${broker.url}" }
ingress: { port: ${ingressPort}, sessionSecret: "scale-${randomUUID()}" }
worker: { ackWait: 2s, drainGrace: 5s, deliveryConnectTimeout: 2s }
autoscaler:
  provider: local
  interval: 300ms
  port: 0
  metricsUrls: ["http://127.0.0.1:${ingressPort}/metrics"]
pools:
  ${POOL}:
    backend: openai-chat
    endpoints: [{ url: "${String(sim.ready.url)}", maxConcurrency: 2 }]
    scaling:
      minReplicas: 0
      maxReplicas: 4
      replicaConcurrency: 2
      targetQueueWait: 500ms
      scaleDownStabilization: ${STABILIZATION_MS}ms
      idleToZero: 3s
tools:
  - { name: generate_text, template: generate_text, pool: ${POOL}, model: sim-llm }
`);
    ingress = await startRole('ingress', ['ingress', '--config', config]);
    ingressUrl = String(ingress.ready.url);
    scaler = await startRole('autoscaler', ['autoscaler', '--config', config]);
    scalerUrl = String(scaler.ready.url);
    for (let i = 0; i < 4; i++) clients.push(await connectClient('v2', ingressUrl));
  }, 60_000);

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    // A safety net: whatever the test saw, no worker outlives it.
    const leftover = scaler?.child.pid ? workerPids(scalerPid()) : [];
    await scaler?.stop(15_000);
    for (const pid of leftover) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await ingress?.stop();
    await sim?.stop();
    await broker?.stop();
  }, 60_000);

  it('prints its ready line with the provider and serves /healthz and /readyz', async () => {
    expect(scaler.ready).toMatchObject({ role: 'autoscaler', provider: 'local', pools: [POOL] });
    expect(scalerUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await fetch(`${scalerUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${scalerUrl}/readyz`)).status).toBe(200);
  });

  it('keeps an idle pool at zero workers', async () => {
    const status = async () =>
      (await (await fetch(`${scalerUrl}/status`)).json()) as { ticks: number; replicas: unknown[] };
    const seen = (await status()).ticks;
    await waitFor('three decisions', async () => (await status()).ticks >= seen + 3, 10_000);
    expect(await current()).toBe(0);
    expect(await gauge('mcp_cluster_autoscaler_desired_replicas')).toBe(0);
    expect(workerPids(scalerPid())).toEqual([]);
    expect((await status()).replicas).toEqual([]);
  });

  it('grows on a load step, serves every call, shrinks after the window with draining, then idles to zero', async () => {
    let loadDone = false;
    let maxReplicas = 0;
    let maxProcesses = 0;
    const watch = (async () => {
      while (!loadDone) {
        maxReplicas = Math.max(maxReplicas, await current().catch(() => 0));
        maxProcesses = Math.max(maxProcesses, workerPids(scalerPid()).length);
        await new Promise((r) => setTimeout(r, 150));
      }
    })();

    // The step: 40 calls at once; one replica would take ~7 s to clear them.
    const step = Array.from({ length: 40 }, (_, i) => generate(clients[i % 3] as TestClient, `step ${i}`));
    // A trickle that runs on through the scale-down, so replicas are drained while calls still arrive.
    let trickling = true;
    let trickled = 0;
    const trickle = (async () => {
      while (trickling) {
        await generate(clients[3] as TestClient, `trickle ${trickled}`);
        trickled++;
      }
    })();

    const results = await Promise.all(step);
    expect(results).toHaveLength(40);
    loadDone = true;
    await watch;
    expect(maxReplicas, 'the autoscaler set the pool above one replica').toBeGreaterThan(1);
    expect(maxProcesses, 'more than one worker process ran').toBeGreaterThan(1);

    // With the trickle alone the law wants one replica; it gets there only through scale-downs.
    await waitFor(
      'a scale-down under the trickle',
      () => scaleLog().some((l) => l.msg === 'scaled down' && l.to >= 1),
      30_000,
    );
    trickling = false;
    await trickle;
    expect(trickled).toBeGreaterThan(0);

    // Idle: to zero replicas and zero worker processes (the drained ones have exited).
    await waitFor('the pool at zero', async () => (await current()) === 0, 30_000);
    await waitFor('every worker process gone', () => workerPids(scalerPid()).length === 0, 30_000);

    const log = scaleLog();
    // Woken by the step itself: its calls outstanding size the pool at once, beyond one replica.
    expect(log[0]).toMatchObject({ msg: 'scaled up', from: 0, reason: 'wake-from-zero' });
    expect(log[0]?.to).toBeGreaterThan(1);
    expect(log.at(-1)).toMatchObject({ msg: 'scaled down', to: 0, reason: 'idle-to-zero' });
    // No replica went away while the window still held a higher recommendation: every scale-down to v
    // comes at least the stabilisation window after every scale-up above v.
    for (const down of log.filter((l) => l.msg === 'scaled down' && l.reason === 'scale-down')) {
      for (const up of log.filter((l) => l.msg === 'scaled up' && l.to > down.to && l.time < down.time)) {
        expect(down.time - up.time, JSON.stringify({ up, down })).toBeGreaterThanOrEqual(
          STABILIZATION_MS - 50,
        );
      }
    }
    // Each scale-down drained the newest replicas: the autoscaler logged the drain, the workers logged theirs.
    expect(scaler.logs()).toContain('"msg":"draining replica"');
    expect(scaler.logs()).toContain('"msg":"draining"');
    const text = await (await fetch(`${scalerUrl}/metrics`)).text();
    // Every scale-up of the log counted (the step's outstanding calls may size it in one).
    expect(metricValue(text, 'mcp_cluster_autoscaler_scaled_total', { pool: POOL, direction: 'up' })).toBe(
      log.filter((l) => l.msg === 'scaled up').length,
    );
    expect(
      metricValue(text, 'mcp_cluster_autoscaler_scaled_total', {
        pool: POOL,
        direction: 'down',
        reason: 'idle-to-zero',
      }),
    ).toBe(1);
  }, 90_000);

  it('a call to the pool at zero wakes it and is served', async () => {
    expect(await current()).toBe(0);
    await generate(clients[0] as TestClient, 'wake up');
    expect(await current()).toBeGreaterThanOrEqual(1);
    expect(workerPids(scalerPid()).length).toBeGreaterThanOrEqual(1);
    expect(scaleLog().at(-1)).toMatchObject({ msg: 'scaled up', from: 0, reason: 'wake-from-zero' });
  }, 60_000);

  it('SIGTERM drains the workers it started and exits 0', async () => {
    const pids = workerPids(scalerPid());
    expect(pids.length).toBeGreaterThanOrEqual(1);
    await scaler.stop(15_000);
    expect(scaler.child.exitCode, scaler.logs().slice(-2000)).toBe(0);
    for (const pid of pids) expect(() => process.kill(pid, 0), `worker ${pid} still alive`).toThrow();
  }, 30_000);
});

/** Its logs at info: some tests read what the autoscaler decided from them. */
const INFO = { MCP_CLUSTER_LOG_LEVEL: 'info' };
const runCliInfo = (args: string[], env: Record<string, string> = {}) =>
  runCli(args, { ...INFO, ...env }, 20_000);

/** `mcp-cluster up <args>` at info, with the URLs its banner gives. */
async function startUp(args: string[]) {
  const up = await startUpProcess(args, INFO);
  return { ...up, statusUrl: /autoscaler \(in-process workers\):\s+(\S+)/.exec(up.banner)?.[1] };
}

describe('mcp-cluster autoscaler and up --autoscale', () => {
  const UP_CONFIG = `
autoscaler: { interval: 200ms }
pools:
  inference: { backend: openai-chat }
tools:
  - { name: generate_text, template: generate_text, pool: inference, model: sim-llm }
`;

  it('up without --autoscale starts one worker per pool at once, as before', async () => {
    const up = await startUp(['--config', writeConfig(UP_CONFIG)]);
    try {
      expect(up.statusUrl).toBeUndefined();
      const client = await connectClient('v1', up.mcpUrl);
      try {
        const result = await client.callTool('generate_text', { prompt: 'hi', max_tokens: 4 });
        expect(result.isError).toBeFalsy();
      } finally {
        await client.close();
      }
      expect(up.logs()).not.toContain('"component":"autoscaler"');
    } finally {
      expect(await up.stop()).toBe(0);
    }
  });

  it('up --autoscale starts the pool at zero, wakes it for the first call and serves it', async () => {
    const up = await startUp(['--autoscale', '--config', writeConfig(UP_CONFIG)]);
    try {
      expect(up.statusUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/status$/);
      type Status = { ticks: number; pools: { pool: string; desired: number | null; changes: number }[] };
      const status = async () => (await (await fetch(String(up.statusUrl))).json()) as Status;
      await waitFor('two decisions', async () => (await status()).ticks >= 2, 10_000);
      expect((await status()).pools).toMatchObject([{ pool: 'inference', desired: 0, changes: 0 }]);
      expect(up.logs()).not.toContain('"msg":"worker started"');

      const client = await connectClient('v2', up.mcpUrl);
      try {
        const result = await client.callTool('generate_text', { prompt: 'first call', max_tokens: 4 });
        expect(result.isError, JSON.stringify(result.content)).toBeFalsy();
      } finally {
        await client.close();
      }
      expect((await status()).pools).toMatchObject([{ pool: 'inference', desired: 1, changes: 1 }]);
      expect(up.logs()).toContain('"reason":"wake-from-zero"');
    } finally {
      expect(await up.stop()).toBe(0);
    }
    expect(up.logs()).toContain('"msg":"worker stopped"');
    expect(up.logs()).not.toMatch(STACK_TRACE);
  });

  it('up --autoscale meets a step from idle to 64 agents with the replicas their calls need, and holds them', async () => {
    // 16 slots per replica (the openai-chat default), so 64 agents with a call each outstanding need
    // 4 replicas; the growth cap (x2 or +4) lets one decision reach them from zero. Every slot is then
    // taken and nothing waits: the Little's-law estimate λ·S, which reads a few calls over the 64 in
    // service, must not add a fifth.
    const config = `
autoscaler: { interval: 500ms }
pools:
  inference: { backend: openai-chat, scaling: { minReplicas: 0, maxReplicas: 8, idleToZero: 10m } }
tools:
  - { name: generate_text, template: generate_text, pool: inference, model: sim-llm }
`;
    const up = await startUp(['--autoscale', '--config', writeConfig(config)]);
    const stop = new AbortController();
    try {
      type Status = {
        ticks: number;
        pools: { pool: string; desired: number | null; required: number | null; changes: number }[];
      };
      const status = async () => (await (await fetch(String(up.statusUrl))).json()) as Status;
      await waitFor('two decisions at zero', async () => (await status()).ticks >= 2, 10_000);
      expect((await status()).pools[0]).toMatchObject({ desired: 0, changes: 0 });
      // 64 agents, each calling again as soon as its answer came back.
      const agents = runAgents(
        up.mcpUrl,
        64,
        'generate_text',
        { prompt: 'step', max_tokens: 64 },
        stop.signal,
      );
      // Every decision from the step on, as the autoscaler reports them.
      const seen: { ticks: number; desired: number }[] = [];
      await waitFor(
        'the pool to reach 4 replicas',
        async () => {
          const s = await status();
          const desired = s.pools[0]?.desired ?? 0;
          if (seen[seen.length - 1]?.ticks !== s.ticks) seen.push({ ticks: s.ticks, desired });
          return desired >= 4;
        },
        20_000,
      );
      const reached = await status();
      // At most one step below the target first (agents still arriving when a tick read the queue).
      expect(reached.pools[0]?.changes).toBeLessThanOrEqual(2);
      // Held, with no change at all, for the next 20 decisions of the steady load.
      await waitFor('20 more decisions', async () => (await status()).ticks >= reached.ticks + 20, 30_000);
      const held = await status();
      expect(held.pools[0]).toMatchObject({ desired: 4, changes: reached.pools[0]?.changes });
      expect(Math.max(...seen.map((d) => d.desired))).toBe(4);
      stop.abort();
      await agents;
    } finally {
      stop.abort();
      expect(await up.stop()).toBe(0);
    }
  }, 90_000);

  it.each([
    [['autoscaler', '--bogus'], "Unknown option '--bogus'"],
    [['autoscaler', '--port', 'abc'], '--port must be a port number 0-65535, got "abc"'],
    [['autoscaler', '--port'], "'--port <value>' argument missing"],
    [['autoscaler', 'extra'], "'extra'"],
    [['autoscaler'], 'broker.url is "memory:"'],
    [['autoscaler', '--broker', 'amqp://127.0.0.1:5672'], 'amqp://127.0.0.1:5672'],
    [['up', '--autoscale=yes'], "'--autoscale' does not take an argument"],
  ])('%j exits 2 with a message naming the problem', async (args, mention) => {
    const result = await runCliInfo(args);
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).toMatch(/^mcp-cluster: INVALID_CONFIG: /m);
    expect(result.stderr).toContain(mention);
    expect(result.stderr).not.toMatch(STACK_TRACE);
    expect(result.stdout).toBe('');
  });

  it.each([
    ['autoscaler: { provider: docker }', 'autoscaler.provider', '"docker"'],
    ['autoscaler: { interval: 10ms }', 'autoscaler.interval', '100ms or more'],
    ['autoscaler: { metricsUrls: ["ftp://x/metrics"] }', 'autoscaler.metricsUrls.0', 'ftp://x/metrics'],
    [
      'pools: { inference: { backend: openai-chat, scaling: { minReplicas: 5, maxReplicas: 2 } } }',
      'pools.inference.scaling.minReplicas',
      'maxReplicas 2',
    ],
  ])('a bad setting in the file (%s) exits 2 naming it', async (yaml, setting, value) => {
    const path = writeConfig(`broker: { url: "nats://127.0.0.1:1" }\n${yaml}\n`);
    const result = await runCliInfo(['autoscaler', '--config', path]);
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).toContain(setting);
    expect(result.stderr).toContain(value);
    expect(result.stderr).not.toMatch(STACK_TRACE);
  });

  it('the local provider refuses pools without backend endpoints before starting anything', async () => {
    const path = writeConfig(
      `broker: { url: "nats://127.0.0.1:1" }\nautoscaler: { provider: local }\n${UP_CONFIG.replace(/autoscaler:.*\n/, '')}`,
    );
    const result = await runCliInfo(['autoscaler', '--config', path]);
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).toContain('pools.inference.endpoints is empty');
    expect(result.stderr).toContain('MCP_CLUSTER_BACKENDS_INFERENCE');
  });

  it('an unreachable broker exits 1 with QUEUE_UNAVAILABLE, no stack trace', async () => {
    const result = await runCliInfo(['autoscaler', '--port', '0', '--broker', 'nats://127.0.0.1:1']);
    expect(result.code, result.stderr).toBe(1);
    expect(result.stderr).toContain('mcp-cluster: QUEUE_UNAVAILABLE');
    expect(result.stderr).not.toMatch(STACK_TRACE);
    expect(result.stdout).toBe('');
  });
});
