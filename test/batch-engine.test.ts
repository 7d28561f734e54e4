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
import { completeChunk } from '../services/jobs/chunks.js';
import { type BatchJobs, batchJobDelivery, createBatchJobs, type JobOwner } from '../services/jobs/index.js';
import { parseJsonl } from '../services/jobs/input.js';
import { decodeRecord, encodeRecord, hasBit, jobKey, withBit } from '../services/jobs/record.js';
import { embedAdapter } from '../workers/embeddings/index.js';
import { startWorker, type Worker } from '../workers/runtime/index.js';
import { type SimBackend, startSimBackend } from '../workers/sim/index.js';
import { rawEmbeddings } from './support/adapter-harness.js';
import { resolveConfig } from './support/families.js';
import { waitFor } from './support/wait.js';

const ACME: JobOwner = { tenant: 'acme', principal: 'key:0123456789ab' };
const GLOBEX: JobOwner = { tenant: 'globex', principal: 'key:ba9876543210' };

/** Every row of a file, parsed. */
async function rowsOf(jobs: BatchJobs, owner: JobOwner, fileId: string): Promise<Record<string, unknown>[]> {
  let text = '';
  for await (const piece of jobs.fileContent(owner, fileId)) text += Buffer.from(piece).toString('utf8');
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

async function rejection(promise: Promise<unknown>): Promise<ClusterError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ClusterError);
  return err as ClusterError;
}

// The batch engine over a memory queue and job store, with a real embeddings worker (its delivery
// decorated to write chunks into the store) against the simulated backend.
describe('batch engine', () => {
  let sim: SimBackend;
  let broker: Broker;
  let store: JobStore;
  let config: ResolvedConfig;
  let jobs: BatchJobs & { close(): Promise<void> };
  let worker: Worker | undefined;

  const startEmbedWorker = async () => {
    worker = await startWorker({
      config,
      pool: 'embeddings',
      broker,
      adapters: { embed: embedAdapter },
      delivery: batchJobDelivery(inProcessDelivery(), store, createLogger('batch')),
      workerId: 'batch-test-worker',
      serveHttp: false,
    });
  };

  beforeAll(async () => {
    sim = await startSimBackend({ embeddingDimensions: 8 });
    config = resolveConfig(`
cluster: { namespace: batch-engine }
batch: { chunkSize: 4, maxLines: 50 }
pools:
  embeddings: { backend: openai-embeddings, endpoints: [{ url: "${sim.url}" }] }
tools:
  - { name: embed, template: embed, pool: embeddings, model: sim-embed, maxTexts: 8, cache: { enabled: false } }
`);
    broker = await openBroker({ url: 'memory:', namespace: 'batch-engine', pools: ['embeddings'] });
    store = openMemoryJobStore();
    jobs = createBatchJobs({ store, queue: broker.queue, config, sweepIntervalMs: 100 });
  });

  afterAll(async () => {
    await worker?.shutdown();
    await jobs?.close();
    await broker?.close();
    await sim?.close();
  });

  it('embeds every item once, in input order, with its id, as the backend would', async () => {
    if (!worker) await startEmbedWorker();
    const items = Array.from({ length: 10 }, (_, i) => ({ id: `doc-${i}`, text: `text number ${i}` }));
    const job = await jobs.submit(ACME, { items });
    expect(job.id).toMatch(/^batch_[A-Za-z0-9_-]{22}$/);
    expect(job.counts.total).toBe(10);
    expect(job.chunks.total).toBe(3);
    const done = await waitFor('the job completed', async () => {
      const view = await jobs.get(ACME, job.id);
      return view.status === 'completed' ? view : undefined;
    });
    expect(done.counts).toEqual({ total: 10, completed: 10, failed: 0 });
    expect(done.completedAt).toBeGreaterThanOrEqual(done.createdAt);
    expect(done.errorFileId).toBeUndefined();
    const rows = await rowsOf(jobs, ACME, done.outputFileId as string);
    expect(rows.map((r) => r.id)).toEqual(items.map((item) => item.id));
    const expected = await rawEmbeddings(
      sim,
      items.map((item) => item.text),
    );
    rows.forEach((row, i) => {
      const got = row.embedding as number[];
      expect(got).toHaveLength(expected[i]?.length ?? -1);
      got.forEach((v, d) => {
        expect(v).toBeCloseTo(Math.fround(expected[i]?.[d] ?? Number.NaN), 6);
      });
    });
  });

  it('writes OpenAI Batch rows for an OpenAI Batch input', async () => {
    const jsonl = ['a', 'b', 'c']
      .map((t) =>
        JSON.stringify({
          custom_id: `req-${t}`,
          method: 'POST',
          url: '/v1/embeddings',
          body: { input: t, model: 'm' },
        }),
      )
      .join('\n');
    const job = await jobs.submit(ACME, { jsonl });
    const done = await waitFor('done', async () =>
      (await jobs.get(ACME, job.id)).status === 'completed' ? true : undefined,
    );
    expect(done).toBe(true);
    const rows = await rowsOf(jobs, ACME, `file-out-${job.id.slice(6)}`);
    expect(rows.map((r) => r.custom_id)).toEqual(['req-a', 'req-b', 'req-c']);
    expect(rows[0]).toMatchObject({
      response: {
        status_code: 200,
        body: { object: 'list', data: [{ object: 'embedding', index: 0 }], model: 'sim-embed' },
      },
      error: null,
    });
  });

  it('counts a chunk that a dying worker finished twice only once', async () => {
    await worker?.shutdown();
    worker = undefined;
    const job = await jobs.submit(ACME, {
      items: [1, 2, 3, 4, 5].map((i) => ({ id: `x${i}`, text: `t${i}` })),
    });
    const vectors = [
      [1, 2],
      [3, 4],
      [5, 6],
      [7, 8],
    ];
    await completeChunk(store, job.id, 0, vectors);
    await completeChunk(store, job.id, 0, vectors);
    await Promise.all([completeChunk(store, job.id, 0, vectors), completeChunk(store, job.id, 0, vectors)]);
    const view = await jobs.get(ACME, job.id);
    expect(view.counts).toEqual({ total: 5, completed: 4, failed: 0 });
    expect(view.chunks).toEqual({ total: 2, settled: 1 });
    expect(view.status).toBe('in_progress');
    await completeChunk(store, job.id, 1, [[9, 10]]);
    const done = await jobs.get(ACME, job.id);
    expect(done.status).toBe('completed');
    const rows = await rowsOf(jobs, ACME, done.outputFileId as string);
    expect(rows).toEqual([
      { id: 'x1', embedding: [1, 2] },
      { id: 'x2', embedding: [3, 4] },
      { id: 'x3', embedding: [5, 6] },
      { id: 'x4', embedding: [7, 8] },
      { id: 'x5', embedding: [9, 10] },
    ]);
  });

  it('cancels: queued chunks are dropped, rows already done are kept', async () => {
    const depth = async () => (await broker.queue.stats('embeddings')).reduce((n, s) => n + s.depth, 0);
    const before = await depth();
    const job = await jobs.submit(ACME, {
      items: Array.from({ length: 12 }, (_, i) => ({ id: `c${i}`, text: `c${i}` })),
    });
    await completeChunk(store, job.id, 1, [[1], [2], [3], [4]]);
    const cancelled = await jobs.cancel(ACME, job.id);
    expect(cancelled.status).toBe('cancelled');
    expect(cancelled.cancelledAt).toBeDefined();
    expect(cancelled.counts).toEqual({ total: 12, completed: 4, failed: 0 });
    // Chunks 0 and 2 left the queue; chunk 1, settled by hand here, is still queued (no worker runs).
    expect(await depth()).toBe(before + 1);
    const rows = await rowsOf(jobs, ACME, cancelled.outputFileId as string);
    expect(rows.map((r) => r.id)).toEqual(['c4', 'c5', 'c6', 'c7']);
    // Cancelling again, or a finished job, changes nothing.
    expect((await jobs.cancel(ACME, job.id)).status).toBe('cancelled');
  });

  it('keeps every tenant to its own jobs and files', async () => {
    const job = await jobs.submit(ACME, { items: [{ id: 'secret', text: 'mine' }] });
    for (const attempt of [
      jobs.get(GLOBEX, job.id),
      jobs.cancel(GLOBEX, job.id),
      jobs.getFile(GLOBEX, `file-out-${job.id.slice(6)}`),
      (async () => {
        for await (const _ of jobs.fileContent(GLOBEX, `file-out-${job.id.slice(6)}`)) break;
      })(),
    ]) {
      expect((await rejection(attempt)).code).toBe('UNKNOWN_JOB');
    }
    expect((await jobs.list(GLOBEX)).map((j) => j.id)).not.toContain(job.id);
    expect((await jobs.list(ACME)).map((j) => j.id)).toContain(job.id);
    // Newest first, in creation order even within one second; paging after an unknown job ends.
    const later = await jobs.submit(ACME, { items: [{ id: 'later', text: 'later' }] });
    const listed = (await jobs.list(ACME)).map((j) => j.id);
    expect(listed.indexOf(later.id)).toBeLessThan(listed.indexOf(job.id));
    expect((await jobs.list(ACME, { after: later.id, limit: 1 })).map((j) => j.id)).toEqual([listed[1]]);
    expect(await jobs.list(ACME, { after: 'batch_AAAAAAAAAAAAAAAAAAAAAA' })).toEqual([]);
    for (const id of ['batch_nope', 'batch_AAAAAAAAAAAAAAAAAAAAAA', '../etc/passwd', '', 'job.x']) {
      expect((await rejection(jobs.get(ACME, id))).code).toBe('UNKNOWN_JOB');
    }
  });

  it("lists every tenant's jobs for operators, unfinished first, each with its tenant", async () => {
    const running = await jobs.submit(ACME, { items: [{ id: 'o2', text: 'o2' }] });
    const done = await jobs.submit(GLOBEX, { items: [{ id: 'o1', text: 'o1' }] });
    await jobs.cancel(GLOBEX, done.id);
    const all = await jobs.overview(100);
    const ids = all.map((j) => j.id);
    expect(all.find((j) => j.id === running.id)?.tenant).toBe('acme');
    expect(all.find((j) => j.id === done.id)?.tenant).toBe('globex');
    // No worker runs here: the older job is unfinished, the newer one cancelled, and final ones come last.
    expect(ids.indexOf(running.id)).toBeLessThan(ids.indexOf(done.id));
    const firstFinal = all.findIndex((j) =>
      ['completed', 'failed', 'cancelled', 'expired'].includes(j.status),
    );
    expect(
      all.slice(firstFinal).every((j) => ['completed', 'failed', 'cancelled', 'expired'].includes(j.status)),
    ).toBe(true);
    expect(await jobs.overview(1)).toHaveLength(1);
  });

  it('expires a job past its completion window, keeping what is done', async () => {
    const job = await jobs.submit(
      ACME,
      { items: [{ id: 'late', text: 'late' }] },
      { completionWindowMs: 1000 },
    );
    const expired = await waitFor('the job expired', async () => {
      const view = await jobs.get(ACME, job.id);
      return view.status === 'expired' ? view : undefined;
    });
    expect(expired.expiredAt).toBeGreaterThanOrEqual(expired.expiresAt);
  });

  it('deletes a finished job once its retention has passed', async () => {
    const job = await jobs.submit(ACME, { items: [{ id: 'old', text: 'old' }] });
    const found = await store.get(jobKey(job.id));
    const record = decodeRecord(found?.value as Uint8Array);
    const longAgo = Math.floor(Date.now() / 1000) - 400 * 24 * 3600;
    await store.update(
      jobKey(job.id),
      encodeRecord({
        ...record,
        status: 'completed',
        done: withBit(record.done, 0),
        times: { created: longAgo, completed: longAgo },
      }),
      found?.revision as number,
    );
    await waitFor('the job deleted', async () => (await store.get(jobKey(job.id))) === undefined);
    expect(await store.blobNames(`${job.id}.`)).toEqual([]);
    expect((await rejection(jobs.get(ACME, job.id))).code).toBe('UNKNOWN_JOB');
    expect(hasBit(record.done, 0)).toBe(false);
  });

  it('refuses bad input naming each bad line, and queues nothing', async () => {
    const before = (await broker.queue.stats('embeddings')).reduce((n, s) => n + s.depth, 0);
    const lines = [
      JSON.stringify({ id: 'ok', text: 'fine' }),
      'not json',
      JSON.stringify({ id: 'ok', text: 'duplicate id' }),
      JSON.stringify({ id: 7, text: 'numeric id' }),
      JSON.stringify({ custom_id: 'x', body: { input: 'openai line in a plain file' } }),
      JSON.stringify({ id: 'long', text: 'x'.repeat(200_000) }),
      '[1,2]',
    ];
    const err = await rejection(jobs.submit(ACME, { jsonl: lines.join('\n') }));
    expect(err.code).toBe('INVALID_ARGUMENTS');
    for (const n of [2, 3, 4, 5, 6, 7]) expect(err.message).toContain(`line ${n}:`);
    expect(err.message).not.toContain('line 1:');
    expect(err.message).toMatch(/nothing was queued/);
    expect((await broker.queue.stats('embeddings')).reduce((n, s) => n + s.depth, 0)).toBe(before);
  });

  it.each([
    ['an empty input', { jsonl: '' }, /no lines/],
    [
      'too many lines',
      { jsonl: Array.from({ length: 51 }, (_, i) => JSON.stringify({ id: `${i}`, text: 't' })).join('\n') },
      /batch\.maxLines/,
    ],
    ['an unknown file', { fileId: 'file-AAAAAAAAAAAAAAAAAAAAAA' }, /no file/],
    [
      'an array input',
      { jsonl: JSON.stringify({ custom_id: 'a', body: { input: ['x', 'y'] } }) },
      /one string per line/,
    ],
    [
      'another endpoint',
      { jsonl: JSON.stringify({ custom_id: 'a', url: '/v1/chat/completions', body: { input: 'x' } }) },
      /embeddings only/,
    ],
  ])('refuses %s', async (_label, input, why) => {
    expect((await rejection(jobs.submit(ACME, input as never))).message).toMatch(why);
  });

  it('refuses a pool without an embed tool', async () => {
    expect(
      (await rejection(jobs.submit(ACME, { items: [{ id: 'a', text: 'b' }] }, { pool: 'nope' }))).message,
    ).toMatch(/serves no embed tool; batch jobs run on embeddings/);
  });

  it('parses a hostile JSONL without throwing anything but INVALID_ARGUMENTS', () => {
    const limits = { maxLines: 1000, maxBytes: 1_000_000, checkText: () => undefined };
    for (const text of [
      '\u0000',
      '{"id": "a", "text": "b"',
      '{"__proto__": {"x": 1}, "id": "p", "text": "q"}',
      '\n\n\n',
      '{}',
    ]) {
      try {
        parseJsonl(text, limits);
      } catch (err) {
        expect(err).toBeInstanceOf(ClusterError);
      }
    }
    expect(parseJsonl('{"id":"a","text":"b"}\r\n\n{"id":"c","text":"d"}\n', limits).items).toEqual([
      { id: 'a', text: 'b' },
      { id: 'c', text: 'd' },
    ]);
  });
});
