import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBroker } from '../services/cli/index.js';
import { type Broker, inProcessDelivery, JSON_RPC, type QueuedCall } from '../services/core/index.js';
import { type Ingress, startIngress } from '../services/ingress/index.js';
import { resolveConfig } from './support/families.js';

// Hostile and malformed requests against a real ingress on a memory queue. A spy consumer on
// every pool records anything that gets past validation: nothing may.
describe('ingress rejects bad input before it reaches a worker', () => {
  let broker: Broker;
  let ingress: Ingress;
  const reachedWorkers: QueuedCall[] = [];
  let sessionId = '';

  beforeAll(async () => {
    const config = resolveConfig(
      'cluster: { namespace: bad-input }\ningress: { port: 0, maxBodySize: 64kb }',
      {},
    );
    broker = await openBroker({ url: 'memory:', namespace: 'bad-input', pools: ['inference', 'embeddings'] });
    for (const pool of ['inference', 'embeddings']) {
      broker.queue.consume(pool, { maxInFlight: 100 }, (m) => reachedWorkers.push(m));
    }
    ingress = await startIngress(config, broker, inProcessDelivery());
    const init = await post({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: {
        protocolVersion: '2025-06-18',
        capabilities: {},
        clientInfo: { name: 'bad-input-test', version: '1' },
      },
    });
    expect(init.status).toBe(200);
    sessionId = init.headers.get('mcp-session-id') ?? '';
    expect(sessionId).toMatch(/^s1\./);
  });

  afterAll(async () => {
    expect(reachedWorkers).toEqual([]);
    await ingress?.shutdown();
    await broker?.close();
  });

  const headers = (extra: Record<string, string> = {}) => ({
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    'mcp-protocol-version': '2025-06-18',
    ...(sessionId ? { 'mcp-session-id': sessionId } : {}),
    ...extra,
  });
  const post = (body: unknown, extra: Record<string, string> = {}) =>
    fetch(ingress.url, {
      method: 'POST',
      headers: headers(extra),
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });

  /** Reads a JSON-RPC answer whether it came as JSON or as one SSE event. */
  async function rpc(res: Response): Promise<{
    result?: Record<string, unknown>;
    error?: { code: number; message: string; data?: { code?: string } };
  }> {
    const text = await res.text();
    if ((res.headers.get('content-type') ?? '').includes('text/event-stream')) {
      const data = text.split('\n').find((l) => l.startsWith('data:') && l.includes('"jsonrpc"'));
      return JSON.parse(data?.slice(5) ?? '{}');
    }
    return JSON.parse(text);
  }

  const callTool = (name: string, args: unknown) =>
    post({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name, arguments: args } });

  it('malformed JSON gets 400 with a JSON-RPC parse error', async () => {
    const res = await post('{"jsonrpc": "2.0", "id": 1, "method": ');
    expect(res.status).toBe(400);
    const body = await rpc(res);
    expect(body.error?.code).toBe(-32700);
    expect(body.error?.message).toMatch(/not valid JSON/);
  });

  it('a JSON value that is not a JSON-RPC message gets 400 invalid request', async () => {
    for (const body of ['42', '"hello"', 'null']) {
      const res = await post(body);
      expect(res.status).toBe(400);
      expect((await rpc(res)).error?.code).toBe(-32600);
    }
  });

  it('a message object without jsonrpc/method is refused with a JSON-RPC error', async () => {
    const res = await post({ hello: 'world' });
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    expect((await rpc(res)).error?.code).toBeLessThan(0);
  });

  it('an unknown method gets method not found', async () => {
    const res = await post({ jsonrpc: '2.0', id: 3, method: 'tools/explode', params: {} });
    expect(res.status).toBeLessThan(500);
    expect((await rpc(res)).error?.code).toBe(-32601);
  });

  it('an unknown tool gets invalid params naming the tool', async () => {
    const res = await callTool('rm_rf', {});
    expect(res.status).toBe(200);
    const body = await rpc(res);
    expect(body.error?.code).toBe(-32602);
    expect(body.error?.message).toMatch(/unknown tool "rm_rf"/);
    expect(body.error?.data?.code).toBe('UNKNOWN_TOOL');
  });

  /** A 2026-07-28 request: the per-request envelope and the standard headers the revision requires. */
  const postModern = (params: Record<string, unknown>, extra: Record<string, string> = {}) =>
    fetch(ingress.url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': '2026-07-28',
        'mcp-method': 'tools/call',
        'mcp-name': String(params.name),
        ...extra,
      },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 'm1',
        method: 'tools/call',
        params: {
          ...params,
          _meta: {
            'io.modelcontextprotocol/protocolVersion': '2026-07-28',
            'io.modelcontextprotocol/clientInfo': { name: 'bad-input-test', version: '1' },
            'io.modelcontextprotocol/clientCapabilities': {},
          },
        },
      }),
    });

  it('an unknown tool on 2026-07-28 gets invalid params with the UNKNOWN_TOOL code', async () => {
    const res = await postModern({ name: 'rm_rf', arguments: {} });
    const body = await rpc(res);
    expect(body.error?.code).toBe(-32602);
    expect(body.error?.message).toMatch(/unknown tool "rm_rf"/);
    expect(body.error?.data?.code).toBe('UNKNOWN_TOOL');
  });

  it('a 2026-07-28 tool result is JSON stamped with resultType and the server identity', async () => {
    const res = await postModern({ name: 'generate_text', arguments: {} });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    const body = await rpc(res);
    expect(body.result).toMatchObject({
      isError: true,
      resultType: 'complete',
      _meta: {
        'mcp-cluster/error-code': 'INVALID_ARGUMENTS',
        'io.modelcontextprotocol/serverInfo': { name: 'mcp-cluster', version: '0.1.0' },
      },
    });
  });

  it('a 2026-07-28 call whose Mcp-Name header names another tool is refused', async () => {
    const res = await postModern(
      { name: 'generate_text', arguments: { prompt: 'x' } },
      { 'mcp-name': 'embed' },
    );
    expect(res.status).toBe(400);
    expect((await rpc(res)).error?.message).toMatch(/Mcp-Name header names "embed"/);
  });

  it('a 2025 call that does not accept an event stream gets 406', async () => {
    const res = await post(
      {
        jsonrpc: '2.0',
        id: 8,
        method: 'tools/call',
        params: { name: 'generate_text', arguments: { prompt: 'x' } },
      },
      { accept: 'application/json' },
    );
    expect(res.status).toBe(406);
  });

  it('arguments that violate the schema get an isError result naming the argument', async () => {
    const cases: [string, unknown, RegExp][] = [
      ['generate_text', {}, /missing required property "prompt"/],
      ['generate_text', { prompt: 5 }, /arguments\.prompt must be string/],
      ['generate_text', { prompt: 'x', max_tokens: 10_000_000 }, /arguments\.max_tokens must be <= 4096/],
      ['generate_text', { prompt: 'x', shell: 'rm -rf /' }, /unknown property "shell"/],
      ['embed', { texts: [] }, /arguments\.texts must NOT have fewer than 1 items/],
      ['embed', { texts: ['ok', 3] }, /arguments\.texts\.1 must be string/],
    ];
    for (const [tool, args, message] of cases) {
      const res = await callTool(tool, args);
      expect(res.status).toBe(200);
      const body = await rpc(res);
      expect(body.result?.isError).toBe(true);
      const text = (body.result?.content as { text: string }[] | undefined)?.[0]?.text ?? '';
      expect(text).toMatch(/^INVALID_ARGUMENTS: /);
      expect(text).toMatch(message);
    }
  });

  it('a bad deadline in _meta is refused', async () => {
    const res = await post({
      jsonrpc: '2.0',
      id: 9,
      method: 'tools/call',
      params: { name: 'generate_text', arguments: { prompt: 'x' }, _meta: { 'mcp-cluster/timeout-ms': -5 } },
    });
    const body = await rpc(res);
    expect(body.result?.isError).toBe(true);
    expect((body.result?.content as { text: string }[] | undefined)?.[0]?.text).toMatch(
      /timeout-ms.*positive number/,
    );
  });

  it('an oversized body gets 413 naming the limit', async () => {
    const res = await callTool('generate_text', { prompt: 'x'.repeat(100 * 1024) });
    expect(res.status).toBe(413);
    expect((await rpc(res)).error?.message).toMatch(/exceeds 65536 bytes/);
  });

  it('a wrong Host header gets 403 (DNS rebinding)', async () => {
    // fetch will not send a forged Host header, so speak HTTP directly.
    const { request } = await import('node:http');
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(
        ingress.url,
        { method: 'POST', headers: { ...headers(), host: 'evil.example:80' } },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }));
    });
    expect(status).toBe(403);
  });

  it('a foreign Origin gets 403, a localhost Origin on any port is fine', async () => {
    const bad = await post(
      { jsonrpc: '2.0', id: 1, method: 'tools/list' },
      { origin: 'https://evil.example' },
    );
    expect(bad.status).toBe(403);
    expect((await rpc(bad)).error?.message).toMatch(/Origin "https:\/\/evil.example" is not allowed/);
    const good = await post(
      { jsonrpc: '2.0', id: 1, method: 'tools/list' },
      { origin: 'http://localhost:6274' },
    );
    expect(good.status).toBe(200);
  });

  it('a forged session id gets 404 so the client starts a new session', async () => {
    const res = await post(
      { jsonrpc: '2.0', id: 1, method: 'tools/list' },
      { 'mcp-session-id': `${sessionId.slice(0, -2)}xx` },
    );
    expect(res.status).toBe(404);
    const body = await rpc(res);
    expect(body.error?.code).toBe(JSON_RPC.SESSION_NOT_FOUND);
    expect(body.error?.data?.code).toBe('UNKNOWN_SESSION');
  });

  it('a wrong content type gets 415', async () => {
    const res = await post({ jsonrpc: '2.0', id: 1, method: 'tools/list' }, { 'content-type': 'text/plain' });
    expect(res.status).toBe(415);
  });

  it('a cancel for an unknown request is accepted and changes nothing', async () => {
    const res = await post({
      jsonrpc: '2.0',
      method: 'notifications/cancelled',
      params: { requestId: 12345, reason: 'test' },
    });
    expect(res.status).toBe(202);
  });

  it('health, readiness and metrics answer; unknown paths get 404', async () => {
    const base = ingress.url.replace(/\/mcp$/, '');
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/mcp_cluster_ingress_rejected_total\{reason="parse"\} [1-9]/);
    expect(metrics).toMatch(/mcp_cluster_queue_depth\{pool="inference",priority="normal"\} 0/);
    expect((await fetch(`${base}/nope`)).status).toBe(404);
  });
});
