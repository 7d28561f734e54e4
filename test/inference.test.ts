import { describe, expect, it } from 'vitest';
import { createLogger, type ToolConfig } from '../services/core/index.js';
import {
  chatAdapter,
  generateTextAdapter,
  inferenceAdapters,
  inferenceSettings,
  SUMMARY_TOKENS_PER_WORD,
  summarizeAdapter,
  summaryMaxTokens,
  summaryPrompt,
  trimToWords,
} from '../workers/inference/index.js';
import type { BackendActor, ToolAdapter, ToolProgress, ToolResult } from '../workers/runtime/index.js';
import type { SimFailureMode, SimOptions } from '../workers/sim/index.js';
import {
  adapterContext,
  type ContextOptions,
  cleanupAfterEach,
  downUrl,
  FAST_SIM,
  rejection,
  startActor,
  startSim,
  textOf as textOfResult,
  unstreamed,
} from './support/adapter-harness.js';
import { resolveConfig } from './support/families.js';
import { waitFor } from './support/wait.js';

// The inference adapters (generate_text, chat, summarize) against the simulated vLLM server over
// real HTTP, its injected failures (5xx, malformed stream, stalled stream, dropped connection)
// and a closed port, alone and through a BackendActor whose breaker opens and closes again.

const tools = resolveConfig('', {}).tools;
const toolNamed = (name: string) => tools.find((t) => t.name === name) as ToolConfig;
const textTool = toolNamed('generate_text');
const chatTool = toolNamed('chat');
const summarizeTool = toolNamed('summarize');

const cleanups = cleanupAfterEach();
const sim = (options: Partial<SimOptions> = FAST_SIM) => startSim(cleanups, options);
/** The text of a result that is not an error result. */
const textOf = (result: ToolResult) => textOfResult(result, { ok: true });

type Message = { role: 'system' | 'user' | 'assistant'; content: string };

const words = (text: string) => text.split(/\s+/).filter((w) => w.length > 0);

const LONG_TEXT =
  'Work queues decouple the agents that make tool calls from the GPU workers that run them. ' +
  'Each pool has its own queue; workers pull with bounded in-flight, batch what they can, and ' +
  'stream results back to the ingress replica that owns the call. An autoscaler sizes every ' +
  'pool from queue depth so the GPUs stay busy without letting the queue grow without bound.';

describe('inferenceAdapters', () => {
  it('offers one adapter per inference template', () => {
    expect(inferenceAdapters).toEqual({
      generate_text: generateTextAdapter,
      chat: chatAdapter,
      summarize: summarizeAdapter,
    });
  });
});

describe('chatAdapter against the simulated vLLM backend', () => {
  it('sends the conversation as given and streams the reply with progress', async () => {
    const backend = await sim({ ttftMs: 2, tokensPerSecond: 2000 });
    const messages: Message[] = [
      { role: 'system', content: 'You are a terse assistant.' },
      { role: 'user', content: 'What is a work queue?' },
      { role: 'assistant', content: 'A list of jobs that workers take one at a time.' },
      { role: 'user', content: 'And why use one for GPU tools?' },
    ];
    const progress: ToolProgress[] = [];
    const result = await chatAdapter.run(
      adapterContext(chatTool, { messages, max_tokens: 300, temperature: 0.1 }, backend.url, {
        onProgress: (p) => progress.push(p),
      }),
    );
    const text = textOf(result);
    // The sim's answer is a function of the messages and max_tokens alone: equal text means the
    // backend got exactly this conversation.
    expect(text).toBe(await unstreamed(backend, messages, 300));
    expect(words(text)).toHaveLength(300);
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.length).toBeLessThan(300);
    for (const p of progress) {
      expect(p.total).toBe(300);
      expect(text.startsWith(p.message ?? '\u0000')).toBe(true);
    }
  });

  it('uses the default max_tokens (256) when the call gives none', async () => {
    const backend = await sim();
    const messages: Message[] = [{ role: 'user', content: 'Hello there.' }];
    const text = textOf(await chatAdapter.run(adapterContext(chatTool, { messages }, backend.url)));
    expect(text).toBe(await unstreamed(backend, messages, 256));
  });

  it('closes the stream when the call is cancelled, and rejects with CANCELLED', async () => {
    const backend = await sim({ ttftMs: 2, tokensPerSecond: 20 });
    const abort = new AbortController();
    const err = await rejection(
      chatAdapter.run(
        adapterContext(
          chatTool,
          { messages: [{ role: 'user', content: 'Go on.' }], max_tokens: 400 },
          backend.url,
          {
            signal: abort.signal,
            onProgress: () => abort.abort(),
          },
        ),
      ),
    );
    expect(err.code).toBe('CANCELLED');
    await waitFor('the sim to count the aborted sequence', () => backend.stats().aborted === 1);
    expect(backend.stats().running).toBe(0);
  });
});

describe('summarizeAdapter against the simulated vLLM backend', () => {
  it('asks for at most max_words words with a bounded max_tokens, and trims an overrun', async () => {
    const backend = await sim();
    const maxWords = 12;
    const progress: ToolProgress[] = [];
    const result = await summarizeAdapter.run(
      adapterContext(summarizeTool, { text: LONG_TEXT, max_words: maxWords }, backend.url, {
        onProgress: (p) => progress.push(p),
      }),
    );
    const text = textOf(result);
    // The sim always generates max_tokens words, so it overruns: what it would say to exactly
    // this system prompt and max_tokens, cut to the first max_words words.
    const maxTokens = maxWords * SUMMARY_TOKENS_PER_WORD + 8;
    expect(summaryMaxTokens(maxWords, inferenceSettings.of(summarizeTool).maxTokens)).toBe(maxTokens);
    const full = await unstreamed(
      backend,
      [
        { role: 'system', content: summaryPrompt(maxWords) },
        { role: 'user', content: LONG_TEXT },
      ],
      maxTokens,
    );
    expect(words(full).length).toBeGreaterThan(maxWords);
    expect(text).toBe(trimToWords(full, maxWords));
    expect(words(text)).toHaveLength(maxWords);
    expect(full.startsWith(text)).toBe(true);
    for (const p of progress) expect(words(p.message ?? '').length).toBeLessThanOrEqual(maxWords);
    expect(summaryPrompt(maxWords)).toContain(`at most ${maxWords} words`);
  });

  it('defaults to 100 words and never asks for more tokens than the tool allows', async () => {
    const backend = await sim();
    const text = textOf(
      await summarizeAdapter.run(adapterContext(summarizeTool, { text: LONG_TEXT }, backend.url)),
    );
    expect(words(text)).toHaveLength(100);

    const tight = { ...summarizeTool, maxTokens: 20 };
    expect(summaryMaxTokens(2000, tight.maxTokens)).toBe(20);
    const short = textOf(
      await summarizeAdapter.run(adapterContext(tight, { text: LONG_TEXT, max_words: 2000 }, backend.url)),
    );
    // 20 tokens of the sim are 20 words: under the word limit, so nothing is trimmed.
    expect(words(short)).toHaveLength(20);
  });
});

describe('trimToWords', () => {
  it('keeps the first N words with their own spacing and drops the rest', () => {
    expect(trimToWords('  one two\nthree  four five ', 3)).toBe('one two\nthree');
    expect(trimToWords('one two three', 3)).toBe('one two three');
    expect(trimToWords('one two', 5)).toBe('one two');
    expect(trimToWords(' one. Two, three! ', 2)).toBe('one. Two,');
    expect(trimToWords('', 3)).toBe('');
  });
});

describe('the session key travels as the OpenAI user field', () => {
  it('moves the prefix-cache stats of a repeated session, and only of that session', async () => {
    const backend = await sim();
    const first: Message[] = [{ role: 'user', content: LONG_TEXT }];
    const turn = async (messages: Message[], sessionKey: string) =>
      textOf(
        await chatAdapter.run(
          adapterContext(chatTool, { messages, max_tokens: 16 }, backend.url, { call: { sessionKey } }),
        ),
      );

    const reply = await turn(first, 'conversation-1');
    expect(backend.stats()).toMatchObject({ prefixCacheQueries: 1, prefixCacheHits: 0 });
    const second: Message[] = [
      ...first,
      { role: 'assistant', content: reply },
      { role: 'user', content: 'More.' },
    ];
    await turn(second, 'conversation-1');
    const afterFollowUp = backend.stats();
    expect(afterFollowUp).toMatchObject({ prefixCacheQueries: 2, prefixCacheHits: 1 });
    // The whole first prompt was reused.
    expect(afterFollowUp.prefixCacheHitTokens).toBeGreaterThanOrEqual(Math.floor(LONG_TEXT.length / 4));

    // Another session, or none at all, shares nothing with conversation-1's cache.
    await turn(second, 'conversation-2');
    await turn(second, '');
    expect(backend.stats()).toMatchObject({ prefixCacheQueries: 4, prefixCacheHits: 1 });
  });

  it('sends it from every inference adapter', async () => {
    const backend = await sim();
    const cases: [ToolAdapter, ToolConfig, Record<string, unknown>][] = [
      [generateTextAdapter, textTool, { prompt: LONG_TEXT, max_tokens: 4 }],
      [chatAdapter, chatTool, { messages: [{ role: 'user', content: LONG_TEXT }], max_tokens: 4 }],
      [summarizeAdapter, summarizeTool, { text: LONG_TEXT, max_words: 4 }],
    ];
    for (const [i, [adapter, tool, args]] of cases.entries()) {
      const sessionKey = `session-${i}`;
      await adapter.run(adapterContext(tool, args, backend.url, { call: { sessionKey } }));
      await adapter.run(adapterContext(tool, args, backend.url, { call: { sessionKey } }));
      expect(backend.stats().prefixCacheHits).toBe(i + 1);
    }
  });
});

interface AdapterCase {
  name: string;
  adapter: ToolAdapter;
  tool: ToolConfig;
  args: Record<string, unknown>;
}

const adapterCases: AdapterCase[] = [
  {
    name: 'generate_text',
    adapter: generateTextAdapter,
    tool: textTool,
    args: { prompt: 'Hi', max_tokens: 8 },
  },
  {
    name: 'chat',
    adapter: chatAdapter,
    tool: chatTool,
    args: { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 8 },
  },
  {
    name: 'summarize',
    adapter: summarizeAdapter,
    tool: summarizeTool,
    args: { text: LONG_TEXT, max_words: 4 },
  },
];

describe.each(adapterCases)('$name failure modes', ({ adapter, tool, args }) => {
  const run = (url: string, options: ContextOptions = {}) =>
    adapter.run(adapterContext(tool, args, url, options));

  it('a 5xx answer is BACKEND_UNAVAILABLE naming the backend and the status', async () => {
    const backend = await sim();
    backend.setFailure('5xx', 1);
    const err = await rejection(run(backend.url));
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain(backend.url);
    expect(err.message).toContain('503');
    expect(err.message).toContain('injected 5xx failure');
    // The failure was for one request only: the next is served.
    textOf(await run(backend.url));
  });

  it('a stream event that is not JSON is BACKEND_PROTOCOL', async () => {
    const backend = await sim();
    backend.setFailure('malformed', 1);
    const err = await rejection(run(backend.url));
    expect(err.code).toBe('BACKEND_PROTOCOL');
    expect(err.message).toContain(backend.url);
    expect(err.message).toMatch(/not JSON/);
  });

  it('a stream that stalls is abandoned after backendTimeoutMs as BACKEND_UNAVAILABLE', async () => {
    const backend = await sim();
    backend.setFailure('stall', 1);
    const started = performance.now();
    const err = await rejection(run(backend.url, { backendTimeoutMs: 300 }));
    const waited = performance.now() - started;
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain(backend.url);
    expect(err.message).toMatch(/stalled: its stream sent nothing for 300 ms/);
    expect(waited).toBeGreaterThanOrEqual(290);
    expect(waited).toBeLessThan(3000);
    textOf(await run(backend.url, { backendTimeoutMs: 300 }));
  });

  it('a connection dropped mid-stream is BACKEND_UNAVAILABLE', async () => {
    const backend = await sim();
    backend.setFailure('drop', 1);
    const err = await rejection(run(backend.url));
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain(backend.url);
    expect(err.message).toMatch(/broke off its stream|ended the stream before \[DONE\]/);
  });

  it('a backend that is down is BACKEND_UNAVAILABLE naming the URL', async () => {
    const url = await downUrl();
    const err = await rejection(run(url));
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain(url);
    expect(err.message).toMatch(/unreachable/);
  });
});

describe('the stream-idle timeout', () => {
  it('resets on every event, so a slow but steady stream runs longer than backendTimeoutMs', async () => {
    // A token every 100 ms for about 1 s, under a 300 ms idle limit.
    const backend = await sim({ ttftMs: 1, tokensPerSecond: 10 });
    const messages: Message[] = [{ role: 'user', content: 'Slowly, please.' }];
    const started = performance.now();
    const text = textOf(
      await chatAdapter.run(
        adapterContext(chatTool, { messages, max_tokens: 10 }, backend.url, { backendTimeoutMs: 300 }),
      ),
    );
    expect(performance.now() - started).toBeGreaterThan(600);
    expect(text).toBe(await unstreamed(backend, messages, 10));
  });
});

describe('BackendActor over the inference adapters', () => {
  const log = createLogger('inference-test');

  const actor = (url: string): BackendActor =>
    startActor(cleanups, log, url, { breakerFailures: 3, breakerHalfOpenMs: 150 });

  const turn = (a: BackendActor) =>
    a.run((url) =>
      chatAdapter.run(
        adapterContext(chatTool, { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4 }, url, {
          backendTimeoutMs: 200,
        }),
      ),
    );

  const modes: [Exclude<SimFailureMode, 'none' | 'health-down'>, string][] = [
    ['5xx', 'BACKEND_UNAVAILABLE'],
    ['malformed', 'BACKEND_PROTOCOL'],
    ['stall', 'BACKEND_UNAVAILABLE'],
    ['drop', 'BACKEND_UNAVAILABLE'],
  ];

  it.each(modes)(
    'repeated %s failures open the breaker; once the sim recovers a trial call closes it',
    async (mode, code) => {
      const backend = await sim();
      const a = actor(backend.url);
      backend.setFailure(mode);
      for (let i = 0; i < 3; i++) {
        expect(a.view().available).toBe(true);
        expect((await rejection(turn(a))).code).toBe(code);
      }
      // Open: no more work is routed here, and a call that still arrives fails fast.
      expect(a.view()).toMatchObject({ available: false, inFlight: 0 });
      const fast = await rejection(turn(a));
      expect(fast.code).toBe('BACKEND_UNAVAILABLE');
      expect(fast.message).toMatch(/circuit breaker is open/);
      expect(backend.stats().failuresInjected).toBe(3);

      // Still failing when the half-open trial comes: the breaker opens again.
      await waitFor('the breaker to admit a trial call', () => a.view().available);
      expect((await rejection(turn(a))).code).toBe(code);
      expect(a.view().available).toBe(false);
      expect(backend.stats().failuresInjected).toBe(4);

      backend.setFailure('none');
      await waitFor('the breaker to admit a trial call', () => a.view().available);
      textOf(await turn(a));
      // Closed again: every call goes through.
      expect(a.view().available).toBe(true);
      for (let i = 0; i < 3; i++) textOf(await turn(a));
      expect(backend.stats()).toMatchObject({ failuresInjected: 4, chatRequests: 4, completed: 4 });
    },
  );
});
