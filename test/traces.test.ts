import { randomBytes } from 'node:crypto';
import { type ProxyTracerProvider, trace } from '@opentelemetry/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTracing, tracingSettingsOf } from '../services/cli/tracing.js';
import {
  callerTraceCarrier,
  callTracer,
  callTracingOn,
  carrierOf,
  contextOf,
  sessionKeyHash,
} from '../services/core/index.js';
import { startNatsServer, startRedisServer } from './support/brokers.js';
import { type SimCluster, startSimCluster } from './support/cluster.js';
import { connectClient } from './support/mcp-clients.js';
import {
  durationMs,
  KIND,
  type OtlpReceiver,
  type ReceivedSpan,
  startOtlpReceiver,
} from './support/otlp-receiver.js';
import { type RoleProcess, runCli, STACK_TRACE, startRole } from './support/processes.js';
import { waitFor } from './support/wait.js';

const hex = (bytes: number) => randomBytes(bytes).toString('hex');

// One tool call across separate OS processes (ingress, worker, the simulated vLLM backend and a
// real broker), each role exporting its spans over OTLP/HTTP to a receiver the test runs: the
// spans must form one trace that continues the caller's traceparent, hop by hop.
// NATS runs with the default OTLP encoding (protobuf), BullMQ with http/json: both reach the receiver.
describe.each([
  ['NATS JetStream', startNatsServer, 'nats', undefined],
  ['BullMQ on Redis', startRedisServer, 'redis', 'http/json'],
] as const)('traces across processes on %s', (_label, startBroker, messagingSystem, protocol) => {
  let receiver: OtlpReceiver;
  let cluster: SimCluster;
  const roles: RoleProcess[] = [];
  let ingressUrl = '';

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    cluster = await startSimCluster({
      name: 'traces',
      startBroker,
      sim: { ttftMs: 5, tokensPerSecond: 500 },
      config: (simUrl) => `
pools:
  inference: { backend: openai-chat, endpoints: [{ url: "${simUrl}", maxConcurrency: 4 }] }
  embeddings: { backend: openai-embeddings, endpoints: [{ url: "${simUrl}", maxConcurrency: 4 }] }
tools:
  - { name: generate_text, template: generate_text, pool: inference, model: sim-llm }
  - { name: embed, template: embed, pool: embeddings, model: sim-embed }
`,
    });
    const otel = {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      ...(protocol ? { OTEL_EXPORTER_OTLP_PROTOCOL: protocol } : {}),
      OTEL_BSP_SCHEDULE_DELAY: '50',
      OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=test',
    };
    const config = ['--config', cluster.configPath];
    roles.push(
      ...(await Promise.all([
        startRole('ingress', ['ingress', ...config], otel),
        startRole('worker-inference', ['worker', '--pool', 'inference', ...config], otel),
        startRole('worker-embeddings', ['worker', '--pool', 'embeddings', ...config], otel),
      ])),
    );
    ingressUrl = String(roles[0]?.ready.url);
  }, 90_000);

  afterAll(async () => {
    await Promise.all(roles.map((r) => r.stop()));
    await cluster?.stop();
    await receiver?.close();
  }, 60_000);

  /** The spans of trace `traceId` once `done` holds for them (the exporters flush every 50 ms). */
  const traceOf = (traceId: string, done: (spans: ReceivedSpan[]) => boolean) =>
    waitFor(`the spans of trace ${traceId}`, () => {
      const spans = receiver.spans.filter((s) => s.traceId === traceId);
      return done(spans) ? spans : undefined;
    });
  /** Whether `spans` hold the ingress's SERVER and PRODUCER spans (exported apart from the worker's). */
  const hasIngressSpans = (spans: ReceivedSpan[]) =>
    spans.some((x) => x.kind === KIND.server && x.name.startsWith('tools/call')) &&
    spans.some((x) => x.kind === KIND.producer);
  const one = (spans: ReceivedSpan[], match: (s: ReceivedSpan) => boolean, what: string): ReceivedSpan => {
    const found = spans.filter(match);
    expect(found, what).toHaveLength(1);
    return found[0] as ReceivedSpan;
  };

  it('continues the traceparent header through ingress, broker, worker, backend and delivery', async () => {
    const traceId = hex(16);
    const callerSpanId = hex(8);
    const prompt = `secret prompt ${hex(6)}`;
    const sessionKey = `conversation-${hex(6)}`;
    const client = await connectClient('v2', ingressUrl, {
      headers: {
        traceparent: `00-${traceId}-${callerSpanId}-01`,
        tracestate: 'caller=1',
        'mcp-cluster-session-key': sessionKey,
      },
    });
    let result: Awaited<ReturnType<typeof client.callTool>>;
    try {
      result = await client.callTool('generate_text', { prompt, max_tokens: 8 });
    } finally {
      await client.close();
    }
    expect(result.isError).toBeFalsy();
    const timing = result._meta?.['mcp-cluster/timing'] as Record<string, number>;
    expect(timing).toBeDefined();

    const spans = await traceOf(
      traceId,
      (s) =>
        hasIngressSpans(s) &&
        s.some((x) => x.kind === KIND.consumer && x.attributes['mcp_cluster.outcome'] !== undefined) &&
        s.some((x) => x.service === 'mcp-cluster-ingress' && x.name === 'mcpcluster.v1.Delivery/Connect'),
    );

    // The SERVER span continues the caller's span; the rest hang below it, hop by hop.
    const server = one(
      spans,
      (s) => s.kind === KIND.server && s.name === 'tools/call generate_text',
      'server',
    );
    expect(server.parentSpanId).toBe(callerSpanId);
    expect(server.service).toBe('mcp-cluster-ingress');
    const producer = one(spans, (s) => s.kind === KIND.producer, 'producer');
    expect(producer.parentSpanId).toBe(server.spanId);
    const consumer = one(spans, (s) => s.kind === KIND.consumer, 'consumer');
    expect(consumer.parentSpanId).toBe(producer.spanId);
    expect(consumer.service).toBe('mcp-cluster-worker');
    const queueWait = one(spans, (s) => s.name === 'queue wait', 'queue wait');
    expect(queueWait.parentSpanId).toBe(consumer.spanId);
    const backend = one(
      spans,
      (s) => s.kind === KIND.client && s.name === 'backend generate_text',
      'backend',
    );
    expect(backend.parentSpanId).toBe(consumer.spanId);
    const sent = one(
      spans,
      (s) => s.service === 'mcp-cluster-worker' && s.name === 'mcpcluster.v1.Delivery/Connect',
      'worker delivery',
    );
    expect(sent.kind).toBe(KIND.client);
    expect(sent.parentSpanId).toBe(consumer.spanId);
    const received = one(
      spans,
      (s) => s.service === 'mcp-cluster-ingress' && s.name === 'mcpcluster.v1.Delivery/Connect',
      'ingress delivery',
    );
    expect(received.parentSpanId).toBe(server.spanId);
    // Every span of the call is in the caller's trace: none was left in a trace of its own.
    const callId = String(server.attributes['mcp_cluster.call.id']);
    expect(callId).toMatch(/^[0-9a-f-]{36}$/);
    const ofCall = receiver.spans.filter(
      (s) =>
        s.attributes['messaging.message.id'] === callId || s.attributes['mcp_cluster.call.id'] === callId,
    );
    expect(ofCall.length).toBeGreaterThanOrEqual(4);
    expect(new Set(ofCall.map((s) => s.traceId))).toEqual(new Set([traceId]));
    // Every export arrived in the encoding the roles were set to, and decoded.
    const [used, unused] =
      protocol === 'http/json' ? (['json', 'protobuf'] as const) : (['protobuf', 'json'] as const);
    expect(receiver.refused).toBe(0);
    expect(receiver.byEncoding[used]).toBeGreaterThan(0);
    expect(receiver.byEncoding[unused]).toBe(0);

    // The backend request carried the backend span's context to the sim.
    const seen = (await (await fetch(`${cluster.simUrl}/sim/requests`)).json()) as {
      requests: { path: string; headers: Record<string, string> }[];
    };
    const chat = seen.requests.find((r) => r.headers.traceparent?.includes(traceId));
    expect(chat?.path).toBe('/v1/chat/completions');
    expect(chat?.headers.traceparent).toBe(`00-${traceId}-${backend.spanId}-01`);

    // Attributes: the messaging conventions, the call's identity, never its content.
    expect(producer.attributes).toMatchObject({
      'messaging.system': messagingSystem,
      'messaging.operation.type': 'send',
      'messaging.message.id': callId,
    });
    expect(consumer.attributes).toMatchObject({
      'messaging.system': messagingSystem,
      'messaging.operation.type': 'process',
      'messaging.message.id': callId,
      'messaging.destination.name': producer.attributes['messaging.destination.name'],
      'mcp_cluster.attempt': 1,
      'mcp_cluster.outcome': 'ok',
    });
    expect(String(consumer.attributes['messaging.destination.name'])).toContain('inference');
    expect(server.attributes).toMatchObject({
      'gen_ai.tool.name': 'generate_text',
      'mcp_cluster.pool': 'inference',
      'mcp_cluster.tenant': expect.any(String),
      'mcp_cluster.session_key.hash': sessionKeyHash(sessionKey),
      'mcp_cluster.outcome': 'ok',
    });
    expect(server.statusCode).not.toBe(2);
    for (const span of spans) {
      for (const value of Object.values(span.attributes)) {
        expect(String(value)).not.toContain(prompt);
        expect(String(value)).not.toContain(sessionKey);
      }
    }

    // The span timings are the result's `_meta` timing (1 ms: the timing is rounded).
    expect(Math.abs(durationMs(queueWait) - (timing.queueWaitMs ?? Number.NaN))).toBeLessThanOrEqual(1);
    expect(Math.abs(durationMs(backend) - (timing.backendMs ?? Number.NaN))).toBeLessThanOrEqual(1);
    expect(Math.abs(durationMs(received) - (timing.deliveryMs ?? Number.NaN))).toBeLessThanOrEqual(1);
  });

  it('shows a redelivered call as a new attempt: a second CONSUMER span in the same trace', async () => {
    const traceId = hex(16);
    // The backend answers the next request 503: the worker hands the call back, the broker redelivers it.
    const fail = await fetch(`${cluster.simUrl}/sim/fail`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ mode: '5xx', count: 1 }),
    });
    expect(fail.status).toBe(200);
    const client = await connectClient('v2', ingressUrl, {
      headers: { traceparent: `00-${traceId}-${hex(8)}-01` },
    });
    try {
      const result = await client.callTool('generate_text', { prompt: 'retry me', max_tokens: 4 });
      expect(result.isError).toBeFalsy();
    } finally {
      await client.close();
    }
    const spans = await traceOf(
      traceId,
      (s) =>
        hasIngressSpans(s) &&
        s.filter((x) => x.kind === KIND.consumer && x.attributes['mcp_cluster.outcome'] !== undefined)
          .length >= 2,
    );
    const producer = one(spans, (s) => s.kind === KIND.producer, 'producer');
    const attempts = spans
      .filter((s) => s.kind === KIND.consumer)
      .sort(
        (a, b) => Number(a.attributes['mcp_cluster.attempt']) - Number(b.attributes['mcp_cluster.attempt']),
      );
    expect(attempts.map((a) => a.attributes['mcp_cluster.attempt'])).toEqual([1, 2]);
    expect(attempts.map((a) => a.attributes['mcp_cluster.outcome'])).toEqual(['retried', 'ok']);
    expect(attempts[0]?.attributes['error.type']).toBe('BACKEND_UNAVAILABLE');
    expect(attempts[0]?.statusCode).toBe(2);
    for (const attempt of attempts) expect(attempt.parentSpanId).toBe(producer.spanId);
    // Each attempt made its own backend request, the failed one marked with its error code.
    const backends = spans.filter((s) => s.name === 'backend generate_text');
    expect(backends.map((b) => b.parentSpanId).sort()).toEqual(attempts.map((a) => a.spanId).sort());
    expect(backends.filter((b) => b.attributes['error.type'] === 'BACKEND_UNAVAILABLE')).toHaveLength(1);
  });

  it('starts a new trace for a malformed caller context and still answers the call', async () => {
    const client = await connectClient('v2', ingressUrl, { headers: { traceparent: 'not-a-traceparent' } });
    try {
      const result = await client.callTool(
        'generate_text',
        { prompt: 'malformed context', max_tokens: 4 },
        { meta: { traceparent: `00-${'0'.repeat(32)}-${hex(8)}-01`, tracestate: 42 } },
      );
      expect(result.isError).toBeFalsy();
    } finally {
      await client.close();
    }
    // An all-zero trace id is invalid: the SERVER span is the root of a trace of its own.
    const root = await waitFor('the root SERVER span', () =>
      receiver.spans.find((s) => s.name === 'tools/call generate_text' && s.parentSpanId === ''),
    );
    expect(root.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(root.traceId).not.toBe('0'.repeat(32));
    expect(root.attributes['mcp_cluster.outcome']).toBe('ok');
  });

  it('continues a traceparent from params._meta and links a micro-batch to every call in it', async () => {
    const traces = [hex(16), hex(16), hex(16)];
    const callerSpans = traces.map(() => hex(8));
    const client = await connectClient('v2', ingressUrl);
    try {
      const results = await Promise.all(
        traces.map((traceId, i) =>
          client.callTool(
            'embed',
            { texts: [`text ${i} ${hex(4)}`] },
            { meta: { traceparent: `00-${traceId}-${callerSpans[i]}-01`, tracestate: 'caller=meta' } },
          ),
        ),
      );
      for (const r of results) expect(r.isError).toBeFalsy();
    } finally {
      await client.close();
    }
    const backends: ReceivedSpan[] = [];
    for (const [i, traceId] of traces.entries()) {
      const spans = await traceOf(
        traceId,
        (s) =>
          hasIngressSpans(s) &&
          s.some((x) => x.kind === KIND.consumer && x.attributes['mcp_cluster.outcome'] !== undefined),
      );
      const server = one(spans, (s) => s.kind === KIND.server && s.name.startsWith('tools/call'), 'server');
      expect(server.name).toBe('tools/call embed');
      expect(server.parentSpanId).toBe(callerSpans[i]);
      const consumer = one(spans, (s) => s.kind === KIND.consumer, 'consumer');
      expect(consumer.attributes['mcp_cluster.pool']).toBe('embeddings');
      backends.push(one(spans, (s) => s.name === 'backend embed', 'backend'));
    }
    // Each batch request is linked to the backend span of every call it carried; every call rode in one.
    const batches = await waitFor('the batch spans', () => {
      const found = receiver.spans.filter(
        (s) => s.name === 'embeddings batch' && s.links.some((l) => traces.includes(l.traceId)),
      );
      const linked = new Set(found.flatMap((b) => b.links.map((l) => l.spanId)));
      return backends.every((b) => linked.has(b.spanId)) ? found : undefined;
    });
    for (const batch of batches) {
      expect(batch.kind).toBe(KIND.client);
      expect(batch.attributes['mcp_cluster.batch.calls']).toBe(batch.links.length);
      // In the trace of one of its calls, below that call's backend span.
      expect(backends.map((b) => b.spanId)).toContain(batch.parentSpanId);
    }
  });
});

describe('tracing settings', () => {
  it('is off without OTEL_* settings: no provider, no exporter, the API hands out non-recording spans', async () => {
    expect(await startTracing('test', {})).toBeUndefined();
    expect(
      await startTracing('test', { OTEL_SDK_DISABLED: 'true', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://x:4318' }),
    ).toBeUndefined();
    expect(await startTracing('test', { OTEL_TRACES_EXPORTER: 'none' })).toBeUndefined();
    // Nothing was registered: the call path starts no span, and the global provider is still the API's no-op one.
    expect(callTracingOn()).toBe(false);
    const provider = trace.getTracerProvider() as ProxyTracerProvider;
    expect(provider.getDelegate().constructor.name).toBe('NoopTracerProvider');
    const span = callTracer().startSpan('probe');
    expect(span.isRecording()).toBe(false);
    span.end();
    // The call path then passes the caller's context through untouched and builds nothing more.
    const carrier = callerTraceCarrier({}, { traceparent: `00-${hex(16)}-${hex(8)}-01`, tracestate: 'a=1' });
    expect(carrierOf(trace.setSpan(contextOf(carrier), span))).toEqual({});
  });

  it('turns on with an endpoint or OTEL_TRACES_EXPORTER=otlp', () => {
    const general = tracingSettingsOf({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/' });
    expect(general).toMatchObject({ enabled: true, endpoint: 'http://collector:4318/v1/traces' });
    const specific = tracingSettingsOf({
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://traces.example/api/v1/traces',
    });
    expect(specific).toMatchObject({ enabled: true, endpoint: 'https://traces.example/api/v1/traces' });
    expect(tracingSettingsOf({ OTEL_TRACES_EXPORTER: 'otlp' })).toMatchObject({
      enabled: true,
      endpoint: undefined,
    });
    expect(tracingSettingsOf({ OTEL_TRACES_EXPORTER: 'otlp' })).toMatchObject({ protocol: 'http/protobuf' });
    expect(
      tracingSettingsOf({
        OTEL_TRACES_EXPORTER: 'otlp',
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json',
      }),
    ).toMatchObject({ enabled: true, protocol: 'http/json', warnings: [] });
  });

  it.each([
    [{ OTEL_TRACES_EXPORTER: 'zipkin' }, /OTEL_TRACES_EXPORTER=zipkin is not supported/],
    [
      { OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' },
      /OTEL_EXPORTER_OTLP_ENDPOINT=collector:4318 is not an http/,
    ],
    [{ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'not a url' }, /OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=not a url/],
    [
      { OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' },
      /OTEL_EXPORTER_OTLP_PROTOCOL=grpc/,
    ],
    [{ OTEL_TRACES_EXPORTER: 'otlp', OTEL_TRACES_SAMPLER: 'sometimes' }, /OTEL_TRACES_SAMPLER=sometimes/],
    [
      { OTEL_TRACES_EXPORTER: 'otlp', OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '2' },
      /OTEL_TRACES_SAMPLER_ARG=2 must be a ratio between 0 and 1/,
    ],
  ])('refuses %o at start with a message naming the variable', (env, message) => {
    expect(() => tracingSettingsOf(env)).toThrow(message);
  });

  it('stops a role at start, before it serves, on a bad OTEL_* value: exit 2, the variable named, no stack', async () => {
    const run = await runCli(['ingress', '--port', '0'], { OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' });
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('INVALID_CONFIG: OTEL_EXPORTER_OTLP_ENDPOINT=collector:4318 is not an http');
    expect(run.stderr).not.toMatch(STACK_TRACE);
    expect(run.stdout).toBe('');
  });
});
