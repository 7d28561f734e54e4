import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBroker } from '../services/cli/index.js';
import { type Broker, inProcessDelivery, JSON_RPC, type QueuedCall } from '../services/core/index.js';
import { type Ingress, nestsDeeperThan, startIngress } from '../services/ingress/index.js';
import { resolveConfig } from './support/families.js';
import { waitFor } from './support/wait.js';

/** A JSON-RPC answer as the tests read it. */
interface RpcAnswer {
  result?: Record<string, unknown>;
  error?: {
    code: number;
    message: string;
    data?: { code?: string; supported?: string[]; requested?: string };
  };
}

/** Reads a JSON-RPC answer whether it came as JSON or as one SSE event. */
async function rpc(res: Response): Promise<RpcAnswer> {
  const text = await res.text();
  if ((res.headers.get('content-type') ?? '').includes('text/event-stream')) {
    const data = text.split('\n').find((l) => l.startsWith('data:') && l.includes('"jsonrpc"'));
    return JSON.parse(data?.slice(5) ?? '{}');
  }
  return JSON.parse(text);
}

/** The text of a tool result's first content block. */
const resultText = (answer: RpcAnswer) =>
  (answer.result?.content as { text: string }[] | undefined)?.[0]?.text ?? '';

/** The per-request envelope of a 2026-07-28 request, naming `revision`. */
const envelope = (revision = '2026-07-28') => ({
  'io.modelcontextprotocol/protocolVersion': revision,
  'io.modelcontextprotocol/clientInfo': { name: 'bad-input-test', version: '1' },
  'io.modelcontextprotocol/clientCapabilities': {},
});

/** `levels` arrays nested in one another, as JSON text: `[[…]]`. */
const nestedArrays = (levels: number) => `${'['.repeat(levels)}${']'.repeat(levels)}`;
/** `levels` objects nested in one another under key `a`, the innermost holding `"a": 1`. */
const nestedObjects = (levels: number) => `${'{"a":'.repeat(levels)}1${'}'.repeat(levels)}`;

/** What the ingress answers a body nested past the default `ingress.maxJsonDepth`. */
const TOO_DEEP = 'request body nests deeper than 64 levels (setting ingress.maxJsonDepth)';

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
        params: { ...params, _meta: envelope() },
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

  it('an oversized body gets its 413 on a connection that stays usable, declared or chunked', async () => {
    // The rest of a refused body is read and dropped: closing the connection under a client still
    // sending would make its kernel reset it, and a client that had not read the 413 yet loses it.
    const socket = connect(ingress.port, '127.0.0.1');
    const state = { received: '', closed: false };
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      state.received += chunk;
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      state.closed = true;
    });
    // A status line follows the previous answer's last byte directly (a JSON body ends without a newline).
    const statuses = () => [...state.received.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
    const head = (framing: string) =>
      [
        'POST /mcp HTTP/1.1',
        'Host: 127.0.0.1',
        'Content-Type: application/json',
        'Accept: application/json, text/event-stream',
        'Mcp-Protocol-Version: 2025-06-18',
        `Mcp-Session-Id: ${sessionId}`,
        framing,
        '',
        '',
      ].join('\r\n');
    const list = JSON.stringify({ jsonrpc: '2.0', id: 8, method: 'tools/list' });
    const oversized = JSON.stringify({
      jsonrpc: '2.0',
      id: 7,
      method: 'tools/call',
      params: { name: 'generate_text', arguments: { prompt: 'x'.repeat(1024 * 1024) } },
    });
    try {
      // Declared: refused on its Content-Length; then chunked: refused as it is counted.
      socket.write(head(`Content-Length: ${Buffer.byteLength(oversized)}`) + oversized);
      socket.write(head(`Content-Length: ${Buffer.byteLength(list)}`) + list);
      await waitFor('two answers or a closed connection', () => state.closed || statuses().length >= 2);
      const hex = Buffer.byteLength(oversized).toString(16);
      socket.write(`${head('Transfer-Encoding: chunked')}${hex}\r\n${oversized}\r\n0\r\n\r\n`);
      socket.write(head(`Content-Length: ${Buffer.byteLength(list)}`) + list);
      await waitFor('four answers or a closed connection', () => state.closed || statuses().length >= 4);
      expect(statuses()).toEqual([413, 200, 413, 200]);
      expect(state.closed).toBe(false);
      expect(state.received).toMatch(/exceeds 65536 bytes/);
    } finally {
      socket.destroy();
    }
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

  it('an MCP-Protocol-Version the server does not serve gets 400 naming the versions it does, with a session id and without', async () => {
    const list = { jsonrpc: '2.0', id: 1, method: 'tools/list' };
    const call = {
      jsonrpc: '2.0',
      id: 2,
      method: 'tools/call',
      params: { name: 'generate_text', arguments: { prompt: 'x' } },
    };
    for (const version of ['garbage', '2099-01-01']) {
      for (const session of [sessionId, undefined]) {
        for (const body of [list, call]) {
          const res = await fetch(ingress.url, {
            method: 'POST',
            headers: {
              'content-type': 'application/json',
              accept: 'application/json, text/event-stream',
              'mcp-protocol-version': version,
              ...(session ? { 'mcp-session-id': session } : {}),
            },
            body: JSON.stringify(body),
          });
          const what = `${body.method} with ${version}, ${session ? 'a session id' : 'no session id'}`;
          expect(res.status, what).toBe(400);
          const { error } = await rpc(res);
          expect(error?.code, what).toBe(-32022);
          expect(error?.message, what).toMatch(
            new RegExp(
              `^unsupported MCP-Protocol-Version "${version}"; this server supports 2026-07-28, 2025-11-25, 2025-06-18, 2025-03-26`,
            ),
          );
          expect(error?.data?.requested, what).toBe(version);
          expect(error?.data?.supported, what).toEqual(expect.arrayContaining(['2026-07-28', '2025-06-18']));
        }
      }
    }
  });

  it('what clients negotiate is unchanged: initialize without the header, and a 2026-07-28 envelope naming an unknown revision', async () => {
    // initialize names its version in the body; clients send no MCP-Protocol-Version header with it.
    const init = await fetch(ingress.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: { protocolVersion: '2099-01-01', capabilities: {}, clientInfo: { name: 'x', version: '1' } },
      }),
    });
    expect(init.status).toBe(200);
    expect((await rpc(init)).result?.protocolVersion).toBe('2025-11-25');
    // A modern request names its revision in the envelope too: the SDK's own answer, whose
    // data.supported a 2026-07-28 client picks a revision from, comes through as it was.
    const modern = await fetch(ingress.url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': '2099-01-01',
        'mcp-method': 'tools/list',
      },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 'm2',
        method: 'tools/list',
        params: { _meta: envelope('2099-01-01') },
      }),
    });
    expect(modern.status).toBe(400);
    const { error } = await rpc(modern);
    expect(error?.code).toBe(-32022);
    expect(error?.data).toEqual({ supported: ['2026-07-28'], requested: '2099-01-01' });
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

describe('nestsDeeperThan', () => {
  it('counts the levels of arrays and objects, the outermost being level 1', () => {
    expect(nestsDeeperThan('{}', 1)).toBe(false);
    expect(nestsDeeperThan('{"a":[{}]}', 3)).toBe(false);
    expect(nestsDeeperThan('{"a":[{}]}', 2)).toBe(true);
    expect(nestsDeeperThan(nestedArrays(64), 64)).toBe(false);
    expect(nestsDeeperThan(nestedArrays(65), 64)).toBe(true);
    expect(nestsDeeperThan('[[],[],[[]]]', 2)).toBe(true);
    expect(nestsDeeperThan('[[],[],[]]', 2)).toBe(false);
    expect(nestsDeeperThan('42', 1)).toBe(false);
  });

  it('does not count brackets inside strings, escaped quotes and backslashes included', () => {
    const cases: [unknown, number][] = [
      [{ s: '[[[[{{{{' }, 1],
      [['"[[[[', '\\"{{{{', '\\'], 1],
      [{ a: '\\', b: [[]] }, 3],
      [{ a: '\\\\"', b: ['\\"[', { c: '"]}' }] }, 3],
      [{ '[[[': { '{{{': '"' } }, 2],
    ];
    for (const [value, depth] of cases) {
      const text = JSON.stringify(value);
      expect(nestsDeeperThan(text, depth), text).toBe(false);
      expect(nestsDeeperThan(text, depth - 1), text).toBe(true);
    }
  });
});

// Deep nesting: V8's JSON.parse copes, but what recurses on the parsed value (ajv, JSON.stringify)
// overflows the stack a few thousand levels down, so the ingress refuses bodies past
// ingress.maxJsonDepth (default 64) before parsing them. A tool whose schema recurses makes
// validation walk a body at the limit to its bottom; the leaf it finds there is invalid, so
// nothing reaches the spy consumer.
describe('ingress bounds the nesting of request bodies (ingress.maxJsonDepth)', () => {
  let broker: Broker;
  let ingress: Ingress;
  const reachedWorkers: QueuedCall[] = [];

  beforeAll(async () => {
    const config = resolveConfig(
      [
        'cluster: { namespace: bad-depth }',
        'ingress: { port: 0, maxBodySize: 256kb }',
        'pools: { inference: { backend: openai-chat } }',
        'tools:',
        '  - { name: generate_text, template: generate_text, pool: inference, model: m }',
        // Every value an object, at any depth: validation recurses as deep as the arguments go.
        "  - { name: tree, template: generate_text, pool: inference, model: m, inputSchema: { type: object, additionalProperties: { $ref: '#' } } }",
      ].join('\n'),
      {},
    );
    broker = await openBroker({ url: 'memory:', namespace: 'bad-depth', pools: ['inference'] });
    broker.queue.consume('inference', { maxInFlight: 100 }, (m) => reachedWorkers.push(m));
    ingress = await startIngress(config, broker, inProcessDelivery());
  });

  afterAll(async () => {
    expect(reachedWorkers).toEqual([]);
    await ingress?.shutdown();
    await broker?.close();
  });

  /** A 2025-era request (stateless, no session) with `body` as its raw text. */
  const post = (body: string) =>
    fetch(ingress.url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': '2025-06-18',
      },
      body,
    });
  /** A 2026-07-28 tools/call of `tool` whose arguments are the JSON text `args`. */
  const postModern = (tool: string, args: string) =>
    fetch(ingress.url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': '2026-07-28',
        'mcp-method': 'tools/call',
        'mcp-name': tool,
      },
      body: `{"jsonrpc":"2.0","id":"m1","method":"tools/call","params":{"name":"${tool}","arguments":${args},"_meta":${JSON.stringify(envelope())}}}`,
    });
  const call = (tool: string, args: string) =>
    `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"${tool}","arguments":${args}}}`;
  const list = (params: string) => `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":${params}}`;

  async function expectTooDeep(res: Response, what: string): Promise<void> {
    expect(res.status, what).toBe(400);
    const { error } = await rpc(res);
    expect(error?.code, what).toBe(JSON_RPC.INVALID_REQUEST);
    expect(error?.message, what).toBe(TOO_DEEP);
  }

  it('a tools/list whose params nest 50,000 arrays deep gets 400 naming the limit and the setting', async () => {
    await expectTooDeep(await post(list(`{"cursor":${nestedArrays(50_000)}}`)), 'tools/list');
    await expectTooDeep(await post(`[${list(`{"x":${nestedArrays(50_000)}}`)}]`), 'batch');
  });

  it('a tools/call whose arguments nest 20,000 objects deep gets 400 on the fast path (2025 and 2026-07-28) and the SDK path', async () => {
    const deep = nestedObjects(20_000);
    await expectTooDeep(await post(call('tree', deep)), 'fast path, 2025');
    await expectTooDeep(await postModern('tree', deep), 'fast path, 2026-07-28');
    await expectTooDeep(await post(`[${call('tree', deep)}]`), 'SDK path, batch');
    await expectTooDeep(await post(call('generate_text', deep)), 'a tool with a flat schema');
  });

  it('brackets inside strings do not count, escaped quotes included', async () => {
    const note = `${'[{'.repeat(20_000)}\\"]]\\\\"[[${'{'.repeat(1000)}`;
    const res = await post(call('tree', JSON.stringify({ note, [`"[{${'['.repeat(100)}`]: {} })));
    expect(res.status).toBe(200);
    const answer = await rpc(res);
    expect(answer.result?.isError).toBe(true);
    expect(resultText(answer)).toMatch(/^INVALID_ARGUMENTS: .*arguments\.note must be object/);
    const listed = await post(list(JSON.stringify({ _meta: { note } })));
    expect(listed.status).toBe(200);
    expect((await rpc(listed)).result?.tools).toBeInstanceOf(Array);
  });

  it('a body nested exactly 64 deep is accepted and validated to its bottom on every path; 65 is refused', async () => {
    // The message is level 1, params level 2, arguments level 3 (4 in a batch). `tree` wants an
    // object at every level, and the innermost `"a": 1` is not one: validation reports its path,
    // one `.a` per nested object.
    const expectValidated = async (res: Response, objects: number, what: string) => {
      expect(res.status, what).toBe(200);
      const answer = await rpc(res);
      expect(answer.result?.isError, what).toBe(true);
      expect(resultText(answer), what).toMatch(/^INVALID_ARGUMENTS: /);
      expect(resultText(answer), what).toMatch(new RegExp(`arguments(\\.a){${objects}} must be object`));
    };
    // 62 objects from the arguments at level 3 down: the deepest is at level 64.
    await expectValidated(await post(call('tree', nestedObjects(62))), 62, 'fast path, 2025, at the limit');
    await expectTooDeep(await post(call('tree', nestedObjects(63))), 'fast path, 2025, past it');
    const modernAt = await postModern('tree', nestedObjects(62));
    await expectValidated(modernAt, 62, 'fast path, 2026-07-28, at the limit');
    await expectTooDeep(await postModern('tree', nestedObjects(63)), 'fast path, 2026-07-28, past it');
    const batchAt = await post(`[${call('tree', nestedObjects(61))}]`);
    await expectValidated(batchAt, 61, 'SDK path, batch, at the limit');
    await expectTooDeep(await post(`[${call('tree', nestedObjects(62))}]`), 'SDK path, batch, past it');
    // tools/list: params at level 2 holding 62 nested arrays.
    const listAt = await post(list(`{"x":${nestedArrays(62)}}`));
    expect(listAt.status).toBe(200);
    expect((await rpc(listAt)).result?.tools).toBeInstanceOf(Array);
    await expectTooDeep(await post(list(`{"x":${nestedArrays(63)}}`)), 'tools/list, past the limit');
  });

  it('the ingress stays healthy and serves after deep bodies, and counts them', async () => {
    const base = ingress.url.replace(/\/mcp$/, '');
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    const listed = await post(list('{}'));
    expect(listed.status).toBe(200);
    expect((await rpc(listed)).result?.tools).toHaveLength(2);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/mcp_cluster_ingress_rejected_total\{reason="json_depth"\} [1-9]/);
  });
});

// How long a client may take to send a request: a client that never finishes its headers, or
// trickles its body, loses the socket; a response may take as long as the call does.
describe('ingress bounds how long a client may take to send a request', () => {
  let broker: Broker;
  let ingress: Ingress;
  const headersTimeoutMs = 1000;
  const requestTimeoutMs = 2000;

  beforeAll(async () => {
    const config = resolveConfig(
      [
        'cluster: { namespace: bad-slow }',
        `ingress: { port: 0, headersTimeout: ${headersTimeoutMs}ms, requestTimeout: ${requestTimeoutMs}ms }`,
        'pools: { inference: { backend: openai-chat } }',
      ].join('\n'),
      {},
    );
    // No consumer: a call waits in the queue until its deadline, so its response takes that long.
    broker = await openBroker({ url: 'memory:', namespace: 'bad-slow', pools: ['inference'] });
    ingress = await startIngress(config, broker, inProcessDelivery());
  });

  afterAll(async () => {
    await ingress?.shutdown();
    await broker?.close();
  });

  /** Opens a raw connection to the ingress and records what comes back until it closes. */
  function rawClient() {
    const socket = connect(ingress.port, '127.0.0.1');
    const state = { received: '', closed: false, closedAfterMs: 0 };
    const opened = performance.now();
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      state.received += chunk;
    });
    socket.on('error', () => undefined); // a reset is one way to be cut off
    socket.on('close', () => {
      state.closed = true;
      state.closedAfterMs = performance.now() - opened;
    });
    return { socket, state };
  }

  it('a client that sends part of a header line and then nothing is disconnected after ingress.headersTimeout (slowloris)', async () => {
    const { socket, state } = rawClient();
    socket.write('POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ');
    await waitFor('the ingress to close the connection', () => state.closed);
    expect(state.received).toMatch(/^HTTP\/1\.1 408 /);
    expect(state.closedAfterMs).toBeGreaterThanOrEqual(headersTimeoutMs);
  });

  it('a client that sends its headers, then trickles the body slower than ingress.requestTimeout, is cut off', async () => {
    const { socket, state } = rawClient();
    socket.write(
      [
        'POST /mcp HTTP/1.1',
        'Host: 127.0.0.1',
        'Content-Type: application/json',
        'Accept: application/json, text/event-stream',
        'Content-Length: 100000',
        '',
        '{"jsonrpc":"2.0",',
      ].join('\r\n'),
    );
    // A byte every 100 ms: never idle, yet the 100 kB body would take hours.
    const trickle = setInterval(() => {
      if (!socket.destroyed) socket.write(' ');
    }, 100);
    try {
      await waitFor('the ingress to close the connection', () => state.closed);
    } finally {
      clearInterval(trickle);
    }
    // The front door writes nothing before the whole body is in, so Node can still answer 408.
    expect(state.received).toMatch(/^HTTP\/1\.1 408 /);
    expect(state.closedAfterMs).toBeGreaterThanOrEqual(requestTimeoutMs);
  });

  it('a response that takes longer than ingress.requestTimeout still completes, on every path', async () => {
    const deadline = { 'mcp-cluster/timeout-ms': requestTimeoutMs + 1000 };
    const params = { name: 'generate_text', arguments: { prompt: 'x' }, _meta: deadline };
    const legacy = {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
    };
    const answers = await Promise.all([
      // Fast path, 2025: an SSE stream, silent until the call ends.
      fetch(ingress.url, {
        method: 'POST',
        headers: legacy,
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params }),
      }),
      // Fast path, 2026-07-28: a JSON response written when the call ends.
      fetch(ingress.url, {
        method: 'POST',
        headers: {
          ...legacy,
          'mcp-protocol-version': '2026-07-28',
          'mcp-method': 'tools/call',
          'mcp-name': 'generate_text',
        },
        body: JSON.stringify({
          jsonrpc: '2.0',
          id: 2,
          method: 'tools/call',
          params: { ...params, _meta: { ...deadline, ...envelope() } },
        }),
      }),
      // SDK path: a batch.
      fetch(ingress.url, {
        method: 'POST',
        headers: legacy,
        body: JSON.stringify([{ jsonrpc: '2.0', id: 3, method: 'tools/call', params }]),
      }),
    ]);
    for (const res of answers) {
      expect(res.status).toBe(200);
      const answer = await rpc(res);
      // The call ended at its deadline, past requestTimeout, and the answer still arrived whole.
      expect(resultText(answer)).toMatch(/^DEADLINE_EXCEEDED: /);
    }
  });
});
