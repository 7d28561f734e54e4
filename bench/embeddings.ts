import { parseArgs } from 'node:util';
import { families } from '../services/cli/families.js';
import { encodeArguments, newCallId, type ToolConfig } from '../services/core/index.js';
import {
  closeEmbeddingCaches,
  createEmbedAdapter,
  type EmbedToolSettings,
  embedSettings,
} from '../workers/embeddings/index.js';
import type { AdapterContext, ToolAdapter } from '../workers/runtime/index.js';
import { type SimBackend, type SimOptions, startSimBackend } from '../workers/sim/index.js';
import { runIfMain } from './main.js';
import { percentile, writeReport } from './report.js';

/** Settings of one run; every field has a default. */
export interface EmbeddingsBenchOptions {
  /** Concurrent callers, each with one call outstanding at a time. Default 64. */
  callers?: number;
  /**
   * Callers of the saturated micro-batched run: enough that full batches are always waiting, to
   * compare with the backend's capacity. 0 skips it. Default 256.
   */
  saturatedCallers?: number;
  /** How long each adapter mode runs, in milliseconds. Default 5000. */
  durationMs?: number;
  /** Upper bound on the calls of one caller in one mode (bounds the run by count too). Default 5000. */
  maxCallsPerCaller?: number;
  /** Fewest and most texts in one call. Default [1, 4]. */
  textsPerCall?: [number, number];
  /** Fewest and most characters in one text. Default [80, 160] (20-40 estimated tokens). */
  textChars?: [number, number];
  /** How long the capacity measurement runs, in milliseconds. Default 4000. */
  capacityMs?: number;
  /** The simulated GPU. Default embedFixedMs 8, embedPerTokenMs 0.02, maxEmbedBatch 256. */
  sim?: Partial<SimOptions>;
  /** Micro-batching settings of the batched mode. Default maxSize 256, maxTokens 16384, maxWaitMs 5. */
  batch?: Partial<EmbedToolSettings['batch']>;
  /** Where the JSON report goes; null: nowhere. Default `<cwd>/bench/results`. */
  outDir?: string | null;
}

/** What one mode measured. */
export interface ModeResult {
  mode: string;
  calls: number;
  texts: number;
  failedCalls: number;
  seconds: number;
  textsPerSecond: number;
  /** Call latency percentiles, in milliseconds. */
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  /** Embedding requests the backend received. */
  backendRequests: number;
  /** Mean texts per backend request. */
  meanBatch: number;
}

export interface Report {
  bench: 'embeddings';
  startedAt: string;
  node: string;
  settings: {
    callers: number;
    saturatedCallers: number;
    durationMs: number;
    textsPerCall: [number, number];
    textChars: [number, number];
    capacityMs: number;
    sim: Partial<SimOptions>;
    batch: EmbedToolSettings['batch'];
  };
  perCall: ModeResult;
  batched: ModeResult;
  /** Micro-batched with `saturatedCallers` callers; absent when skipped. */
  saturated?: ModeResult;
  capacity: ModeResult;
  ratios: Ratios;
  /** The Markdown table printed. */
  table: string;
  /** Where the JSON was written, if anywhere. */
  file?: string;
}

export interface Ratios {
  /** Micro-batched ÷ per-call throughput, same callers (target ≥ 4). */
  batchedOverPerCall: number;
  /** Micro-batched throughput ÷ the backend's batch capacity, same callers. */
  batchedOverCapacity: number;
  /** Saturated micro-batched throughput ÷ the backend's batch capacity (target ≥ 0.9); absent when skipped. */
  saturatedOverCapacity?: number;
}

/** Hard cap on any one phase, whatever the options say, so the whole run stays bounded. */
const PHASE_CAP_MS = 20_000;

/** Runs the benchmark and returns its report (printing is the caller's business). */
export async function runEmbeddingsBench(options: EmbeddingsBenchOptions = {}): Promise<Report> {
  const callers = options.callers ?? 64;
  const saturatedCallers = options.saturatedCallers ?? 256;
  const durationMs = Math.min(options.durationMs ?? 5000, PHASE_CAP_MS);
  const maxCallsPerCaller = options.maxCallsPerCaller ?? 5000;
  const textsPerCall = options.textsPerCall ?? [1, 4];
  const textChars = options.textChars ?? [80, 160];
  const capacityMs = Math.min(options.capacityMs ?? 4000, PHASE_CAP_MS);
  const simOptions: Partial<SimOptions> = {
    embedFixedMs: 8,
    embedPerTokenMs: 0.02,
    maxEmbedBatch: 256,
    ...options.sim,
  };
  const embedTool = families.resolveConfig('', {}).tools.find((t) => t.template === 'embed') as ToolConfig;
  const base = { ...embedTool, ...embedSettings.of(embedTool) };
  const batch = { maxSize: 256, maxTokens: 16_384, maxWaitMs: 5, backgroundPauseMs: 0, ...options.batch };
  const startedAt = new Date().toISOString();
  const texts = new TextSource(textChars);

  const backend = await startSimBackend(simOptions);
  try {
    const drive = (mode: string, adapter: ToolAdapter, tool: ToolConfig, n = callers) =>
      driveAdapter(mode, adapter, tool, backend, {
        callers: n,
        durationMs,
        maxCallsPerCaller,
        textsPerCall,
        texts,
      });

    // Warm up connections and the JIT on both paths, briefly.
    const warm = { ...base, name: 'embed_warmup', cache: { ...base.cache, enabled: false }, batch };
    await drive('warm-up', createEmbedAdapter({ cache: false }), { ...warm });

    // Per-call forwarding: every call is one backend request, sent at once, as many in flight
    // as there are callers (the backend queues them): the adapter without micro-batching.
    const perCallTool: typeof base = {
      ...base,
      name: 'embed_per_call',
      cache: { ...base.cache, enabled: false },
      batch: {
        maxSize: Math.max(textsPerCall[1], 1),
        maxTokens: 10_000_000,
        maxWaitMs: 0,
        backgroundPauseMs: 0,
      },
    };
    const perCall = await drive(
      'per-call',
      createEmbedAdapter({ cache: false, maxBatchesInFlight: Number.POSITIVE_INFINITY }),
      perCallTool,
    );

    const batchedTool: typeof base = {
      ...base,
      name: 'embed_batched',
      cache: { ...base.cache, enabled: false },
      batch,
    };
    const batched = await drive(
      `micro-batched (${callers} callers)`,
      createEmbedAdapter({ cache: false }),
      batchedTool,
    );
    const saturated =
      saturatedCallers > 0
        ? await drive(
            `micro-batched, saturated (${saturatedCallers} callers)`,
            createEmbedAdapter({ cache: false }),
            batchedTool,
            saturatedCallers,
          )
        : undefined;

    const capacity = await measureCapacity(
      backend,
      Math.min(batch.maxSize, simOptions.maxEmbedBatch ?? 256),
      capacityMs,
      texts,
    );

    const ratios: Ratios = {
      batchedOverPerCall: batched.textsPerSecond / perCall.textsPerSecond,
      batchedOverCapacity: batched.textsPerSecond / capacity.textsPerSecond,
      ...(saturated ? { saturatedOverCapacity: saturated.textsPerSecond / capacity.textsPerSecond } : {}),
    };
    const table = renderTable([perCall, batched, ...(saturated ? [saturated] : []), capacity], ratios);
    const report: Report = {
      bench: 'embeddings',
      startedAt,
      node: process.version,
      settings: {
        callers,
        saturatedCallers,
        durationMs,
        textsPerCall,
        textChars,
        capacityMs,
        sim: simOptions,
        batch,
      },
      perCall,
      batched,
      ...(saturated ? { saturated } : {}),
      capacity,
      ratios,
      table,
    };
    const file = writeReport('embeddings', startedAt, report, options.outDir);
    if (file) report.file = file;
    return report;
  } finally {
    await backend.close();
    await closeEmbeddingCaches();
  }
}

/** Unique texts of random length (seeded, so runs are comparable). */
class TextSource {
  #n = 0;
  #seed = 0x2545f491;
  constructor(private readonly chars: [number, number]) {}

  /** A number in [min, max], from a small xorshift generator. */
  between(min: number, max: number): number {
    this.#seed ^= this.#seed << 13;
    this.#seed ^= this.#seed >>> 17;
    this.#seed ^= this.#seed << 5;
    return min + ((this.#seed >>> 0) % (max - min + 1));
  }

  next(): string {
    this.#n += 1;
    const head = `text ${this.#n}: `;
    const length = this.between(this.chars[0], this.chars[1]);
    return (head + 'the quick brown fox jumps over the lazy dog '.repeat(8)).slice(
      0,
      Math.max(length, head.length),
    );
  }
}

interface DriveSettings {
  callers: number;
  durationMs: number;
  maxCallsPerCaller: number;
  textsPerCall: [number, number];
  texts: TextSource;
}

async function driveAdapter(
  mode: string,
  adapter: ToolAdapter,
  tool: ToolConfig,
  backend: SimBackend,
  settings: DriveSettings,
): Promise<ModeResult> {
  const warmUp = mode === 'warm-up';
  const until = performance.now() + (warmUp ? 500 : settings.durationMs);
  const latencies: number[] = [];
  let texts = 0;
  let failed = 0;
  const before = backend.stats();
  const started = performance.now();

  const caller = async () => {
    for (let i = 0; i < settings.maxCallsPerCaller && performance.now() < until; i++) {
      const n = settings.texts.between(settings.textsPerCall[0], settings.textsPerCall[1]);
      const batch = Array.from({ length: n }, () => settings.texts.next());
      const t0 = performance.now();
      try {
        await adapter.run(context(tool, batch, backend.url));
        latencies.push(performance.now() - t0);
        texts += n;
      } catch {
        failed += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: settings.callers }, caller));
  const seconds = (performance.now() - started) / 1000;
  const after = backend.stats();
  latencies.sort((a, b) => a - b);
  const requests = after.embedRequests - before.embedRequests;
  return {
    mode,
    calls: latencies.length,
    texts,
    failedCalls: failed,
    seconds,
    textsPerSecond: texts / seconds,
    p50Ms: percentile(latencies, 0.5),
    p95Ms: percentile(latencies, 0.95),
    p99Ms: percentile(latencies, 0.99),
    backendRequests: requests,
    meanBatch: requests > 0 ? (after.embedInputs - before.embedInputs) / requests : 0,
  };
}

/**
 * The backend's batch capacity: max-size batches sent straight to `/v1/embeddings` back to back,
 * two in flight so the GPU never waits for a round trip.
 */
async function measureCapacity(
  backend: SimBackend,
  batchSize: number,
  durationMs: number,
  source: TextSource,
): Promise<ModeResult> {
  const before = backend.stats();
  const started = performance.now();
  const until = started + durationMs;
  const latencies: number[] = [];
  let texts = 0;
  let failed = 0;
  const lane = async () => {
    while (performance.now() < until) {
      const input = Array.from({ length: batchSize }, () => source.next());
      const t0 = performance.now();
      const res = await fetch(`${backend.url}/v1/embeddings`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'sim-embed', input, encoding_format: 'float' }),
      });
      await res.arrayBuffer();
      if (res.ok) {
        latencies.push(performance.now() - t0);
        texts += batchSize;
      } else {
        failed += 1;
      }
    }
  };
  await Promise.all([lane(), lane()]);
  const seconds = (performance.now() - started) / 1000;
  const after = backend.stats();
  latencies.sort((a, b) => a - b);
  const requests = after.embedRequests - before.embedRequests;
  return {
    mode: `capacity (batches of ${batchSize})`,
    calls: latencies.length,
    texts,
    failedCalls: failed,
    seconds,
    textsPerSecond: texts / seconds,
    p50Ms: percentile(latencies, 0.5),
    p95Ms: percentile(latencies, 0.95),
    p99Ms: percentile(latencies, 0.99),
    backendRequests: requests,
    meanBatch: requests > 0 ? (after.embedInputs - before.embedInputs) / requests : 0,
  };
}

function context(tool: ToolConfig, texts: string[], endpointUrl: string): AdapterContext {
  const now = Date.now();
  return {
    call: {
      callId: newCallId(),
      tool: tool.name,
      pool: tool.pool,
      argumentsJson: encodeArguments({ texts }),
      tenant: 'bench',
      sessionKey: '',
      priority: 'normal',
      deadlineUnixMs: now + 60_000,
      attempt: 1,
      replyTo: '127.0.0.1:1',
      traceContext: {},
      enqueuedUnixMs: now,
      wantsProgress: false,
      principal: 'anonymous',
      scopes: [],
    },
    arguments: { texts },
    tool,
    endpointUrl,
    backend: 'openai-embeddings',
    signal: new AbortController().signal,
    backendTimeoutMs: 30_000,
    progress: () => {},
    log: () => {},
  };
}

function renderTable(rows: ModeResult[], ratios: Ratios): string {
  const fmt = (x: number, digits = 1) => x.toFixed(digits);
  const lines = [
    '| mode | texts/s | p50 call ms | p95 call ms | backend requests | texts/request | calls | failed |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) =>
        `| ${r.mode} | ${fmt(r.textsPerSecond, 0)} | ${fmt(r.p50Ms)} | ${fmt(r.p95Ms)} | ${r.backendRequests} | ${fmt(r.meanBatch)} | ${r.calls} | ${r.failedCalls} |`,
    ),
    '',
    'capacity: max-size requests straight to the backend, two in flight; its latency and calls are per request.',
    '',
    `micro-batched / per-call throughput (same callers): **${fmt(ratios.batchedOverPerCall, 2)}x** (target >= 4x)`,
    `micro-batched / batch capacity (same callers): **${fmt(ratios.batchedOverCapacity * 100, 1)}%**`,
    ...(ratios.saturatedOverCapacity === undefined
      ? []
      : [
          `micro-batched, saturated / batch capacity: **${fmt(ratios.saturatedOverCapacity * 100, 1)}%** (target >= 90% at saturation)`,
        ]),
  ];
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      callers: { type: 'string' },
      'saturated-callers': { type: 'string' },
      'duration-ms': { type: 'string' },
      'capacity-ms': { type: 'string' },
      out: { type: 'string' },
    },
    strict: true,
  });
  const num = (name: string, value: string | undefined) => {
    if (value === undefined) return undefined;
    const n = Number(value);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got "${value}"`);
    return n;
  };
  const callers = num('callers', values.callers);
  const saturatedCallers =
    values['saturated-callers'] === '0' ? 0 : num('saturated-callers', values['saturated-callers']);
  const durationMs = num('duration-ms', values['duration-ms']);
  const capacityMs = num('capacity-ms', values['capacity-ms']);
  const report = await runEmbeddingsBench({
    ...(callers === undefined ? {} : { callers }),
    ...(saturatedCallers === undefined ? {} : { saturatedCallers }),
    ...(durationMs === undefined ? {} : { durationMs }),
    ...(capacityMs === undefined ? {} : { capacityMs }),
    ...(values.out === undefined ? {} : { outDir: values.out }),
  });
  const s = report.settings;
  process.stdout.write(
    `## Embedding micro-batching (${s.callers} callers, ${s.textsPerCall[0]}-${s.textsPerCall[1]} texts/call, ` +
      `sim embedFixedMs ${s.sim.embedFixedMs}, embedPerTokenMs ${s.sim.embedPerTokenMs}; ` +
      `batch maxSize ${s.batch.maxSize}, maxTokens ${s.batch.maxTokens}, maxWait ${s.batch.maxWaitMs} ms)\n\n`,
  );
  process.stdout.write(`${report.table}\n`);
  if (report.file) process.stdout.write(`\nreport: ${report.file}\n`);
  return 0;
}

runIfMain(import.meta.url, 'embeddings', main);
