/**
 * `npm run bench -- batch [--texts N] [--system cluster-memory|cluster-nats|cluster-bullmq]
 * [--interactive-rate R] [--interactive-seconds S] [--embed-fixed-ms MS] [--embed-per-token-ms MS]
 * [--background-pause 0ms]`: a batch embedding job through the cluster's
 * OpenAI-compatible Batch API against the simulated embedding backend, side by side with what
 * that backend can do alone:
 *
 * 1. capacity: full batches sent straight to the backend, texts/s (the ceiling);
 * 2. batch alone: one job of N texts uploaded, run and downloaded; texts/s over the job's run,
 *    as a share of the capacity, and the peak RSS of every process of the cluster;
 * 3. interactive alone: `embed` calls at R/s from MCP clients, p50/p95/p99;
 * 4. interactive while a job runs: the same calls, and how far the job got meanwhile.
 *
 * Prints a Markdown table and writes JSON under bench/results/batch-<time>/.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runLoad } from './load/agents.js';
import { peakRssBytes, sampleRss } from './load/memory.js';
import { runIfMain } from './main.js';
import { type SimFlags, startSim } from './scenarios.js';
import { type SystemName, startSystem } from './systems/index.js';

/**
 * A GPU-like embedding server: 5 ms per batch plus 0.02 ms per token, one batch at a time, so
 * batches of 32 short texts run at about 4,000 texts/s and the serving layer, not the backend,
 * is what a shortfall measures.
 */
const EMBED_GPU: SimFlags = {
  'embed-fixed-ms': 5,
  'embed-per-token-ms': 0.02,
  'embedding-dimensions': 64,
  'ttft-ms': 0,
  'tokens-per-second': 1_000_000,
};

/** Texts per request when measuring the backend's own capacity: the embed tool's batch size. */
const FULL_BATCH = 32;

interface JobResult {
  texts: number;
  /** From the upload's start to the job's completion. */
  seconds: number;
  /** From the job queued (the create call answered) to its completion: the processing time. */
  runSeconds: number;
  textsPerSec: number;
  rows: number;
  idsInOrder: boolean;
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      texts: { type: 'string', default: '100000' },
      system: { type: 'string', default: 'cluster-memory' },
      'interactive-rate': { type: 'string', default: '20' },
      'interactive-seconds': { type: 'string', default: '20' },
      'embed-fixed-ms': { type: 'string' },
      'embed-per-token-ms': { type: 'string' },
      'background-pause': { type: 'string' },
    },
    strict: true,
  });
  const texts = Number(values.texts);
  const rate = Number(values['interactive-rate']);
  const seconds = Number(values['interactive-seconds']);
  if (!Number.isInteger(texts) || texts < 1)
    throw new Error(`--texts takes a whole number, got "${values.texts}"`);
  if (!(rate > 0) || !(seconds > 0))
    throw new Error('--interactive-rate and --interactive-seconds take positive numbers');
  const system = values.system as SystemName;
  if (!system.startsWith('cluster-'))
    throw new Error('--system takes cluster-memory, cluster-nats or cluster-bullmq');

  const simFlags: SimFlags = { ...EMBED_GPU };
  for (const flag of ['embed-fixed-ms', 'embed-per-token-ms'] as const) {
    const value = values[flag];
    if (value === undefined) continue;
    if (!(Number(value) >= 0)) throw new Error(`--${flag} takes a number of milliseconds, got "${value}"`);
    simFlags[flag] = Number(value);
  }
  const sim = await startSim(simFlags);
  const results: Record<string, unknown> = {
    texts,
    system,
    sim: simFlags,
    backgroundPause: values['background-pause'] ?? 'the tool default',
  };
  try {
    const capacity = await backendCapacity(sim.url, 8000);
    results.capacityTextsPerSec = capacity;
    process.stdout.write(
      `backend capacity: ${capacity.toFixed(0)} texts/s (batches of ${FULL_BATCH}, straight to the backend)\n`,
    );

    const dir = join(
      process.cwd(),
      'bench',
      'results',
      `batch-${new Date().toISOString().replace(/[:.]/g, '-')}`,
    );
    mkdirSync(dir, { recursive: true });
    // Blobs on disk on the memory broker: a million vectors are not the ingress's heap.
    const blobs = mkdtempSync(join(tmpdir(), 'mcp-cluster-bench-blobs-'));
    const sut = await startSystem(system, {
      backendUrl: sim.url,
      configYaml: `batch: { directory: ${JSON.stringify(blobs)} }`,
      ...(values['background-pause'] ? { embedBackgroundPause: values['background-pause'] } : {}),
    });
    const base = sut.url.replace(/\/mcp$/, '');
    try {
      const rss = sampleRss(sut.pids, 500);
      const alone = await runJob(base, texts);
      const samples = rss.stop();
      results.batchAlone = { ...alone, shareOfCapacity: alone.textsPerSec / capacity };
      results.peakRssBytes = Object.fromEntries(
        sut.pids.map((pid) => [
          pid,
          peakRssBytes(samples.map((s) => ({ ...s, rssBytes: { [pid]: s.rssBytes[pid] ?? 0 } }))),
        ]),
      );
      process.stdout.write(
        `batch alone: ${alone.texts} texts run in ${alone.runSeconds.toFixed(1)} s after being queued (${alone.seconds.toFixed(1)} s from the upload's start) = ${alone.textsPerSec.toFixed(0)} texts/s, ${((alone.textsPerSec / capacity) * 100).toFixed(1)}% of capacity; ${alone.rows} rows, ids in order: ${alone.idsInOrder}\n`,
      );

      const interactive = () =>
        runLoad({
          url: sut.url,
          client: 'v2',
          agents: 8,
          mode: 'open',
          ratePerSec: rate,
          toolMix: [{ tool: 'embed', weight: 1, args: { texts: ['an interactive text to embed'] } }],
          durationMs: seconds * 1000,
          warmupMs: 2000,
        });
      const quiet = await interactive();
      results.interactiveAlone = quiet.latency;
      process.stdout.write(
        `interactive alone: p50 ${quiet.latency.p50} ms, p95 ${quiet.latency.p95} ms, p99 ${quiet.latency.p99} ms\n`,
      );

      // A job big enough to outlast the interactive run, submitted without waiting for it.
      const background = Math.max(texts, Math.ceil(capacity * (seconds + 10)));
      const job = await submitJob(base, background);
      const busy = await interactive();
      const progress = (await getJson(`${base}/v1/batches/${job}`)) as {
        request_counts: { completed: number };
      };
      await postJson(`${base}/v1/batches/${job}/cancel`, {});
      results.interactiveWithBatch = busy.latency;
      results.batchDuringInteractive = { completedRows: progress.request_counts.completed, of: background };
      const rise = busy.latency.p95 / quiet.latency.p95 - 1;
      results.p95Rise = rise;
      process.stdout.write(
        `interactive with a job running: p50 ${busy.latency.p50} ms, p95 ${busy.latency.p95} ms (${(rise * 100).toFixed(1)}% over alone), p99 ${busy.latency.p99} ms; the job meanwhile: ${progress.request_counts.completed} of ${background} rows\n`,
      );
      process.stdout.write(
        `peak RSS: ${sut.pids.map((pid) => `${pid} ${(((results.peakRssBytes as Record<number, number>)[pid] ?? 0) / 2 ** 20) | 0} MiB`).join(', ')}\n`,
      );
    } finally {
      await sut.stop();
      rmSync(blobs, { recursive: true, force: true });
    }
    writeFileSync(join(dir, 'batch.json'), `${JSON.stringify(results, null, 2)}\n`);
    process.stdout.write(`results: ${dir}/batch.json\n`);
  } finally {
    await sim.stop();
  }
  return 0;
}

/** Texts/s the backend embeds alone: two clients keep full batches in flight for `ms`. */
async function backendCapacity(url: string, ms: number): Promise<number> {
  const until = performance.now() + ms;
  let done = 0;
  const client = async () => {
    while (performance.now() < until) {
      const input = Array.from({ length: FULL_BATCH }, (_, i) => `capacity probe ${done + i}`);
      const res = await fetch(`${url}/v1/embeddings`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'sim-embed', input }),
      });
      await res.arrayBuffer();
      if (!res.ok) throw new Error(`backend answered ${res.status}`);
      done += FULL_BATCH;
    }
  };
  const started = performance.now();
  await Promise.all([client(), client()]);
  return done / ((performance.now() - started) / 1000);
}

/** The input of a job of `n` texts, plain JSONL. */
function inputOf(n: number): Uint8Array<ArrayBuffer> {
  const lines: string[] = [];
  for (let i = 0; i < n; i++) lines.push(JSON.stringify({ id: `t${i}`, text: `batch text number ${i}` }));
  return new TextEncoder().encode(`${lines.join('\n')}\n`);
}

async function submitJob(base: string, n: number): Promise<string> {
  const form = new FormData();
  form.set('purpose', 'batch');
  form.set('file', new Blob([inputOf(n)], { type: 'application/jsonl' }), 'input.jsonl');
  const upload = await fetch(`${base}/v1/files`, { method: 'POST', body: form });
  if (!upload.ok) throw new Error(`upload answered ${upload.status}: ${await upload.text()}`);
  const file = (await upload.json()) as { id: string };
  const batch = (await postJson(`${base}/v1/batches`, {
    input_file_id: file.id,
    endpoint: '/v1/embeddings',
    completion_window: '24h',
  })) as { id: string };
  return batch.id;
}

/** Runs one job of `n` texts to completion, then reads its output and checks every row. */
async function runJob(base: string, n: number): Promise<JobResult> {
  const started = performance.now();
  const id = await submitJob(base, n);
  const queued = performance.now();
  let batch: { status: string; in_progress_at?: number; completed_at?: number; output_file_id?: string };
  for (;;) {
    batch = (await getJson(`${base}/v1/batches/${id}`)) as typeof batch;
    if (['completed', 'failed', 'cancelled', 'expired'].includes(batch.status)) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const finished = performance.now();
  const seconds = (finished - started) / 1000;
  const runSeconds = (finished - queued) / 1000;
  if (batch.status !== 'completed') throw new Error(`the job ended ${batch.status}`);
  // Rows are streamed and checked one by one; nothing holds the whole output.
  const res = await fetch(`${base}/v1/files/${batch.output_file_id}/content`);
  if (!res.ok || !res.body) throw new Error(`output answered ${res.status}`);
  let rows = 0;
  let inOrder = true;
  let rest = '';
  const decoder = new TextDecoder();
  for await (const piece of res.body) {
    const text = rest + decoder.decode(piece as Uint8Array, { stream: true });
    const lines = text.split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) {
      if (!line) continue;
      const row = JSON.parse(line) as { id: string };
      if (row.id !== `t${rows}`) inOrder = false;
      rows++;
    }
  }
  return {
    texts: n,
    seconds,
    runSeconds,
    textsPerSec: n / runSeconds,
    rows,
    idsInOrder: inOrder && rows === n,
  };
}

async function getJson(url: string): Promise<unknown> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url} answered ${res.status}: ${await res.text()}`);
  return res.json();
}

async function postJson(url: string, body: unknown): Promise<unknown> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${url} answered ${res.status}: ${await res.text()}`);
  return res.json();
}

runIfMain(import.meta.url, 'batch', main);
