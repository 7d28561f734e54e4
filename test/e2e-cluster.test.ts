import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNatsServer, startRedisServer } from './support/brokers.js';
import { type SimCluster, startSimCluster } from './support/cluster.js';
import { connectClient, open2025Session, post2025 } from './support/mcp-clients.js';
import { metricValue, type RoleProcess, startRole } from './support/processes.js';
import { waitFor } from './support/wait.js';

interface SimStats {
  requests: number;
  aborted: number;
  running: number;
  chatRequests: number;
  embedRequests: number;
}

// The whole distributed path across separate OS processes: two ingress replicas, two workers
// per pool, a simulated vLLM backend and a real broker spawned for the test.
describe.each([
  ['NATS JetStream', startNatsServer],
  ['BullMQ on Redis', startRedisServer],
] as const)('cluster across processes on %s', (_label, startBroker) => {
  let cluster: SimCluster;
  let comfy: RoleProcess;
  let comfyUrl = '';
  const ingresses: RoleProcess[] = [];
  const workers: RoleProcess[] = [];
  const extra: RoleProcess[] = [];

  /** Opens a 2025-era session with a raw initialize and returns the signed session id. */
  const initializeRaw = async (url: string, name: string): Promise<string> => {
    const session = await open2025Session(url, name);
    expect(session).toMatch(/^s1\./);
    return session;
  };
  const comfyStats = async (): Promise<{ completed: number; interrupted: number; deleted: number }> =>
    (await fetch(`${comfyUrl}/sim/stats`)).json() as Promise<{
      completed: number;
      interrupted: number;
      deleted: number;
    }>;
  const simStats = async (): Promise<SimStats> =>
    (await fetch(`${cluster.simUrl}/sim/stats`)).json() as Promise<SimStats>;
  const ingressUrl = (i: number) => String(ingresses[i]?.ready.url);
  const workerMetrics = async (w: RoleProcess) =>
    (await fetch(`http://127.0.0.1:${String(w.ready.port)}/metrics`)).text();

  beforeAll(async () => {
    comfy = await startRole('comfy', ['sim', '--kind', 'comfyui', '--port', '0', '--steps-per-second', '10']);
    comfyUrl = String(comfy.ready.url);
    cluster = await startSimCluster({
      name: 'e2e',
      startBroker,
      // 40 tokens/s per sequence: a 120-token answer streams for about 3 s, long enough to
      // cancel it or kill its worker mid-call.
      sim: { ttftMs: 20, tokensPerSecond: 40, maxNumSeqs: 16 },
      config: (simUrl) => `
worker: { ackWait: 2s, deliveryConnectTimeout: 2s }
pools:
  inference: { backend: openai-chat, endpoints: [{ url: "${simUrl}", maxConcurrency: 8 }] }
  embeddings: { backend: openai-embeddings, endpoints: [{ url: "${simUrl}", maxConcurrency: 8 }] }
  idle: { backend: openai-chat, endpoints: [{ url: "${simUrl}", maxConcurrency: 8 }] }
  diffusion: { backend: comfyui, endpoints: [{ url: "${comfyUrl}" }] }
tools:
  - { name: generate_text, template: generate_text, pool: inference, model: sim-llm }
  - { name: chat, template: chat, pool: inference, model: sim-llm }
  - { name: summarize, template: summarize, pool: inference, model: sim-llm }
  - { name: embed, template: embed, pool: embeddings, model: sim-embed }
  - { name: generate_image, template: generate_image, pool: diffusion, model: sim-diffusion, maxImageSize: 512 }
  - { name: generate_text_idle, template: generate_text, pool: idle, model: sim-llm, description: "A pool with no workers running." }
`,
    });
    const started = await Promise.all([
      cluster.ingress('ingress-a'),
      cluster.ingress('ingress-b'),
      cluster.worker('worker-inference-1', 'inference'),
      cluster.worker('worker-inference-2', 'inference'),
      cluster.worker('worker-embeddings-1', 'embeddings'),
      cluster.worker('worker-embeddings-2', 'embeddings'),
      cluster.worker('worker-diffusion-1', 'diffusion'),
    ]);
    ingresses.push(...started.slice(0, 2));
    workers.push(...started.slice(2));
  }, 90_000);

  afterAll(async () => {
    await Promise.all([...ingresses, ...workers, ...extra].map((p) => p.stop()));
    await comfy?.stop();
    await cluster?.stop();
  }, 60_000);

  it('serves tools/list, generate_text with progress and embed to the v2 and the v1 client', async () => {
    for (const [kind, replica] of [
      ['v2', 0],
      ['v1', 1],
    ] as const) {
      const client = await connectClient(kind, ingressUrl(replica));
      try {
        expect((await client.listTools()).map((t) => t.name).sort()).toEqual([
          'chat',
          'embed',
          'embed_batch',
          'generate_image',
          'generate_text',
          'generate_text_idle',
          'summarize',
        ]);
        const progress: { progress: number; message?: string }[] = [];
        const result = await client.callTool(
          'generate_text',
          { prompt: `hello from ${kind}`, max_tokens: 24 },
          { onProgress: (p) => progress.push(p) },
        );
        expect(result.isError).toBeFalsy();
        const text = (result.content[0] as { text: string }).text;
        expect(text.split(' ').length).toBeGreaterThanOrEqual(20);
        expect(progress.length).toBeGreaterThan(1);
        expect(progress.every((p, i) => i === 0 || p.progress >= (progress[i - 1]?.progress ?? 0))).toBe(
          true,
        );

        const embedded = await client.callTool('embed', { texts: ['first', 'second'] });
        expect(embedded.isError).toBeFalsy();
        const vectors = (embedded.structuredContent as { vectors: number[][] }).vectors;
        expect(vectors).toHaveLength(2);
        expect(Math.hypot(...(vectors[0] ?? []))).toBeCloseTo(1, 5);
      } finally {
        await client.close();
      }
    }
  });

  it('chat and summarize answer through the cluster, chat with token progress', async () => {
    const client = await connectClient('v2', ingressUrl(1));
    try {
      const progress: { message?: string }[] = [];
      const chat = await client.callTool(
        'chat',
        {
          messages: [
            { role: 'system', content: 'You are terse.' },
            { role: 'user', content: 'Name a queue.' },
            { role: 'assistant', content: 'JetStream.' },
            { role: 'user', content: 'Another?' },
          ],
          max_tokens: 20,
        },
        { onProgress: (p) => progress.push(p) },
      );
      expect(chat.isError).toBeFalsy();
      expect((chat.content[0] as { text: string }).text.split(' ').length).toBeGreaterThanOrEqual(10);
      expect(progress.length).toBeGreaterThan(0);

      const summary = await client.callTool('summarize', { text: 'word '.repeat(500), max_words: 12 });
      expect(summary.isError).toBeFalsy();
      const words = (summary.content[0] as { text: string }).text.trim().split(/\s+/);
      expect(words.length).toBeGreaterThan(0);
      expect(words.length).toBeLessThanOrEqual(12);
    } finally {
      await client.close();
    }
  });

  it('generate_image returns a PNG of the requested size, with sampler steps as progress', async () => {
    const client = await connectClient('v1', ingressUrl(0));
    try {
      const progress: { progress: number; total?: number }[] = [];
      const result = await client.callTool(
        'generate_image',
        { prompt: 'a lighthouse at dusk', width: 96, height: 64, steps: 6, seed: 7 },
        { onProgress: (p) => progress.push(p) },
      );
      expect(result.isError).toBeFalsy();
      const image = result.content.find((c) => (c as { type: string }).type === 'image') as {
        data: string;
        mimeType: string;
      };
      expect(image.mimeType).toBe('image/png');
      const png = PNG.sync.read(Buffer.from(image.data, 'base64'));
      expect([png.width, png.height]).toEqual([96, 64]);
      expect(progress.at(-1)).toMatchObject({ progress: 6, total: 6 });
    } finally {
      await client.close();
    }
  });

  it('a generate_image call cancelled mid-run is interrupted at ComfyUI', async () => {
    const before = await comfyStats();
    const client = await connectClient('v2', ingressUrl(0));
    const abort = new AbortController();
    try {
      const call = client.callTool(
        'generate_image',
        { prompt: 'never finished', width: 64, height: 64, steps: 50 },
        {
          signal: abort.signal,
          onProgress: () => abort.abort(),
        },
      );
      await expect(call).rejects.toThrow();
      await waitFor(
        'ComfyUI to be interrupted',
        async () => (await comfyStats()).interrupted > before.interrupted,
        15_000,
      );
    } finally {
      await client.close();
    }
  });

  it('a call cancelled mid-stream by closing the request is aborted at the backend', async () => {
    const before = await simStats();
    const client = await connectClient('v2', ingressUrl(0));
    const abort = new AbortController();
    try {
      const call = client.callTool(
        'generate_text',
        { prompt: 'a long story', max_tokens: 400 },
        {
          signal: abort.signal,
          onProgress: () => abort.abort(),
        },
      );
      await expect(call).rejects.toThrow();
      await waitFor(
        'the sim to see the abort',
        async () => (await simStats()).aborted > before.aborted,
        15_000,
      );
      await waitFor('the sim to go idle', async () => (await simStats()).running === 0, 15_000);
    } finally {
      await client.close();
    }
  });

  it('a 2025-era notifications/cancelled sent to the other replica reaches the worker and withdraws the request', async () => {
    const before = await simStats();
    const session = await initializeRaw(ingressUrl(0), 'raw');
    const running = post2025(
      ingressUrl(0),
      {
        jsonrpc: '2.0',
        id: 42,
        method: 'tools/call',
        params: { name: 'generate_text', arguments: { prompt: 'cancel me', max_tokens: 400 } },
      },
      session,
    ).then((r) => r.text());
    await waitFor(
      'the call to reach the backend',
      async () => (await simStats()).chatRequests > before.chatRequests,
      15_000,
    );
    // Same request id from another session must not cancel it: ids are small per-client counters.
    const otherSession = await initializeRaw(ingressUrl(1), 'raw2');
    const wrong = await post2025(
      ingressUrl(1),
      { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 42, reason: 'not yours' } },
      otherSession,
    );
    expect(wrong.status).toBe(202);

    const cancel = await post2025(
      ingressUrl(1),
      {
        jsonrpc: '2.0',
        method: 'notifications/cancelled',
        params: { requestId: 42, reason: 'user pressed stop' },
      },
      session,
    );
    expect(cancel.status).toBe(202);
    await waitFor(
      'the sim to see the abort',
      async () => (await simStats()).aborted > before.aborted,
      15_000,
    );
    // Withdrawn by its caller: as the MCP spec asks, the request gets no response; its stream ends.
    // (That the stray cancel of another session matches nothing is checked in cancel-2025.test.ts.)
    const answer = await running;
    expect(answer).not.toMatch(/"result"|"error"/);
  });

  it('a call whose deadline passes while queued is never run and gets a clear timeout error', async () => {
    const before = await simStats();
    const client = await connectClient('v2', ingressUrl(1));
    try {
      const result = await client.callTool(
        'generate_text_idle',
        { prompt: 'nobody serves me' },
        { meta: { 'mcp-cluster/timeout-ms': 800 } },
      );
      expect(result.isError).toBe(true);
      const text = (result.content[0] as { text: string }).text;
      expect(text).toMatch(/^DEADLINE_EXCEEDED: .*while queued/);
    } finally {
      await client.close();
    }
    // A worker for the pool appears only now: the expired call must not run. A live call enqueued
    // behind it is delivered after it, so once that one is answered the expired one was dealt with.
    const late = await cluster.worker('worker-idle', 'idle');
    extra.push(late);
    const live = await connectClient('v2', ingressUrl(1));
    try {
      const result = await live.callTool('generate_text_idle', {
        prompt: 'after the expired one',
        max_tokens: 4,
      });
      expect(result.isError).toBeFalsy();
    } finally {
      await live.close();
    }
    expect((await simStats()).chatRequests).toBe(before.chatRequests + 1);
  });

  it('SIGTERM on a worker mid-call: it finishes the call, then exits 0', async () => {
    // worker-idle (started by the deadline test) is the only worker of the idle pool.
    const idleWorker = extra.find((p) => p.name === 'worker-idle') as RoleProcess;
    const before = await simStats();
    const client = await connectClient('v2', ingressUrl(0));
    try {
      const call = client.callTool('generate_text_idle', { prompt: 'finish me', max_tokens: 60 });
      await waitFor(
        'the call to start',
        async () => (await simStats()).chatRequests > before.chatRequests,
        15_000,
      );
      const exited = new Promise<number | null>((resolve) =>
        idleWorker.child.once('exit', (code) => resolve(code)),
      );
      idleWorker.child.kill('SIGTERM');
      const result = await call;
      expect(result.isError).toBeFalsy();
      expect((result.content[0] as { text: string }).text.split(' ').length).toBeGreaterThanOrEqual(50);
      expect(await exited).toBe(0);
      expect((await simStats()).aborted).toBe(before.aborted);
    } finally {
      await client.close();
    }
  });

  it('SIGTERM on an ingress mid-call: the open call is answered, then it exits 0', async () => {
    const replica = await cluster.ingress('ingress-drain');
    extra.push(replica);
    const client = await connectClient('v2', String(replica.ready.url));
    try {
      const before = await simStats();
      const call = client.callTool('generate_text', { prompt: 'answer me before you go', max_tokens: 60 });
      await waitFor(
        'the call to start',
        async () => (await simStats()).chatRequests > before.chatRequests,
        15_000,
      );
      const exited = new Promise<number | null>((resolve) =>
        replica.child.once('exit', (code) => resolve(code)),
      );
      replica.child.kill('SIGTERM');
      const result = await call;
      expect(result.isError).toBeFalsy();
      expect(await exited).toBe(0);
    } finally {
      await client.close().catch(() => undefined);
    }
  });

  it('an ingress replica that dies mid-call: workers stop the work and count it undeliverable', async () => {
    const replica = await cluster.ingress('ingress-doomed');
    extra.push(replica);
    const inference = workers.filter((w) => w.name.startsWith('worker-inference'));
    const undeliverable = async () => {
      let sum = 0;
      for (const w of inference)
        sum += metricValue(await workerMetrics(w), 'mcp_cluster_worker_undeliverable_total', {
          pool: 'inference',
        });
      return sum;
    };
    const before = await simStats();
    const undeliverableBefore = await undeliverable();
    const client = await connectClient('v2', String(replica.ready.url));
    const call = client
      .callTool('generate_text', { prompt: 'nobody will read this', max_tokens: 400 })
      .catch(() => 'failed');
    await waitFor(
      'the call to start',
      async () => (await simStats()).chatRequests > before.chatRequests,
      15_000,
    );
    await replica.kill();
    expect(await call).toBe('failed');
    await waitFor(
      'the backend request to be aborted',
      async () => (await simStats()).aborted > before.aborted,
      20_000,
    );
    await waitFor(
      'the undeliverable count',
      async () => (await undeliverable()) > undeliverableBefore,
      20_000,
    );
    await client.close().catch(() => undefined);
  });

  it('a worker killed with SIGKILL mid-call: the call completes on the other worker', async () => {
    const client = await connectClient('v2', ingressUrl(0));
    try {
      const call = client.callTool(
        'generate_text',
        { prompt: 'survive a crash', max_tokens: 80 },
        { timeoutMs: 20_000 },
      );
      const inference = workers.filter((w) => w.name.startsWith('worker-inference'));
      const busy = await waitFor(
        'a worker to take the call',
        async () => {
          for (const w of inference) {
            if (
              metricValue(await workerMetrics(w), 'mcp_cluster_worker_inflight_calls', {
                pool: 'inference',
              }) > 0
            )
              return w;
          }
          return undefined;
        },
        15_000,
      );
      await busy.kill();
      const survivor = inference.find((w) => w !== busy) as RoleProcess;
      const result = await call.catch((err) => {
        for (const p of [...ingresses, ...workers])
          process.stderr.write(`==== ${p.name}\n${p.logs().slice(-3000)}\n`);
        throw err;
      });
      expect(result.isError).toBeFalsy();
      expect((result.content[0] as { text: string }).text.split(' ').length).toBeGreaterThanOrEqual(70);
      expect(
        metricValue(await workerMetrics(survivor), 'mcp_cluster_worker_redelivered_total', {
          pool: 'inference',
        }),
      ).toBeGreaterThanOrEqual(1);
    } finally {
      await client.close();
    }
  });
});
