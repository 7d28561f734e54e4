import { mkdtempSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { Counter, Histogram } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBroker } from '../services/cli/index.js';
import {
  type Broker,
  ClusterError,
  createLogger,
  inProcessDelivery,
  type JobStore,
  openMemoryJobStore,
  type ResolvedConfig,
} from '../services/core/index.js';
import {
  createApiKey,
  type Ingress,
  keysFileEntry,
  quantileMs,
  type StatusSnapshot,
  startIngress,
  TOOL_WINDOW_MS,
  ToolWindow,
} from '../services/ingress/index.js';
import { batchJobDelivery, createBatchJobs } from '../services/jobs/index.js';
import { embedAdapter } from '../workers/embeddings/index.js';
import { inferenceAdapters } from '../workers/inference/index.js';
import { startWorker, type Worker } from '../workers/runtime/index.js';
import { type SimBackend, startSimBackend } from '../workers/sim/index.js';
import { launchChromium } from './support/browser.js';
import { resolveConfig } from './support/families.js';
import { connectClient, type TestClient } from './support/mcp-clients.js';
import { removeTempDir, trackTempDir } from './support/process-guard.js';
import { startUp } from './support/processes.js';
import { waitFor } from './support/wait.js';

// The ingress's live status page, in headless Chromium: an embedded cluster (memory queue, a
// simulated backend, a worker for each pool but `parked`, whose calls wait) in this process, auth
// mode none. The page must show the calls made, a waiting tenant, a batch job's progress, and
// follow new calls without a reload.
describe('status page (auth none, in Chromium)', () => {
  let sim: SimBackend;
  let broker: Broker;
  let ingress: Ingress;
  let workers: Worker[] = [];
  let browser: Browser;
  let client: TestClient;
  let store: JobStore;
  let jobs: ReturnType<typeof createBatchJobs>;
  let base = '';

  beforeAll(async () => {
    sim = await startSimBackend({ ttftMs: 2, tokensPerSecond: 2000 });
    const config: ResolvedConfig = resolveConfig(
      `
cluster: { namespace: status-page-test }
ingress: { port: 0, statusPage: { refreshInterval: 300ms } }
batch: { chunkSize: 2 }
pools:
  inference: { backend: openai-chat, endpoints: [{ url: "${sim.url}", maxConcurrency: 4 }] }
  embeddings: { backend: openai-embeddings, endpoints: [{ url: "${sim.url}", maxConcurrency: 4 }] }
  parked: { backend: openai-embeddings, endpoints: [{ url: "${sim.url}" }] }
tools:
  - { name: generate_text, template: generate_text, pool: inference, model: sim-llm }
  - { name: embed, template: embed, pool: embeddings, model: sim-embed, cache: { enabled: false } }
  - { name: embed_parked, template: embed, pool: parked, model: sim-embed, cache: { enabled: false } }
`,
      {},
    );
    const pools = ['inference', 'embeddings', 'parked'];
    broker = await openBroker({ url: 'memory:', namespace: 'status-page-test', pools });
    store = openMemoryJobStore();
    jobs = createBatchJobs({ store, queue: broker.queue, config });
    const delivery = batchJobDelivery(inProcessDelivery(), store, createLogger('batch'));
    ingress = await startIngress(config, broker, delivery, { jobs });
    const adapters = { ...inferenceAdapters, embed: embedAdapter };
    workers = await Promise.all(
      ['inference', 'embeddings'].map((pool) =>
        startWorker({ config, pool, broker, adapters, delivery, workerId: `w-${pool}`, serveHttp: false }),
      ),
    );
    base = ingress.url.replace(/\/mcp$/, '');
    client = await connectClient('v2', ingress.url);
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    await client?.close();
    await ingress?.shutdown();
    await Promise.all(workers.map((w) => w.shutdown()));
    await jobs?.close();
    await store?.close();
    await broker?.close();
    await sim?.close();
  });

  it('shows the calls made, the pools and the workers, and follows new calls without a reload', async () => {
    // The metrics registry is the process's: count from what earlier suites in this process left.
    const before = await callsOf('generate_text');
    const first = await client.callTool('generate_text', { prompt: 'status page', max_tokens: 8 });
    expect(first.isError).toBeFalsy();

    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    let loads = 0;
    page.on('load', () => {
      loads += 1;
    });
    await page.goto(`${base}/status`);
    const cell = '#tools tr[data-tool="generate_text"] td.calls';
    await page.waitForFunction(
      ([selector, n]) => document.querySelector(selector as string)?.textContent === String(n),
      [cell, before + 1] as const,
      { timeout: 15_000 },
    );
    // What the page shows of the cluster: every pool's queue by priority, every worker (here those of
    // this process, through the roles ledger like any other) and their backends.
    expect(await page.locator('#pools tr[data-pool="inference"][data-priority="normal"]').count()).toBe(1);
    expect(await page.locator('#pools tr[data-pool="embeddings"][data-priority="low"]').count()).toBe(1);
    const inferenceWorker = page.locator('#workers tr[data-worker="w-inference"]');
    expect(await inferenceWorker.textContent()).toContain('running');
    expect(await inferenceWorker.getAttribute('data-pool')).toBe('inference');
    expect(await page.locator('#backends tbody tr[data-worker]').count()).toBe(2);
    // Healthy and its breaker closed: both cells marked ok.
    expect(await page.locator('#backends tr[data-worker="w-embeddings"] td.ok').count()).toBe(2);
    // A marker on this document: it survives only if the page updates in place.
    await page.evaluate(() => {
      (window as unknown as { statusMarker: string }).statusMarker = 'same document';
    });

    const second = await client.callTool('generate_text', { prompt: 'status page again', max_tokens: 8 });
    expect(second.isError).toBeFalsy();
    await page.waitForFunction(
      ([selector, n]) => document.querySelector(selector as string)?.textContent === String(n),
      [cell, before + 2] as const,
      { timeout: 15_000 },
    );
    expect(await page.evaluate(() => (window as unknown as { statusMarker?: string }).statusMarker)).toBe(
      'same document',
    );
    expect(loads).toBe(1);
    expect(errors).toEqual([]);
    await page.close();
  });

  it("shows a tenant's waiting call, its pool's queue and a batch job's progress", async () => {
    // `parked` has no worker: the call waits in its queue until it is cancelled below.
    const acme = await connectClient('v2', ingress.url, { headers: { 'mcp-cluster-tenant': 'acme' } });
    const waiting = new AbortController();
    const parked = acme
      .callTool('embed_parked', { texts: ['waits'] }, { signal: waiting.signal })
      .catch(() => undefined);
    const items = ['a', 'b', 'c', 'd', 'e'].map((text, i) => ({ id: `item-${i}`, text }));
    const job = await jobs.submit({ tenant: 'globex', principal: 'test' }, { items });
    await waitFor(
      'the batch job to complete',
      async () => (await jobs.get({ tenant: 'globex', principal: 'test' }, job.id)).status === 'completed',
    );

    const page = await browser.newPage();
    try {
      await page.goto(`${base}/status`);
      await page.waitForFunction(
        () =>
          document.querySelector('#pools tr[data-pool="parked"][data-priority="normal"] td.depth')
            ?.textContent === '1',
        undefined,
        { timeout: 15_000 },
      );
      await page.waitForSelector('#tenants tr[data-tenant="acme"]', { timeout: 15_000 });
      expect(await page.locator('#tenants tr[data-tenant="acme"] td').nth(1).textContent()).toBe('parked');
      const jobRow = page.locator(`#jobs tr[data-job="${job.id}"]`);
      await jobRow.waitFor({ timeout: 15_000 });
      const jobText = (await jobRow.textContent()) ?? '';
      expect(jobText).toContain('globex');
      expect(jobText).toContain('completed');
      expect(jobText).toContain('5 / 5');
      expect(await jobRow.locator('progress').evaluate((bar) => (bar as HTMLProgressElement).value)).toBe(5);
    } finally {
      await page.close();
      waiting.abort();
      await parked;
      await acme.close();
    }
  });

  it('answers bad requests with 4xx and a message, never 5xx', async () => {
    const bad: [string, RequestInit, number][] = [
      ['/status/data?tenants=abc', {}, 400],
      ['/status/data?tenants=101', {}, 400],
      ['/status/data?tenants=-1', {}, 400],
      ['/status/data?jobs=1e2', {}, 400],
      ['/status/data?jobs=', {}, 400],
      ['/status/data?tenants=1&tenants=2', {}, 400],
      ['/status/data?verbose=1', {}, 400],
      [`/status/data?${'x'.repeat(4000)}=1`, {}, 400],
      ['/status/data?tenants=%ZZ', {}, 400],
      ['/status/data', { method: 'POST', body: '{}' }, 405],
      ['/status', { method: 'DELETE' }, 405],
      ['/status/nothing-here', {}, 404],
    ];
    for (const [path, init, status] of bad) {
      const res = await fetch(`${base}${path}`, init);
      expect([path, res.status]).toEqual([path, status]);
      const body = (await res.json()) as { error?: string };
      expect(body.error?.length).toBeGreaterThan(0);
    }
    // A name that resolves here by a rebinding attack reads nothing (fetch cannot set Host).
    const rebound = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(`${base}/status/data`, { headers: { host: 'evil.example' } }, (res) => {
        let body = '';
        res.on('data', (part: Buffer) => {
          body += part.toString();
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
    expect(rebound.status).toBe(403);
    expect(rebound.body).toContain('ingress.allowedHosts');

    const none = await fetch(`${base}/status/data?tenants=0&jobs=0`);
    expect(none.status).toBe(200);
    const snapshot = (await none.json()) as StatusSnapshot;
    expect(snapshot.tenants).toEqual([]);
    expect(snapshot.pools.map((p) => p.pool)).toEqual(['inference', 'embeddings', 'parked']);
  });

  /** The count of answered calls of `tool` that /status/data reports now. */
  async function callsOf(tool: string): Promise<number> {
    const res = await fetch(`${base}/status/data`);
    const snapshot = (await res.json()) as StatusSnapshot;
    return snapshot.tools.find((t) => t.tool === tool)?.calls ?? 0;
  }
});

// With auth on, the figures need the status scope (here a configured one); the page's HTML, script
// and style carry no figures and are served to anyone.
describe('status page authentication (api-keys)', () => {
  let broker: Broker;
  let ingress: Ingress;
  let dir = '';
  let base = '';
  const admin = createApiKey({ tenant: 'ops', scopes: ['mcp', 'ops:status'] });
  const caller = createApiKey({ tenant: 'acme', scopes: ['mcp'] });
  const noBaseScope = createApiKey({ tenant: 'ops', scopes: ['ops:status'] });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mcp-cluster-status-'));
    trackTempDir(dir);
    const keysFile = join(dir, 'keys.yaml');
    writeFileSync(
      keysFile,
      `keys:\n${[admin, caller, noBaseScope].map((k) => keysFileEntry(k.entry)).join('\n')}\n`,
    );
    const config = resolveConfig(
      `
cluster: { namespace: status-auth-test }
ingress: { port: 0, statusPage: { scope: "ops:status" } }
auth: { mode: api-keys, requiredScopes: [mcp], apiKeys: { file: "${keysFile}" } }
pools:
  embeddings: { backend: openai-embeddings, endpoints: [{ url: "http://127.0.0.1:9" }] }
`,
      {},
    );
    broker = await openBroker({ url: 'memory:', namespace: 'status-auth-test', pools: ['embeddings'] });
    ingress = await startIngress(config, broker, inProcessDelivery());
    base = ingress.url.replace(/\/mcp$/, '');
  });

  afterAll(async () => {
    await ingress?.shutdown();
    await broker?.close();
    if (dir) removeTempDir(dir);
  });

  it('answers 401 without a credential, 403 without the status scope, the figures with it', async () => {
    const anonymous = await fetch(`${base}/status/data`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('www-authenticate')).toMatch(/^Bearer /);

    const wrongKey = await fetch(`${base}/status/data`, { headers: { authorization: 'Bearer mcpk_nope' } });
    expect(wrongKey.status).toBe(401);

    const plain = await fetch(`${base}/status/data`, { headers: { authorization: `Bearer ${caller.key}` } });
    expect(plain.status).toBe(403);
    const challenge = plain.headers.get('www-authenticate') ?? '';
    expect(challenge).toContain('error="insufficient_scope"');
    expect(challenge).toContain('ops:status');

    // The scopes every request needs still apply.
    const partial = await fetch(`${base}/status/data`, { headers: { 'x-api-key': noBaseScope.key } });
    expect(partial.status).toBe(403);

    const ok = await fetch(`${base}/status/data`, { headers: { authorization: `Bearer ${admin.key}` } });
    expect(ok.status).toBe(200);
    const snapshot = (await ok.json()) as StatusSnapshot;
    expect(snapshot.pools.map((p) => p.pool)).toEqual(['embeddings']);
    expect(snapshot.tools.map((t) => t.tool)).toContain('embed');

    // Bad input is refused before the credential is looked at: a 400 costs no key check.
    const bad = await fetch(`${base}/status/data?tenants=many`);
    expect(bad.status).toBe(400);
  });

  it('serves the page shell to anyone, with no figures in it', async () => {
    for (const path of ['/status', '/status/page.js', '/status/page.css']) {
      const res = await fetch(`${base}${path}`);
      expect([path, res.status]).toEqual([path, 200]);
      expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
      const text = await res.text();
      expect(text).not.toContain('embeddings');
    }
  });
});

describe('status page settings', () => {
  it('refuses a refresh interval under 250 ms, naming the setting', () => {
    expect(() => resolveConfig('ingress: { statusPage: { refreshInterval: 100ms } }', {})).toThrow(
      /ingress\.statusPage\.refreshInterval: 100ms is too short/,
    );
  });

  it('serves no status page when it is turned off', async () => {
    const config = resolveConfig(
      'cluster: { namespace: status-off-test }\ningress: { port: 0, statusPage: { enabled: false } }',
      {},
    );
    const broker = await openBroker({
      url: 'memory:',
      namespace: 'status-off-test',
      pools: Object.keys(config.pools),
    });
    const ingress = await startIngress(config, broker, inProcessDelivery());
    try {
      const base = ingress.url.replace(/\/mcp$/, '');
      expect((await fetch(`${base}/status`)).status).toBe(404);
      expect((await fetch(`${base}/status/data`)).status).toBe(404);
    } finally {
      await ingress.shutdown();
      await broker.close();
    }
  });
});

// The roles ledger unreadable (a broker that lost its ledger bucket, or an outage of the ledger
// alone): the page says so where the workers, backends and autoscaler would be, and the rest of it
// still shows.
describe('status page without the roles ledger (in Chromium)', () => {
  it('says the workers, backends and autoscaler are unavailable, answering 200', async () => {
    const config = resolveConfig('cluster: { namespace: status-noroles-test }\ningress: { port: 0 }', {});
    const broker = await openBroker({
      url: 'memory:',
      namespace: 'status-noroles-test',
      pools: Object.keys(config.pools),
    });
    const reads: string[] = [];
    const failing: Broker = {
      ...broker,
      roles: {
        publish: (replica, value, ttlMs) => broker.roles.publish(replica, value, ttlMs),
        withdraw: (replica) => broker.roles.withdraw(replica),
        close: () => broker.roles.close(),
        read: async () => {
          reads.push('read');
          throw new ClusterError('QUEUE_UNAVAILABLE', 'roles bucket unreachable');
        },
      },
    };
    const ingress = await startIngress(config, failing, inProcessDelivery());
    const browser = await launchChromium();
    try {
      const base = ingress.url.replace(/\/mcp$/, '');
      const res = await fetch(`${base}/status/data`);
      expect(res.status).toBe(200);
      const snapshot = (await res.json()) as StatusSnapshot;
      expect(reads.length).toBeGreaterThan(0);
      expect([snapshot.workers, snapshot.backends, snapshot.autoscaler]).toEqual([null, null, null]);
      expect(snapshot.problems.join(' ')).toContain('roles bucket unreachable');
      // Still there: the queues of every pool.
      expect(snapshot.pools.map((p) => p.priorities !== null)).toEqual(snapshot.pools.map(() => true));

      const page = await browser.newPage();
      await page.goto(`${base}/status`);
      await page.waitForFunction(
        () => document.querySelector('#workers td.empty')?.textContent === 'figures unavailable',
        undefined,
        { timeout: 15_000 },
      );
      expect(await page.locator('#backends td.empty').textContent()).toBe('figures unavailable');
      expect(await page.locator('#autoscaler td.empty').textContent()).toBe('figures unavailable');
      expect(await page.locator('#workers-hint').textContent()).toContain('roles ledger');
      expect(await page.locator('#problems').textContent()).toContain('roles bucket unreachable');
      await page.close();
    } finally {
      await browser.close();
      await ingress.shutdown();
      await broker.close();
    }
  }, 30_000);
});

// `mcp-cluster up --autoscale` as its own process: its banner names the page, and the page shows the
// in-process autoscaler's decisions (published to the memory broker's roles ledger, as any autoscaler).
describe('mcp-cluster up and the status page', () => {
  it('prints the status page URL and shows the autoscaler when it runs', async () => {
    const up = await startUp(['--autoscale']);
    try {
      const status = /status page \(live\):\s+(\S+)/.exec(up.banner)?.[1] ?? '';
      expect(status).toBe(up.mcpUrl.replace(/\/mcp$/, '/status'));
      const snapshot = await waitFor(
        'the autoscaler to decide',
        async () => {
          const s = (await (await fetch(`${status}/data`)).json()) as StatusSnapshot;
          return s.autoscaler?.every((a) => a.desired !== null) && s.autoscaler.length > 0 ? s : undefined;
        },
        20_000,
      );
      expect(snapshot.autoscaler?.map((a) => a.pool).sort()).toEqual(
        snapshot.pools.map((p) => p.pool).sort(),
      );
      expect((await fetch(status)).status).toBe(200);
    } finally {
      await up.stop();
    }
  }, 60_000);
});

// The arithmetic behind the Tools panel, on counters of its own (not the process's registry).
describe('status page figures', () => {
  it('interpolates quantiles inside histogram buckets, as histogram_quantile does', () => {
    // 10 observations: 4 in (0, 0.1], 4 in (0.1, 0.5], 2 above 0.5 s.
    const bounds = [0.1, 0.5, Number.POSITIVE_INFINITY];
    expect(quantileMs(bounds, [4, 8, 10], 0.5)).toBeCloseTo(200, 6); // rank 5: 1/4 into (0.1, 0.5]
    expect(quantileMs(bounds, [4, 8, 10], 0.2)).toBeCloseTo(50, 6);
    expect(quantileMs(bounds, [4, 8, 10], 0.95)).toBe(500); // in +Inf: the highest finite bound
    expect(quantileMs(bounds, [0, 0, 0], 0.5)).toBeNull();
  });

  it('gives calls/s and quantiles over the window, and totals since the start', async () => {
    const ingressCalls = new Counter({
      name: 'status_test_calls',
      help: 'x',
      labelNames: ['tool', 'outcome', 'tenant'],
      registers: [],
    });
    const callDuration = new Histogram({
      name: 'status_test_duration',
      help: 'x',
      labelNames: ['tool', 'outcome'],
      buckets: [0.01, 0.1, 1],
      registers: [],
    });
    let now = 1_000_000;
    const window = new ToolWindow({ ingressCalls, callDuration } as never, () => now);
    const call = (tool: string, seconds: number, outcome = 'ok') => {
      ingressCalls.inc({ tool, outcome, tenant: 'default' });
      callDuration.observe({ tool, outcome }, seconds);
    };
    // Before the first reading: 10 slow calls (0.5 s) of embed.
    for (let i = 0; i < 10; i++) call('embed', 0.5);
    const first = await window.figures(['embed', 'chat']);
    expect(first.map((t) => t.tool)).toEqual(['chat', 'embed']);
    expect(first[1]).toMatchObject({ calls: 10, errors: 0, callsPerS: null });
    expect(first[0]).toMatchObject({ calls: 0, callsPerS: null, p50Ms: null });

    // 10 s later, 20 fast calls (5 ms) and 2 errors: the window sees only these.
    now += 10_000;
    for (let i = 0; i < 20; i++) call('embed', 0.005);
    call('embed', 0.005, 'timeout');
    call('embed', 0.005, 'timeout');
    const second = (await window.figures(['embed'])).find((t) => t.tool === 'embed');
    expect(second).toMatchObject({ calls: 32, errors: 2 });
    expect(second?.callsPerS).toBeCloseTo(2.2, 6);
    expect(second?.p95Ms).toBeLessThanOrEqual(10);

    // After a pause longer than the window (nobody watching), older readings say nothing of now:
    // no rate until the next reading, and quantiles since the start.
    now += TOOL_WINDOW_MS + 1;
    const third = (await window.figures([])).find((t) => t.tool === 'embed');
    expect(third).toMatchObject({ calls: 32, callsPerS: null });
    expect(third?.p95Ms).toBeGreaterThan(100); // the 0.5 s calls of before the window count again
    now += 2_000;
    call('embed', 0.05);
    const fourth = (await window.figures([])).find((t) => t.tool === 'embed');
    expect(fourth?.callsPerS).toBeCloseTo(0.5, 9);
    expect(fourth?.p50Ms).toBeCloseTo(55, 6); // the one 50 ms call: halfway into (10, 100] ms
  });
});
