import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { ClusterError, createLogger, type ToolConfig } from '../services/core/index.js';
import { embedAdapter } from '../workers/embeddings/index.js';
import { generateTextAdapter } from '../workers/inference/index.js';
import type {
  BackendActor,
  BackendActorOptions,
  ToolAdapter,
  ToolProgress,
} from '../workers/runtime/index.js';
import type { SimOptions } from '../workers/sim/index.js';
import {
  adapterContext,
  cleanupAfterEach,
  downUrl,
  rawEmbeddings,
  rejection,
  startActor,
  startSim,
  stubServer,
  textOf,
  unstreamed,
} from './support/adapter-harness.js';
import { freePort } from './support/brokers.js';
import { resolveConfig } from './support/families.js';
import { waitFor } from './support/wait.js';

// The tool adapters and the backend actor against real HTTP backends: the simulated vLLM server,
// a closed port, and (for the one case the sim cannot produce: vectors that are not unit length)
// a tiny OpenAI-style embeddings server.

const defaults = resolveConfig('', {}).tools;
const chatTool: ToolConfig = defaults.find((t) => t.name === 'generate_text') as ToolConfig;
const embedTool: ToolConfig = defaults.find((t) => t.name === 'embed') as ToolConfig;

const cleanups = cleanupAfterEach();
const sim = (options: Partial<SimOptions> = {}) => startSim(cleanups, options);

const norm = (v: number[]) => Math.hypot(...v);

describe('generateTextAdapter against the simulated vLLM backend', () => {
  it('streams the same text the backend gives unstreamed, with rate-limited progress', async () => {
    const backend = await sim({ ttftMs: 5, tokensPerSecond: 2000 });
    const prompt = 'Tell me how a work queue spreads calls over workers.';
    const maxTokens = 600;
    const progress: ToolProgress[] = [];
    const result = await generateTextAdapter.run(
      adapterContext(chatTool, { prompt, max_tokens: maxTokens }, backend.url, {
        onProgress: (p) => progress.push(p),
      }),
    );
    const text = textOf(result);
    expect(result.isError).toBeFalsy();
    expect(backend.stats()).toMatchObject({ chatRequests: 1, completed: 1, aborted: 0 });
    expect(text).toBe(await unstreamed(backend, [{ role: 'user', content: prompt }], maxTokens));

    // Quiet: far fewer notifications than tokens, yet some, each a growing prefix of the answer.
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.length).toBeLessThan(maxTokens);
    let previous = '';
    let previousCount = 0;
    for (const p of progress) {
      expect(p.total).toBe(maxTokens);
      expect(p.progress).toBeGreaterThan(previousCount);
      expect(p.progress).toBeLessThanOrEqual(maxTokens);
      expect(p.message?.startsWith(previous)).toBe(true);
      previous = p.message ?? '';
      previousCount = p.progress;
    }
    expect(text.startsWith(progress.at(-1)?.message ?? '\u0000')).toBe(true);
  });

  it('sends the system prompt as a system message', async () => {
    const backend = await sim({ ttftMs: 1, tokensPerSecond: 5000 });
    const args = { prompt: 'Name a colour.', system: 'You are terse.', max_tokens: 12 };
    const result = await generateTextAdapter.run(adapterContext(chatTool, args, backend.url));
    const expected = await unstreamed(
      backend,
      [
        { role: 'system', content: args.system },
        { role: 'user', content: args.prompt },
      ],
      args.max_tokens,
    );
    expect(textOf(result)).toBe(expected);
  });

  it('closes the stream when the signal aborts mid-stream, and rejects with CANCELLED', async () => {
    const backend = await sim({ ttftMs: 5, tokensPerSecond: 20 });
    const abort = new AbortController();
    let progressCalls = 0;
    const err = await rejection(
      generateTextAdapter.run(
        adapterContext(chatTool, { prompt: 'A long answer, please.', max_tokens: 400 }, backend.url, {
          signal: abort.signal,
          onProgress: () => {
            progressCalls += 1;
            abort.abort(new ClusterError('CANCELLED', 'test cancel'));
          },
        }),
      ),
    );
    expect(err.code).toBe('CANCELLED');
    expect(progressCalls).toBe(1);
    await waitFor('the sim to count the aborted sequence', () => backend.stats().aborted === 1);
    expect(backend.stats()).toMatchObject({ chatRequests: 1, completed: 0, running: 0 });
  });

  it('aborts a request still waiting for its first token, and rejects with CANCELLED', async () => {
    const backend = await sim({ ttftMs: 60_000 });
    const abort = new AbortController();
    const running = generateTextAdapter.run(
      adapterContext(chatTool, { prompt: 'Hello?', max_tokens: 4 }, backend.url, { signal: abort.signal }),
    );
    await waitFor('the sim to start the sequence', () => backend.stats().running === 1);
    abort.abort();
    expect((await rejection(running)).code).toBe('CANCELLED');
    await waitFor('the sim to count the aborted sequence', () => backend.stats().aborted === 1);
  });

  it('bounds the wait for the response headers with backendTimeoutMs, not the length of the stream', async () => {
    // Headers come after the first token (~5 ms); the whole answer takes about 600 ms.
    const backend = await sim({ ttftMs: 5, tokensPerSecond: 100 });
    const result = await generateTextAdapter.run(
      adapterContext(chatTool, { prompt: 'Count slowly.', max_tokens: 60 }, backend.url, {
        backendTimeoutMs: 150,
      }),
    );
    expect(textOf(result)).toBe(await unstreamed(backend, [{ role: 'user', content: 'Count slowly.' }], 60));

    // A backend that does not answer within the bound is unavailable (retryable), not cancelled.
    const slow = await sim({ ttftMs: 60_000 });
    const err = await rejection(
      generateTextAdapter.run(
        adapterContext(chatTool, { prompt: 'Hi', max_tokens: 4 }, slow.url, { backendTimeoutMs: 100 }),
      ),
    );
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain('did not answer within 100 ms');
    await waitFor('the slow sim to see the request go', () => slow.stats().aborted === 1);
  });

  it('rejects with BACKEND_UNAVAILABLE naming the URL when the backend is down', async () => {
    const url = await downUrl();
    const err = await rejection(generateTextAdapter.run(adapterContext(chatTool, { prompt: 'Hi' }, url)));
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain(url);
  });

  it('rejects with BACKEND_PROTOCOL carrying the backend message for a model it does not serve', async () => {
    const backend = await sim();
    const tool = { ...chatTool, model: 'no-such-model' };
    const err = await rejection(generateTextAdapter.run(adapterContext(tool, { prompt: 'Hi' }, backend.url)));
    expect(err.code).toBe('BACKEND_PROTOCOL');
    expect(err.message).toContain('The model `no-such-model` does not exist.');
    expect(err.message).toContain(backend.url);
  });
});

describe('embedAdapter against the simulated vLLM backend', () => {
  const texts = ['alpha', 'a somewhat longer second text', 'gamma'];

  it('returns one unit-length vector per text, in order, matching the outputSchema', async () => {
    const backend = await sim({ embeddingDimensions: 32 });
    const result = await embedAdapter.run(adapterContext(embedTool, { texts }, backend.url));
    expect(result.isError).toBeFalsy();
    const structured = result.structuredContent as { model: string; dimensions: number; vectors: number[][] };

    // The resolved tool carries the schema its template (the embeddings family) declares.
    const schema = embedTool.outputSchema;
    expect(schema).toBeDefined();
    const validate = new Ajv({ strict: false }).compile(schema ?? {});
    expect(validate(structured), JSON.stringify(validate.errors)).toBe(true);
    expect(structured.model).toBe('sim-embed');
    expect(structured.dimensions).toBe(32);
    expect(structured.vectors).toHaveLength(texts.length);
    for (const vector of structured.vectors) {
      expect(vector).toHaveLength(32);
      expect(norm(vector)).toBeCloseTo(1, 9);
    }
    // In order: each vector is the one the text gets on its own.
    for (const [i, text] of texts.entries()) {
      const alone = await embedAdapter.run(adapterContext(embedTool, { texts: [text] }, backend.url));
      expect((alone.structuredContent as { vectors: number[][] }).vectors[0]).toEqual(structured.vectors[i]);
    }
    expect(textOf(result)).toContain('3 embeddings of 32 dimensions');
  });

  it('returns the backend vectors untouched with normalize: false', async () => {
    const backend = await sim();
    const result = await embedAdapter.run(
      adapterContext(embedTool, { texts, normalize: false }, backend.url),
    );
    expect((result.structuredContent as { vectors: number[][] }).vectors).toEqual(
      await rawEmbeddings(backend, texts),
    );
  });

  it('rejects with BACKEND_PROTOCOL carrying the backend message for an unknown model', async () => {
    const backend = await sim();
    const err = await rejection(
      embedAdapter.run(adapterContext(embedTool, { texts: ['x'], model: 'no-such-embedder' }, backend.url)),
    );
    expect(err.code).toBe('BACKEND_PROTOCOL');
    expect(err.message).toContain('The model `no-such-embedder` does not exist.');
  });

  it('rejects with BACKEND_UNAVAILABLE naming the URL when the backend is down', async () => {
    const url = await downUrl();
    const err = await rejection(embedAdapter.run(adapterContext(embedTool, { texts: ['x'] }, url)));
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain(url);
  });

  it('scales vectors to unit length by default and orders them by index', async () => {
    // The sim's vectors are already unit length, so a server answering [3, 4]-style vectors
    // out of order is what shows normalisation and re-ordering actually happen.
    const url = await stubServer(cleanups, 200, {
      model: 'plain',
      data: [
        { index: 1, embedding: [0, 5] },
        { index: 0, embedding: [3, 4] },
      ],
    });

    const scaled = await embedAdapter.run(adapterContext(embedTool, { texts: ['first', 'second'] }, url));
    const vectors = (scaled.structuredContent as { vectors: number[][] }).vectors;
    expect(vectors[0]?.[0]).toBeCloseTo(0.6, 12);
    expect(vectors[0]?.[1]).toBeCloseTo(0.8, 12);
    expect(vectors[1]).toEqual([0, 1]);

    const raw = await embedAdapter.run(
      adapterContext(embedTool, { texts: ['first', 'second'], normalize: false }, url),
    );
    expect(raw.structuredContent).toEqual({
      model: 'sim-embed',
      dimensions: 2,
      vectors: [
        [3, 4],
        [0, 5],
      ],
    });
  });
});

describe('BackendActor', () => {
  const log = createLogger('adapters-test');

  const actor = (url: string, options: Partial<BackendActorOptions> = {}) =>
    startActor(cleanups, log, url, options);

  /** Runs one generate_text call through the actor, counting the times the backend is tried. */
  function runner(a: BackendActor, tool: ToolConfig = chatTool, adapter: ToolAdapter = generateTextAdapter) {
    let tried = 0;
    return {
      get tried() {
        return tried;
      },
      run: () =>
        a.run((url) => {
          tried += 1;
          return adapter.run(adapterContext(tool, { prompt: 'Hi', max_tokens: 2 }, url));
        }),
    };
  }

  it('opens its breaker after 5 consecutive BACKEND_UNAVAILABLE failures, then fails fast', async () => {
    const url = await downUrl();
    const a = actor(url);
    const r = runner(a);
    for (let i = 1; i <= 5; i++) {
      expect(a.view().available).toBe(true);
      const err = await rejection(r.run());
      expect(err.code).toBe('BACKEND_UNAVAILABLE');
      expect(err.message).toContain(url);
    }
    expect(a.view()).toMatchObject({ id: url, available: false, inFlight: 0 });

    const err = await rejection(r.run());
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toMatch(/circuit breaker is open/);
    expect(err.message).toContain(url);
    expect(r.tried).toBe(5);
    expect(a.view().inFlight).toBe(0);
  });

  it('lets calls through again once the half-open delay has passed', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const a = actor(url, { breakerHalfOpenMs: 200 });
    const r = runner(a);
    for (let i = 0; i < 5; i++) await rejection(r.run());
    expect(a.view().available).toBe(false);

    // The backend comes back; the router must see the actor as available again so a trial call
    // can reach it (the breaker only half-opens when a call is attempted).
    const backend = await sim({ port, ttftMs: 1, tokensPerSecond: 5000 });
    expect(backend.url).toBe(url);
    await waitFor('the breaker to admit a trial call', () => a.view().available);
    await r.run();
    expect(a.view().available).toBe(true);
    expect(backend.stats().completed).toBe(1);
  });

  it('does not open its breaker for requests the backend refuses (a caller-chosen unknown model)', async () => {
    const backend = await sim();
    const a = actor(backend.url);
    let tried = 0;
    for (let i = 0; i < 8; i++) {
      const err = await rejection(
        a.run((url) => {
          tried += 1;
          return embedAdapter.run(adapterContext(embedTool, { texts: ['x'], model: 'not-served' }, url));
        }),
      );
      expect(err.code).toBe('BACKEND_PROTOCOL');
    }
    expect(tried).toBe(8);
    expect(a.view().available).toBe(true);
    // Other callers still get served.
    await a.run((url) => embedAdapter.run(adapterContext(embedTool, { texts: ['fine'] }, url)));
  });

  it('does not count cancelled calls against the backend', async () => {
    const backend = await sim({ ttftMs: 60_000 });
    const a = actor(backend.url);
    for (let i = 0; i < 6; i++) {
      const abort = new AbortController();
      const running = a.run((url) =>
        generateTextAdapter.run(adapterContext(chatTool, { prompt: 'Hi' }, url, { signal: abort.signal })),
      );
      await waitFor('the sequence to start', () => backend.stats().running === 1);
      abort.abort();
      expect((await rejection(running)).code).toBe('CANCELLED');
      await waitFor('the sequence to end', () => backend.stats().running === 0);
    }
    expect(a.view().available).toBe(true);
  });

  it('health probe marks an endpoint unhealthy when nothing listens, and healthy once it is back', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const a = actor(url, { healthIntervalMs: 50 });
    expect(a.isHealthy).toBe(true);
    a.startProbe();
    await waitFor('the probe to fail', () => !a.isHealthy);
    expect(a.view().available).toBe(false);

    await sim({ port });
    await waitFor('the probe to pass again', () => a.isHealthy);
    expect(a.view().available).toBe(true);
  });
});
