import { mkdtempSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBroker } from '../services/cli/index.js';
import {
  type Broker,
  createLogger,
  inProcessDelivery,
  type JobStore,
  openMemoryJobStore,
} from '../services/core/index.js';
import { createApiKey, type Ingress, keysFileEntry, startIngress } from '../services/ingress/index.js';
import { type BatchJobs, batchJobDelivery, createBatchJobs } from '../services/jobs/index.js';
import { embedAdapter } from '../workers/embeddings/index.js';
import { startWorker, type Worker } from '../workers/runtime/index.js';
import { type SimBackend, startSimBackend } from '../workers/sim/index.js';
import { resolveConfig } from './support/families.js';
import { removeTempDir, trackTempDir } from './support/process-guard.js';
import { waitFor } from './support/wait.js';

/** The largest upload of this suite's ingress (`batch.maxInputSize`). */
const MAX_INPUT = 64 * 1024;

const plainLines = (ids: string[]) =>
  `${ids.map((id) => JSON.stringify({ id, text: `the text of ${id}` })).join('\n')}\n`;

// The OpenAI-compatible Files and Batch API on an ingress that authenticates with API keys of two
// tenants, over the real batch engine (memory queue and job store) and an embeddings worker against
// the simulated backend. The official `openai` library is the caller; raw requests try every kind
// of bad input, each of which must be answered 4xx in the OpenAI error shape.
describe('OpenAI-compatible batch API on the ingress', () => {
  let sim: SimBackend;
  let broker: Broker;
  let store: JobStore;
  let jobs: BatchJobs & { close(): Promise<void> };
  let ingress: Ingress;
  let worker: Worker;
  let dir = '';
  let base = '';
  const acmeKey = createApiKey({ tenant: 'acme', scopes: ['pool:embeddings'] });
  const globexKey = createApiKey({ tenant: 'globex', scopes: ['pool:embeddings'] });
  const narrowKey = createApiKey({ tenant: 'acme', scopes: [] });
  let acme: OpenAI;
  let globex: OpenAI;

  beforeAll(async () => {
    sim = await startSimBackend({ embeddingDimensions: 8 });
    dir = mkdtempSync(join(tmpdir(), 'mcp-cluster-batch-api-'));
    trackTempDir(dir);
    const keysFile = join(dir, 'keys.yaml');
    writeFileSync(
      keysFile,
      `keys:\n${[acmeKey, globexKey, narrowKey].map((k) => keysFileEntry(k.entry)).join('\n')}\n`,
    );
    const config = resolveConfig(`
cluster: { namespace: batch-api }
ingress: { port: 0 }
auth:
  mode: api-keys
  tenants: [acme, globex]
  apiKeys: { file: "${keysFile}" }
batch: { chunkSize: 4, maxInputSize: ${MAX_INPUT} }
pools:
  embeddings: { backend: openai-embeddings, endpoints: [{ url: "${sim.url}" }], scopes: [pool:embeddings] }
  parked: { backend: openai-embeddings, endpoints: [{ url: "${sim.url}" }] }
tools:
  - { name: embed, template: embed, pool: embeddings, model: sim-embed, cache: { enabled: false } }
  - { name: embed_parked, template: embed, pool: parked, model: sim-embed, cache: { enabled: false } }
`);
    broker = await openBroker({ url: 'memory:', namespace: 'batch-api', pools: ['embeddings', 'parked'] });
    store = openMemoryJobStore();
    jobs = createBatchJobs({ store, queue: broker.queue, config });
    const delivery = batchJobDelivery(inProcessDelivery(), store, createLogger('batch'));
    ingress = await startIngress(config, broker, delivery, { jobs });
    // Only the embeddings pool has a worker: chunks of a job on `parked` wait in its queue.
    worker = await startWorker({
      config,
      pool: 'embeddings',
      broker,
      adapters: { embed: embedAdapter },
      delivery,
      workerId: 'batch-api-worker',
      serveHttp: false,
    });
    base = ingress.url.replace(/\/mcp$/, '');
    acme = new OpenAI({ apiKey: acmeKey.key, baseURL: `${base}/v1`, maxRetries: 0 });
    globex = new OpenAI({ apiKey: globexKey.key, baseURL: `${base}/v1`, maxRetries: 0 });
  });

  afterAll(async () => {
    await ingress?.shutdown();
    await worker?.shutdown();
    await jobs?.close();
    await broker?.close();
    await store?.close();
    await sim?.close();
    if (dir) removeTempDir(dir);
  });

  /** Uploads `text` as acme's (or `client`'s) input file. */
  const upload = async (text: string, client = acme, name = 'input.jsonl') =>
    client.files.create({ file: await toFile(Buffer.from(text), name), purpose: 'batch' });
  /** Polls until the batch is final. */
  const finished = (id: string, client = acme) =>
    waitFor(`batch ${id} final`, async () => {
      const batch = await client.batches.retrieve(id);
      return ['completed', 'failed', 'cancelled', 'expired'].includes(batch.status) ? batch : undefined;
    });
  const rowsOf = async (fileId: string, client = acme) =>
    (await (await client.files.content(fileId)).text())
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as Record<string, unknown>);

  it('runs a plain JSONL job end to end with the official client: upload, create, poll, download', async () => {
    const ids = Array.from({ length: 10 }, (_, i) => `doc-${i}`);
    const input = plainLines(ids);
    const file = await upload(input, acme, 'docs.jsonl');
    expect(file).toMatchObject({
      object: 'file',
      purpose: 'batch',
      filename: 'docs.jsonl',
      bytes: Buffer.byteLength(input),
      status: 'processed',
    });
    expect(file.id).toMatch(/^file-/);
    expect(await acme.files.retrieve(file.id)).toEqual(file);
    expect(await (await acme.files.content(file.id)).text()).toBe(input);

    const created = await acme.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/embeddings',
      completion_window: '24h',
      metadata: { purpose: 're-index' },
    });
    expect(created).toMatchObject({
      object: 'batch',
      endpoint: '/v1/embeddings',
      input_file_id: file.id,
      completion_window: '24h',
      metadata: { purpose: 're-index' },
      request_counts: { total: 10 },
      errors: null,
    });
    expect(created.id).toMatch(/^batch_/);
    expect(created.expires_at).toBe((created.created_at as number) + 86_400);

    const done = await finished(created.id);
    expect(done.status).toBe('completed');
    expect(done.request_counts).toEqual({ total: 10, completed: 10, failed: 0 });
    expect(done.completed_at).toBeGreaterThanOrEqual(done.created_at);
    expect(done.in_progress_at).toBeGreaterThanOrEqual(done.created_at);
    expect(done.error_file_id).toBeNull();
    expect(done.failed_at).toBeNull();
    // Every field of the OpenAI Batch object is present: unset timestamps as null.
    for (const field of [
      'cancelled_at',
      'cancelling_at',
      'expired_at',
      'failed_at',
      'finalizing_at',
      'in_progress_at',
      'completed_at',
      'output_file_id',
      'error_file_id',
    ]) {
      expect(done, field).toHaveProperty(field);
    }

    const output = await acme.files.retrieve(done.output_file_id as string);
    expect(output).toMatchObject({ object: 'file', purpose: 'batch_output' });
    const rows = await rowsOf(done.output_file_id as string);
    expect(rows.map((r) => r.id)).toEqual(ids);
    for (const row of rows) {
      expect(Object.keys(row).sort()).toEqual(['embedding', 'id']);
      expect(row.embedding).toHaveLength(8);
    }
  });

  it('answers an OpenAI batch input with OpenAI output rows, one per custom_id, in order', async () => {
    const customIds = ['req-a', 'req-b', 'req-c', 'req-d', 'req-e'];
    const input = customIds
      .map((id) =>
        JSON.stringify({
          custom_id: id,
          method: 'POST',
          url: '/v1/embeddings',
          body: { input: `text of ${id}`, model: 'sim-embed' },
        }),
      )
      .join('\n');
    const file = await upload(input);
    const batch = await acme.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/embeddings',
      completion_window: '24h',
    });
    const done = await finished(batch.id);
    expect(done.status).toBe('completed');
    const rows = await rowsOf(done.output_file_id as string);
    expect(rows.map((r) => r.custom_id)).toEqual(customIds);
    for (const row of rows) {
      expect(row.id).toMatch(/^batch_req_/);
      expect(row.error).toBeNull();
      const response = row.response as {
        status_code: number;
        request_id: string;
        body: {
          object: string;
          data: { object: string; index: number; embedding: number[] }[];
          model: string;
        };
      };
      expect(response.status_code).toBe(200);
      expect(typeof response.request_id).toBe('string');
      expect(response.body.object).toBe('list');
      expect(response.body.data).toHaveLength(1);
      expect(response.body.data[0]).toMatchObject({ object: 'embedding', index: 0 });
      expect(response.body.data[0]?.embedding).toHaveLength(8);
    }
  });

  it('cancels a running batch: cancelled with its timestamps, and the cancel is idempotent', async () => {
    const file = await upload(plainLines(Array.from({ length: 12 }, (_, i) => `parked-${i}`)));
    // No worker takes the `parked` pool's chunks: the job stays in progress until cancelled.
    const res = await fetch(`${base}/v1/batches`, {
      method: 'POST',
      headers: { authorization: `Bearer ${acmeKey.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ input_file_id: file.id, endpoint: '/v1/embeddings', pool: 'parked' }),
    });
    expect(res.status).toBe(200);
    const running = (await res.json()) as { id: string; status: string; completion_window: string };
    expect(running.status).toBe('in_progress');
    expect(running.completion_window).toBe('24h');
    expect((await acme.batches.retrieve(running.id)).status).toBe('in_progress');

    const cancelled = await acme.batches.cancel(running.id);
    expect(['cancelling', 'cancelled']).toContain(cancelled.status);
    expect(cancelled.cancelling_at).toBeGreaterThan(0);
    const final = await finished(running.id);
    expect(final.status).toBe('cancelled');
    expect(final.cancelled_at).toBeGreaterThanOrEqual(final.cancelling_at as number);
    expect(final.request_counts).toEqual({ total: 12, completed: 0, failed: 0 });
    expect((await acme.batches.cancel(running.id)).status).toBe('cancelled');
  });

  it('lists the tenant’s batches newest first in the OpenAI list envelope, page by page', async () => {
    const file = await upload(plainLines(['one']));
    const created: string[] = [];
    for (let i = 0; i < 3; i++) {
      created.push(
        (
          await acme.batches.create({
            input_file_id: file.id,
            endpoint: '/v1/embeddings',
            completion_window: '24h',
          })
        ).id,
      );
    }
    const res = await fetch(`${base}/v1/batches?limit=2`, {
      headers: { authorization: `Bearer ${acmeKey.key}` },
    });
    expect(res.status).toBe(200);
    const page = (await res.json()) as {
      object: string;
      data: { id: string; object: string }[];
      first_id: string;
      last_id: string;
      has_more: boolean;
    };
    expect(page.object).toBe('list');
    expect(page.data).toHaveLength(2);
    expect(page.data.every((b) => b.object === 'batch')).toBe(true);
    expect(page.first_id).toBe(page.data[0]?.id);
    expect(page.last_id).toBe(page.data[1]?.id);
    expect(page.has_more).toBe(true);

    // The client follows `after` through every page.
    const all: string[] = [];
    for await (const batch of acme.batches.list({ limit: 2 })) all.push(batch.id);
    expect(new Set(all).size).toBe(all.length);
    for (const id of created) expect(all).toContain(id);
    // Newest first (the engine orders by creation second: jobs of one second in no particular order).
    const times: number[] = [];
    for await (const batch of acme.batches.list({ limit: 100 })) times.push(batch.created_at);
    expect(times).toEqual([...times].sort((a, b) => b - a));

    const globexIds: string[] = [];
    for await (const batch of globex.batches.list()) globexIds.push(batch.id);
    for (const id of all) expect(globexIds).not.toContain(id);
  });

  it('shows another tenant nothing: its ids are answered 404 like unknown ones', async () => {
    const file = await upload(plainLines(['secret-1', 'secret-2']));
    const batch = await acme.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/embeddings',
      completion_window: '24h',
    });
    const done = await finished(batch.id);
    const attempts: [string, () => Promise<unknown>][] = [
      ['batches.retrieve', () => globex.batches.retrieve(batch.id)],
      ['batches.cancel', () => globex.batches.cancel(batch.id)],
      ['files.retrieve', () => globex.files.retrieve(file.id)],
      ['files.content (input)', () => globex.files.content(file.id)],
      ['files.content (output)', () => globex.files.content(done.output_file_id as string)],
      [
        'batches.create from the input file',
        () =>
          globex.batches.create({
            input_file_id: file.id,
            endpoint: '/v1/embeddings',
            completion_window: '24h',
          }),
      ],
    ];
    for (const [what, attempt] of attempts) {
      const err = await attempt().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, what).toBeInstanceOf(OpenAI.NotFoundError);
      expect((err as InstanceType<typeof OpenAI.NotFoundError>).message, what).not.toContain('acme');
    }
    // The owner still sees it, untouched.
    expect((await acme.batches.retrieve(batch.id)).status).toBe('completed');
  });

  it('refuses callers as /mcp does: 401 without a valid key, 403 for a key without the pool’s scope', async () => {
    const wrong: Record<string, string>[] = [
      {},
      { authorization: 'Bearer mcpk_not-a-real-key' },
      { authorization: 'Basic eDp5' },
    ];
    for (const headers of wrong) {
      const res = await fetch(`${base}/v1/batches`, { headers });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toContain('Bearer');
    }
    const anonymous = new OpenAI({ apiKey: 'mcpk_wrong', baseURL: `${base}/v1`, maxRetries: 0 });
    await expect(anonymous.batches.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);

    // Creating a batch runs the pool's embed tool: it needs that tool's scope.
    const narrow = new OpenAI({ apiKey: narrowKey.key, baseURL: `${base}/v1`, maxRetries: 0 });
    const file = await upload(plainLines(['x']), narrow);
    const err = await narrow.batches
      .create({ input_file_id: file.id, endpoint: '/v1/embeddings', completion_window: '24h' })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(OpenAI.PermissionDeniedError);
    const denied = err as InstanceType<typeof OpenAI.PermissionDeniedError>;
    expect(denied.headers?.get('www-authenticate')).toContain('insufficient_scope');
    expect(denied.headers?.get('www-authenticate')).toContain('pool:embeddings');
  });

  it('refuses an oversized upload with 413 naming batch.maxInputSize, from the client and raw', async () => {
    const big = plainLines(Array.from({ length: 3000 }, (_, i) => `big-${i}`));
    expect(Buffer.byteLength(big)).toBeGreaterThan(MAX_INPUT);
    const err = await upload(big).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(413);
    expect((err as Error).message).toContain('batch.maxInputSize');

    // Far past the limit, declared: refused before the body is read, and the answer still arrives.
    const huge = new FormData();
    huge.set('purpose', 'batch');
    huge.set('file', new Blob([Buffer.alloc(20 * 1024 * 1024, 'a')]), 'huge.jsonl');
    const declared = await fetch(`${base}/v1/files`, { method: 'POST', headers: auth(), body: huge });
    expect(declared.status).toBe(413);
    expect((await declared.json()) as unknown).toMatchObject({
      error: { type: 'invalid_request_error', code: 'file_too_large', param: 'file' },
    });

    // Not declared (chunked): counted as it arrives.
    const boundary = 'xXbatchXx';
    const head = `--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n`;
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(head));
        for (let i = 0; i < 40; i++) controller.enqueue(new Uint8Array(64 * 1024).fill(97));
        controller.close();
      },
    });
    const chunked = await fetch(`${base}/v1/files`, {
      method: 'POST',
      headers: { ...auth(), 'content-type': `multipart/form-data; boundary=${boundary}` },
      body: stream,
      duplex: 'half',
    } as RequestInit);
    expect(chunked.status).toBe(413);
    expect(((await chunked.json()) as { error: { message: string } }).error.message).toContain(
      'batch.maxInputSize',
    );
  });

  /** acme's credential header. */
  const auth = () => ({ authorization: `Bearer ${acmeKey.key}` });
  /** A multipart form from `fields` (a Blob is a file part). */
  const form = (fields: Record<string, string | Blob>) => {
    const f = new FormData();
    for (const [name, value] of Object.entries(fields)) {
      if (typeof value === 'string') f.set(name, value);
      else f.set(name, value, `${name}.jsonl`);
    }
    return f;
  };
  const json = (body: unknown) => ({
    method: 'POST',
    headers: { ...auth(), 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

  it('answers every kind of bad input 4xx with an OpenAI error naming the problem, never 5xx', async () => {
    const file = await upload(plainLines(['ok-1']));
    const good = { input_file_id: file.id, endpoint: '/v1/embeddings', completion_window: '24h' };
    const cases: [string, string, RequestInit, number, RegExp, string?][] = [
      ['malformed JSON', '/v1/batches', json('{"input_file_id": '), 400, /not valid JSON/],
      ['a JSON array', '/v1/batches', json([good]), 400, /JSON object/],
      [
        'wrong content type',
        '/v1/batches',
        { method: 'POST', headers: { ...auth(), 'content-type': 'text/plain' }, body: JSON.stringify(good) },
        415,
        /application\/json/,
      ],
      [
        'no input_file_id',
        '/v1/batches',
        json({ ...good, input_file_id: undefined }),
        400,
        /input_file_id is required/,
        'input_file_id',
      ],
      [
        'a number for input_file_id',
        '/v1/batches',
        json({ ...good, input_file_id: 7 }),
        400,
        /input_file_id must be a string/,
        'input_file_id',
      ],
      [
        'no endpoint',
        '/v1/batches',
        json({ ...good, endpoint: undefined }),
        400,
        /endpoint is required/,
        'endpoint',
      ],
      [
        'another endpoint',
        '/v1/batches',
        json({ ...good, endpoint: '/v1/chat/completions' }),
        400,
        /\/v1\/embeddings/,
        'endpoint',
      ],
      [
        'a bad completion_window',
        '/v1/batches',
        json({ ...good, completion_window: 'soon' }),
        400,
        /completion_window/,
        'completion_window',
      ],
      [
        'a completion_window past batch.completionWindow',
        '/v1/batches',
        json({ ...good, completion_window: '48h' }),
        400,
        /completion_window may be at most 86400s/,
      ],
      [
        'too much metadata',
        '/v1/batches',
        json({ ...good, metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])) }),
        400,
        /at most 16/,
        'metadata',
      ],
      [
        'non-string metadata',
        '/v1/batches',
        json({ ...good, metadata: { a: 1 } }),
        400,
        /string/,
        'metadata',
      ],
      ['a pool without embed', '/v1/batches', json({ ...good, pool: 'nope' }), 400, /serves no embed tool/],
      [
        'an oversized JSON body',
        '/v1/batches',
        json({ ...good, padding: 'x'.repeat(70_000) }),
        413,
        /exceeds/,
      ],
      [
        'an unknown input file',
        '/v1/batches',
        json({ ...good, input_file_id: 'file-AAAAAAAAAAAAAAAAAAAAAA' }),
        404,
        /no file/,
        'input_file_id',
      ],
      [
        'a path as input_file_id',
        '/v1/batches',
        json({ ...good, input_file_id: '../../etc/passwd' }),
        404,
        /no file/,
      ],
      ['an unknown batch', '/v1/batches/batch_AAAAAAAAAAAAAAAAAAAAAA', { headers: auth() }, 404, /no batch/],
      ['a dotted batch id', '/v1/batches/batch..x', { headers: auth() }, 404, /no batch/],
      ['a NUL in a batch id', '/v1/batches/a%00b', { headers: auth() }, 404, /no batch/],
      ['a broken escape in a batch id', '/v1/batches/%ZZ', { headers: auth() }, 404, /no batch/],
      [
        'a batch id with a path under it',
        '/v1/batches/batch_x/cancel/now',
        { method: 'POST', headers: auth() },
        404,
        /no route/,
      ],
      ['an unknown file', '/v1/files/file-AAAAAAAAAAAAAAAAAAAAAA', { headers: auth() }, 404, /no file/],
      [
        'unknown file content',
        '/v1/files/file-out-AAAAAAAAAAAAAAAAAAAAAA/content',
        { headers: auth() },
        404,
        /no file/,
      ],
      [
        'cancel of an unknown batch',
        '/v1/batches/batch_AAAAAAAAAAAAAAAAAAAAAA/cancel',
        { method: 'POST', headers: auth() },
        404,
        /no batch/,
      ],
      ['limit 0', '/v1/batches?limit=0', { headers: auth() }, 400, /limit/, 'limit'],
      ['limit 101', '/v1/batches?limit=101', { headers: auth() }, 400, /limit/, 'limit'],
      ['limit abc', '/v1/batches?limit=abc', { headers: auth() }, 400, /limit/, 'limit'],
      ['a bad after', '/v1/batches?after=%3Cscript%3E', { headers: auth() }, 400, /after/, 'after'],
      [
        'DELETE of a batch',
        '/v1/batches/batch_AAAAAAAAAAAAAAAAAAAAAA',
        { method: 'DELETE', headers: auth() },
        405,
        /takes GET/,
      ],
      [
        'GET of the cancel',
        '/v1/batches/batch_AAAAAAAAAAAAAAAAAAAAAA/cancel',
        { headers: auth() },
        405,
        /takes POST/,
      ],
      ['an unknown path', '/v1/embeddings', { method: 'POST', headers: auth() }, 404, /no route/],
      ['a JSON upload', '/v1/files', json({ file: 'x' }), 415, /multipart\/form-data/],
      [
        'a form without file',
        '/v1/files',
        { method: 'POST', headers: auth(), body: form({ purpose: 'batch' }) },
        400,
        /no file field/,
        'file',
      ],
      [
        'a form without purpose',
        '/v1/files',
        { method: 'POST', headers: auth(), body: form({ file: new Blob([plainLines(['a'])]) }) },
        400,
        /purpose=batch/,
        'purpose',
      ],
      [
        'another purpose',
        '/v1/files',
        {
          method: 'POST',
          headers: auth(),
          body: form({ purpose: 'fine-tune', file: new Blob([plainLines(['a'])]) }),
        },
        400,
        /must be "batch"/,
        'purpose',
      ],
      [
        'file as a text field',
        '/v1/files',
        { method: 'POST', headers: auth(), body: form({ purpose: 'batch', file: plainLines(['a']) }) },
        400,
        /file part/,
        'file',
      ],
      [
        'broken multipart',
        '/v1/files',
        {
          method: 'POST',
          headers: { ...auth(), 'content-type': 'multipart/form-data; boundary=nope' },
          body: '--other\r\nContent-Disposition: form-data; name="file"\r\n\r\nx\r\n',
        },
        400,
        /multipart/,
      ],
      [
        'bad lines',
        '/v1/files',
        {
          method: 'POST',
          headers: auth(),
          body: form({
            purpose: 'batch',
            file: new Blob(['{"id":"a","text":"x"}\nnot json\n{"id":"a","text":"y"}\n']),
          }),
        },
        400,
        /line 2: not JSON[\s\S]*line 3: id "a" appears twice/,
      ],
      [
        'an empty file',
        '/v1/files',
        { method: 'POST', headers: auth(), body: form({ purpose: 'batch', file: new Blob([]) }) },
        400,
        /no lines/,
      ],
    ];
    for (const [what, path, init, status, message, param] of cases) {
      const res = await fetch(`${base}${path}`, init);
      const text = await res.text();
      expect(res.status, `${what}: ${text}`).toBe(status);
      const body = JSON.parse(text) as {
        error: { message: string; type: string; param: string | null; code: unknown };
      };
      expect(Object.keys(body.error).sort(), what).toEqual(['code', 'message', 'param', 'type']);
      expect(body.error.message, what).toMatch(message);
      expect(body.error.type, what).toBe('invalid_request_error');
      if (param) expect(body.error.param, what).toBe(param);
    }
  });

  it('refuses a Host or Origin outside ingress.allowedHosts/allowedOrigins, as /mcp does', async () => {
    const url = new URL(base);
    const status = (headers: Record<string, string>) =>
      new Promise<number>((resolve, reject) => {
        const req = httpRequest(
          { host: url.hostname, port: url.port, path: '/v1/batches', headers: { ...auth(), ...headers } },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', reject);
        req.end();
      });
    expect(await status({ host: 'evil.example' })).toBe(403);
    expect(await status({ origin: 'https://evil.example' })).toBe(403);
    expect(await status({})).toBe(200);
  });
});
