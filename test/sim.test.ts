import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSimArgs, type SimBackend, type SimStats, startSimBackend } from '../workers/sim/index.js';
import { waitFor } from './support/wait.js';

interface ChatChunk {
  id: string;
  object: string;
  created: number;
  model: string;
  choices: { index: number; delta: { role?: string; content?: string }; finish_reason: string | null }[];
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

interface ChatCompletion {
  id: string;
  object: string;
  model: string;
  choices: { index: number; message: { role: string; content: string }; finish_reason: string }[];
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

interface EmbeddingList {
  object: string;
  model: string;
  data: { object: string; index: number; embedding: number[] | string }[];
  usage: { prompt_tokens: number; total_tokens: number };
}

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: number };
}

function post(sim: SimBackend, path: string, body: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(`${sim.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    ...init,
  });
}

/** The `data:` payloads of an SSE body, in order. */
function sseData(text: string): string[] {
  return text
    .split('\n\n')
    .filter((event) => event.trim() !== '')
    .map((event) => {
      expect(event.startsWith('data: ')).toBe(true);
      return event.slice('data: '.length);
    });
}

/** Waits until the backend's stats match `predicate` and resolves with them; a timeout shows the last seen. */
function waitForStats(sim: SimBackend, predicate: (stats: SimStats) => boolean): Promise<SimStats> {
  let last = sim.stats();
  return waitFor(
    () => `the sim's stats to match; last seen ${JSON.stringify(last)}`,
    () => {
      last = sim.stats();
      return predicate(last) ? last : undefined;
    },
    20_000,
  );
}

/** Reads a streamed response until at least one content token arrived. */
async function readUntilFirstToken(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
  const decoder = new TextDecoder();
  let text = '';
  while (!/"content":"[^"]/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error('stream ended before the first token');
    text += decoder.decode(value, { stream: true });
  }
}

const messages = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Say something about clusters.' },
];

describe('sim backend: chat completions', () => {
  let sim: SimBackend;
  beforeAll(async () => {
    sim = await startSimBackend({ ttftMs: 1, tokensPerSecond: 5000 });
  });
  afterAll(() => sim.close());

  it('streams well-formed SSE chunks with the requested number of tokens, then [DONE]', async () => {
    const res = await post(sim, '/v1/chat/completions', {
      model: 'sim-llm',
      messages,
      max_tokens: 7,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const data = sseData(await res.text());
    expect(data.at(-1)).toBe('[DONE]');
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d) as ChatChunk);
    for (const chunk of chunks) {
      expect(chunk.object).toBe('chat.completion.chunk');
      expect(chunk.id).toMatch(/^chatcmpl-/);
      expect(chunk.id).toBe(chunks[0]?.id);
      expect(chunk.model).toBe('sim-llm');
      expect(typeof chunk.created).toBe('number');
    }
    expect(chunks[0]?.choices[0]?.delta.role).toBe('assistant');
    const contentChunks = chunks.filter((c) => (c.choices[0]?.delta.content ?? '') !== '');
    expect(contentChunks).toHaveLength(7);
    for (const c of contentChunks) expect(c.choices[0]?.finish_reason).toBeNull();
    const usageChunk = chunks.at(-1);
    expect(usageChunk?.choices).toEqual([]);
    expect(usageChunk?.usage?.completion_tokens).toBe(7);
    const finalChunk = chunks.at(-2);
    expect(finalChunk?.choices[0]?.finish_reason).toBe('length');
    expect(finalChunk?.choices[0]?.delta).toEqual({});
  });

  it('gives the same text for the same input, streamed or not, and different text for other input', async () => {
    const complete = async (body: object): Promise<string> => {
      const res = await post(sim, '/v1/chat/completions', body);
      expect(res.status).toBe(200);
      const json = (await res.json()) as ChatCompletion;
      return json.choices[0]?.message.content ?? '';
    };
    const first = await complete({ model: 'sim-llm', messages, max_tokens: 12 });
    const second = await complete({ model: 'sim-llm', messages, max_tokens: 12 });
    expect(second).toBe(first);
    const other = await complete({
      model: 'sim-llm',
      messages: [{ role: 'user', content: 'Other.' }],
      max_tokens: 12,
    });
    expect(other).not.toBe(first);

    const res = await post(sim, '/v1/chat/completions', {
      model: 'sim-llm',
      messages,
      max_tokens: 12,
      stream: true,
    });
    const streamed = sseData(await res.text())
      .slice(0, -1)
      .map((d) => (JSON.parse(d) as ChatChunk).choices[0]?.delta.content ?? '')
      .join('');
    expect(streamed).toBe(first);
  });

  it('answers a non-streamed request with a chat.completion and usage', async () => {
    const res = await post(sim, '/v1/chat/completions', { model: 'sim-llm', messages, max_tokens: 5 });
    expect(res.status).toBe(200);
    const json = (await res.json()) as ChatCompletion;
    expect(json.object).toBe('chat.completion');
    expect(json.id).toMatch(/^chatcmpl-/);
    expect(json.choices[0]?.message.role).toBe('assistant');
    expect(json.choices[0]?.message.content.split(' ')).toHaveLength(5);
    expect(json.choices[0]?.finish_reason).toBe('length');
    expect(json.usage.completion_tokens).toBe(5);
    expect(json.usage.prompt_tokens).toBeGreaterThan(0);
    expect(json.usage.total_tokens).toBe(json.usage.prompt_tokens + 5);

    // Without max_tokens the model "stops" on its own after the default length.
    const natural = (await (await post(sim, '/v1/chat/completions', { messages })).json()) as ChatCompletion;
    expect(natural.model).toBe('sim-llm');
    expect(natural.usage.completion_tokens).toBe(16);
    expect(natural.choices[0]?.finish_reason).toBe('stop');
  });
});

describe('sim backend: capacity and cancellation', () => {
  it('counts a client that aborts mid-stream as aborted and frees its sequence slot', async () => {
    const sim = await startSimBackend({ ttftMs: 1, tokensPerSecond: 50 });
    try {
      const controller = new AbortController();
      const res = await post(
        sim,
        '/v1/chat/completions',
        { messages, max_tokens: 4000, stream: true },
        { signal: controller.signal },
      );
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      await readUntilFirstToken(reader);
      expect(sim.stats().running).toBe(1);
      controller.abort();
      const stats = await waitForStats(sim, (s) => s.aborted === 1 && s.running === 0);
      expect(stats).toMatchObject({ requests: 1, chatRequests: 1, completed: 0, aborted: 1, waiting: 0 });
    } finally {
      await sim.close();
    }
  });

  it('queues a request beyond maxNumSeqs until a sequence slot frees up', async () => {
    const sim = await startSimBackend({ ttftMs: 1, tokensPerSecond: 50, maxNumSeqs: 1 });
    try {
      const controller = new AbortController();
      const first = await post(
        sim,
        '/v1/chat/completions',
        { messages, max_tokens: 4000, stream: true },
        { signal: controller.signal },
      );
      await readUntilFirstToken((first.body as ReadableStream<Uint8Array>).getReader());

      const second = post(sim, '/v1/chat/completions', { messages, max_tokens: 2 });
      await waitForStats(sim, (s) => s.waiting === 1);
      expect(sim.stats()).toMatchObject({ running: 1, waiting: 1 });
      const metrics = await (await fetch(`${sim.url}/metrics`)).text();
      expect(metrics).toContain('vllm:num_requests_waiting{model_name="sim-llm"} 1');
      expect(metrics).toContain('vllm:kv_cache_usage_perc{model_name="sim-llm"} 1');

      controller.abort();
      const answer = await second;
      expect(answer.status).toBe(200);
      expect(((await answer.json()) as ChatCompletion).usage.completion_tokens).toBe(2);
      const stats = await waitForStats(sim, (s) => s.completed === 1 && s.aborted === 1);
      expect(stats).toMatchObject({ requests: 2, running: 0, waiting: 0 });
    } finally {
      await sim.close();
    }
  });

  it('counts a client that leaves while waiting as aborted, without taking a slot', async () => {
    const sim = await startSimBackend({ ttftMs: 1, tokensPerSecond: 50, maxNumSeqs: 1 });
    try {
      const holder = new AbortController();
      const first = await post(
        sim,
        '/v1/chat/completions',
        { messages, max_tokens: 4000, stream: true },
        { signal: holder.signal },
      );
      await readUntilFirstToken((first.body as ReadableStream<Uint8Array>).getReader());
      const waiter = new AbortController();
      const second = post(sim, '/v1/chat/completions', { messages }, { signal: waiter.signal });
      await waitForStats(sim, (s) => s.waiting === 1);
      waiter.abort();
      await expect(second).rejects.toThrow();
      await waitForStats(sim, (s) => s.aborted === 1 && s.waiting === 0);
      expect(sim.stats().running).toBe(1);
      holder.abort();
      await waitForStats(sim, (s) => s.aborted === 2 && s.running === 0);
    } finally {
      await sim.close();
    }
  });
});

describe('sim backend: embeddings', () => {
  let sim: SimBackend;
  beforeAll(async () => {
    sim = await startSimBackend({ embeddingDimensions: 32 });
  });
  afterAll(() => sim.close());

  const embed = async (body: object): Promise<EmbeddingList> => {
    const res = await post(sim, '/v1/embeddings', body);
    expect(res.status).toBe(200);
    return (await res.json()) as EmbeddingList;
  };

  it('returns one unit-norm vector per input, in order, the same for the same text', async () => {
    const list = await embed({ model: 'sim-embed', input: ['alpha', 'beta', 'gamma delta'] });
    expect(list.object).toBe('list');
    expect(list.model).toBe('sim-embed');
    expect(list.data.map((d) => d.index)).toEqual([0, 1, 2]);
    expect(list.usage.prompt_tokens).toBeGreaterThan(0);
    expect(list.usage.total_tokens).toBe(list.usage.prompt_tokens);
    const vectors = list.data.map((d) => d.embedding as number[]);
    for (const [i, d] of list.data.entries()) {
      expect(d.object).toBe('embedding');
      const vector = vectors[i] ?? [];
      expect(vector).toHaveLength(32);
      expect(Math.hypot(...vector)).toBeCloseTo(1, 9);
    }
    expect(vectors[0]).not.toEqual(vectors[1]);

    const single = await embed({ model: 'sim-embed', input: 'beta' });
    expect(single.data).toHaveLength(1);
    expect(single.data[0]?.embedding).toEqual(vectors[1]);
    const reordered = await embed({ input: ['gamma delta', 'alpha'] });
    expect(reordered.data[0]?.embedding).toEqual(vectors[2]);
    expect(reordered.data[1]?.embedding).toEqual(vectors[0]);
  });

  it('encodes base64 as little-endian float32, like vLLM', async () => {
    const floats = await embed({ input: 'alpha' });
    const encoded = await embed({ input: 'alpha', encoding_format: 'base64' });
    const bytes = Buffer.from(encoded.data[0]?.embedding as string, 'base64');
    const decoded = Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4));
    const expected = floats.data[0]?.embedding as number[];
    expect(decoded).toHaveLength(expected.length);
    decoded.forEach((x, i) => {
      expect(x).toBeCloseTo(expected[i] ?? Number.NaN, 6);
    });
  });

  it('counts embeddings requests and inputs', async () => {
    const before = sim.stats();
    await embed({ input: ['a', 'b', 'c', 'd'] });
    const after = sim.stats();
    expect(after.embedRequests - before.embedRequests).toBe(1);
    expect(after.embedInputs - before.embedInputs).toBe(4);
  });
});

describe('sim backend: errors and hostile input', () => {
  let sim: SimBackend;
  beforeAll(async () => {
    sim = await startSimBackend({ ttftMs: 1, tokensPerSecond: 5000, maxBodyBytes: 4096, maxEmbedBatch: 3 });
  });
  afterAll(() => sim.close());

  const expectError = async (res: Response, status: number, type: string): Promise<ErrorBody> => {
    expect(res.status).toBe(status);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const body = (await res.json()) as ErrorBody;
    expect(body.error.type).toBe(type);
    expect(body.error.code).toBe(status);
    expect(body.error.message.length).toBeGreaterThan(0);
    return body;
  };

  it('answers bad JSON with 400', async () => {
    await expectError(await post(sim, '/v1/chat/completions', '{"messages": ['), 400, 'BadRequestError');
    await expectError(await post(sim, '/v1/embeddings', '[1, 2]'), 400, 'BadRequestError');
  });

  it('answers missing or mistyped fields with 400 naming the field', async () => {
    const missing = await expectError(
      await post(sim, '/v1/chat/completions', { model: 'sim-llm' }),
      400,
      'BadRequestError',
    );
    expect(missing.error.message).toContain('messages');
    expect(missing.error.param).toBe('messages');

    const badRole = await expectError(
      await post(sim, '/v1/chat/completions', { messages: [{ role: 'wizard', content: 'x' }] }),
      400,
      'BadRequestError',
    );
    expect(badRole.error.param).toBe('messages[0].role');

    for (const max_tokens of [0, 1.5, '10', 1e308, 5000]) {
      const res = await post(sim, '/v1/chat/completions', { messages, max_tokens });
      expect((await expectError(res, 400, 'BadRequestError')).error.param).toBe('max_tokens');
    }
    const streamOptions = await post(sim, '/v1/chat/completions', {
      messages,
      stream_options: { include_usage: true },
    });
    expect((await expectError(streamOptions, 400, 'BadRequestError')).error.param).toBe('stream_options');

    const empty = await expectError(await post(sim, '/v1/embeddings', { input: [] }), 400, 'BadRequestError');
    expect(empty.error.message).toContain('input');
    const nonString = await expectError(
      await post(sim, '/v1/embeddings', { input: ['ok', 42] }),
      400,
      'BadRequestError',
    );
    expect(nonString.error.param).toBe('input[1]');
    const tooMany = await expectError(
      await post(sim, '/v1/embeddings', { input: ['a', 'b', 'c', 'd'] }),
      400,
      'BadRequestError',
    );
    expect(tooMany.error.message).toContain('3');
  });

  it('answers an unknown model with 404 like vLLM', async () => {
    const chat = await expectError(
      await post(sim, '/v1/chat/completions', { model: 'gpt-9', messages }),
      404,
      'NotFoundError',
    );
    expect(chat.error.message).toContain('gpt-9');
    await expectError(await post(sim, '/v1/embeddings', { model: 'nope', input: 'x' }), 404, 'NotFoundError');
  });

  it('answers an oversized body with 413', async () => {
    const input = 'x'.repeat(10_000);
    await expectError(await post(sim, '/v1/embeddings', { input }), 413, 'RequestEntityTooLargeError');
    // The same without a Content-Length: the limit is enforced while reading.
    const chunked = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(JSON.stringify({ input })));
        controller.close();
      },
    });
    const init = { method: 'POST', body: chunked, duplex: 'half' } as RequestInit;
    await expectError(await fetch(`${sim.url}/v1/embeddings`, init), 413, 'RequestEntityTooLargeError');
  });

  it('answers unknown routes with 404 and wrong methods with 405', async () => {
    await expectError(await fetch(`${sim.url}/v2/nothing`), 404, 'NotFoundError');
    await expectError(await fetch(`${sim.url}/v1/chat/completions`), 405, 'MethodNotAllowedError');
  });

  it('does not count rejected requests and survives a client leaving mid-body', async () => {
    const before = sim.stats();
    await new Promise<void>((resolve, reject) => {
      const socket = connect(sim.port, '127.0.0.1', () => {
        socket.write(
          'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
            'Content-Length: 1000\r\n\r\n{"messages": [',
        );
        setTimeout(() => {
          socket.destroy();
          resolve();
        }, 20);
      });
      socket.on('error', reject);
    });
    const res = await post(
      sim,
      '/v1/chat/completions',
      { messages, max_tokens: 1 },
      {
        headers: { 'content-type': 'text/plain' },
      },
    );
    expect(res.status).toBe(200);
    const after = sim.stats();
    expect(after.requests - before.requests).toBe(1);
  });
});

describe('sim backend: models, health, metrics', () => {
  let sim: SimBackend;
  beforeAll(async () => {
    sim = await startSimBackend({ model: 'my-llm', embeddingModel: 'my-embed' });
  });
  afterAll(() => sim.close());

  it('lists both models', async () => {
    const res = await fetch(`${sim.url}/v1/models`);
    const list = (await res.json()) as { object: string; data: { id: string; object: string }[] };
    expect(list.object).toBe('list');
    expect(list.data.map((m) => m.id)).toEqual(['my-llm', 'my-embed']);
  });

  it('answers /health with 200 and an empty body', async () => {
    const res = await fetch(`${sim.url}/health`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('');
  });

  it('exposes vLLM gauge names and sim counters in Prometheus text format', async () => {
    const res = await fetch(`${sim.url}/metrics`);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await res.text();
    for (const name of [
      'vllm:num_requests_running',
      'vllm:num_requests_waiting',
      'vllm:kv_cache_usage_perc',
      'sim_requests_total',
      'sim_requests_aborted_total',
    ]) {
      expect(text).toContain(`# TYPE ${name} `);
    }
    expect(text).toContain('vllm:num_requests_running{model_name="my-llm"} 0');
  });

  it('serves its stats as JSON', async () => {
    const stats = (await (await fetch(`${sim.url}/sim/stats`)).json()) as SimStats;
    expect(stats).toEqual(sim.stats());
  });

  it('records requests in arrival order, numbered, with the user and max_tokens of chat requests', async () => {
    const before = sim.recentRequests().at(-1)?.seq ?? 0;
    for (const [user, maxTokens] of [
      ['tenant-a', 3],
      ['tenant-b', 5],
    ] as const) {
      const res = await post(sim, '/v1/chat/completions', {
        model: 'my-llm',
        messages: [{ role: 'user', content: 'abcdefgh' }],
        max_tokens: maxTokens,
        user,
      });
      await res.arrayBuffer();
    }
    await (await fetch(`${sim.url}/health`)).arrayBuffer();
    const { requests } = (await (await fetch(`${sim.url}/sim/requests`)).json()) as {
      requests: { seq: number; path: string; chat?: unknown }[];
    };
    const mine = requests.filter((r) => r.seq > before);
    expect(mine.map((r) => r.seq)).toEqual([before + 1, before + 2, before + 3]);
    expect(mine.map((r) => r.chat)).toEqual([
      { user: 'tenant-a', maxTokens: 3, promptTokens: 2 },
      { user: 'tenant-b', maxTokens: 5, promptTokens: 2 },
      undefined,
    ]);
  });
});

describe('sim options', () => {
  it('parses kebab-case flags into options', () => {
    expect(
      parseSimArgs(['--port', '8000', '--ttft-ms', '20', '--tokens-per-second=200', '--max-num-seqs', '4']),
    ).toEqual({ port: 8000, ttftMs: 20, tokensPerSecond: 200, maxNumSeqs: 4 });
    expect(parseSimArgs(['--model', 'llama', '--embed-per-token-ms', '0.5'])).toEqual({
      model: 'llama',
      embedPerTokenMs: 0.5,
    });
  });

  it('rejects an unknown flag, a non-numeric value and an out-of-range value, naming them', () => {
    expect(() => parseSimArgs(['--bogus', '1'])).toThrow(/--bogus/);
    expect(() => parseSimArgs(['--ttft-ms', 'abc'])).toThrow(/--ttft-ms.*"abc"/);
    expect(() => parseSimArgs(['--max-num-seqs', '0'])).toThrow(/--max-num-seqs.*"0"/);
    expect(() => parseSimArgs(['--port'])).toThrow(/--port/);
  });

  it('refuses invalid options at start', async () => {
    await expect(startSimBackend({ tokensPerSecond: 0 })).rejects.toThrow(/tokensPerSecond/);
    await expect(startSimBackend({ model: 'same', embeddingModel: 'same' })).rejects.toThrow(/differ/);
  });
});

interface UsageWithCache {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details?: { cached_tokens: number };
}

interface TeiError {
  error: string;
  error_type: string;
}

/** The sim's token estimate (documented on estimateTokens): 4 characters a token, rounded up, at least 1. */
const tokensOf = (text: string): number => Math.max(1, Math.ceil(text.length / 4));

async function chatOnce(sim: SimBackend, body: object): Promise<ChatCompletion & { usage: UsageWithCache }> {
  const res = await post(sim, '/v1/chat/completions', body);
  expect(res.status).toBe(200);
  return (await res.json()) as ChatCompletion & { usage: UsageWithCache };
}

describe('sim backend: continuous batching', () => {
  const decodeTokens = 200;

  /** Runs `concurrency` sequences of `decodeTokens + 1` tokens at once on a fresh backend. */
  async function run(concurrency: number): Promise<{ stats: SimStats; wallMs: number }> {
    const sim = await startSimBackend({
      ttftMs: 0,
      perPromptTokenMs: 0,
      tokensPerSecond: 1000,
      batchPenalty: 0.1,
      maxNumSeqs: 8,
    });
    try {
      const started = performance.now();
      const answers = await Promise.all(
        Array.from({ length: concurrency }, (_, i) =>
          chatOnce(sim, {
            messages: [{ role: 'user', content: `sequence ${i}` }],
            max_tokens: decodeTokens + 1,
          }),
        ),
      );
      const wallMs = performance.now() - started;
      for (const answer of answers) expect(answer.usage.completion_tokens).toBe(decodeTokens + 1);
      return { stats: sim.stats(), wallMs };
    } finally {
      await sim.close();
    }
  }

  it('slows each sequence but raises the total token rate as more sequences decode together', async () => {
    const alone = await run(1);
    const together = await run(8);

    // One sequence: one token per step, each step the base 1 ms.
    expect(alone.stats).toMatchObject({ decodeSteps: decodeTokens, decodeTokens, maxDecodeBatch: 1 });
    expect(alone.stats.decodeStepMsSum).toBeCloseTo(decodeTokens * 1, 6);
    // Eight at once: every token counted once, and the sequences really shared steps.
    expect(together.stats.decodeTokens).toBe(8 * decodeTokens);
    expect(together.stats.maxDecodeBatch).toBe(8);
    expect(together.stats.decodeSteps).toBeLessThan(8 * decodeTokens);
    // Each step took between the base time and the full-batch time 1 × (1 + 0.1 × 7).
    const meanStepMs = together.stats.decodeStepMsSum / together.stats.decodeSteps;
    expect(meanStepMs).toBeGreaterThan(1);
    expect(meanStepMs).toBeLessThanOrEqual(1.7 + 1e-9);

    // Rates in tokens per model millisecond: per sequence one token per step; in total every token.
    const perSequence = (s: SimStats): number => s.decodeSteps / s.decodeStepMsSum;
    const total = (s: SimStats): number => s.decodeTokens / s.decodeStepMsSum;
    const perSequenceRatio = perSequence(together.stats) / perSequence(alone.stats);
    const totalRatio = total(together.stats) / total(alone.stats);
    // With all eight in every step the ratios would be 1/1.7 ≈ 0.59 and 8/1.7 ≈ 4.7; arrivals
    // spread over a few steps move them toward 1, hence the generous bands.
    expect(perSequenceRatio).toBeGreaterThanOrEqual(1 / 1.7 - 1e-9);
    expect(perSequenceRatio).toBeLessThan(0.9);
    expect(totalRatio).toBeGreaterThan(2);
    expect(totalRatio).toBeLessThan(8);

    // The sim never decodes faster than its own model (only ever slower, on a busy machine).
    expect(alone.wallMs).toBeGreaterThanOrEqual(alone.stats.decodeStepMsSum);
    expect(together.wallMs).toBeGreaterThanOrEqual(together.stats.decodeStepMsSum);
  });

  it('exposes the decode loop in vLLM metrics', async () => {
    const sim = await startSimBackend({ ttftMs: 0, tokensPerSecond: 5000 });
    try {
      await chatOnce(sim, { messages, max_tokens: 5 });
      const text = await (await fetch(`${sim.url}/metrics`)).text();
      expect(text).toContain('# TYPE vllm:time_to_first_token_seconds histogram');
      expect(text).toContain('vllm:time_to_first_token_seconds_count{model_name="sim-llm"} 1');
      expect(text).toContain('vllm:iteration_tokens_total_count{model_name="sim-llm"} 4');
      expect(text).toContain('vllm:inter_token_latency_seconds_count{model_name="sim-llm"} 4');
      expect(text).toContain('vllm:generation_tokens_total{model_name="sim-llm"} 5');
      expect(sim.stats()).toMatchObject({ firstTokens: 1, decodeTokens: 4 });
      // The exported sum is the time the sim measured, in seconds.
      const sum = /^vllm:time_to_first_token_seconds_sum\{model_name="sim-llm"\} (\S+)$/m.exec(text)?.[1];
      expect(Number(sum)).toBeCloseTo(sim.stats().timeToFirstTokenMsSum / 1000, 9);
    } finally {
      await sim.close();
    }
  });
});

describe('sim backend: prefix cache', () => {
  const system = { role: 'system', content: 'You are a careful assistant who answers briefly. '.repeat(8) };
  const firstTurn = [system, { role: 'user', content: 'What is a cluster?' }];

  it('hits the prefix of the same session, not of another session or an unrelated prompt', async () => {
    const sim = await startSimBackend({ ttftMs: 0, tokensPerSecond: 5000 });
    try {
      const first = await chatOnce(sim, { messages: firstTurn, max_tokens: 8, user: 'session-a' });
      expect(first.usage.prompt_tokens_details?.cached_tokens).toBe(0);
      expect(sim.stats()).toMatchObject({
        prefixCacheQueries: 1,
        prefixCacheHits: 0,
        prefixCacheHitTokens: 0,
      });

      const reply = first.choices[0]?.message.content ?? '';
      const secondTurn = [
        ...firstTurn,
        { role: 'assistant', content: reply },
        { role: 'user', content: 'And a replica?' },
      ];
      const second = await chatOnce(sim, { messages: secondTurn, max_tokens: 8, user: 'session-a' });
      // Cached: the whole first prompt plus the completion the session left in the KV cache.
      const cached = first.usage.prompt_tokens + tokensOf(reply);
      expect(second.usage.prompt_tokens).toBe(cached + tokensOf('And a replica?'));
      expect(second.usage.prompt_tokens_details?.cached_tokens).toBe(cached);
      const uncachedFirst = first.usage.prompt_tokens;
      const uncachedSecond = second.usage.prompt_tokens - cached;
      expect(uncachedSecond).toBeLessThan(uncachedFirst);
      expect(sim.stats()).toMatchObject({
        prefixCacheQueries: 2,
        prefixCacheHits: 1,
        prefixCacheHitTokens: cached,
        prefixCacheQueryTokens: first.usage.prompt_tokens + second.usage.prompt_tokens,
        prefillTokens: uncachedFirst + uncachedSecond,
      });

      // The same prompt from another session, or from none, finds nothing.
      const other = await chatOnce(sim, { messages: secondTurn, max_tokens: 8, user: 'session-b' });
      expect(other.usage.prompt_tokens_details?.cached_tokens).toBe(0);
      const anonymous = await chatOnce(sim, { messages: secondTurn, max_tokens: 8 });
      expect(anonymous.usage.prompt_tokens_details?.cached_tokens).toBe(0);
      // An unrelated prompt under session-a shares no prefix with what it cached.
      const unrelated = await chatOnce(sim, {
        messages: [{ role: 'user', content: 'Something else entirely.' }],
        max_tokens: 8,
        user: 'session-a',
      });
      expect(unrelated.usage.prompt_tokens_details?.cached_tokens).toBe(0);
      expect(sim.stats()).toMatchObject({ prefixCacheQueries: 5, prefixCacheHits: 1 });

      const metrics = await (await fetch(`${sim.url}/metrics`)).text();
      expect(metrics).toContain(`vllm:prefix_cache_hits_total{model_name="sim-llm"} ${cached}`);
      expect(metrics).toContain(`vllm:gpu_prefix_cache_hits_total{model_name="sim-llm"} ${cached}`);
      expect(metrics).toContain(
        `vllm:prefix_cache_queries_total{model_name="sim-llm"} ${sim.stats().prefixCacheQueryTokens}`,
      );
    } finally {
      await sim.close();
    }
  });

  it('never counts the whole prompt as cached, streams cached_tokens in usage, and rejects a non-string user', async () => {
    const sim = await startSimBackend({ ttftMs: 0, tokensPerSecond: 5000 });
    try {
      const prompt = await chatOnce(sim, { messages: firstTurn, max_tokens: 2, user: 's' });
      const res = await post(sim, '/v1/chat/completions', {
        messages: firstTurn,
        max_tokens: 2,
        user: 's',
        stream: true,
        stream_options: { include_usage: true },
      });
      const chunks = sseData(await res.text())
        .slice(0, -1)
        .map((d) => JSON.parse(d) as ChatChunk & { usage?: UsageWithCache });
      // The same prompt again: all but its last token come from the cache, as in vLLM.
      expect(chunks.at(-1)?.usage?.prompt_tokens_details?.cached_tokens).toBe(prompt.usage.prompt_tokens - 1);

      const bad = await post(sim, '/v1/chat/completions', { messages, user: 42 });
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as ErrorBody).error.param).toBe('user');
    } finally {
      await sim.close();
    }
  });

  it('evicts the least recently used session when the capacity in tokens is reached, and can be off', async () => {
    const long = (tag: string) => [{ role: 'user', content: `${tag} ${'x'.repeat(236)}` }]; // 60 tokens
    const sim = await startSimBackend({ ttftMs: 0, tokensPerSecond: 5000, prefixCacheTokens: 100 });
    try {
      // A session holds its 60-token prompt plus a one-word completion: two do not fit in 100.
      await chatOnce(sim, { messages: long('a'), max_tokens: 1, user: 'a' });
      await chatOnce(sim, { messages: long('b'), max_tokens: 1, user: 'b' });
      const againB = await chatOnce(sim, { messages: long('b'), max_tokens: 1, user: 'b' });
      expect(againB.usage.prompt_tokens_details?.cached_tokens).toBe(59);
      const againA = await chatOnce(sim, { messages: long('a'), max_tokens: 1, user: 'a' });
      expect(againA.usage.prompt_tokens_details?.cached_tokens).toBe(0);
    } finally {
      await sim.close();
    }
    const off = await startSimBackend({ ttftMs: 0, tokensPerSecond: 5000, prefixCacheTokens: 0 });
    try {
      await chatOnce(off, { messages: long('a'), max_tokens: 1, user: 'a' });
      const again = await chatOnce(off, { messages: long('a'), max_tokens: 1, user: 'a' });
      expect(again.usage.prompt_tokens_details?.cached_tokens).toBe(0);
      expect(off.stats()).toMatchObject({ prefixCacheQueries: 2, prefixCacheHits: 0 });
    } finally {
      await off.close();
    }
  });
});

describe('sim backend: TEI embeddings', () => {
  let sim: SimBackend;
  beforeAll(async () => {
    sim = await startSimBackend({
      embeddingDimensions: 16,
      maxEmbedBatch: 4,
      embedMaxInputTokens: 8,
      embedMaxBatchTokens: 64,
      embedMaxConcurrentRequests: 6,
    });
  });
  afterAll(() => sim.close());

  const embed = async (body: unknown): Promise<number[][]> => {
    const res = await post(sim, '/embed', body);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    return (await res.json()) as number[][];
  };

  const expectTeiError = async (res: Response, status: number, errorType: string): Promise<TeiError> => {
    expect(res.status).toBe(status);
    const body = (await res.json()) as TeiError;
    expect(Object.keys(body).sort()).toEqual(['error', 'error_type']);
    expect(body.error_type).toBe(errorType);
    expect(body.error.length).toBeGreaterThan(0);
    return body;
  };

  it('returns one normalized vector per input, in order, the same as /v1/embeddings', async () => {
    const vectors = await embed({ inputs: ['alpha', 'beta', 'gamma delta'] });
    expect(vectors).toHaveLength(3);
    for (const vector of vectors) {
      expect(vector).toHaveLength(16);
      expect(Math.hypot(...vector)).toBeCloseTo(1, 9);
    }
    const openai = (await (
      await post(sim, '/v1/embeddings', { input: ['alpha', 'beta', 'gamma delta'] })
    ).json()) as EmbeddingList;
    expect(vectors).toEqual(openai.data.map((d) => d.embedding));
    expect(await embed({ inputs: ['gamma delta', 'alpha'] })).toEqual([vectors[2], vectors[0]]);
    expect(await embed({ inputs: 'beta' })).toEqual([vectors[1]]);

    // normalize: false gives the raw vector: same direction, another length.
    const [raw] = await embed({ inputs: ['beta'], normalize: false });
    const norm = Math.hypot(...(raw ?? []));
    expect(Math.abs(norm - 1)).toBeGreaterThan(0.5);
    (raw ?? []).forEach((x, i) => {
      expect(x / norm).toBeCloseTo(vectors[1]?.[i] ?? Number.NaN, 9);
    });
  });

  it('answers errors with TEI status codes and its {error, error_type} body', async () => {
    const oversize = await expectTeiError(
      await post(sim, '/embed', { inputs: ['a', 'b', 'c', 'd', 'e'] }),
      422,
      'Validation',
    );
    expect(oversize.error).toBe('batch size 5 > maximum allowed batch size 4');
    await expectTeiError(await post(sim, '/embed', { inputs: [] }), 400, 'Empty');
    await expectTeiError(await post(sim, '/embed', { texts: ['a'] }), 422, 'Validation');
    await expectTeiError(await post(sim, '/embed', { inputs: [1, 2] }), 422, 'Validation');
    await expectTeiError(await post(sim, '/embed', { inputs: 'a', normalize: 'yes' }), 422, 'Validation');
    await expectTeiError(await post(sim, '/embed', '{"inputs": ['), 422, 'Validation');
    // Longer than max_input_length: cut by default (TEI's auto-truncate), refused without truncation.
    const long = 'y'.repeat(100);
    const tooLong = await expectTeiError(
      await post(sim, '/embed', { inputs: [long], truncate: false }),
      422,
      'Validation',
    );
    expect(tooLong.error).toContain('less than 8 tokens');
    const cut = await post(sim, '/embed', { inputs: [long] });
    expect(cut.status).toBe(200);
    expect(cut.headers.get('x-compute-tokens')).toBe('8');
  });

  it('serves /info and /health like TEI', async () => {
    const info = (await (await fetch(`${sim.url}/info`)).json()) as Record<string, unknown>;
    expect(info).toMatchObject({
      model_id: 'sim-embed',
      max_client_batch_size: 4,
      max_batch_tokens: 64,
      max_input_length: 8,
      max_concurrent_requests: 6,
      auto_truncate: true,
      model_type: { embedding: { pooling: 'cls' } },
    });
    expect(typeof info.version).toBe('string');
    const health = await fetch(`${sim.url}/health`);
    expect(health.status).toBe(200);
  });

  it('counts requests, inputs and batch sizes of both wire formats', async () => {
    const fresh = await startSimBackend({ embedMaxBatchTokens: 4 });
    try {
      for (let i = 0; i < 3; i++)
        await post(fresh, '/embed', { inputs: `single ${i}` }).then((r) => r.arrayBuffer());
      await post(fresh, '/embed', { inputs: ['aaaa', 'bbbb', 'cccc', 'dddd', 'eeee', 'ffff'] }).then((r) =>
        r.arrayBuffer(),
      );
      await post(fresh, '/v1/embeddings', { input: ['gggg', 'hhhh'] }).then((r) => r.arrayBuffer());
      expect(fresh.stats()).toMatchObject({
        requests: 5,
        completed: 5,
        embedRequests: 5,
        embedInputs: 3 + 6 + 2,
        embedBatchSizes: { '1': 3, '2': 1, '6': 1 },
        embedMaxBatchSize: 6,
        // 4 tokens a GPU batch: three singles (3 tokens each), 6 one-token inputs in two batches of 4 and 2,
        // and 2 one-token inputs in one.
        embedGpuBatches: 3 + 2 + 1,
      });
    } finally {
      await fresh.close();
    }
  });

  it('refuses with 429 Overloaded when the inputs in flight would exceed max_concurrent_requests', async () => {
    const small = await startSimBackend({ embedMaxConcurrentRequests: 2 });
    try {
      const res = await post(small, '/embed', { inputs: ['a', 'b', 'c'] });
      expect(res.status).toBe(429);
      expect(await res.json()).toEqual({ error: 'Model is overloaded', error_type: 'Overloaded' });
      expect(small.stats().embedRequests).toBe(0);
    } finally {
      await small.close();
    }
  });
});

describe('sim backend: failure injection', () => {
  let sim: SimBackend;
  beforeAll(async () => {
    sim = await startSimBackend({ ttftMs: 1, tokensPerSecond: 5000 });
  });
  afterAll(() => sim.close());

  const setFail = async (body: object): Promise<Response> => post(sim, '/sim/fail', body);
  const failState = async (): Promise<unknown> => (await fetch(`${sim.url}/sim/fail`)).json();
  const chatBody = { messages, max_tokens: 3 };
  const streamBody = { messages, max_tokens: 3, stream: true };

  /** A normal request still works (the server survived). */
  const expectHealthy = async (): Promise<void> => {
    const res = await post(sim, '/v1/chat/completions', chatBody);
    expect(res.status).toBe(200);
    expect(((await res.json()) as ChatCompletion).usage.completion_tokens).toBe(3);
  };

  /** True when `promise` has not settled within `ms`: for checking that nothing arrives. */
  const stillPending = async (promise: Promise<unknown>, ms: number): Promise<boolean> => {
    const marker = Symbol('pending');
    const result = await Promise.race([
      promise.then(
        () => 'settled',
        () => 'settled',
      ),
      new Promise((resolve) => setTimeout(() => resolve(marker), ms)),
    ]);
    return result === marker;
  };

  it('validates POST /sim/fail and reports the failure in force', async () => {
    expect((await setFail({ mode: 'explode' })).status).toBe(400);
    const badCount = await setFail({ mode: '5xx', count: 0 });
    expect(badCount.status).toBe(400);
    expect(((await badCount.json()) as ErrorBody).error.param).toBe('count');
    const set = await setFail({ mode: '5xx', count: 2 });
    expect(await set.json()).toEqual({ mode: '5xx', remaining: 2 });
    expect(await failState()).toEqual({ mode: '5xx', remaining: 2 });
    expect(await (await setFail({ mode: 'none' })).json()).toEqual({ mode: 'none', remaining: null });
    expect(() => sim.setFailure('explode' as never)).toThrow(/mode/);
    expect(() => sim.setFailure('drop', 1.5)).toThrow(/count/);
  });

  it('5xx: answers 503 in each wire format for the next N requests, then reverts', async () => {
    const before = sim.stats();
    expect(sim.setFailure('5xx', 3)).toEqual({ mode: '5xx', remaining: 3 });
    const chat = await post(sim, '/v1/chat/completions', chatBody);
    expect(chat.status).toBe(503);
    expect(((await chat.json()) as ErrorBody).error).toMatchObject({
      type: 'ServiceUnavailableError',
      code: 503,
    });
    const embeddings = await post(sim, '/v1/embeddings', { input: 'x' });
    expect(embeddings.status).toBe(503);
    expect(((await embeddings.json()) as ErrorBody).error.code).toBe(503);
    const tei = await post(sim, '/embed', { inputs: 'x' });
    expect(tei.status).toBe(503);
    expect(((await tei.json()) as TeiError).error_type).toBe('Unhealthy');
    expect(await failState()).toEqual({ mode: 'none', remaining: null });
    await expectHealthy();
    const after = sim.stats();
    expect(after.failuresInjected - before.failuresInjected).toBe(3);
    // Injected failures are not accepted requests.
    expect(after.requests - before.requests).toBe(1);
  });

  it('malformed: 200 with a body that is not JSON, or an SSE event that is not JSON', async () => {
    sim.setFailure('malformed', 4);
    const chat = await post(sim, '/v1/chat/completions', chatBody);
    expect(chat.status).toBe(200);
    expect(chat.headers.get('content-type')).toMatch(/^application\/json/);
    const chatText = await chat.text();
    expect(() => JSON.parse(chatText)).toThrow();

    const stream = await post(sim, '/v1/chat/completions', streamBody);
    expect(stream.status).toBe(200);
    expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = sseData(await stream.text()).filter((d) => d !== '[DONE]');
    expect(
      events.some((d) => {
        try {
          JSON.parse(d);
          return false;
        } catch {
          return true;
        }
      }),
    ).toBe(true);

    for (const [path, body] of [
      ['/v1/embeddings', { input: 'x' }],
      ['/embed', { inputs: 'x' }],
    ] as const) {
      const res = await post(sim, path, body);
      expect(res.status).toBe(200);
      const text = await res.text();
      expect(() => JSON.parse(text)).toThrow();
    }
    await expectHealthy();
  });

  it('stall: sends stream headers then nothing, and nothing at all otherwise, until the client leaves', async () => {
    const before = sim.stats().failuresInjected;
    sim.setFailure('stall', 2);
    const streamAbort = new AbortController();
    const stream = await post(sim, '/v1/chat/completions', streamBody, { signal: streamAbort.signal });
    expect(stream.status).toBe(200);
    const reader = (stream.body as ReadableStream<Uint8Array>).getReader();
    const firstRead = reader.read();
    expect(await stillPending(firstRead, 150)).toBe(true);
    streamAbort.abort();
    await expect(firstRead).rejects.toThrow();

    const plainAbort = new AbortController();
    const plain = post(sim, '/embed', { inputs: 'x' }, { signal: plainAbort.signal });
    expect(await stillPending(plain, 150)).toBe(true);
    plainAbort.abort();
    await expect(plain).rejects.toThrow();

    expect(sim.stats().failuresInjected - before).toBe(2);
    await expectHealthy();
  });

  it('drop: closes a stream mid-way without [DONE], and other requests without an answer', async () => {
    sim.setFailure('drop', 3);
    const stream = await post(sim, '/v1/chat/completions', streamBody);
    expect(stream.status).toBe(200);
    let text = '';
    let failed = false;
    try {
      text = await stream.text();
    } catch {
      failed = true;
    }
    // Either the body errors (connection reset mid-chunk) or it ends early; never with [DONE].
    expect(failed || !text.includes('[DONE]')).toBe(true);
    await expect(post(sim, '/v1/chat/completions', chatBody)).rejects.toThrow();
    await expect(post(sim, '/embed', { inputs: 'x' })).rejects.toThrow();
    await expectHealthy();
  });

  it('health-down: only GET /health answers 503, for N checks or until changed', async () => {
    sim.setFailure('health-down', 2);
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${sim.url}/health`);
      expect(res.status).toBe(503);
      expect(await res.json()).toEqual({ error: 'unhealthy', error_type: 'Unhealthy' });
      await expectHealthy();
    }
    expect((await fetch(`${sim.url}/health`)).status).toBe(200);

    await setFail({ mode: 'health-down' });
    for (let i = 0; i < 3; i++) expect((await fetch(`${sim.url}/health`)).status).toBe(503);
    const tei = await post(sim, '/embed', { inputs: 'x' });
    expect(tei.status).toBe(200);
    await tei.arrayBuffer();
    await setFail({ mode: 'none' });
    const health = await fetch(`${sim.url}/health`);
    expect(health.status).toBe(200);
    expect(await health.text()).toBe('');
  });
});

describe('sim options: batching, prefix cache and TEI', () => {
  it('parses the new kebab-case flags and documents their defaults', async () => {
    expect(
      parseSimArgs([
        '--batch-penalty',
        '0.1',
        '--prefix-cache-tokens=0',
        '--embed-max-batch-tokens',
        '2048',
        '--embed-max-input-tokens',
        '128',
        '--embed-max-concurrent-requests',
        '64',
      ]),
    ).toEqual({
      batchPenalty: 0.1,
      prefixCacheTokens: 0,
      embedMaxBatchTokens: 2048,
      embedMaxInputTokens: 128,
      embedMaxConcurrentRequests: 64,
    });
    expect(() => parseSimArgs(['--batch-penalty', '-1'])).toThrow(/--batch-penalty/);
    expect(() => parseSimArgs(['--prefix-cache-tokens', '1.5'])).toThrow(/--prefix-cache-tokens/);
    const { simOptionDefaults } = await import('../workers/sim/index.js');
    expect(simOptionDefaults).toMatchObject({
      batchPenalty: 0.05,
      prefixCacheTokens: 262_144,
      embedMaxBatchTokens: 16_384,
      embedMaxInputTokens: 512,
      embedMaxConcurrentRequests: 512,
    });
  });
});
