import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openBroker } from '../services/cli/index.js';
import {
  type Broker,
  clusterMetrics,
  type DeliveryTransport,
  inProcessDelivery,
  JSON_RPC,
  type ShareLedger,
} from '../services/core/index.js';
import { type Ingress, startIngress } from '../services/ingress/index.js';
import { inferenceAdapters } from '../workers/inference/index.js';
import { startWorker, type Worker } from '../workers/runtime/index.js';
import { type SimBackend, startSimBackend } from '../workers/sim/index.js';
import { resolveConfig } from './support/families.js';
import { connectClient } from './support/mcp-clients.js';
import { waitFor } from './support/wait.js';

// The admission layer in a running ingress (memory broker, an inference worker, a simulated vLLM):
// refusals reach both client lines and both protocol eras as HTTP 429 / 503 with Retry-After and
// a JSON-RPC error, before anything is queued; held calls are released, expire or are cancelled
// without ever reaching the queue. Another replica's figures are written into the shares ledger by
// the test, as that replica would publish them.

interface RpcAnswer {
  result?: { content?: { text: string }[]; isError?: boolean };
  error?: { code: number; message: string; data?: { code?: string; retryAfterMs?: number } };
}

/**
 * The HTTP status an MCP client's error carries: the v1 client's StreamableHTTPError has it as
 * `code`, the v2 client's SdkHttpError in `data.status`.
 */
function statusOf(err: unknown): number | undefined {
  const e = err as { code?: unknown; data?: { status?: unknown } };
  if (typeof e.data?.status === 'number') return e.data.status;
  return typeof e.code === 'number' && e.code >= 100 && e.code < 600 ? e.code : undefined;
}

async function rpc(res: Response): Promise<RpcAnswer> {
  const text = await res.text();
  if ((res.headers.get('content-type') ?? '').includes('text/event-stream')) {
    const data = text.split('\n').find((l) => l.startsWith('data:') && l.includes('"jsonrpc"'));
    return JSON.parse(data?.slice(5) ?? '{}');
  }
  return JSON.parse(text);
}

const envelope = {
  'io.modelcontextprotocol/protocolVersion': '2026-07-28',
  'io.modelcontextprotocol/clientInfo': { name: 'admission-test', version: '1' },
  'io.modelcontextprotocol/clientCapabilities': {},
};

/** Another replica's entry in the ledger, as it would publish it (see services/core/queue/share-entry.ts). */
function otherReplica(tenants: Record<string, { queuedCost: number; inFlight?: number }>, costPerS = 0) {
  return {
    v: 2,
    pools: {
      inference: {
        servedCostPerS: costPerS,
        tenants: Object.fromEntries(
          Object.entries(tenants).map(([tenant, f]) => [
            tenant,
            {
              queuedCost: f.queuedCost,
              queuedCalls: f.queuedCost > 0 ? 1 : 0,
              inFlight: f.inFlight ?? (f.queuedCost > 0 ? 1 : 0),
              heldCalls: 0,
              heldCost: 0,
              demandPerS: 1,
            },
          ]),
        ),
      },
    },
  };
}

describe('admission at the ingress', () => {
  let sim: SimBackend;
  let broker: Broker;
  let ledger: ShareLedger;
  let delivery: DeliveryTransport;
  let worker: Worker;
  let ingress: Ingress | undefined;
  const config = () =>
    resolveConfig(
      `
cluster: { namespace: admission-test }
ingress: { port: 0 }
pools:
  inference: { backend: openai-chat, endpoints: [{ url: "${sim.url}", maxConcurrency: 4 }], fairQueue: { size: 1000 } }
tenants:
  limited: { limits: { inference: { rate: 0.5, burst: 2 } } }
  single: { limits: { inference: { concurrency: 1 } } }
  acme: { weight: 1 }
`,
      {},
    );

  beforeAll(async () => {
    sim = await startSimBackend({ ttftMs: 5, tokensPerSecond: 400 });
    broker = await openBroker({ url: 'memory:', namespace: 'admission-test', pools: ['inference'] });
    // The broker's ledger, which the ingress publishes to: the test writes "other replicas" into it.
    ledger = broker.shares;
    delivery = inProcessDelivery();
    worker = await startWorker({
      config: config(),
      pool: 'inference',
      broker,
      adapters: inferenceAdapters,
      delivery,
      workerId: 'w-admission',
      serveHttp: false,
    });
  });

  afterEach(async () => {
    await ingress?.shutdown();
    ingress = undefined;
    await ledger.withdraw('other');
  });

  afterAll(async () => {
    await worker?.shutdown();
    await broker?.close();
    await sim?.close();
  });

  const start = async () => {
    ingress = await startIngress(config(), broker, delivery);
    return ingress;
  };
  const headersOf = (tenant: string) => ({ 'mcp-cluster-tenant': tenant });
  const enqueued = async () =>
    (await clusterMetrics().queueEnqueued.get()).values
      .filter((v) => v.labels.pool === 'inference')
      .reduce((n, v) => n + v.value, 0);
  const held = async (tenant: string) =>
    (await clusterMetrics().tenantHeldCalls.get()).values.find(
      (v) => v.labels.pool === 'inference' && v.labels.tenant === tenant,
    )?.value ?? 0;
  /** Publishes another replica's figures and waits until this replica has read them (a round). */
  const publishOther = async (entry: unknown) => {
    await ledger.publish('other', entry, 60_000);
    await new Promise((r) => setTimeout(r, 600));
  };

  for (const kind of ['v1', 'v2'] as const) {
    it(`over the rate limit: the ${kind} client gets HTTP 429 with the JSON-RPC error, nothing queued`, async () => {
      const { url } = await start();
      const client = await connectClient(kind, url, { headers: headersOf('limited') });
      try {
        for (let i = 0; i < 2; i++) {
          const ok = await client.callTool('generate_text', { prompt: 'hi', max_tokens: 4 });
          expect(ok.isError).toBeFalsy();
        }
        const before = await enqueued();
        const err = (await client.callTool('generate_text', { prompt: 'hi', max_tokens: 4 }).then(
          () => undefined,
          (e: unknown) => e,
        )) as Error & { code?: number; status?: number };
        expect(err).toBeInstanceOf(Error);
        expect(statusOf(err)).toBe(429);
        expect(err.message).toMatch(/-32029/);
        expect(err.message).toMatch(/tenant \\?"limited\\?" is over its rate limit of 0.5 calls\/s/);
        expect(await enqueued()).toBe(before);
      } finally {
        await client.close();
      }
    });
  }

  it('over the rate limit on raw requests: 429, Retry-After, and the error on the fast paths of both eras and the SDK path', async () => {
    const { url } = await start();
    const params = { name: 'generate_text', arguments: { prompt: 'hi', max_tokens: 4 } };
    const legacy = {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
      'mcp-cluster-tenant': 'limited',
    };
    const modern = {
      ...legacy,
      'mcp-protocol-version': '2026-07-28',
      'mcp-method': 'tools/call',
      'mcp-name': 'generate_text',
    };
    const post = (headers: Record<string, string>, body: unknown) =>
      fetch(url, { method: 'POST', headers, body: JSON.stringify(body) });
    const requests = {
      'fast path, 2025': () => post(legacy, { jsonrpc: '2.0', id: 1, method: 'tools/call', params }),
      'fast path, 2026-07-28': () =>
        post(modern, { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { ...params, _meta: envelope } }),
      // A progress token without an SSE-capable Accept is served by the SDK.
      'SDK path, 2026-07-28': () =>
        post(
          { ...modern, accept: 'application/json' },
          {
            jsonrpc: '2.0',
            id: 3,
            method: 'tools/call',
            params: { ...params, _meta: { ...envelope, progressToken: 'p' } },
          },
        ),
    };
    // The burst of 2 goes through, then each path is refused.
    for (let i = 0; i < 2; i++) expect((await requests['fast path, 2025']()).status).toBe(200);
    for (const [path, send] of Object.entries(requests)) {
      const res = await send();
      expect(res.status, path).toBe(429);
      expect(Number(res.headers.get('retry-after')), path).toBeGreaterThanOrEqual(1);
      const answer = await rpc(res);
      expect(answer.error?.code, path).toBe(JSON_RPC.RATE_LIMITED);
      expect(answer.error?.data?.code, path).toBe('RATE_LIMITED');
      expect(answer.error?.data?.retryAfterMs, path).toBeGreaterThan(0);
      expect(answer.error?.message, path).toMatch(
        /tenant "limited" is over its rate limit of 0.5 calls\/s \(burst 2\) on pool "inference"; retry after \d+ ms/,
      );
    }
  });

  it('over the concurrency cap: 429 naming the concurrency limit while a call runs, admitted again after it', async () => {
    const { url } = await start();
    const client = await connectClient('v2', url, { headers: headersOf('single') });
    try {
      const running = client.callTool('generate_text', { prompt: 'a long one', max_tokens: 400 });
      await new Promise((r) => setTimeout(r, 100));
      const err = (await client
        .callTool('generate_text', { prompt: 'hi', max_tokens: 4 })
        .catch((e: unknown) => e)) as Error;
      expect(statusOf(err)).toBe(429);
      expect(err.message).toMatch(/concurrency limit of 1 calls in flight on pool \\?"inference\\?"/);
      expect((await running).isError).toBeFalsy();
      expect((await client.callTool('generate_text', { prompt: 'hi', max_tokens: 4 })).isError).toBeFalsy();
    } finally {
      await client.close();
    }
  });

  for (const kind of ['v1', 'v2'] as const) {
    it(`a pool whose expected wait exceeds the deadline: the ${kind} client gets HTTP 503 OVERLOADED`, async () => {
      const { url } = await start();
      // Another replica: 60000 tokens queued, workers taking 1000 tokens/s: a minute's wait.
      await publishOther(otherReplica({ bulk: { queuedCost: 60_000 } }, 1000));
      const client = await connectClient(kind, url, { headers: headersOf('acme') });
      try {
        const before = await enqueued();
        const err = (await client
          .callTool(
            'generate_text',
            { prompt: 'hi', max_tokens: 4 },
            { meta: { 'mcp-cluster/timeout-ms': 5000 } },
          )
          .catch((e: unknown) => e)) as Error;
        expect(statusOf(err)).toBe(503);
        expect(err.message).toMatch(/-32053/);
        expect(err.message).toMatch(
          /pool \\?"inference\\?" is overloaded: the expected queue wait is \d+ ms, above the call's remaining deadline of \d+ ms/,
        );
        expect(await enqueued()).toBe(before);
        // With a deadline longer than the wait, the call is admitted.
        const ok = await client.callTool(
          'generate_text',
          { prompt: 'hi', max_tokens: 4 },
          { meta: { 'mcp-cluster/timeout-ms': 120_000 } },
        );
        expect(ok.isError).toBeFalsy();
      } finally {
        await client.close();
      }
    });
  }

  it('a raw OVERLOADED answer is HTTP 503 with Retry-After and a retryable JSON-RPC error', async () => {
    const { url } = await start();
    await publishOther(otherReplica({ bulk: { queuedCost: 60_000 } }, 1000));
    const res = await fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': '2025-06-18',
      },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'tools/call',
        params: {
          name: 'generate_text',
          arguments: { prompt: 'hi' },
          _meta: { 'mcp-cluster/timeout-ms': 5000 },
        },
      }),
    });
    expect(res.status).toBe(503);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(50);
    const answer = await rpc(res);
    expect(answer.error?.code).toBe(JSON_RPC.OVERLOADED);
    expect(answer.error?.data?.code).toBe('OVERLOADED');
  });

  for (const kind of ['v1', 'v2'] as const) {
    it(`a held call is released when its tenant's queued work is taken, and answered (${kind} client)`, async () => {
      const { url } = await start();
      // The tenant already has the whole fair queue (1000 tokens) queued at another replica.
      await publishOther(otherReplica({ acme: { queuedCost: 1000 } }));
      const client = await connectClient(kind, url, { headers: headersOf('acme') });
      try {
        const before = await enqueued();
        const answer = client.callTool('generate_text', { prompt: 'held', max_tokens: 4 });
        await waitFor('the call is held', async () => (await held('acme')) === 1, 5_000);
        expect(await enqueued()).toBe(before);
        // A worker took the other replica's calls: its entry no longer shows them.
        await ledger.withdraw('other');
        const result = await answer;
        expect(result.isError).toBeFalsy();
        expect(await held('acme')).toBe(0);
        expect(await enqueued()).toBe(before + 1);
      } finally {
        await client.close();
      }
    });
  }

  it("a tenant with nothing queued goes ahead of another tenant's backlog: its call is queued at high", async () => {
    const { url } = await start();
    const byPriority = async (priority: string) =>
      (await clusterMetrics().queueEnqueued.get()).values
        .filter((v) => v.labels.pool === 'inference' && v.labels.priority === priority)
        .reduce((n, v) => n + v.value, 0);
    // Another replica's flood: the acme tenant has calls queued in the pool and more held there.
    const flood = otherReplica({ acme: { queuedCost: 400 } });
    Object.assign(flood.pools.inference.tenants.acme ?? {}, { heldCalls: 10, heldCost: 60 });
    await publishOther(flood);
    const flooder = await connectClient('v2', url, { headers: headersOf('acme') });
    const calm = await connectClient('v1', url, { headers: headersOf('calm') });
    try {
      const high = await byPriority('high');
      const normal = await byPriority('normal');
      const [a, c] = await Promise.all([
        flooder.callTool('generate_text', { prompt: 'flood', max_tokens: 4 }),
        calm.callTool('generate_text', { prompt: 'calm', max_tokens: 4 }),
      ]);
      expect(a.isError).toBeFalsy();
      expect(c.isError).toBeFalsy();
      // acme has calls queued and held (at the other replica): its call is normal; calm has none: high.
      expect(await byPriority('high')).toBe(high + 1);
      expect(await byPriority('normal')).toBe(normal + 1);
    } finally {
      await flooder.close();
      await calm.close();
    }
  });

  it('a held call whose deadline passes gets DEADLINE_EXCEEDED and is never queued', async () => {
    const { url } = await start();
    await publishOther(otherReplica({ acme: { queuedCost: 1000 } }));
    const client = await connectClient('v2', url, { headers: headersOf('acme') });
    try {
      const before = await enqueued();
      const result = await client.callTool(
        'generate_text',
        { prompt: 'held', max_tokens: 4 },
        { meta: { 'mcp-cluster/timeout-ms': 400 } },
      );
      expect(result.isError).toBe(true);
      expect((result.content[0] as { text: string }).text).toMatch(
        /^DEADLINE_EXCEEDED: .*held at the ingress behind its tenant's fair share of pool inference \(never queued\)/,
      );
      expect(await held('acme')).toBe(0);
      await ledger.withdraw('other');
      await new Promise((r) => setTimeout(r, 600));
      expect(await enqueued()).toBe(before);
    } finally {
      await client.close();
    }
  });

  for (const kind of ['v1', 'v2'] as const) {
    it(`a cancelled held call is never queued (${kind} client)`, async () => {
      const { url } = await start();
      await publishOther(otherReplica({ acme: { queuedCost: 1000 } }));
      const client = await connectClient(kind, url, { headers: headersOf('acme') });
      try {
        const before = await enqueued();
        const abort = new AbortController();
        const answer = client
          .callTool('generate_text', { prompt: 'held', max_tokens: 4 }, { signal: abort.signal })
          .catch((e: unknown) => e);
        await waitFor('the call is held', async () => (await held('acme')) === 1, 5_000);
        abort.abort();
        await answer;
        await waitFor('the held call is dropped', async () => (await held('acme')) === 0, 5_000);
        await ledger.withdraw('other');
        await new Promise((r) => setTimeout(r, 600));
        expect(await enqueued()).toBe(before);
      } finally {
        await client.close();
      }
    });
  }
});
