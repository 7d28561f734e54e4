import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { mulberry32 } from '../../test/support/random.js';
import {
  type CallOutcome,
  type CallParams,
  connectLoadClient,
  errorKind,
  type LoadClient,
} from './clients.js';
import { emptySummary, LatencyRecorder, type LatencySummary } from './histogram.js';

export type { LatencySummary } from './histogram.js';

/** One tool of the mix: chosen with probability weight / (sum of weights), called with `args`. */
export interface ToolMixEntry {
  tool: string;
  weight: number;
  args: Record<string, unknown>;
}

export interface LoadOptions {
  /** MCP endpoint (Streamable HTTP). */
  url: string;
  /** v2: `@modelcontextprotocol/client` pinned to 2026-07-28; v1: `@modelcontextprotocol/sdk` (2025, initialize). */
  client: 'v2' | 'v1';
  /** Concurrent agents, each its own MCP client connection. */
  agents: number;
  /**
   * closed: each agent calls, waits for the answer, thinks, calls again (latency from the call's
   * start). open: calls start at a fixed rate, round-robin over the agents whether or not they
   * have a call outstanding (latency from the call's scheduled start, so a late generator or a
   * saturated system cannot hide queueing: no coordinated omission).
   */
  mode: 'closed' | 'open';
  /** Open loop: total calls started per second. */
  ratePerSec?: number;
  /** Closed loop: pause between an agent's calls (default 0), jittered ±50% (seeded). */
  thinkTimeMs?: number;
  /** Weighted choice per call (seeded). */
  toolMix: ToolMixEntry[];
  /** Measured period after the warm-up; the run stops by itself. */
  durationMs: number;
  /** Calls finishing in this first period are not recorded. */
  warmupMs: number;
  /** Hard bound on calls started (warm-up and measured together). */
  maxCalls?: number;
  /** Per call; default 60 000. The client cancels the call (notifications/cancelled) when it passes. */
  callTimeoutMs?: number;
  /** Send a progress token with each call (default false). */
  progress?: boolean;
  /** Seed of the tool choice and think-time jitter (default 1). */
  seed?: number;
  /** Headers every request carries (a credential); default none. */
  headers?: Record<string, string>;
}

export interface LoadResult {
  /** The options as run, defaults filled in, without the URL. */
  options: Omit<LoadOptions, 'url'>;
  /** Length of the measured window: durationMs, or less when maxCalls ended the run early. */
  measuredMs: number;
  /** Calls that finished inside the measured window (ok + errors). */
  calls: number;
  ok: number;
  /**
   * Failed calls by kind: `tool_error:<CODE>` (an isError result; the code from
   * `_meta["mcp-cluster/error-code"]`, else `unknown`), `rpc:<code>`, `http:<status>`,
   * `timeout`, `transport`, `sdk:<code>`, `other:<name>`.
   */
  errors: Record<string, number>;
  /** The first message seen for each error kind (at most 200 characters), to tell what went wrong. */
  errorSamples?: Record<string, string>;
  /** Calls started over the whole run (warm-up, measured, and those still running at the end). */
  started?: number;
  /** ok calls per second of measured time. */
  throughputPerSec: number;
  /** ok calls, client side, HDR histogram at 1 µs resolution; milliseconds. */
  latency: LatencySummary;
  byTool: Record<string, LatencySummary>;
  /** From `result._meta["mcp-cluster/timing"]` of ok calls, when the system reports it. */
  breakdown?: Record<BreakdownKey, LatencySummary>;
}

type BreakdownKey = 'queueWaitMs' | 'batchWaitMs' | 'backendMs' | 'deliveryMs';
const BREAKDOWN_KEYS: readonly BreakdownKey[] = ['queueWaitMs', 'batchWaitMs', 'backendMs', 'deliveryMs'];
const TIMING_META_KEY = 'mcp-cluster/timing';
const ERROR_CODE_META_KEY = 'mcp-cluster/error-code';

/** Agents connecting at once. */
const CONNECT_CONCURRENCY = 64;
/** After the end of the window and the call timeout, how long closing the clients may take to settle the calls. */
const FORCE_GRACE_MS = 5_000;
const CLOSE_TIMEOUT_MS = 5_000;

interface Normalized extends Omit<LoadOptions, 'ratePerSec' | 'maxCalls'> {
  thinkTimeMs: number;
  callTimeoutMs: number;
  progress: boolean;
  seed: number;
  ratePerSec: number | undefined;
  maxCalls: number;
}

interface ToolSlot {
  name: string;
  params: CallParams;
  latency: LatencyRecorder;
}

/**
 * Runs one load test: connects every agent (64 at a time; each also lists the tools, as a real
 * agent does, which warms the v2 client's tool cache), then starts the clock, drives calls for
 * warmupMs + durationMs, stops starting calls, lets the ones in flight finish (each is bounded
 * by callTimeoutMs), closes every client and returns what the measured window saw. Every phase
 * is bounded, so the promise always settles.
 */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const o = normalize(options);
  prepareProcess(o.agents);
  const { clients, listed } = await connectAll(o);
  try {
    const missing = o.toolMix.map((e) => e.tool).filter((t) => !listed.includes(t));
    if (missing.length > 0) {
      throw new Error(
        `runLoad: the server at ${o.url} does not list ${missing.join(', ')} (it lists ${listed.join(', ') || 'no tools'})`,
      );
    }
    return await drive(o, clients);
  } finally {
    await closeAll(clients);
  }
}

function normalize(options: LoadOptions): Normalized {
  const fail = (what: string): never => {
    throw new Error(`runLoad: ${what}`);
  };
  if (!options.url) fail('url is required');
  if (options.client !== 'v1' && options.client !== 'v2') fail('client must be "v1" or "v2"');
  if (!Number.isInteger(options.agents) || options.agents < 1) fail('agents must be a whole number ≥ 1');
  if (options.mode !== 'closed' && options.mode !== 'open') fail('mode must be "closed" or "open"');
  if (options.mode === 'open' && !((options.ratePerSec ?? 0) > 0 && Number.isFinite(options.ratePerSec)))
    fail('open loop needs ratePerSec > 0');
  if (!(options.durationMs > 0)) fail('durationMs must be > 0');
  if (!(options.warmupMs >= 0)) fail('warmupMs must be ≥ 0');
  if (!Array.isArray(options.toolMix) || options.toolMix.length === 0)
    fail('toolMix must name at least one tool');
  let total = 0;
  for (const e of options.toolMix) {
    if (!e.tool) fail('every toolMix entry needs a tool name');
    if (!(e.weight >= 0 && Number.isFinite(e.weight))) fail(`toolMix weight of ${e.tool} must be ≥ 0`);
    total += e.weight;
  }
  if (!(total > 0)) fail('toolMix weights must not all be 0');
  if (options.maxCalls !== undefined && !(Number.isInteger(options.maxCalls) && options.maxCalls >= 1))
    fail('maxCalls must be a whole number ≥ 1');
  const callTimeoutMs = options.callTimeoutMs ?? 60_000;
  if (!(callTimeoutMs > 0)) fail('callTimeoutMs must be > 0');
  const thinkTimeMs = options.thinkTimeMs ?? 0;
  if (!(thinkTimeMs >= 0)) fail('thinkTimeMs must be ≥ 0');
  return {
    ...options,
    ratePerSec: options.mode === 'open' ? options.ratePerSec : undefined,
    thinkTimeMs,
    callTimeoutMs,
    progress: options.progress ?? false,
    seed: options.seed ?? 1,
    maxCalls: options.maxCalls ?? Number.POSITIVE_INFINITY,
  };
}

/**
 * Readies the process for many connections. `fetch` (which both MCP clients use) runs on
 * undici, whose per-origin pool has no connection cap; node:http's agents are uncapped here too
 * in case a transport falls back to them. The real bound is open files: warn once if it is low.
 */
function prepareProcess(agents: number): void {
  http.globalAgent.maxSockets = Number.POSITIVE_INFINITY;
  https.globalAgent.maxSockets = Number.POSITIVE_INFINITY;
  const limit = openFilesLimit();
  const needed = agents * 2 + 256;
  if (limit !== undefined && limit < needed) {
    process.emitWarning(
      `open-files limit is ${limit}, ${agents} agents may need about ${needed} sockets; raise it (ulimit -n) or expect EMFILE transport errors`,
      'LoadGeneratorWarning',
    );
  }
}

function openFilesLimit(): number | undefined {
  try {
    const match = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (!match) return undefined;
    return match[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(match[1]);
  } catch {
    return undefined;
  }
}

async function connectAll(o: Normalized): Promise<{ clients: LoadClient[]; listed: string[] }> {
  const clients: (LoadClient | undefined)[] = new Array(o.agents);
  let listed: string[] = [];
  const perAgentMs = Math.min(o.callTimeoutMs, 30_000);
  const phaseDeadline = Date.now() + 60_000 + o.agents * 20;
  let failure: Error | undefined;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < o.agents) {
      const index = next++;
      if (Date.now() > phaseDeadline) {
        failure = new Error(`connecting ${o.agents} agents took too long (${index} connected)`);
        return;
      }
      try {
        const client = await connectLoadClient(
          o.client,
          o.url,
          o.callTimeoutMs,
          o.progress,
          perAgentMs,
          o.headers,
        );
        clients[index] = client;
        // A real agent lists the tools first; for v2 this also fills the client's tool cache.
        const names = await withTimeout(client.listTools(), perAgentMs, 'tools/list');
        if (index === 0) listed = names;
      } catch (err) {
        failure ??= new Error(
          `runLoad: connecting agent ${index + 1} of ${o.agents} (${o.client} client) to ${o.url} failed: ${(err as Error).message}`,
          { cause: err },
        );
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONNECT_CONCURRENCY, o.agents) }, worker));
  const connected = clients.filter((c): c is LoadClient => c !== undefined);
  if (failure) {
    await closeAll(connected);
    throw failure;
  }
  return { clients: connected, listed };
}

async function closeAll(clients: LoadClient[]): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < clients.length) {
      const client = clients[next++]!;
      await withTimeout(client.close(), CLOSE_TIMEOUT_MS, 'close').catch(() => undefined);
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONNECT_CONCURRENCY, clients.length) }, worker));
}

/** The measured part of a run: all counters live here, so a call allocates no state of its own. */
class Run {
  readonly t0 = performance.now();
  readonly warmEnd: number;
  readonly end: number;
  stopping = false;
  /** The open loop's next wake-up. */
  scheduler: NodeJS.Timeout | undefined;
  started = 0;
  inFlight = 0;
  calls = 0;
  ok = 0;
  readonly errors = new Map<string, number>();
  readonly errorSamples = new Map<string, string>();
  readonly latency = new LatencyRecorder();
  readonly breakdown = BREAKDOWN_KEYS.map(() => new LatencyRecorder());
  private idle: (() => void) | undefined;

  constructor(
    readonly o: Normalized,
    readonly tools: ToolSlot[],
    private readonly cumulative: Float64Array,
  ) {
    this.warmEnd = this.t0 + o.warmupMs;
    this.end = this.warmEnd + o.durationMs;
  }

  /** Weighted choice of a tool from a uniform number in [0, 1). */
  pick(u: number): ToolSlot {
    const target = u * this.cumulative[this.cumulative.length - 1]!;
    const c = this.cumulative;
    for (let i = 0; i < c.length - 1; i++) if (target < c[i]!) return this.tools[i]!;
    return this.tools[c.length - 1]!;
  }

  /** Claims one call of the maxCalls budget; false when the run is over. */
  take(): boolean {
    if (this.stopping) return false;
    if (this.started >= this.o.maxCalls || performance.now() >= this.end) {
      this.stopping = true;
      return false;
    }
    this.started++;
    return true;
  }

  /** One call, from `start` (a performance.now() time) to its answer; never rejects. */
  async call(client: LoadClient, tool: ToolSlot, start: number): Promise<void> {
    this.inFlight++;
    let outcome: CallOutcome | undefined;
    let failure: unknown;
    try {
      outcome = await client.call(tool.params);
    } catch (err) {
      failure = err;
    }
    const done = performance.now();
    this.inFlight--;
    if (done >= this.warmEnd && done <= this.end) this.record(tool, done - start, outcome, failure);
    if (this.inFlight === 0 && this.idle) this.idle();
  }

  private record(tool: ToolSlot, ms: number, outcome: CallOutcome | undefined, failure: unknown): void {
    this.calls++;
    if (outcome === undefined) {
      this.fail(errorKind(failure), failure);
      return;
    }
    const meta = outcome._meta;
    if (outcome.isError) {
      const code = meta?.[ERROR_CODE_META_KEY];
      this.fail(`tool_error:${typeof code === 'string' && code !== '' ? code : 'unknown'}`, outcome);
      return;
    }
    this.ok++;
    this.latency.record(ms);
    tool.latency.record(ms);
    const timing = meta?.[TIMING_META_KEY] as Record<string, unknown> | undefined;
    if (timing !== undefined && timing !== null && typeof timing === 'object') {
      for (let i = 0; i < BREAKDOWN_KEYS.length; i++) {
        const value = timing[BREAKDOWN_KEYS[i]!];
        if (typeof value === 'number') this.breakdown[i]!.record(value);
      }
    }
  }

  private fail(kind: string, detail: unknown): void {
    this.errors.set(kind, (this.errors.get(kind) ?? 0) + 1);
    if (!this.errorSamples.has(kind)) this.errorSamples.set(kind, describe(detail));
  }

  /** Resolves once no call is in flight. */
  drained(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.idle = () => {
        this.idle = undefined;
        resolve();
      };
    });
  }
}

async function drive(o: Normalized, clients: LoadClient[]): Promise<LoadResult> {
  // A tool may appear in the mix more than once (with different arguments): one histogram per name.
  const byName = new Map<string, LatencyRecorder>();
  for (const e of o.toolMix) if (!byName.has(e.tool)) byName.set(e.tool, new LatencyRecorder());
  const tools: ToolSlot[] = o.toolMix.map((e) => ({
    name: e.tool,
    params: { name: e.tool, arguments: e.args },
    latency: byName.get(e.tool)!,
  }));
  const cumulative = new Float64Array(tools.length);
  let sum = 0;
  for (let i = 0; i < tools.length; i++) {
    sum += o.toolMix[i]!.weight;
    cumulative[i] = sum;
  }

  const run = new Run(o, tools, cumulative);
  const timers: NodeJS.Timeout[] = [];
  // Stop starting calls at the end of the window (closed loops also check the clock themselves).
  timers.push(setTimeout(() => (run.stopping = true), run.end - run.t0));

  let loops: Promise<unknown>;
  if (o.mode === 'closed') {
    loops = Promise.all(clients.map((client, i) => closedAgent(run, client, mulberry32(mix(o.seed, i + 1)))));
  } else {
    loops = openLoop(run, clients, o.ratePerSec!, mulberry32(mix(o.seed, 0)));
  }

  // Calls still running at the end get their own timeout; past that (plus a margin), closing the
  // clients rejects whatever is left, and past a grace even a stuck client cannot hold the run.
  const forced = new Promise<void>((resolve) => {
    timers.push(
      setTimeout(
        () => {
          void closeAll(clients);
          timers.push(setTimeout(resolve, FORCE_GRACE_MS));
        },
        run.end - run.t0 + o.callTimeoutMs + 2_000,
      ),
    );
  });
  await Promise.race([loops.then(() => run.drained()), forced]);
  const finished = performance.now();
  for (const t of timers) clearTimeout(t);
  clearTimeout(run.scheduler);

  const measuredMs = Math.max(0, Math.min(run.end, finished) - run.warmEnd);
  const byTool: Record<string, LatencySummary> = {};
  for (const [name, recorder] of byName) byTool[name] = recorder.summary();
  const result: LoadResult = {
    options: {
      client: o.client,
      agents: o.agents,
      mode: o.mode,
      ...(o.ratePerSec !== undefined ? { ratePerSec: o.ratePerSec } : {}),
      thinkTimeMs: o.thinkTimeMs,
      toolMix: o.toolMix,
      durationMs: o.durationMs,
      warmupMs: o.warmupMs,
      ...(Number.isFinite(o.maxCalls) ? { maxCalls: o.maxCalls } : {}),
      callTimeoutMs: o.callTimeoutMs,
      progress: o.progress,
      seed: o.seed,
    },
    measuredMs: Math.round(measuredMs * 1000) / 1000,
    calls: run.calls,
    ok: run.ok,
    errors: Object.fromEntries(run.errors),
    ...(run.errorSamples.size > 0 ? { errorSamples: Object.fromEntries(run.errorSamples) } : {}),
    started: run.started,
    throughputPerSec: measuredMs > 0 ? Math.round((run.ok / measuredMs) * 1_000_000) / 1000 : 0,
    latency: run.latency.count > 0 ? run.latency.summary() : emptySummary(),
    byTool,
  };
  if (run.breakdown.some((r) => r.count > 0)) {
    result.breakdown = Object.fromEntries(
      BREAKDOWN_KEYS.map((k, i) => [k, run.breakdown[i]!.summary()]),
    ) as Record<BreakdownKey, LatencySummary>;
  }
  return result;
}

/** Closed loop: call, wait, think (jittered ±50%), again, until the run stops. */
async function closedAgent(run: Run, client: LoadClient, rng: () => number): Promise<void> {
  const think = run.o.thinkTimeMs;
  // Spread the first calls over one think time, as agents that did not all start at once.
  if (think > 0) await sleepUntil(run, performance.now() + rng() * think);
  while (run.take()) {
    await run.call(client, run.pick(rng()), performance.now());
    if (think > 0) await sleepUntil(run, performance.now() + think * (0.5 + rng()));
  }
}

function sleepUntil(run: Run, at: number): Promise<void> {
  const ms = Math.min(at, run.end) - performance.now();
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Open loop: call k is due at t0 + k / rate, whatever happened to the calls before it, and goes
 * to agent k mod n. A timer wakes at the next due time and starts every call that is due (so a
 * late wake-up catches up instead of lowering the rate); latency counts from the due time.
 */
function openLoop(run: Run, clients: LoadClient[], ratePerSec: number, rng: () => number): Promise<void> {
  const interval = 1000 / ratePerSec;
  const n = clients.length;
  let k = 0;
  return new Promise((resolve) => {
    const tick = (): void => {
      const now = performance.now();
      for (;;) {
        const due = run.t0 + k * interval;
        if (due > now && now < run.end) break;
        if (due >= run.end || !run.take()) {
          run.stopping = true;
          resolve();
          return;
        }
        void run.call(clients[k % n]!, run.pick(rng()), due);
        k++;
      }
      if (run.stopping) {
        resolve();
        return;
      }
      // Wake at the next due time, or at the end of the window if that comes first.
      const wait = Math.min(run.t0 + k * interval, run.end) - performance.now();
      run.scheduler = setTimeout(tick, Math.max(0, wait));
    };
    tick();
  });
}

function describe(detail: unknown): string {
  let text: string;
  if (detail instanceof Error) text = `${detail.name}: ${detail.message}`;
  else if (detail && typeof detail === 'object' && 'content' in detail) {
    const content = (detail as { content?: { type?: string; text?: string }[] }).content;
    text = content?.find((c) => c?.type === 'text')?.text ?? JSON.stringify(detail);
  } else text = String(detail);
  return text.length > 200 ? `${text.slice(0, 197)}...` : text;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Derives independent per-agent seeds from one seed. */
function mix(seed: number, stream: number): number {
  let h = (Math.floor(seed) ^ Math.imul(stream, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}
