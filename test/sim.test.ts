import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSimArgs, type SimBackend, type SimStats, startSimBackend } from '../workers/sim/index.js';

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

/** Polls the backend's stats until `predicate` holds; fails after a generous bound (not a speed check). */
async function waitForStats(sim: SimBackend, predicate: (stats: SimStats) => boolean): Promise<SimStats> {
  const giveUpAt = Date.now() + 20_000;
  for (;;) {
    const stats = sim.stats();
    if (predicate(stats)) return stats;
    if (Date.now() > giveUpAt) throw new Error(`stats never matched: ${JSON.stringify(stats)}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
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
