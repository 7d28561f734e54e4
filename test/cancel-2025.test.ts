import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as TransportV1 } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBroker } from '../services/cli/index.js';
import { type Broker, inProcessDelivery } from '../services/core/index.js';
import { type Ingress, startIngress } from '../services/ingress/index.js';
import { inferenceAdapters } from '../workers/inference/index.js';
import { startWorker, type Worker } from '../workers/runtime/index.js';
import { type SimBackend, startSimBackend } from '../workers/sim/index.js';
import { resolveConfig } from './support/families.js';
import { open2025Session, post2025 } from './support/mcp-clients.js';
import { waitFor } from './support/wait.js';

// A 2025-era client withdraws a request with `notifications/cancelled`; the MCP spec asks the
// receiver not to answer it. Two ingress replicas share a memory broker (and its cancel bus) and one
// worker whose backend streams 20 tokens a second, so a 400-token call would run for 20 s: the
// cancel must stop it at the backend and end its response stream with no response in it.
describe('a 2025-era request withdrawn by notifications/cancelled', () => {
  let sim: SimBackend;
  let broker: Broker;
  let worker: Worker;
  const replicas: Ingress[] = [];
  /** Request ids of the cancel orders seen on the bus (every replica subscribes to the same bus). */
  const broadcast: string[] = [];

  beforeAll(async () => {
    sim = await startSimBackend({ ttftMs: 5, tokensPerSecond: 20 });
    const config = resolveConfig(
      JSON.stringify({
        cluster: { namespace: 'cancel-2025' },
        ingress: { port: 0, sessionSecret: 'shared-between-the-replicas' },
        worker: { port: 0 },
        pools: { inference: { backend: 'openai-chat', endpoints: [{ url: sim.url, maxConcurrency: 8 }] } },
        tools: [{ name: 'generate_text', template: 'generate_text', pool: 'inference', model: 'sim-llm' }],
      }),
      {},
    );
    broker = await openBroker({ url: 'memory:', namespace: 'cancel-2025', pools: ['inference'] });
    await broker.cancels.subscribe((order) => broadcast.push(order.requestId));
    const delivery = inProcessDelivery();
    replicas.push(await startIngress(config, broker, delivery));
    replicas.push(await startIngress(config, broker, delivery));
    worker = await startWorker({
      config,
      pool: 'inference',
      broker,
      adapters: inferenceAdapters,
      delivery,
      workerId: 'w-cancel',
    });
  });

  afterAll(async () => {
    await Promise.all(replicas.map((r) => r.shutdown()));
    await worker?.shutdown();
    await broker?.close();
    await sim?.close();
  });

  const url = (replica: number) => replicas[replica]?.url as string;
  const post = (replica: number, body: unknown, session: string) => post2025(url(replica), body, session);
  const session = () => open2025Session(url(0), 'c');
  const cancel = (replica: number, sessionId: string, requestId: number, reason = 'user pressed stop') =>
    post(
      replica,
      { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId, reason } },
      sessionId,
    );

  /**
   * Starts a long generate_text with a progress token (`extra` params send it to the SDK instead of
   * the fast path) and reads its SSE stream: `messages` grows as events arrive, `ended` resolves when
   * the stream ends.
   */
  const longCall = async (sessionId: string, id: number, extra: Record<string, unknown> = {}) => {
    const res = await post(
      0,
      {
        jsonrpc: '2.0',
        id,
        method: 'tools/call',
        params: {
          name: 'generate_text',
          arguments: { prompt: `story ${id}`, max_tokens: 400 },
          _meta: { progressToken: `p${id}` },
          ...extra,
        },
      },
      sessionId,
    );
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const messages: { id?: unknown; method?: string; result?: unknown; error?: unknown }[] = [];
    const ended = (async () => {
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      const decoder = new TextDecoder();
      let buffered = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        buffered += decoder.decode(value, { stream: true });
        let cut = buffered.indexOf('\n\n');
        while (cut >= 0) {
          const data = /^data: (.*)$/m.exec(buffered.slice(0, cut))?.[1];
          if (data) messages.push(JSON.parse(data));
          buffered = buffered.slice(cut + 2);
          cut = buffered.indexOf('\n\n');
        }
      }
    })();
    const progress = () => messages.filter((m) => m.method === 'notifications/progress').length;
    return { messages, ended, progress };
  };

  /** The stream ended without a JSON-RPC response; the backend saw its request aborted. */
  const expectWithdrawn = async (
    call: Awaited<ReturnType<typeof longCall>>,
    abortedBefore: number,
  ): Promise<void> => {
    // The call had 20 s of tokens left: the stream ends because of the cancel, not the call.
    await call.ended;
    expect(call.messages.filter((m) => 'result' in m || 'error' in m)).toEqual([]);
    expect(call.messages.every((m) => m.method === 'notifications/progress')).toBe(true);
    await waitFor('the backend to see the abort', () => sim.stats().aborted > abortedBefore);
    await waitFor('the backend to be idle', () => sim.stats().running === 0);
  };

  it('ends the stream without a response when the cancel comes to the same replica', async () => {
    const sessionId = await session();
    const aborted = sim.stats().aborted;
    const call = await longCall(sessionId, 7);
    await waitFor('progress', () => call.progress() >= 2);
    expect((await cancel(0, sessionId, 7)).status).toBe(202);
    await expectWithdrawn(call, aborted);
  });

  it('ends it when the cancel comes to another replica, over the bus', async () => {
    const sessionId = await session();
    const aborted = sim.stats().aborted;
    const call = await longCall(sessionId, 8);
    await waitFor('progress', () => call.progress() >= 2);
    // A cancel of the same request id from another session names another agent's request.
    const otherSession = await session();
    expect((await cancel(1, otherSession, 8, 'not yours')).status).toBe(202);
    await waitFor('the stray cancel on the bus', () => broadcast.filter((id) => id === '8').length === 1);
    // The bus delivers to every subscriber alike: the owning replica had the stray cancel, and the
    // call still streams.
    const seen = call.progress();
    await waitFor('more progress after the stray cancel', () => call.progress() > seen);
    expect(call.messages.filter((m) => 'result' in m || 'error' in m)).toEqual([]);

    expect((await cancel(1, sessionId, 8)).status).toBe(202);
    await expectWithdrawn(call, aborted);
  });

  it('ends it on the SDK path too (a tools/call the fast path leaves to the SDK)', async () => {
    const sessionId = await session();
    const aborted = sim.stats().aborted;
    const call = await longCall(sessionId, 9, { 'x-extension': true });
    await waitFor('progress', () => call.progress() >= 2);
    expect((await cancel(1, sessionId, 9)).status).toBe(202);
    await expectWithdrawn(call, aborted);
  });

  it('lets the v1 SDK client cancel cleanly: its call rejects, nothing unexpected arrives, the session goes on', async () => {
    const client = new ClientV1({ name: 'cancel-v1', version: '1.0.0' });
    const errors: unknown[] = [];
    client.onerror = (err) => errors.push(err);
    await client.connect(new TransportV1(new URL(url(0))));
    try {
      const aborted = sim.stats().aborted;
      const abort = new AbortController();
      let progress = 0;
      const call = client.callTool(
        { name: 'generate_text', arguments: { prompt: 'long', max_tokens: 400 } },
        undefined,
        {
          signal: abort.signal,
          onprogress: () => {
            progress += 1;
            if (progress === 2) abort.abort('user pressed stop');
          },
        },
      );
      await expect(call).rejects.toThrow();
      await waitFor('the backend to see the abort', () => sim.stats().aborted > aborted);
      // A later call on the same session is answered; had the cancelled one been answered, the client
      // would have reported a response (or progress) for a request it no longer knows.
      const next = await client.callTool({
        name: 'generate_text',
        arguments: { prompt: 'short', max_tokens: 3 },
      });
      expect(next.isError).toBeFalsy();
      expect(errors).toEqual([]);
    } finally {
      await client.close();
    }
  });
});
