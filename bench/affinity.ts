import { parseArgs } from 'node:util';
import { families } from '../services/cli/families.js';
import { createLogger, encodeArguments, newCallId, type ToolConfig } from '../services/core/index.js';
import { type ChatMessage, chatAdapter } from '../workers/inference/index.js';
import { BackendActor, pickBackend } from '../workers/runtime/index.js';
import { type SimBackend, type SimOptions, startSimBackend } from '../workers/sim/index.js';
import { runIfMain } from './main.js';
import { percentile, writeReport } from './report.js';

/** How a call's backend is chosen. */
export type Routing = 'affinity' | 'round-robin';

/** Settings of one run; every field has a default. */
export interface AffinityBenchOptions {
  /** Concurrent conversations. Default 32. */
  sessions?: number;
  /** Turns (calls) per conversation, each waiting for the previous one. Default 6. */
  turns?: number;
  /** Simulated backends in the pool. Default 4. */
  backends?: number;
  /**
   * Each session's system prompt, in characters (the sim counts 4 per token): an agent's
   * instructions and tool descriptions. Default 4000 (1,000 tokens).
   */
  systemChars?: number;
  /** New user text per turn (a question, a tool result), in characters. Default 800 (200 tokens). */
  userChars?: number;
  /** `max_tokens` of every reply. Default 32. */
  replyTokens?: number;
  /** Longest pause between two turns of a conversation, in ms (seeded, uniform). Default 100. */
  thinkMs?: number;
  /** Calls one backend actor runs at once (and the sim's max-num-seqs). Default 16. */
  maxConcurrency?: number;
  /**
   * The simulated GPUs. Default ttftMs 20, perPromptTokenMs 0.5 (a 2,000-token prompt costs
   * 1 s of prefill when nothing of it is cached), tokensPerSecond 200.
   */
  sim?: Partial<SimOptions>;
  /** Where the JSON report goes; null: nowhere. Default `<cwd>/bench/results`. */
  outDir?: string | null;
}

/** What one routing policy measured. */
export interface RoutingResult {
  routing: Routing;
  calls: number;
  failedCalls: number;
  seconds: number;
  /** Time to first token at the client, in milliseconds (nearest-rank percentiles). */
  ttftP50Ms: number;
  ttftP90Ms: number;
  ttftMeanMs: number;
  /**
   * The same over follow-up turns only (turn 2 on): a first turn has nothing cached under any
   * routing, and with 6 turns first turns are 1 call in 6, enough to set the p90 of all calls.
   */
  followUpTtftP50Ms: number;
  followUpTtftP90Ms: number;
  /** Prompt tokens found in the backends' prefix caches / prompt tokens looked up. */
  prefixCacheTokenHitRate: number;
  /** Requests that found any of their prompt cached / requests looked up. */
  prefixCacheRequestHitRate: number;
  /** Prompt tokens the backends actually prefilled. */
  prefillTokens: number;
  /** Follow-up turns served by another backend than the session's previous turn. */
  sessionMoves: number;
  /** Calls each backend served, in pool order. */
  callsPerBackend: number[];
  /** Median time to first token per turn number (1-based index: turn 1 first), in milliseconds. */
  ttftP50ByTurnMs: number[];
}

/** The report of one run, as written to bench/results. */
export interface AffinityBenchReport {
  bench: 'affinity';
  startedAt: string;
  node: string;
  settings: Required<Omit<AffinityBenchOptions, 'outDir' | 'sim'>> & { sim: Partial<SimOptions> };
  affinity: RoutingResult;
  roundRobin: RoutingResult;
  /** Round-robin over affinity, for each percentile: how many times slower round-robin is. */
  ratios: { ttftP50: number; ttftP90: number; followUpTtftP50: number; followUpTtftP90: number };
  table: string;
  file?: string;
}

/** Runs both routing policies on fresh simulated backends and reports time to first token. */
export async function runAffinityBench(options: AffinityBenchOptions = {}): Promise<AffinityBenchReport> {
  const settings = {
    sessions: options.sessions ?? 32,
    turns: options.turns ?? 6,
    backends: options.backends ?? 4,
    systemChars: options.systemChars ?? 4000,
    userChars: options.userChars ?? 800,
    replyTokens: options.replyTokens ?? 32,
    thinkMs: options.thinkMs ?? 100,
    maxConcurrency: options.maxConcurrency ?? 16,
  };
  const sim: Partial<SimOptions> = {
    ttftMs: 20,
    perPromptTokenMs: 0.5,
    tokensPerSecond: 200,
    maxNumSeqs: settings.maxConcurrency,
    ...options.sim,
  };
  const startedAt = new Date().toISOString();
  const affinity = await runRouting('affinity', settings, sim);
  const roundRobin = await runRouting('round-robin', settings, sim);
  const ratios = {
    ttftP50: roundRobin.ttftP50Ms / affinity.ttftP50Ms,
    ttftP90: roundRobin.ttftP90Ms / affinity.ttftP90Ms,
    followUpTtftP50: roundRobin.followUpTtftP50Ms / affinity.followUpTtftP50Ms,
    followUpTtftP90: roundRobin.followUpTtftP90Ms / affinity.followUpTtftP90Ms,
  };
  const table = renderTable([affinity, roundRobin], ratios);
  const report: AffinityBenchReport = {
    bench: 'affinity',
    startedAt,
    node: process.version,
    settings: { ...settings, sim },
    affinity,
    roundRobin,
    ratios,
    table,
  };
  const file = writeReport('affinity', startedAt, report, options.outDir);
  if (file) report.file = file;
  return report;
}

type Settings = Required<Omit<AffinityBenchOptions, 'outDir' | 'sim'>>;

async function runRouting(routing: Routing, settings: Settings, simOptions: Partial<SimOptions>) {
  const tool = families.resolveConfig('', {}).tools.find((t) => t.template === 'chat') as ToolConfig;
  const log = createLogger('bench-affinity');
  const sims: SimBackend[] = await Promise.all(
    Array.from({ length: settings.backends }, () => startSimBackend(simOptions)),
  );
  const actors = sims.map(
    (s, index) =>
      new BackendActor(
        {
          pool: 'inference',
          index,
          url: s.url,
          maxConcurrency: settings.maxConcurrency,
          healthIntervalMs: 60_000,
        },
        log,
      ),
  );
  let next = 0;
  /** The backend for a call: the router's choice, or the next one in turn that has room. */
  const choose = (sessionKey: string): BackendActor | undefined => {
    const views = actors.map((a) => a.view());
    if (routing === 'affinity') {
      const index = pickBackend(views, sessionKey);
      return index === undefined ? undefined : actors[index];
    }
    for (let tried = 0; tried < actors.length; tried++) {
      const index = next++ % actors.length;
      const view = views[index];
      if (view?.available && view.inFlight < view.maxConcurrency) return actors[index];
    }
    return undefined;
  };

  const ttfts: number[] = [];
  const ttftsByTurn: number[][] = Array.from({ length: settings.turns }, () => []);
  let failedCalls = 0;
  let sessionMoves = 0;
  const random = seeded(0x9e3779b9);
  const started = performance.now();
  try {
    await Promise.all(
      Array.from({ length: settings.sessions }, async (_, s) => {
        const sessionKey = `bench-session-${s}`;
        const messages: ChatMessage[] = [{ role: 'system', content: userText(s, -1, settings.systemChars) }];
        let previous: BackendActor | undefined;
        // Staggered starts, as agents do not all begin at the same millisecond.
        await sleep(random() * settings.thinkMs * 2);
        for (let turn = 0; turn < settings.turns; turn++) {
          messages.push({ role: 'user', content: userText(s, turn, settings.userChars) });
          const dispatchedAt = performance.now();
          let firstTokenAt: number | undefined;
          const actor = choose(sessionKey);
          if (previous && actor && actor !== previous) sessionMoves += 1;
          previous = actor;
          try {
            if (!actor) throw new Error('no backend with room');
            const args = { messages, max_tokens: settings.replyTokens };
            const result = await actor.run((endpointUrl) =>
              chatAdapter.run({
                call: {
                  callId: newCallId(),
                  tool: tool.name,
                  pool: tool.pool,
                  argumentsJson: encodeArguments(args),
                  tenant: 'bench',
                  sessionKey,
                  priority: 'normal',
                  deadlineUnixMs: Date.now() + 60_000,
                  attempt: 1,
                  replyTo: '127.0.0.1:1',
                  traceContext: {},
                  enqueuedUnixMs: Date.now(),
                  wantsProgress: true,
                  principal: 'anonymous',
                  scopes: [],
                },
                arguments: args,
                tool,
                endpointUrl,
                backend: 'openai-chat',
                signal: new AbortController().signal,
                backendTimeoutMs: 30_000,
                // The adapter reports its first token at once (later ones are rate-limited).
                progress: () => {
                  firstTokenAt ??= performance.now();
                },
                log: () => {},
              }),
            );
            const reply = (result.content[0] as { text?: string } | undefined)?.text ?? '';
            messages.push({ role: 'assistant', content: reply });
            if (firstTokenAt === undefined) throw new Error('the reply had no token');
            ttfts.push(firstTokenAt - dispatchedAt);
            ttftsByTurn[turn]?.push(firstTokenAt - dispatchedAt);
          } catch {
            failedCalls += 1;
            // Keep the conversation well formed for the next turn.
            messages.push({ role: 'assistant', content: '(no answer)' });
          }
          await sleep(random() * settings.thinkMs);
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const stats = sims.map((s) => s.stats());
    const sum = (pick: (x: (typeof stats)[number]) => number) => stats.reduce((n, x) => n + pick(x), 0);
    ttfts.sort((a, b) => a - b);
    const followUps = ttftsByTurn
      .slice(1)
      .flat()
      .sort((a, b) => a - b);
    return {
      routing,
      calls: ttfts.length + failedCalls,
      failedCalls,
      seconds,
      ttftP50Ms: percentile(ttfts, 0.5),
      ttftP90Ms: percentile(ttfts, 0.9),
      ttftMeanMs: ttfts.reduce((a, b) => a + b, 0) / Math.max(1, ttfts.length),
      followUpTtftP50Ms: percentile(followUps, 0.5),
      followUpTtftP90Ms: percentile(followUps, 0.9),
      prefixCacheTokenHitRate:
        sum((x) => x.prefixCacheHitTokens) /
        Math.max(
          1,
          sum((x) => x.prefixCacheQueryTokens),
        ),
      prefixCacheRequestHitRate:
        sum((x) => x.prefixCacheHits) /
        Math.max(
          1,
          sum((x) => x.prefixCacheQueries),
        ),
      prefillTokens: sum((x) => x.prefillTokens),
      sessionMoves,
      callsPerBackend: stats.map((x) => x.chatRequests),
      ttftP50ByTurnMs: ttftsByTurn.map((values) =>
        percentile(
          [...values].sort((a, b) => a - b),
          0.5,
        ),
      ),
    } satisfies RoutingResult;
  } finally {
    for (const actor of actors) actor.stop();
    await Promise.all(sims.map((s) => s.close()));
  }
}

const WORDS = (
  'queue worker cluster prompt cache token session backend replica latency stream batch ' +
  'deadline agent pool model answer request signal router'
).split(' ');

/** Text of one turn (turn -1: the system prompt), unique per session and turn, `chars` long. */
function userText(session: number, turn: number, chars: number): string {
  const random = seeded(session * 1_000 + turn + 2);
  let text =
    turn < 0 ? `You are the assistant of session ${session}.` : `Session ${session}, turn ${turn + 1}:`;
  while (text.length < chars) text += ` ${WORDS[Math.floor(random() * WORDS.length)]}`;
  return text.slice(0, chars);
}

/** A small seeded generator (xorshift32) returning floats in [0, 1). */
function seeded(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4_294_967_296;
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function renderTable(rows: RoutingResult[], ratios: AffinityBenchReport['ratios']): string {
  const fmt = (x: number, digits = 1) => x.toFixed(digits);
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
  const lines = [
    '| routing | calls | failed | TTFT p50 ms | TTFT p90 ms | TTFT mean ms | follow-up TTFT p50 ms | follow-up TTFT p90 ms | prefix-cache hit rate (tokens) | (requests) | prefilled tokens | session moves | calls per backend | wall s |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |',
    ...rows.map(
      (r) =>
        `| ${r.routing} | ${r.calls} | ${r.failedCalls} | ${fmt(r.ttftP50Ms)} | ${fmt(r.ttftP90Ms)} | ${fmt(r.ttftMeanMs)} | ${fmt(r.followUpTtftP50Ms)} | ${fmt(r.followUpTtftP90Ms)} | ${pct(r.prefixCacheTokenHitRate)} | ${pct(r.prefixCacheRequestHitRate)} | ${r.prefillTokens} | ${r.sessionMoves} | ${r.callsPerBackend.join(' / ')} | ${fmt(r.seconds, 2)} |`,
    ),
    '',
    `round-robin / affinity time to first token: **${fmt(ratios.ttftP50, 2)}x** at p50, **${fmt(ratios.ttftP90, 2)}x** at p90 ` +
      `(follow-up turns: **${fmt(ratios.followUpTtftP50, 2)}x** at p50, **${fmt(ratios.followUpTtftP90, 2)}x** at p90)`,
  ];
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      sessions: { type: 'string' },
      turns: { type: 'string' },
      out: { type: 'string' },
    },
    strict: true,
  });
  const int = (name: string, value: string | undefined) => {
    if (value === undefined) return undefined;
    const n = Number(value);
    if (!Number.isInteger(n) || n <= 0)
      throw new Error(`--${name} must be a positive integer, got "${value}"`);
    return n;
  };
  const sessions = int('sessions', values.sessions);
  const turns = int('turns', values.turns);
  const report = await runAffinityBench({
    ...(sessions === undefined ? {} : { sessions }),
    ...(turns === undefined ? {} : { turns }),
    ...(values.out === undefined ? {} : { outDir: values.out }),
  });
  const s = report.settings;
  process.stdout.write(
    `## Session affinity (${s.backends} backends, ${s.sessions} sessions x ${s.turns} turns, ` +
      `system prompt ${s.systemChars / 4} tokens, ${s.userChars / 4} new user tokens and ${s.replyTokens} reply tokens per turn; ` +
      `sim ttftMs ${s.sim.ttftMs}, perPromptTokenMs ${s.sim.perPromptTokenMs}, tokensPerSecond ${s.sim.tokensPerSecond})\n\n`,
  );
  process.stdout.write(`${report.table}\n`);
  const byTurn = (r: RoutingResult) => r.ttftP50ByTurnMs.map((x) => x.toFixed(0)).join(' / ');
  process.stdout.write(
    `\nTTFT p50 by turn (ms): affinity ${byTurn(report.affinity)}; round-robin ${byTurn(report.roundRobin)}\n`,
  );
  if (report.file) process.stdout.write(`\nreport: ${report.file}\n`);
  return 0;
}

runIfMain(import.meta.url, 'affinity', main);
