import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, expect } from 'vitest';
import {
  ClusterError,
  encodeArguments,
  type Logger,
  newCallId,
  type ToolCall,
  type ToolConfig,
} from '../../services/core/index.js';
import {
  type AdapterContext,
  BackendActor,
  type BackendActorOptions,
  type ToolProgress,
  type ToolResult,
} from '../../workers/runtime/index.js';
import {
  type ComfySim,
  type ComfySimOptions,
  type SimBackend,
  type SimOptions,
  startComfySim,
  startSimBackend,
} from '../../workers/sim/index.js';
import { freePort } from './brokers.js';
import { families } from './families.js';

// What the suites that drive tool adapters, backend actors and the simulated backends in-process
// share: building calls and adapter contexts, starting sims that are closed after each test,
// and reading what an adapter answered or rejected with.

/** Something to undo after a test: close a server, stop an actor. */
export type Cleanup = () => Promise<void> | void;

/**
 * Registers, in the calling suite, an `afterEach` hook that runs every cleanup pushed onto the
 * returned list since the last test, newest first, and empties the list. `hooks.before` runs
 * ahead of them (e.g. `vi.useRealTimers()`, so closing servers is not stuck on fake timers) and
 * `hooks.after` once they are done (e.g. closing shared caches).
 */
export function cleanupAfterEach(
  hooks: { before?: () => void; after?: () => Promise<void> | void } = {},
): Cleanup[] {
  const cleanups: Cleanup[] = [];
  afterEach(async () => {
    hooks.before?.();
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    await hooks.after?.();
  });
  return cleanups;
}

/** Sim settings under which answers are short enough that a test never waits on decode. */
export const FAST_SIM: Partial<SimOptions> = { ttftMs: 1, tokensPerSecond: 5000 };

/** Starts a simulated vLLM/embeddings backend with `options`, closed by `cleanups`. */
export async function startSim(cleanups: Cleanup[], options: Partial<SimOptions> = {}): Promise<SimBackend> {
  const backend = await startSimBackend(options);
  cleanups.push(() => backend.close());
  return backend;
}

/**
 * Starts a simulated ComfyUI, closed by `cleanups`. It samples 1000 steps a second unless
 * `options` says otherwise, so an image of a few steps takes a few milliseconds.
 */
export async function startComfy(
  cleanups: Cleanup[],
  options: Partial<ComfySimOptions> = {},
): Promise<ComfySim> {
  const sim = await startComfySim({ stepsPerSecond: 1000, ...options });
  cleanups.push(() => sim.close());
  return sim;
}

/**
 * A call of `tool` (its name and pool) with `args`, as a worker receives it from the queue: first
 * attempt, tenant `test`, no session, normal priority, a minute to its deadline, progress wanted
 * and a reply address nothing listens on. `overrides` replace any of these fields.
 */
export function toolCall(
  tool: Pick<ToolConfig, 'name' | 'pool'>,
  args: Record<string, unknown>,
  overrides: Partial<ToolCall> = {},
): ToolCall {
  return {
    callId: newCallId(),
    tool: tool.name,
    pool: tool.pool,
    argumentsJson: encodeArguments(args),
    tenant: 'test',
    sessionKey: '',
    priority: 'normal',
    deadlineUnixMs: Date.now() + 60_000,
    attempt: 1,
    replyTo: '127.0.0.1:1',
    traceContext: {},
    enqueuedUnixMs: Date.now(),
    wantsProgress: true,
    principal: 'anonymous',
    scopes: [],
    ...overrides,
  };
}

/** How `adapterContext` departs from its defaults. */
export interface ContextOptions {
  /** Aborts the call; default a signal that never aborts. */
  signal?: AbortSignal;
  /** Receives the adapter's progress updates; default none. */
  onProgress?: (p: ToolProgress) => void;
  /** Default 10 s. */
  backendTimeoutMs?: number;
  /** The pool's protocol; default the first the tool's template can be served by. */
  backend?: AdapterContext['backend'];
  /** Fields of the call that differ from `toolCall`'s defaults (a session key, say). */
  call?: Partial<ToolCall>;
}

/** What the worker hands an adapter for one call of `tool` with `args` on `endpointUrl`. */
export function adapterContext(
  tool: ToolConfig,
  args: Record<string, unknown>,
  endpointUrl: string,
  options: ContextOptions = {},
): AdapterContext {
  return {
    call: toolCall(tool, args, options.call),
    arguments: args,
    tool,
    endpointUrl,
    backend: options.backend ?? (families.template(tool.template)?.backends[0] as AdapterContext['backend']),
    signal: options.signal ?? new AbortController().signal,
    backendTimeoutMs: options.backendTimeoutMs ?? 10_000,
    progress: options.onProgress ?? (() => {}),
    log: () => {},
  };
}

/**
 * A BackendActor for endpoint 0 of pool `inference` at `url` (4 calls at once, a health probe
 * every minute once started, the breaker's own defaults), stopped by `cleanups`. `options`
 * replace any of these settings.
 */
export function startActor(
  cleanups: Cleanup[],
  log: Logger,
  url: string,
  options: Partial<BackendActorOptions> = {},
): BackendActor {
  const actor = new BackendActor(
    { pool: 'inference', index: 0, url, maxConcurrency: 4, healthIntervalMs: 60_000, ...options },
    log,
  );
  cleanups.push(async () => actor.stop());
  return actor;
}

/** The ClusterError a promise rejects with (fails the test if it resolves or throws something else). */
export async function rejection(promise: Promise<unknown>): Promise<ClusterError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(ClusterError);
    return err as ClusterError;
  }
  throw new Error('expected a rejection, but the promise resolved');
}

/**
 * The text of a tool result: its first content item, which must be text. With `ok`, also fails
 * the test if the result is an error result; with `anywhere`, takes the first text item wherever
 * it stands (after the images of generate_image) and asserts nothing about the others.
 */
export function textOf(result: ToolResult, options: { ok?: boolean; anywhere?: boolean } = {}): string {
  if (options.anywhere) {
    const text = result.content.find((c) => (c as { type: string }).type === 'text') as { text: string };
    return text.text;
  }
  if (options.ok) expect(result.isError).toBeFalsy();
  const first = result.content[0] as { type: string; text: string };
  expect(first.type).toBe('text');
  return first.text;
}

/** What the sim answers to the same conversation and max_tokens without streaming. */
export async function unstreamed(
  backend: SimBackend,
  messages: readonly { role: string; content: string }[],
  maxTokens: number,
): Promise<string> {
  const res = await fetch(`${backend.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'sim-llm', messages, max_tokens: maxTokens }),
  });
  expect(res.status).toBe(200);
  const body = (await res.json()) as { choices: { message: { content: string } }[] };
  return body.choices[0]?.message.content ?? '';
}

/** The sim's own vectors for `input` (OpenAI format, not normalised by any adapter), in order. */
export async function rawEmbeddings(backend: SimBackend, input: string[]): Promise<number[][]> {
  const res = await fetch(`${backend.url}/v1/embeddings`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'sim-embed', input }),
  });
  expect(res.status).toBe(200);
  const body = (await res.json()) as { data: { index: number; embedding: number[] }[] };
  return body.data.sort((a, b) => a.index - b.index).map((d) => d.embedding);
}

/** A URL on which nothing listens. */
export async function downUrl(): Promise<string> {
  return `http://127.0.0.1:${await freePort()}`;
}

/**
 * An HTTP server that answers every request with `status` and `body` as JSON, closed by
 * `cleanups`; resolves with its base URL. For answers the sims cannot give.
 */
export async function stubServer(cleanups: Cleanup[], status: number, body: unknown): Promise<string> {
  const server: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => server.close(() => resolve())));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}
