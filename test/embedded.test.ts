import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBroker } from '../services/cli/index.js';
import { type Broker, inProcessDelivery, type ResolvedConfig } from '../services/core/index.js';
import { type Ingress, startIngress } from '../services/ingress/index.js';
import { embedAdapter } from '../workers/embeddings/index.js';
import { inferenceAdapters } from '../workers/inference/index.js';
import { startWorker, type Worker } from '../workers/runtime/index.js';
import { type SimBackend, startSimBackend } from '../workers/sim/index.js';
import { resolveConfig } from './support/families.js';
import { connectClient } from './support/mcp-clients.js';

// The embedded mode: ingress, memory queue, both pools and a simulated backend in this process.
describe('embedded cluster (memory queue, one process)', () => {
  let sim: SimBackend;
  let broker: Broker;
  let ingress: Ingress;
  let workers: Worker[];
  let config: ResolvedConfig;

  beforeAll(async () => {
    sim = await startSimBackend({ ttftMs: 5, tokensPerSecond: 400 });
    config = resolveConfig(
      `
cluster: { namespace: embedded-test }
ingress: { port: 0 }
pools:
  inference: { backend: openai-chat, endpoints: [{ url: "${sim.url}", maxConcurrency: 8 }] }
  embeddings: { backend: openai-embeddings, endpoints: [{ url: "${sim.url}", maxConcurrency: 8 }] }
`,
      {},
    );
    broker = await openBroker({
      url: 'memory:',
      namespace: 'embedded-test',
      pools: ['inference', 'embeddings'],
    });
    const delivery = inProcessDelivery();
    ingress = await startIngress(config, broker, delivery);
    const adapters = { ...inferenceAdapters, embed: embedAdapter };
    workers = await Promise.all(
      ['inference', 'embeddings'].map((pool) =>
        startWorker({ config, pool, broker, adapters, delivery, workerId: `w-${pool}`, serveHttp: false }),
      ),
    );
  });

  afterAll(async () => {
    await ingress?.shutdown();
    await Promise.all((workers ?? []).map((w) => w.shutdown()));
    await broker?.close();
    await sim?.close();
  });

  for (const kind of ['v2', 'v1'] as const) {
    it(`serves tools/list, generate_text with progress and embed to the ${kind} client`, async () => {
      const client = await connectClient(kind, ingress.url);
      try {
        const tools = await client.listTools();
        expect(tools.map((t) => t.name).sort()).toEqual(['chat', 'embed', 'generate_text', 'summarize']);

        const progress: { progress: number; message?: string }[] = [];
        const result = await client.callTool(
          'generate_text',
          { prompt: 'hello cluster', max_tokens: 40 },
          { onProgress: (p) => progress.push(p) },
        );
        expect(result.isError).toBeFalsy();
        const text = (result.content[0] as { text: string }).text;
        expect(text.length).toBeGreaterThan(0);
        expect(progress.length).toBeGreaterThan(0);
        expect(progress.at(-1)?.message && text.startsWith(progress.at(-1)?.message ?? '')).toBe(true);

        const timing = result._meta?.['mcp-cluster/timing'] as Record<string, number> | undefined;
        expect(Object.keys(timing ?? {}).sort()).toEqual([
          'backendMs',
          'batchWaitMs',
          'deliveryMs',
          'queueWaitMs',
        ]);
        expect(timing?.backendMs).toBeGreaterThan(0);

        const embedded = await client.callTool('embed', { texts: ['a', 'b', 'c'] });
        expect(embedded.isError).toBeFalsy();
        const structured = embedded.structuredContent as { vectors: number[][]; dimensions: number };
        expect(structured.vectors).toHaveLength(3);
        expect(structured.vectors[0]).toHaveLength(structured.dimensions);
      } finally {
        await client.close();
      }
    });
  }
});
