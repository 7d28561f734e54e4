import {
  Client as ClientV2,
  StreamableHTTPClientTransport as TransportV2,
} from '@modelcontextprotocol/client';
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as TransportV1 } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { LoggingMessageNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBroker } from '../services/cli/index.js';
import {
  type Broker,
  CALL_LOG_BURST,
  CALL_LOG_PER_SECOND,
  CallLogGate,
  encodeArguments,
  inProcessDelivery,
  MCP_LOG_LEVELS,
  type ToolCall,
} from '../services/core/index.js';
import { grpcDelivery } from '../services/grpc/index.js';
import { type Ingress, startIngress } from '../services/ingress/index.js';
import {
  decodeToolCall,
  deserializeChunk,
  encodeToolCall,
  serializeChunk,
} from '../services/protobuf/index.js';
import { startWorker, type ToolAdapter, type Worker } from '../workers/runtime/index.js';
import { type SimBackend, startSimBackend } from '../workers/sim/index.js';
import { resolveConfig } from './support/families.js';
import { open2025Session, post2025 } from './support/mcp-clients.js';

// Log notifications from a running call: the caller asks for a level (a 2025-era session with
// `logging/setLevel`, a 2026-07-28 request in `_meta`), the worker's adapter logs through
// `ctx.log`, and the ingress forwards what the level admits on the call's response stream,
// before the result. A memory broker, one ingress and one worker in this process, over in-process
// and gRPC delivery; the tool `generate_text` is served by a test adapter that logs instead of
// calling a backend.

const LOG_LEVEL_KEY = 'io.modelcontextprotocol/logLevel';
/** How many messages the `flood` prompt logs: far more than a call's burst. */
const FLOOD = CALL_LOG_BURST * 4;

/** Logs once at each level, lowest first (or floods at `info`), then answers. */
const loggingAdapter: ToolAdapter = {
  async run(ctx) {
    if (ctx.arguments.prompt === 'flood') {
      for (let i = 0; i < FLOOD; i++) ctx.log('info', { i });
    } else {
      for (const level of MCP_LOG_LEVELS) ctx.log(level, { level, step: level.length }, 'test-tool');
    }
    return { content: [{ type: 'text', text: 'done' }] };
  },
};

interface Seen {
  level: string;
  logger?: string;
  data: unknown;
}

/** Both delivery transports: log chunks in process, and encoded over a real gRPC stream. */
const TRANSPORTS = [
  { name: 'in-process delivery', make: inProcessDelivery },
  { name: 'gRPC delivery', make: () => grpcDelivery() },
];

describe.each(TRANSPORTS)('log notifications from a running call ($name)', ({ make }) => {
  let sim: SimBackend;
  let broker: Broker;
  let worker: Worker;
  let ingress: Ingress;

  beforeAll(async () => {
    // The worker probes its endpoint's health; the adapter never calls it.
    sim = await startSimBackend({ ttftMs: 1, tokensPerSecond: 1000 });
    const config = resolveConfig(
      JSON.stringify({
        cluster: { namespace: 'logging' },
        ingress: { port: 0 },
        worker: { port: 0 },
        pools: { inference: { backend: 'openai-chat', endpoints: [{ url: sim.url, maxConcurrency: 8 }] } },
        tools: [{ name: 'generate_text', template: 'generate_text', pool: 'inference', model: 'sim-llm' }],
      }),
      {},
    );
    broker = await openBroker({ url: 'memory:', namespace: 'logging', pools: ['inference'] });
    const delivery = make();
    ingress = await startIngress(config, broker, delivery);
    worker = await startWorker({
      config,
      pool: 'inference',
      broker,
      adapters: { generate_text: loggingAdapter },
      delivery,
      workerId: 'w-logging',
    });
  });

  afterAll(async () => {
    await ingress?.shutdown();
    await worker?.shutdown();
    await broker?.close();
    await sim?.close();
  });

  /** A 2025-era client (v1 SDK, with a session) recording what arrives, notifications and result alike. */
  const v1Client = async () => {
    const client = new ClientV1({ name: 'logging-test-v1', version: '1.0.0' });
    const events: (Seen | 'result')[] = [];
    client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
      events.push(n.params as Seen);
    });
    await client.connect(new TransportV1(new URL(ingress.url)));
    const call = async (prompt: string) => {
      const result = await client.callTool({ name: 'generate_text', arguments: { prompt } });
      events.push('result');
      return result;
    };
    return { client, events, call };
  };

  /** A 2026-07-28 client (v2 SDK, stateless) recording what arrives. */
  const v2Client = async () => {
    const client = new ClientV2(
      { name: 'logging-test-v2', version: '1.0.0' },
      { versionNegotiation: { mode: { pin: '2026-07-28' } } },
    );
    const events: (Seen | 'result')[] = [];
    client.setNotificationHandler('notifications/message', (n) => {
      events.push(n.params as Seen);
    });
    await client.connect(new TransportV2(new URL(ingress.url)));
    const call = async (prompt: string, level?: string) => {
      const result = await client.callTool({
        name: 'generate_text',
        arguments: { prompt },
        ...(level ? { _meta: { [LOG_LEVEL_KEY]: level } } : {}),
      });
      events.push('result');
      return result;
    };
    return { client, events, call };
  };

  const atOrAbove = (level: string) => MCP_LOG_LEVELS.slice(MCP_LOG_LEVELS.indexOf(level as never));

  it('advertises the logging capability', async () => {
    const { client } = await v1Client();
    expect(client.getServerCapabilities()?.logging).toEqual({});
    await client.close();
  });

  it('2025 session: after logging/setLevel only levels at or above it arrive, in order, before the result', async () => {
    const { client, events, call } = await v1Client();
    await client.setLoggingLevel('warning');
    const result = await call('levels');
    expect(result.content).toEqual([{ type: 'text', text: 'done' }]);
    expect(events).toEqual([
      ...atOrAbove('warning').map((level) => ({
        level,
        logger: 'test-tool',
        data: { level, step: level.length },
      })),
      'result',
    ]);
    // A later setLevel replaces the earlier one for the session's next calls.
    events.length = 0;
    await client.setLoggingLevel('critical');
    await call('levels');
    expect(events.map((e) => (e === 'result' ? e : e.level))).toEqual([...atOrAbove('critical'), 'result']);
    await client.close();
  });

  it('2025 session: no log notifications when the session never set a level', async () => {
    const { client, events, call } = await v1Client();
    await call('levels');
    expect(events).toEqual(['result']);
    await client.close();
  });

  it('2025 session: logging/setLevel with an unknown level is a JSON-RPC invalid-params error', async () => {
    const { client, events, call } = await v1Client();
    await expect(client.setLoggingLevel('loud' as never)).rejects.toMatchObject({ code: -32602 });
    // The refused level set nothing.
    await call('levels');
    expect(events).toEqual(['result']);
    await client.close();
  });

  it('2025 session on the SDK path (a request the fast path leaves to the SDK): the same notifications', async () => {
    const session = await open2025Session(ingress.url, 'raw');
    const set = await post2025(
      ingress.url,
      { jsonrpc: '2.0', id: 1, method: 'logging/setLevel', params: { level: 'alert' } },
      session,
    );
    expect(await sseMessages(set)).toEqual([{ jsonrpc: '2.0', id: 1, result: {} }]);
    const res = await post2025(
      ingress.url,
      {
        jsonrpc: '2.0',
        id: 2,
        method: 'tools/call',
        // An extra param the fast path does not know sends the request to the SDK's server.
        params: { name: 'generate_text', arguments: { prompt: 'levels' }, 'x-extension': true },
      },
      session,
    );
    const messages = (await sseMessages(res)) as { method?: string; params?: Seen; id?: number }[];
    expect(messages.map((m) => m.method ?? `response ${m.id}`)).toEqual([
      'notifications/message',
      'notifications/message',
      'response 2',
    ]);
    expect(messages.slice(0, 2).map((m) => m.params?.level)).toEqual(['alert', 'emergency']);
  });

  it('2026-07-28: the level in the request `_meta` admits only levels at or above it, in order, before the result', async () => {
    const { client, events, call } = await v2Client();
    await call('levels', 'error');
    expect(events).toEqual([
      ...atOrAbove('error').map((level) => ({
        level,
        logger: 'test-tool',
        data: { level, step: level.length },
      })),
      'result',
    ]);
    // The level holds for that request only: the next one without it gets no logs.
    events.length = 0;
    await call('levels');
    expect(events).toEqual(['result']);
    await client.close();
  });

  it('2026-07-28 on the SDK path (a request the fast path leaves to the SDK): the same notifications', async () => {
    const res = await fetch(ingress.url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': '2026-07-28',
        'mcp-method': 'tools/call',
        'mcp-name': 'generate_text',
      },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 3,
        method: 'tools/call',
        params: {
          name: 'generate_text',
          arguments: { prompt: 'levels' },
          // An extra param the fast path does not know sends the request to the SDK's server.
          'x-extension': true,
          _meta: {
            'io.modelcontextprotocol/protocolVersion': '2026-07-28',
            'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1' },
            'io.modelcontextprotocol/clientCapabilities': {},
            [LOG_LEVEL_KEY]: 'alert',
          },
        },
      }),
    });
    const messages = (await sseMessages(res)) as { method?: string; params?: Seen; id?: number }[];
    expect(messages.map((m) => m.method ?? `response ${m.id}`)).toEqual([
      'notifications/message',
      'notifications/message',
      'response 3',
    ]);
    expect(messages.slice(0, 2).map((m) => m.params?.level)).toEqual(['alert', 'emergency']);
  });

  it('2026-07-28: an unknown level in `_meta` is a JSON-RPC invalid-params error', async () => {
    const { client, events, call } = await v2Client();
    await expect(call('levels', 'loud')).rejects.toMatchObject({ code: -32602 });
    expect(events).toEqual([]);
    await client.close();
  });

  it('a chatty call is rate-limited: the burst arrives, in order, the rest is dropped', async () => {
    const { client, events, call } = await v2Client();
    await call('flood', 'debug');
    const logs = events.filter((e): e is Seen => e !== 'result');
    expect(events.at(-1)).toBe('result');
    // The first burst always arrives; the refill during the loop may add a few, never all.
    expect(logs.length).toBeGreaterThanOrEqual(CALL_LOG_BURST);
    expect(logs.length).toBeLessThan(FLOOD);
    expect(logs.slice(0, CALL_LOG_BURST).map((l) => l.data)).toEqual(
      Array.from({ length: CALL_LOG_BURST }, (_, i) => ({ i })),
    );
    // The last message says how many were dropped: all the flood did not deliver.
    const notice = logs.at(-1) as Seen;
    expect(notice).toMatchObject({ level: 'warning', logger: 'mcp-cluster' });
    expect((notice.data as { dropped: number }).dropped).toBe(FLOOD - (logs.length - 1));
    await client.close();
  });
});

/** The JSON-RPC messages of a response: its SSE events' data, or its JSON body. */
async function sseMessages(res: Response): Promise<unknown[]> {
  const text = await res.text();
  if (!res.headers.get('content-type')?.startsWith('text/event-stream')) return [JSON.parse(text)];
  return [...text.matchAll(/^data: (.*)$/gm)].map((m) => JSON.parse(m[1] as string));
}

describe('CallLogGate', () => {
  it('admits nothing when the caller asked for no level (or an unknown one)', () => {
    for (const level of [undefined, null, '', 'loud']) {
      const gate = new CallLogGate(level);
      expect(gate.wanted).toBe(false);
      expect(MCP_LOG_LEVELS.some((l) => gate.admit(l))).toBe(false);
      expect(gate.dropped).toBe(0);
    }
  });

  it('admits levels at or above the threshold only', () => {
    const gate = new CallLogGate('notice');
    expect(MCP_LOG_LEVELS.filter((l) => gate.admit(l))).toEqual(MCP_LOG_LEVELS.slice(2));
  });

  it('refills at its rate after the burst', () => {
    let now = 0;
    const gate = new CallLogGate('debug', () => now);
    let admitted = 0;
    for (let i = 0; i < CALL_LOG_BURST * 2; i++) if (gate.admit('info')) admitted++;
    expect(admitted).toBe(CALL_LOG_BURST);
    expect(gate.dropped).toBe(CALL_LOG_BURST);
    now += 1000;
    admitted = 0;
    for (let i = 0; i < CALL_LOG_BURST * 2; i++) if (gate.admit('info')) admitted++;
    expect(admitted).toBe(CALL_LOG_PER_SECOND);
    // Both rounds' refusals: the burst's overflow, then all but the refill.
    expect(gate.dropped).toBe(CALL_LOG_BURST + (CALL_LOG_BURST * 2 - CALL_LOG_PER_SECOND));
    expect(gate.droppedNotice()?.data).toMatchObject({ dropped: gate.dropped });
    // A caller that asked for errors only is not told about dropped infos.
    const quiet = new CallLogGate('error', () => now);
    for (let i = 0; i < CALL_LOG_BURST * 2; i++) quiet.admit('error');
    expect(quiet.dropped).toBe(CALL_LOG_BURST);
    expect(quiet.droppedNotice()).toBeUndefined();
    expect(new CallLogGate('debug').droppedNotice()).toBeUndefined();
  });
});

describe('call logging on the wire', () => {
  const call: ToolCall = {
    callId: 'c-1',
    tool: 'generate_text',
    pool: 'inference',
    argumentsJson: encodeArguments({ prompt: 'x' }),
    tenant: 't',
    sessionKey: '',
    priority: 'normal',
    deadlineUnixMs: 2_000_000_000_000,
    attempt: 1,
    replyTo: 'h:1',
    traceContext: {},
    enqueuedUnixMs: 1_999_999_999_000,
    wantsProgress: false,
    principal: 'anonymous',
    scopes: [],
  };

  it('carries the level a caller asked for in the envelope, and none when it asked for none', () => {
    expect(decodeToolCall(encodeToolCall({ ...call, logLevel: 'warning' })).logLevel).toBe('warning');
    // An envelope without the field (one written before call logging) decodes with no level.
    expect('logLevel' in decodeToolCall(encodeToolCall(call))).toBe(false);
  });

  it('round-trips a log chunk through gRPC delivery encoding', () => {
    const bytes = serializeChunk({
      callId: 'c-1',
      attempt: 1,
      log: { level: 'error', logger: 'tool', dataJson: '{"a":[1,2]}' },
    });
    const chunk = deserializeChunk(bytes);
    expect(chunk.body).toBe('log');
    expect(chunk.log).toMatchObject({ level: 'error', logger: 'tool', dataJson: '{"a":[1,2]}' });
  });
});
