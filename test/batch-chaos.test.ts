import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBroker, openJobStore } from '../services/cli/index.js';
import type { Broker, JobStore } from '../services/core/index.js';
import { type BatchJobs, createBatchJobs, type JobOwner, type JobView } from '../services/jobs/index.js';
import { type SpawnedBroker, startNatsServer, startRedisServer } from './support/brokers.js';
import { resolveConfig } from './support/families.js';
import { metricValue, type RoleProcess, startRole, writeConfig } from './support/processes.js';
import { waitFor } from './support/wait.js';

const OWNER: JobOwner = { tenant: 'spot', principal: 'key:000000000000' };
/** Rows of the job; chunks of 8, so 200 chunks spread over the workers. */
const ROWS = 1600;
const WORKERS = 5;

// Spot preemption of batch workers across separate processes: five embeddings workers (each
// holding at most 4 chunks), a simulated backend slow enough that the job takes several seconds,
// and a real broker. Mid-job 30% of the workers get SIGTERM (they drain within their grace), one
// more gets SIGKILL (its leases run out and its chunks run again elsewhere), and the broker is
// restarted. The job must complete on its own with exactly one output row per input id.
describe.each([
  ['NATS JetStream', () => startNatsServer()],
  ['BullMQ on Redis', () => startRedisServer({ persistent: true })],
] as const)('batch job under preemption on %s', (_label, startBroker) => {
  let broker: SpawnedBroker;
  let sim: RoleProcess;
  const workers: RoleProcess[] = [];
  let client: Broker;
  let store: JobStore;
  let jobs: BatchJobs & { close(): Promise<void> };

  beforeAll(async () => {
    broker = await startBroker();
    // 60 ms per backend batch, one batch at a time: about 1,600 texts in 5-10 s with 5 workers.
    sim = await startRole('sim', [
      'sim',
      '--port',
      '0',
      '--embed-fixed-ms',
      '60',
      '--embedding-dimensions',
      '16',
    ]);
    const namespace = `chaos${randomUUID().slice(0, 8)}`;
    const yaml = `
cluster: { namespace: ${namespace} }
broker: { url: "${broker.url}" }
worker: { ackWait: 2s, drainGrace: 3s, deliveryAckTimeout: 3s }
batch: { chunkSize: 8 }
pools:
  embeddings:
    backend: openai-embeddings
    endpoints: [{ url: "${String(sim.ready.url)}", maxConcurrency: 4 }]
tools:
  - { name: embed, template: embed, pool: embeddings, model: sim-embed, cache: { enabled: false } }
`;
    const configPath = writeConfig(yaml);
    workers.push(
      ...(await Promise.all(
        Array.from({ length: WORKERS }, (_, i) =>
          startRole(`worker-${i + 1}`, [
            'worker',
            '--pool',
            'embeddings',
            '--port',
            '0',
            '--config',
            configPath,
          ]),
        ),
      )),
    );
    const config = resolveConfig(yaml);
    client = await openBroker({ url: broker.url, namespace, pools: ['embeddings'] });
    store = await openJobStore({ url: broker.url, namespace });
    jobs = createBatchJobs({ store, queue: client.queue, config });
  }, 90_000);

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.stop(5000)));
    await jobs?.close();
    await store?.close();
    await client?.close();
    await sim?.stop();
    await broker?.dispose();
  }, 60_000);

  it('loses and duplicates no row when workers are preempted and the broker restarts mid-job', async () => {
    const items = Array.from({ length: ROWS }, (_, i) => ({ id: `row-${i}`, text: `spot text ${i}` }));
    const job = await jobs.submit(OWNER, { items });
    const view = () => jobs.get(OWNER, job.id);
    await waitFor('a fifth of the job done', async () => (await view()).counts.completed >= ROWS / 5, 30_000);

    // 30% of the batch workers get the 30 s notice as SIGTERM; one more disappears at once.
    const [first, second, third] = workers;
    await Promise.all([first?.stop(10_000), second?.stop(10_000)]);
    await third?.kill();
    expect(first?.child.exitCode ?? first?.child.signalCode).not.toBeNull();
    const beforeRestart = (await view()).counts.completed;
    expect(beforeRestart).toBeLessThan(ROWS);

    await broker.restart();
    const done = await waitFor(
      'the job completed after the preemptions and the restart',
      async () => {
        const current: JobView | undefined = await view().catch(() => undefined);
        return current && ['completed', 'failed', 'cancelled', 'expired'].includes(current.status)
          ? current
          : undefined;
      },
      90_000,
    );
    expect(done.status).toBe('completed');
    expect(done.counts).toEqual({ total: ROWS, completed: ROWS, failed: 0 });

    // Line by line against the input ids: every id once, in input order, nothing else.
    let text = '';
    for await (const piece of jobs.fileContent(OWNER, done.outputFileId as string))
      text += Buffer.from(piece).toString();
    const ids = text
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => (JSON.parse(line) as { id: string; embedding: number[] }).id);
    expect(ids).toHaveLength(ROWS);
    expect(new Set(ids).size).toBe(ROWS);
    expect(ids).toEqual(items.map((item) => item.id));

    // Not vacuous: the survivors ran chunks the preempted workers had taken.
    let redelivered = 0;
    for (const survivor of workers.slice(3)) {
      const text = await (await fetch(`http://127.0.0.1:${String(survivor.ready.port)}/metrics`)).text();
      redelivered += metricValue(text, 'mcp_cluster_worker_redelivered_total');
    }
    expect(redelivered).toBeGreaterThan(0);
  }, 180_000);
});
