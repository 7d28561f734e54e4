import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import {
  histogramQuantile,
  interactiveArrivalPerSec,
  MAX_EXPOSITION_LINE_CHARS,
  type PoolRates,
  parsePrometheusText,
  prometheusSource,
  scrapeSource,
} from '../services/autoscaler/index.js';
import { ClusterError, type Logger } from '../services/core/index.js';

// ---------------------------------------------------------------------------------------------------
// Real HTTP servers the sources read from
// ---------------------------------------------------------------------------------------------------

/** An HTTP server on 127.0.0.1 whose answers the test changes between reads. */
interface TestServer {
  url: string;
  /** Stops listening and drops open connections: connection refused from now on. */
  close(): Promise<void>;
  /** Listens again on the same port. */
  reopen(): Promise<void>;
}

const servers: TestServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function startServer(
  handle: (req: IncomingMessage, res: ServerResponse) => void,
  path = '',
): Promise<TestServer> {
  let server: Server = createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let open = true;
  const test: TestServer = {
    url: `http://127.0.0.1:${port}${path}`,
    async close() {
      if (!open) return;
      open = false;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
    async reopen() {
      server = createServer(handle);
      await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
      open = true;
    },
  };
  servers.push(test);
  return test;
}

/** A process's `/metrics` page: `text` is served with `status` until the test changes them. */
async function startTarget(text = ''): Promise<TestServer & { text: string; status: number }> {
  const state = { text, status: 200 };
  const server = await startServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(state.status, { 'content-type': 'text/plain; version=0.0.4' }).end(state.text);
  }, '/metrics');
  return {
    url: server.url,
    close: () => server.close(),
    reopen: () => server.reopen(),
    get text() {
      return state.text;
    },
    set text(v: string) {
      state.text = v;
    },
    get status() {
      return state.status;
    },
    set status(v: number) {
      state.status = v;
    },
  };
}

/** A logger that keeps its lines, to check what a skipped target reports. */
function recordingLogger(): Logger & { lines: { level: string; msg: string; fields?: unknown }[] } {
  const lines: { level: string; msg: string; fields?: unknown }[] = [];
  const logger = {
    lines,
    debug: (msg: string, fields?: unknown) => lines.push({ level: 'debug', msg, fields }),
    info: (msg: string, fields?: unknown) => lines.push({ level: 'info', msg, fields }),
    warn: (msg: string, fields?: unknown) => lines.push({ level: 'warn', msg, fields }),
    error: (msg: string, fields?: unknown) => lines.push({ level: 'error', msg, fields }),
    child: () => logger,
  };
  return logger;
}

function expectClusterError(fn: () => unknown, code: string, ...mentions: (string | RegExp)[]): ClusterError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(ClusterError);
  const err = caught as ClusterError;
  expect(err.code).toBe(code);
  for (const m of mentions) {
    if (typeof m === 'string') expect(err.message).toContain(m);
    else expect(err.message).toMatch(m);
  }
  return err;
}

async function expectRejects(
  promise: Promise<unknown>,
  code: string,
  ...mentions: string[]
): Promise<ClusterError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ClusterError);
  const ce = err as ClusterError;
  expect(ce.code, ce.message).toBe(code);
  for (const m of mentions) expect(ce.message).toContain(m);
  return ce;
}

// ---------------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------------

describe('parsePrometheusText', () => {
  it('reads back what prom-client renders: counters, histograms and gauges with escaped labels', async () => {
    const registry = new Registry();
    const nasty = 'say "hi"\\ then\nnewline, {braces} = fine';
    const calls = new Counter({
      name: 'test_calls_total',
      help: 'Calls with a "quoted" help and a \\ backslash\nand a newline.',
      labelNames: ['pool', 'tool'],
      registers: [registry],
    });
    calls.inc({ pool: 'inference', tool: nasty }, 3);
    calls.inc({ pool: 'embeddings', tool: 'embed' }, 0.5);
    const duration = new Histogram({
      name: 'test_duration_seconds',
      help: 'Durations.',
      labelNames: ['pool'],
      buckets: [0.1, 1],
      registers: [registry],
    });
    for (const v of [0.05, 0.5, 5]) duration.observe({ pool: 'inference' }, v);
    const gauge = new Gauge({ name: 'test_gauge', help: 'g', labelNames: ['k'], registers: [registry] });
    gauge.set({ k: 'nan' }, Number.NaN);
    gauge.set({ k: 'inf' }, Number.POSITIVE_INFINITY);
    gauge.set({ k: 'ninf' }, Number.NEGATIVE_INFINITY);
    gauge.set({ k: 'neg' }, -2.5e-3);
    const plain = new Gauge({ name: 'test_plain', help: 'no labels', registers: [registry] });
    plain.set(42);

    const text = await registry.metrics();
    const { samples, types } = parsePrometheusText(text);
    const find = (name: string, labels: Record<string, string> = {}) =>
      samples.filter(
        (s) =>
          s.name === name &&
          Object.entries(labels).every(([k, v]) => s.labels[k] === v) &&
          Object.keys(s.labels).length >= Object.keys(labels).length,
      );

    expect(types.get('test_calls_total')).toBe('counter');
    expect(types.get('test_duration_seconds')).toBe('histogram');
    expect(types.get('test_gauge')).toBe('gauge');
    expect(find('test_calls_total', { pool: 'inference' })).toEqual([
      {
        name: 'test_calls_total',
        labels: { pool: 'inference', tool: nasty },
        value: 3,
        timestampMs: undefined,
      },
    ]);
    expect(find('test_calls_total', { pool: 'embeddings' })[0]?.value).toBe(0.5);
    expect(find('test_duration_seconds_bucket').map((s) => [s.labels.le, s.value])).toEqual([
      ['0.1', 1],
      ['1', 2],
      ['+Inf', 3],
    ]);
    expect(find('test_duration_seconds_sum')[0]?.value).toBeCloseTo(5.55, 12);
    expect(find('test_duration_seconds_count')[0]?.value).toBe(3);
    expect(find('test_gauge', { k: 'nan' })[0]?.value).toBeNaN();
    expect(find('test_gauge', { k: 'inf' })[0]?.value).toBe(Number.POSITIVE_INFINITY);
    expect(find('test_gauge', { k: 'ninf' })[0]?.value).toBe(Number.NEGATIVE_INFINITY);
    expect(find('test_gauge', { k: 'neg' })[0]?.value).toBe(-2.5e-3);
    expect(find('test_plain')[0]?.value).toBe(42);
    // Every sample line of the page came back, and nothing else.
    const sampleLines = text.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
    expect(samples.length).toBe(sampleLines.length);
  });

  it('accepts timestamps, CRLF, blanks, trailing commas, free comments and odd but legal values', () => {
    const text = [
      '# a free comment',
      '#',
      '   ',
      '# HELP m_total with "quotes" and \\\\',
      '# TYPE m_total counter',
      'm_total{a="1",} 7 1712345678000\r',
      '  m_total { a = "2" , b="x}y,z" }   8   -5  ',
      'm_nan NaN',
      'm_inf +Inf',
      'm_ninf -inf',
      'm_exp 1.5E+3',
      'm_dot .5',
      'weird:name_1 3',
      'm{__proto__="polluted"} 1',
      '# EOF',
    ].join('\n');
    const { samples, types } = parsePrometheusText(text);
    expect(types.get('m_total')).toBe('counter');
    expect(samples.map((s) => [s.name, { ...s.labels }, s.value, s.timestampMs])).toEqual([
      ['m_total', { a: '1' }, 7, 1712345678000],
      ['m_total', { a: '2', b: 'x}y,z' }, 8, -5],
      ['m_nan', {}, Number.NaN, undefined],
      ['m_inf', {}, Number.POSITIVE_INFINITY, undefined],
      ['m_ninf', {}, Number.NEGATIVE_INFINITY, undefined],
      ['m_exp', {}, 1500, undefined],
      ['m_dot', {}, 0.5, undefined],
      ['weird:name_1', {}, 3, undefined],
      ['m', { ['__proto__']: 'polluted' }, 1, undefined],
    ]);
    // A label named __proto__ is an ordinary key, not a prototype change.
    const proto = samples.at(-1)?.labels as Record<string, string>;
    expect(Object.hasOwn(proto, '__proto__')).toBe(true);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it.each([
    ['garbage words', 'hello world', 1, 'not a number'],
    ['a value that is hex', 'm 0x10', 1, 'not a number'],
    ['a value with an underscore', 'm 1_000', 1, 'not a number'],
    ['no value', 'ok', 1, 'has no value'],
    ['no value after labels', 'm{a="b"}', 1, 'has no value'],
    ['an unterminated label quote', 'm{a="b} 1', 1, 'no closing quote'],
    ['a quote cut by a backslash at the end', 'm{a="b\\', 1, 'no closing quote'],
    ['an unclosed label set', 'm{a="b"', 1, 'expected "," or "}"'],
    ['a label value without quotes', 'm{a=b} 1', 1, 'double quotes'],
    ['a label without =', 'm{a "b"} 1', 1, 'expected "="'],
    ['a label name starting with a digit', 'm{1a="b"} 1', 1, 'expected a label name'],
    ['an invalid escape', 'm{a="\\q"} 1', 1, 'invalid escape'],
    ['a repeated label', 'm{a="1",a="2"} 1', 1, 'appears twice'],
    ['a metric name starting with a digit', '9m 1', 1, 'expected a metric name'],
    ['a fractional timestamp', 'm 1 1.5', 1, 'not a timestamp'],
    ['text after the timestamp', 'm 1 2 3', 1, 'after the timestamp'],
    ['an unknown TYPE', '# TYPE m bogus', 1, 'expected counter, gauge'],
    ['a TYPE for a bad name', '# TYPE 9m counter', 1, 'not a metric name'],
    ['a bad line after good ones', 'a 1\nb 2\n\n# c\nd{x="y"} nope', 5, 'not a number'],
    ['a character glued to the name', 'm$ 1', 1, 'expected a blank or "{"'],
  ])('rejects %s with BACKEND_PROTOCOL and its line number', (_, text, line, fragment) => {
    expectClusterError(
      () => parsePrometheusText(text, 'http://w-1:9464/metrics'),
      'BACKEND_PROTOCOL',
      'http://w-1:9464/metrics',
      `line ${line},`,
      fragment,
    );
  });

  it('rejects a line over the length limit quickly, and keeps error messages short for huge tokens', () => {
    const huge = `m ${'9'.repeat(MAX_EXPOSITION_LINE_CHARS)}`;
    expectClusterError(
      () => parsePrometheusText(`ok 1\n${huge}`),
      'BACKEND_PROTOCOL',
      'line 2,',
      'characters long',
    );
    // Just under the limit, a long legal label value parses.
    const long = 'v'.repeat(500_000);
    expect(parsePrometheusText(`m{a="${long}"} 1`).samples[0]?.labels.a).toBe(long);
    // A long garbage token: the message quotes a bounded excerpt, not the megabyte.
    const err = expectClusterError(
      () => parsePrometheusText(`m ${'z'.repeat(500_000)}`),
      'BACKEND_PROTOCOL',
      'not a number',
    );
    expect(err.message.length).toBeLessThan(300);
    // Many short garbage lines: the first one is reported.
    expectClusterError(() => parsePrometheusText('{{{{\n'.repeat(100_000)), 'BACKEND_PROTOCOL', 'line 1,');
  });
});

describe('histogramQuantile', () => {
  it('interpolates linearly inside the bucket holding the rank, like histogram_quantile', () => {
    const b = new Map([
      [0.1, 10],
      [0.5, 60],
      [1, 100],
      [Number.POSITIVE_INFINITY, 100],
    ]);
    // rank 95 in (0.5, 1]: 0.5 + 0.5 × (95 − 60) / 40
    expect(histogramQuantile(0.95, b)).toBeCloseTo(0.9375, 12);
    // rank 5 in the first bucket, which starts at 0: 0.1 × 5 / 10
    expect(histogramQuantile(0.05, b)).toBeCloseTo(0.05, 12);
  });

  it('answers the highest finite bound when the rank is in +Inf, NaN without observations or +Inf', () => {
    expect(
      histogramQuantile(
        0.95,
        new Map([
          [1, 5],
          [Number.POSITIVE_INFINITY, 10],
        ]),
      ),
    ).toBe(1);
    expect(
      histogramQuantile(
        0.95,
        new Map([
          [1, 0],
          [Number.POSITIVE_INFINITY, 0],
        ]),
      ),
    ).toBeNaN();
    expect(histogramQuantile(0.95, new Map([[1, 5]]))).toBeNaN();
  });
});

// ---------------------------------------------------------------------------------------------------
// scrapeSource
// ---------------------------------------------------------------------------------------------------

/** A page as an ingress exports it: arrivals by priority and the broker-wide queue gauges. */
function ingressPage(o: {
  normal?: number;
  high?: number;
  depth: [number, number];
  oldestSec: number;
  start?: number;
}): string {
  return [
    ...(o.start !== undefined ? [`mcp_cluster_process_process_start_time_seconds ${o.start}`] : []),
    '# TYPE mcp_cluster_queue_enqueued_total counter',
    ...(o.normal !== undefined
      ? [`mcp_cluster_queue_enqueued_total{pool="inference",priority="normal"} ${o.normal}`]
      : []),
    ...(o.high !== undefined
      ? [`mcp_cluster_queue_enqueued_total{pool="inference",priority="high"} ${o.high}`]
      : []),
    '# TYPE mcp_cluster_queue_depth gauge',
    `mcp_cluster_queue_depth{pool="inference",priority="normal"} ${o.depth[0]}`,
    `mcp_cluster_queue_depth{pool="inference",priority="high"} ${o.depth[1]}`,
    `mcp_cluster_queue_oldest_age_seconds{pool="inference",priority="normal"} ${o.oldestSec}`,
    '',
  ].join('\n');
}

/** A page as an inference worker exports it (plus an idle embeddings pool, to check pools stay apart). */
function workerPage(o: {
  ok: number;
  retried?: number;
  toolError?: number;
  buckets: [number, number, number, number];
  sum: number;
  inFlight: number;
  draining?: number;
  start?: number;
  depth?: [number, number];
  /** Σ S² of generate_text, s² (absent: a worker that does not export it). */
  squares?: number;
  /** The queue-wait histogram's sum (s) and count. */
  queueWait?: [number, number];
}): string {
  const [b01, b05, b1, inf] = o.buckets;
  return [
    ...(o.start !== undefined ? [`mcp_cluster_process_process_start_time_seconds ${o.start}`] : []),
    `mcp_cluster_worker_calls_total{pool="inference",tool="generate_text",outcome="ok"} ${o.ok}`,
    ...(o.retried !== undefined
      ? [
          `mcp_cluster_worker_calls_total{pool="inference",tool="generate_text",outcome="retried"} ${o.retried}`,
        ]
      : []),
    ...(o.toolError !== undefined
      ? [
          `mcp_cluster_worker_calls_total{pool="inference",tool="summarize",outcome="tool_error"} ${o.toolError}`,
        ]
      : []),
    'mcp_cluster_worker_calls_total{pool="embeddings",tool="embed",outcome="ok"} 100',
    `mcp_cluster_backend_duration_seconds_bucket{le="0.1",pool="inference",tool="generate_text"} ${b01}`,
    `mcp_cluster_backend_duration_seconds_bucket{le="0.5",pool="inference",tool="generate_text"} ${b05}`,
    `mcp_cluster_backend_duration_seconds_bucket{le="1",pool="inference",tool="generate_text"} ${b1}`,
    `mcp_cluster_backend_duration_seconds_bucket{le="+Inf",pool="inference",tool="generate_text"} ${inf}`,
    `mcp_cluster_backend_duration_seconds_sum{pool="inference",tool="generate_text"} ${o.sum}`,
    `mcp_cluster_backend_duration_seconds_count{pool="inference",tool="generate_text"} ${inf}`,
    ...(o.squares !== undefined
      ? [
          `mcp_cluster_backend_duration_squared_seconds_total{pool="inference",tool="generate_text"} ${o.squares}`,
        ]
      : []),
    ...(o.queueWait
      ? [
          `mcp_cluster_queue_wait_seconds_sum{pool="inference"} ${o.queueWait[0]}`,
          `mcp_cluster_queue_wait_seconds_count{pool="inference"} ${o.queueWait[1]}`,
        ]
      : []),
    `mcp_cluster_worker_inflight_calls{pool="inference"} ${o.inFlight}`,
    'mcp_cluster_worker_inflight_calls{pool="embeddings"} 0',
    'mcp_cluster_worker_replicas{pool="inference",state="running"} 1',
    `mcp_cluster_worker_replicas{pool="inference",state="draining"} ${o.draining ?? 0}`,
    ...(o.depth
      ? [
          `mcp_cluster_queue_depth{pool="inference",priority="normal"} ${o.depth[0]}`,
          `mcp_cluster_queue_depth{pool="inference",priority="high"} ${o.depth[1]}`,
        ]
      : []),
    '',
  ].join('\n');
}

/** A clock the test moves by hand, so every rate is exact. */
function manualClock(startMs = 1000) {
  const clock = { now: startMs, read: () => clock.now };
  return clock;
}

describe('scrapeSource over real HTTP targets', () => {
  it('computes per-pool rates from counter increases and combines gauges across processes', async () => {
    const ingress = await startTarget(ingressPage({ normal: 10, high: 2, depth: [3, 1], oldestSec: 0.5 }));
    const worker = await startTarget(
      workerPage({
        ok: 8,
        retried: 1,
        buckets: [2, 6, 8, 8],
        sum: 3,
        squares: 1.5,
        queueWait: [1, 8],
        inFlight: 4,
        depth: [3, 1],
      }),
    );
    const clock = manualClock();
    const source = scrapeSource(() => [ingress.url, worker.url], { clock: clock.read });

    // First read: the baseline. Gauges are current, rates need a second reading.
    const first = await source.read();
    expect(first.get('inference')).toEqual({
      pool: 'inference',
      arrivalPerSec: 0,
      lowArrivalPerSec: 0,
      completedPerSec: 0,
      meanServiceMs: Number.NaN,
      p95ServiceMs: Number.NaN,
      serviceCs2: Number.NaN,
      meanQueueWaitMs: Number.NaN,
      inFlight: 4,
      // Both processes export the broker's figure (3 normal, 1 high): max per priority, then sum.
      queueDepth: 4,
      heldCalls: 0,
      lowQueueDepth: 0,
      lowInFlight: 0,
      oldestWaitMs: 500,
      replicas: 1,
      windowMs: 0,
    } satisfies PoolRates);

    // Two seconds later: +24 enqueued, +20 ok, +4 retried (not completions), +2 tool errors on a new
    // series (its whole value counts), +22 calls in the histogram, 4.4 s of backend time.
    ingress.text = ingressPage({ normal: 30, high: 6, depth: [5, 0], oldestSec: 1.25 });
    worker.text = workerPage({
      ok: 28,
      retried: 5,
      toolError: 2,
      buckets: [4, 16, 30, 30],
      sum: 7.4,
      // +1.1 s²: E[S²] = 0.05 s² against a mean of 0.2 s, so Var/mean² = 0.01 / 0.04.
      squares: 2.6,
      queueWait: [1.44, 30],
      inFlight: 6,
      draining: 1,
      depth: [5, 0],
    });
    clock.now += 2000;
    const second = await source.read();
    const inference = second.get('inference') as PoolRates;
    expect(inference.windowMs).toBe(2000);
    expect(inference.arrivalPerSec).toBeCloseTo(12, 12);
    expect(inference.completedPerSec).toBeCloseTo(11, 12);
    expect(inference.meanServiceMs).toBeCloseTo(200, 9);
    // Bucket increases 2, 10, 22, 22 (cumulative): rank 0.95 × 22 = 20.9 lies in (0.5, 1] s,
    // 0.5 + 0.5 × (20.9 − 10) / 12 = 0.9541666… s.
    expect(inference.p95ServiceMs).toBeCloseTo((0.5 + (0.5 * 10.9) / 12) * 1000, 9);
    expect(inference.serviceCs2).toBeCloseTo(0.25, 9);
    expect(inference.meanQueueWaitMs).toBeCloseTo(20, 9);
    expect(inference).toMatchObject({ inFlight: 6, queueDepth: 5, oldestWaitMs: 1250, replicas: 1 });
    // The embeddings pool had no arrivals and no finished calls: exactly zero, not a tiny number.
    const embeddings = second.get('embeddings') as PoolRates;
    expect(Object.is(embeddings.arrivalPerSec, 0)).toBe(true);
    expect(Object.is(embeddings.completedPerSec, 0)).toBe(true);
    expect(embeddings.meanServiceMs).toBeNaN();

    // Nothing changes for two more seconds: arrivals are exactly 0 and the service time unknown.
    clock.now += 2000;
    const idle = (await source.read()).get('inference') as PoolRates;
    expect(Object.is(idle.arrivalPerSec, 0)).toBe(true);
    expect(idle.completedPerSec).toBe(0);
    expect(idle.meanServiceMs).toBeNaN();
    expect(idle.p95ServiceMs).toBeNaN();
    expect(idle.serviceCs2).toBeNaN();
    expect(idle.meanQueueWaitMs).toBeNaN();
  });

  it('takes Cs² from the workers that export Σ S² only, so an older worker does not bias it', async () => {
    const page = (tool: string, count: number, sum: number, squares?: number) =>
      [
        `mcp_cluster_backend_duration_seconds_bucket{le="+Inf",pool="inference",tool="${tool}"} ${count}`,
        `mcp_cluster_backend_duration_seconds_sum{pool="inference",tool="${tool}"} ${sum}`,
        `mcp_cluster_backend_duration_seconds_count{pool="inference",tool="${tool}"} ${count}`,
        ...(squares === undefined
          ? []
          : [
              `mcp_cluster_backend_duration_squared_seconds_total{pool="inference",tool="${tool}"} ${squares}`,
            ]),
        '',
      ].join('\n');
    const a = await startTarget(page('generate_text', 0, 0, 0));
    const b = await startTarget(page('summarize', 0, 0));
    const clock = manualClock();
    const source = scrapeSource(() => [a.url, b.url], { clock: clock.read });
    await source.read();
    // Worker a: 5 calls of 0.05 s and 5 of 0.15 s: mean 0.1 s, E[S²] 0.0125 s², Cs² 0.25. Worker b,
    // an older version without the squares: 10 calls of 0.3 s on average, in the mean only.
    a.text = page('generate_text', 10, 1, 0.125);
    b.text = page('summarize', 10, 3);
    clock.now += 1000;
    const rates = (await source.read()).get('inference') as PoolRates;
    expect(rates.meanServiceMs).toBeCloseTo(200, 9);
    expect(rates.serviceCs2).toBeCloseTo(0.25, 9);
    // Without any worker that exports the squares, Cs² is unknown rather than 0.
    a.text = page('generate_text', 10, 1);
    a.text = a.text.replace(/^mcp_cluster_backend_duration_squared.*$/m, '');
    b.text = page('summarize', 20, 6);
    clock.now += 1000;
    const older = (await source.read()).get('inference') as PoolRates;
    expect(older.meanServiceMs).toBeCloseTo(300, 9);
    expect(older.serviceCs2).toBeNaN();
  });

  it('keeps low-priority (batch) arrivals, depth and in-flight apart from the interactive ones', async () => {
    // An ingress that enqueued a batch job's chunks at priority low beside interactive calls, and
    // exports the broker's queue figures per priority (two ingress replicas: the same figures twice).
    const page = (normal: number, low: number) =>
      [
        `mcp_cluster_queue_enqueued_total{pool="embeddings",priority="normal"} ${normal}`,
        `mcp_cluster_queue_enqueued_total{pool="embeddings",priority="low"} ${low}`,
        'mcp_cluster_queue_depth{pool="embeddings",priority="normal"} 2',
        'mcp_cluster_queue_depth{pool="embeddings",priority="low"} 900',
        'mcp_cluster_queue_inflight{pool="embeddings",priority="normal"} 3',
        'mcp_cluster_queue_inflight{pool="embeddings",priority="low"} 256',
        '',
      ].join('\n');
    const a = await startTarget(page(10, 0));
    const b = await startTarget(page(0, 0));
    const clock = manualClock();
    const source = scrapeSource(() => [a.url, b.url], { clock: clock.read });
    await source.read();
    // In 2 s: 8 interactive calls and a job of 1000 chunks on a, nothing on b.
    a.text = page(18, 1000);
    clock.now += 2000;
    const r = (await source.read()).get('embeddings') as PoolRates;
    expect(r.arrivalPerSec).toBeCloseTo(504, 9);
    expect(r.lowArrivalPerSec).toBeCloseTo(500, 9);
    expect(interactiveArrivalPerSec(r)).toBeCloseTo(4, 9);
    // Gauges are the broker's own figures: max across processes, never summed.
    expect(r).toMatchObject({ queueDepth: 902, lowQueueDepth: 900, lowInFlight: 256 });

    // Then only batch chunks arrive: the interactive rate is exactly 0, not a rounding residue.
    a.text = page(18, 1700);
    clock.now += 2000;
    const batchOnly = (await source.read()).get('embeddings') as PoolRates;
    expect(batchOnly.lowArrivalPerSec).toBeCloseTo(350, 9);
    expect(Object.is(interactiveArrivalPerSec(batchOnly), 0)).toBe(true);
  });

  it('adds the calls held at the ingresses (summed over replicas and tenants) to the interactive depth', async () => {
    // Two ingress replicas under a flood: the broker queue holds only the fair-queue size (the same
    // broker-wide figure on both), while each replica holds its own share of the backlog per tenant.
    const page = (held: Record<string, number>) =>
      [
        'mcp_cluster_queue_depth{pool="inference",priority="normal"} 4',
        'mcp_cluster_queue_depth{pool="inference",priority="low"} 10',
        '# TYPE mcp_cluster_tenant_held_calls gauge',
        ...Object.entries(held).map(
          ([tenant, calls]) => `mcp_cluster_tenant_held_calls{pool="inference",tenant="${tenant}"} ${calls}`,
        ),
        '',
      ].join('\n');
    const a = await startTarget(page({ acme: 30, other: 2 }));
    const b = await startTarget(page({ acme: 25, default: 0 }));
    // A worker exports no held calls; its idle embeddings pool stays at 0.
    const worker = await startTarget(workerPage({ ok: 0, buckets: [0, 0, 0, 0], sum: 0, inFlight: 1 }));
    const source = scrapeSource(() => [a.url, b.url, worker.url]);
    const rates = await source.read();
    expect(rates.get('inference')).toMatchObject({
      // Broker: max per priority (4 normal + 10 low); held: 30 + 2 + 25 + 0, never a max.
      queueDepth: 4 + 10 + 57,
      heldCalls: 57,
      // Batch chunks are never held: the low part is the broker's alone.
      lowQueueDepth: 10,
    });
    expect(rates.get('embeddings')).toMatchObject({ queueDepth: 0, heldCalls: 0 });

    // The flood drains: held calls are a gauge, read as they are now.
    a.text = page({ acme: 0 });
    b.text = page({});
    expect((await source.read()).get('inference')).toMatchObject({ queueDepth: 14, heldCalls: 0 });
  });

  it('counts the new value of a restarted process as its increase (counter went down, or new start time)', async () => {
    const ingress = await startTarget(ingressPage({ normal: 30, high: 6, depth: [0, 0], oldestSec: 0 }));
    const worker = await startTarget(
      workerPage({ ok: 28, buckets: [4, 16, 30, 30], sum: 7.4, inFlight: 0, start: 1000 }),
    );
    const clock = manualClock();
    const source = scrapeSource(() => [ingress.url, worker.url], { clock: clock.read });
    await source.read();

    // The ingress restarted: its counters start again from 0 (3 normal, high not yet seen).
    ingress.text = ingressPage({ normal: 3, depth: [0, 0], oldestSec: 0 });
    // The worker restarted too (new start time), and already finished more calls than before:
    // without the start time this would look like +12, with it the whole 40 counts.
    worker.text = workerPage({ ok: 40, buckets: [10, 10, 10, 10], sum: 1, inFlight: 0, start: 2000 });
    clock.now += 2000;
    const r = (await source.read()).get('inference') as PoolRates;
    expect(r.arrivalPerSec).toBeCloseTo(1.5, 12);
    expect(r.completedPerSec).toBeCloseTo(20, 12);
    expect(r.meanServiceMs).toBeCloseTo(100, 9);
    // All 10 calls in the first bucket (0, 0.1] s: rank 9.5 → 0.1 × 9.5 / 10.
    expect(r.p95ServiceMs).toBeCloseTo(95, 9);
  });

  it('skips a dead target (logged once), fails only when every target is dead, and catches up when it returns', async () => {
    const ingress = await startTarget(ingressPage({ normal: 0, depth: [0, 0], oldestSec: 0 }));
    const worker = await startTarget(workerPage({ ok: 0, buckets: [0, 0, 0, 0], sum: 0, inFlight: 2 }));
    const clock = manualClock();
    const logger = recordingLogger();
    const source = scrapeSource(() => [ingress.url, worker.url], {
      clock: clock.read,
      logger,
      timeoutMs: 2000,
    });
    await source.read();

    // The worker dies (connection refused); the ingress keeps counting arrivals.
    await worker.close();
    ingress.text = ingressPage({ normal: 10, depth: [0, 0], oldestSec: 0 });
    clock.now += 2000;
    const without = (await source.read()).get('inference') as PoolRates;
    expect(without.arrivalPerSec).toBeCloseTo(5, 12);
    expect(without.inFlight).toBe(0);
    expect(without.replicas).toBe(0);
    clock.now += 2000;
    await source.read();
    const warnings = logger.lines.filter((l) => l.level === 'warn');
    expect(warnings).toHaveLength(1);
    expect(JSON.stringify(warnings[0]?.fields)).toContain(worker.url);

    // Everything dead: the read fails, naming both targets, rather than reporting an idle cluster.
    await ingress.close();
    clock.now += 2000;
    await expectRejects(source.read(), 'BACKEND_UNAVAILABLE', ingress.url, worker.url, 'connection refused');

    // The worker comes back having finished 20 calls since its last good page, 8 s ago.
    worker.text = workerPage({ ok: 20, buckets: [20, 20, 20, 20], sum: 1, inFlight: 0 });
    await worker.reopen();
    clock.now += 2000;
    const back = (await source.read()).get('inference') as PoolRates;
    expect(back.completedPerSec).toBeCloseTo(20 / 8, 12);
    expect(back.meanServiceMs).toBeCloseTo(50, 9);
    expect(
      logger.lines.some((l) => l.level === 'info' && JSON.stringify(l.fields).includes(worker.url)),
    ).toBe(true);
  });

  it('counts the whole value of a target first seen after the first read, unless it started before that read', async () => {
    const ingress = await startTarget(ingressPage({ normal: 0, depth: [0, 0], oldestSec: 0 }));
    // A new worker: started now, 7 calls done.
    const fresh = await startTarget(
      workerPage({
        ok: 7,
        buckets: [7, 7, 7, 7],
        sum: 0.35,
        inFlight: 0,
        start: Math.floor(Date.now() / 1000) + 5,
      }),
    );
    // An old worker that was not in the list before (start time in 1970): its counters predate the
    // window, so it only sets its baseline.
    const old = await startTarget(
      workerPage({ ok: 500, buckets: [500, 500, 500, 500], sum: 50, inFlight: 0, start: 1 }),
    );
    const clock = manualClock();
    const targets = [ingress.url];
    const source = scrapeSource(() => targets, { clock: clock.read });
    await source.read();

    targets.push(fresh.url, old.url);
    clock.now += 1000;
    const r = (await source.read()).get('inference') as PoolRates;
    expect(r.completedPerSec).toBeCloseTo(7, 12);
    expect(r.meanServiceMs).toBeCloseTo(50, 9);

    // From now on the old worker's increases count like any other.
    old.text = workerPage({ ok: 510, buckets: [510, 510, 510, 510], sum: 51, inFlight: 0, start: 1 });
    clock.now += 1000;
    const next = (await source.read()).get('inference') as PoolRates;
    expect(next.completedPerSec).toBeCloseTo(10, 12);
    expect(next.meanServiceMs).toBeCloseTo(100, 9);
  });

  it('with failOnUnreachable, fails naming the target; hostile targets give clear errors', async () => {
    const good = await startTarget(ingressPage({ normal: 1, depth: [0, 0], oldestSec: 0 }));
    const dead = await startTarget('');
    await dead.close();
    await expectRejects(
      scrapeSource(() => [good.url, dead.url], { failOnUnreachable: true }).read(),
      'BACKEND_UNAVAILABLE',
      `cannot read ${dead.url}`,
    );

    const failing = await startTarget('oops');
    failing.status = 503;
    await expectRejects(
      scrapeSource(() => [failing.url], { failOnUnreachable: true }).read(),
      'BACKEND_UNAVAILABLE',
      failing.url,
      'HTTP 503',
    );

    const garbage = await startTarget('<html>\n<body>not metrics</body>\n</html>\n');
    await expectRejects(
      scrapeSource(() => [garbage.url], { failOnUnreachable: true }).read(),
      'BACKEND_PROTOCOL',
      garbage.url,
      'line 1,',
    );

    const big = await startTarget(`# ${'x'.repeat(5000)}\n`);
    await expectRejects(
      scrapeSource(() => [big.url], { failOnUnreachable: true, maxBodyBytes: 1000 }).read(),
      'BACKEND_PROTOCOL',
      big.url,
      'more than 1000 bytes',
    );

    // Answers headers, then never finishes the body.
    const slow = await startServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('m 1\n');
    }, '/metrics');
    await expectRejects(
      scrapeSource(() => [slow.url], { failOnUnreachable: true, timeoutMs: 300 }).read(),
      'BACKEND_UNAVAILABLE',
      slow.url,
      'no answer within 300 ms',
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// prometheusSource against a small server that answers like Prometheus's HTTP API
// ---------------------------------------------------------------------------------------------------

/** The PromQL we expect for a 60 s window, written out by hand. */
const EXPECTED_PROMQL = [
  'sum by (pool) (rate(mcp_cluster_queue_enqueued_total{priority!="low"}[60s]))',
  'sum by (pool) (rate(mcp_cluster_worker_calls_total{outcome!="retried"}[60s]))',
  'sum by (pool) (increase(mcp_cluster_backend_duration_seconds_sum[60s]))',
  'sum by (pool) (increase(mcp_cluster_backend_duration_seconds_count[60s]))',
  'histogram_quantile(0.95, sum by (pool, le) (rate(mcp_cluster_backend_duration_seconds_bucket[60s])))',
  'sum by (pool) (mcp_cluster_worker_inflight_calls)',
  'sum by (pool) (max by (pool, priority) (mcp_cluster_queue_depth))',
  'max by (pool) (mcp_cluster_queue_oldest_age_seconds)',
  'sum by (pool) (mcp_cluster_worker_replicas{state="running"})',
  'sum by (pool) (rate(mcp_cluster_queue_enqueued_total{priority="low"}[60s]))',
  'max by (pool) (mcp_cluster_queue_depth{priority="low"})',
  'max by (pool) (mcp_cluster_queue_inflight{priority="low"})',
  'sum by (pool) (mcp_cluster_tenant_held_calls)',
  'sum by (pool) (increase(mcp_cluster_backend_duration_squared_seconds_total[60s]))',
  'sum by (pool) (increase(mcp_cluster_backend_duration_seconds_count[60s]) and increase(mcp_cluster_backend_duration_squared_seconds_total[60s]))',
  'sum by (pool) (increase(mcp_cluster_backend_duration_seconds_sum[60s]) and increase(mcp_cluster_backend_duration_squared_seconds_total[60s]))',
  'sum by (pool) (increase(mcp_cluster_queue_wait_seconds_sum[60s]))',
  'sum by (pool) (increase(mcp_cluster_queue_wait_seconds_count[60s]))',
];

type Vector = { metric: Record<string, string>; value: [number, string] }[];

/**
 * Answers `GET /api/v1/query` the way Prometheus does: `{"status":"success","data":{"resultType":
 * "vector","result":[...]}}` for a known query, `400 bad_data` for any other; `override` replaces the
 * whole answer.
 */
async function startPrometheus(
  vectors: Record<string, Vector>,
  override?: { status: number; body: string },
): Promise<TestServer & { queries: string[] }> {
  const queries: string[] = [];
  const server = await startServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (req.method !== 'GET' || url.pathname !== '/api/v1/query') {
      res.writeHead(404).end('404 page not found');
      return;
    }
    const query = url.searchParams.get('query') ?? '';
    queries.push(query);
    if (override) {
      res.writeHead(override.status, { 'content-type': 'application/json' }).end(override.body);
      return;
    }
    const result = vectors[query];
    if (!result) {
      res
        .writeHead(400, { 'content-type': 'application/json' })
        .end(JSON.stringify({ status: 'error', errorType: 'bad_data', error: `unexpected query ${query}` }));
      return;
    }
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ status: 'success', data: { resultType: 'vector', result } }));
  });
  return Object.assign(server, { queries });
}

const T = 1_712_345_678.123;
const v = (pairs: [string | undefined, string][]): Vector =>
  pairs.map(([pool, value]) => ({
    metric: pool === undefined ? ({} as Record<string, string>) : { pool },
    value: [T, value],
  }));

describe('prometheusSource', () => {
  it('sends the expected PromQL and turns the vectors into pool rates', async () => {
    const [
      arrivals,
      completions,
      sum,
      count,
      p95,
      inFlight,
      depth,
      oldest,
      replicas,
      lowArrivals,
      lowDepth,
      lowInFlight,
      held,
      squares,
      squaresCount,
      squaresSum,
      queueWaitSum,
      queueWaitCount,
    ] = EXPECTED_PROMQL as [
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
    ];
    const prom = await startPrometheus({
      [arrivals]: v([
        ['inference', '12.5'],
        ['embeddings', '0'],
        [undefined, '99'],
      ]),
      [completions]: v([
        ['inference', '12'],
        ['embeddings', '0'],
      ]),
      [sum]: v([
        ['inference', '36'],
        ['embeddings', '0'],
      ]),
      [count]: v([
        ['inference', '720'],
        ['embeddings', '0'],
      ]),
      [p95]: v([
        ['inference', '0.12'],
        ['embeddings', 'NaN'],
      ]),
      [inFlight]: v([['inference', '3']]),
      [depth]: v([['inference', '7']]),
      [oldest]: v([['inference', '0.25']]),
      [replicas]: v([
        ['inference', '2'],
        ['embeddings', '1'],
      ]),
      // A batch job on embeddings: its chunks arrived, 5 wait and 2 run; no interactive arrival.
      [lowArrivals]: v([
        ['inference', '0'],
        ['embeddings', '0.1'],
      ]),
      [lowDepth]: v([['embeddings', '5']]),
      [lowInFlight]: v([['embeddings', '2']]),
      // Fair queueing holds 9 inference calls at the ingresses (summed over replicas and tenants),
      // and 4 calls of a pool whose broker queue is empty (no depth series at all).
      [held]: v([
        ['inference', '9'],
        ['diffusion', '4'],
      ]),
      // 700 of the 720 calls come from workers that export Σ S²; their mean is 50 ms, E[S²] 0.003 s².
      [squaresCount]: v([['inference', '700']]),
      [squaresSum]: v([['inference', '35']]),
      [squares]: v([['inference', '2.1']]),
      [queueWaitSum]: v([['inference', '7.2']]),
      [queueWaitCount]: v([['inference', '720']]),
    });
    const rates = await prometheusSource(`${prom.url}/`, 60_000).read();
    expect([...prom.queries].sort()).toEqual([...EXPECTED_PROMQL].sort());
    expect(rates.get('inference')).toEqual({
      pool: 'inference',
      arrivalPerSec: 12.5,
      lowArrivalPerSec: 0,
      completedPerSec: 12,
      meanServiceMs: 50,
      p95ServiceMs: 120,
      serviceCs2: expect.closeTo(0.2, 9),
      meanQueueWaitMs: 10,
      inFlight: 3,
      // 7 in the broker queue and 9 held at the ingresses: demand waiting either way.
      queueDepth: 16,
      heldCalls: 9,
      lowQueueDepth: 0,
      lowInFlight: 0,
      oldestWaitMs: 250,
      replicas: 2,
      windowMs: 60_000,
    } satisfies PoolRates);
    const embeddings = rates.get('embeddings') as PoolRates;
    expect(embeddings).toMatchObject({
      arrivalPerSec: 0.1,
      lowArrivalPerSec: 0.1,
      lowQueueDepth: 5,
      lowInFlight: 2,
    });
    // Only batch calls arrived: the interactive rate is exactly 0, the law's idle test.
    expect(Object.is(interactiveArrivalPerSec(embeddings), 0)).toBe(true);
    expect(interactiveArrivalPerSec(rates.get('inference') as PoolRates)).toBe(12.5);
    expect(embeddings.meanServiceMs).toBeNaN();
    expect(embeddings.p95ServiceMs).toBeNaN();
    expect(embeddings).toMatchObject({ queueDepth: 0, heldCalls: 0 });
    expect(rates.get('diffusion')).toMatchObject({ queueDepth: 4, heldCalls: 4, lowQueueDepth: 0 });
    expect([...rates.keys()]).toEqual(['diffusion', 'embeddings', 'inference']);
  });

  it.each([
    [
      'a query Prometheus rejects (400 bad_data)',
      { status: 400, body: '{"status":"error","errorType":"bad_data","error":"parse error at char 5"}' },
      'BACKEND_PROTOCOL',
      ['bad_data', 'parse error at char 5'],
    ],
    [
      'Prometheus overloaded (503 unavailable)',
      { status: 503, body: '{"status":"error","errorType":"unavailable","error":"too many queries"}' },
      'BACKEND_UNAVAILABLE',
      ['unavailable', 'too many queries'],
    ],
    [
      'a proxy error page',
      { status: 502, body: '<html>Bad Gateway</html>' },
      'BACKEND_UNAVAILABLE',
      ['HTTP 502'],
    ],
    [
      'a 200 that is not JSON',
      { status: 200, body: '<html>Grafana</html>' },
      'BACKEND_PROTOCOL',
      ['not JSON'],
    ],
    [
      'a matrix instead of a vector',
      { status: 200, body: '{"status":"success","data":{"resultType":"matrix","result":[]}}' },
      'BACKEND_PROTOCOL',
      ['resultType'],
    ],
    [
      'a sample whose value is not a string number',
      {
        status: 200,
        body: '{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pool":"p"},"value":[1,5]}]}}',
      },
      'BACKEND_PROTOCOL',
      ['expected {"metric"'],
    ],
    [
      'a sample whose value is junk',
      {
        status: 200,
        body: '{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pool":"p"},"value":[1,"12abc"]}]}}',
      },
      'BACKEND_PROTOCOL',
      ['12abc'],
    ],
    ['a JSON null', { status: 200, body: 'null' }, 'BACKEND_PROTOCOL', ['expected {"status":"success"']],
  ])('turns %s into a clear ClusterError', async (_, override, code, mentions) => {
    const prom = await startPrometheus({}, override);
    await expectRejects(
      prometheusSource(prom.url, 60_000).read(),
      code,
      `${prom.url}/api/v1/query`,
      ...mentions,
    );
  });

  it('names the URL when Prometheus cannot be reached, and rejects bad arguments at once', async () => {
    const prom = await startPrometheus({});
    await prom.close();
    await expectRejects(
      prometheusSource(prom.url, 60_000).read(),
      'BACKEND_UNAVAILABLE',
      prom.url,
      'connection refused',
    );
    expectClusterError(() => prometheusSource('prometheus:9090', 60_000), 'INVALID_CONFIG', 'http://');
    expectClusterError(() => prometheusSource('http://p:9090', 10), 'INVALID_CONFIG', 'at least 1s');
    expectClusterError(() => prometheusSource('http://p:9090', Number.NaN), 'INVALID_CONFIG');
  });
});
