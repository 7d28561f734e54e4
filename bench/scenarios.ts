/**
 * The benchmark scenarios that compare mcp-cluster with a direct single-process MCP server and a
 * peer (FastMCP) on the same machine, against the same simulated backend:
 *
 * - `overhead`: a zero-latency backend, 1 / 16 / 64 / 256 agents, every system: the difference is
 *   pure serving-layer overhead.
 * - `agents`: 1,000 agents with think time for 2 minutes against a realistic backend; errors and
 *   the memory of every process over time.
 * - `inflight`: 10,000 long calls held at once by one ingress replica; peak RSS per process and
 *   per in-flight call.
 * - `quick`: the overhead scenario shortened, plus a small in-flight run, for every system in
 *   under 3 minutes.
 *
 * Each prints a Markdown table with ratios against `direct` and writes JSON, Markdown and SVG
 * charts under `bench/results/<scenario>-<time>/`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type LoadOptions, runLoad } from './load/agents.js';
import { cpuTimeMs, sampleRss } from './load/memory.js';
import {
  latencyChartSvg,
  markdownReport,
  memoryChartSvg,
  type SystemRun,
  throughputChartSvg,
  writeResults,
} from './load/report.js';
import { runIfMain } from './main.js';
import { SYSTEM_NAMES, type SystemName, startSystem } from './systems/index.js';
import { CLI } from './systems/process.js';

/** Flags a simulated backend is started with (see `mcp-cluster sim --help`). */
export type SimFlags = Record<string, number>;

/** No latency at all: what is left is the serving layer's own cost. */
export const ZERO_LATENCY: SimFlags = {
  'ttft-ms': 0,
  'per-prompt-token-ms': 0,
  'tokens-per-second': 1_000_000_000,
  'batch-penalty': 0,
  'max-num-seqs': 100_000,
  'embed-fixed-ms': 0,
  'embed-per-token-ms': 0,
};

/** A GPU-like backend: 50 ms to the first token, 100 tokens/s per sequence. */
const REALISTIC: SimFlags = {
  'ttft-ms': 50,
  'tokens-per-second': 100,
  'max-num-seqs': 4096,
  'embed-fixed-ms': 8,
  'embed-per-token-ms': 0.02,
};

/** Long calls: each answer streams for about 20 s, so 10,000 of them are in flight together. */
const SLOW: SimFlags = {
  'ttft-ms': 100,
  'tokens-per-second': 1,
  'max-num-seqs': 100_000,
  'batch-penalty': 0,
};

export const MIX: LoadOptions['toolMix'] = [
  { tool: 'generate_text', weight: 1, args: { prompt: 'Say something short about queues.', max_tokens: 8 } },
  { tool: 'embed', weight: 1, args: { texts: ['a short text to embed'] } },
];

/** One comparison: which systems, at which load points, against which backend. */
export interface ScenarioPlan {
  title: string;
  sim: SimFlags;
  systems: readonly SystemName[];
  points: { agents: number; load: Omit<LoadOptions, 'url' | 'agents'> }[];
  /** Sample every process's RSS during the run. */
  memory: boolean;
}

function overhead(quick: boolean): ScenarioPlan {
  const agents = quick ? [1, 16, 64] : [1, 16, 64, 256];
  return {
    title: `overhead: zero-latency backend, ${agents.join(' / ')} agents`,
    sim: ZERO_LATENCY,
    systems: SYSTEM_NAMES,
    memory: false,
    points: agents.map((n) => ({
      agents: n,
      load: {
        client: 'v2',
        mode: 'closed',
        toolMix: MIX,
        durationMs: quick ? 3000 : 10_000,
        warmupMs: quick ? 1000 : 2000,
        maxCalls: 200_000,
      },
    })),
  };
}

function agentsScenario(): ScenarioPlan {
  return {
    title: 'agents: 1,000 agents with 1 s think time for 2 minutes, realistic backend',
    sim: REALISTIC,
    systems: ['direct', 'peer', 'cluster-nats', 'cluster-bullmq'],
    memory: true,
    points: [
      {
        agents: 1000,
        load: {
          client: 'v2',
          mode: 'closed',
          thinkTimeMs: 1000,
          toolMix: [
            { tool: 'generate_text', weight: 3, args: { prompt: 'Plan the next step.', max_tokens: 32 } },
            { tool: 'embed', weight: 1, args: { texts: ['one', 'two', 'three'] } },
          ],
          durationMs: 120_000,
          warmupMs: 10_000,
          callTimeoutMs: 60_000,
        },
      },
    ],
  };
}

function inflight(calls: number): ScenarioPlan {
  return {
    title: `inflight: ${calls.toLocaleString('en')} long calls in flight on one ingress replica`,
    sim: SLOW,
    systems: ['direct', 'cluster-nats'],
    memory: true,
    points: [
      {
        agents: calls,
        load: {
          client: 'v2',
          mode: 'closed',
          toolMix: [{ tool: 'generate_text', weight: 1, args: { prompt: 'Write slowly.', max_tokens: 20 } }],
          durationMs: 40_000,
          warmupMs: 0,
          maxCalls: calls,
          callTimeoutMs: 120_000,
        },
      },
    ],
  };
}

/** Starts `mcp-cluster sim` as its own process and resolves with its URL and a stop function. */
export async function startSim(
  flags: SimFlags,
): Promise<{ url: string; pid: number; stop(): Promise<void> }> {
  const args = ['sim', '--port', '0', ...Object.entries(flags).flatMap(([k, v]) => [`--${k}`, String(v)])];
  const child: ChildProcess = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sim not ready in 20 s: ${stderr}`)), 20_000);
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (!line) return;
      clearTimeout(timer);
      resolve(String((JSON.parse(line) as { url: string }).url));
    });
    child.once('exit', (code) => reject(new Error(`sim exited with ${code}: ${stderr}`)));
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  process.once('exit', () => child.kill('SIGKILL'));
  return {
    url,
    pid: child.pid ?? 0,
    stop: async () => {
      child.kill('SIGTERM');
      const force = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(force);
    },
  };
}

/** Runs one plan: every system at every point, one system at a time, the same backend for all. */
export async function runPlan(
  name: string,
  plan: ScenarioPlan,
  outDir?: string,
): Promise<{ runs: SystemRun[]; files: string[]; markdown: string }> {
  const sim = await startSim(plan.sim);
  const runs: SystemRun[] = [];
  try {
    for (const system of plan.systems) {
      const sut = await startSystem(system, { backendUrl: sim.url });
      try {
        for (const point of plan.points) {
          const sampler = plan.memory ? sampleRss([...sut.pids, sim.pid], 1000) : undefined;
          // A system that does not serve 2026-07-28 (FastMCP) is driven with the 2025 client.
          const client = sut.protocol === '2026-07-28' ? point.load.client : 'v1';
          const cpuBefore = cpuTimeMs(sut.pids);
          const result = await runLoad({ ...point.load, client, url: sut.url, agents: point.agents });
          const cpuMs = cpuTimeMs(sut.pids) - cpuBefore;
          const rss = sampler?.stop();
          // Over every call of the run: the CPU clock cannot tell warm-up from measured time.
          const calls = result.started ?? result.ok;
          const cpuMsPerCall = calls > 0 ? cpuMs / calls : undefined;
          runs.push({
            system,
            agents: point.agents,
            result,
            ...(rss ? { rss } : {}),
            ...(cpuMsPerCall !== undefined ? { cpuMsPerCall } : {}),
          });
          process.stderr.write(
            `${system} @ ${point.agents} agents: ${result.ok} ok, ${result.calls - result.ok} failed, p50 ${result.latency.p50.toFixed(2)} ms, p99 ${result.latency.p99.toFixed(2)} ms\n`,
          );
        }
      } finally {
        await sut.stop();
      }
    }
  } finally {
    await sim.stop();
  }
  const markdown = markdownReport(plan.title, runs, 'direct');
  const charts: Record<string, string> = {};
  if (plan.points.length > 1) {
    charts['latency-p50'] = latencyChartSvg(runs, 'p50');
    charts['latency-p99'] = latencyChartSvg(runs, 'p99');
    charts.throughput = throughputChartSvg(runs);
  }
  if (plan.memory) {
    charts.memory = memoryChartSvg(
      `${plan.title}: RSS of every process`,
      runs.map((r) => ({ name: `${r.system} @ ${r.agents}`, samples: r.rss ?? [] })),
    );
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const dir = outDir ?? join(process.cwd(), 'bench', 'results', `${name}-${stamp}`);
  const files = writeResults(dir, name, {
    json: { scenario: name, node: process.version, runs },
    markdown,
    charts,
  });
  return { runs, files, markdown };
}

/** The plans by scenario name. */
export function plansFor(scenario: string): { name: string; plan: ScenarioPlan }[] {
  switch (scenario) {
    case 'overhead':
      return [{ name: 'overhead', plan: overhead(false) }];
    case 'agents':
      return [{ name: 'agents', plan: agentsScenario() }];
    case 'inflight':
      return [{ name: 'inflight', plan: inflight(10_000) }];
    case 'quick':
      return [
        { name: 'quick-overhead', plan: overhead(true) },
        { name: 'quick-inflight', plan: inflight(500) },
      ];
    default:
      throw new Error(`unknown scenario "${scenario}"`);
  }
}

/**
 * Narrows a plan for a focused measurement: `--systems direct,cluster-nats` (direct is kept as the
 * baseline of the ratios), `--agents 1,16` and `--duration 5s`-style seconds (`--seconds 5`).
 */
export function narrowPlan(plan: ScenarioPlan, flags: string[]): ScenarioPlan {
  const { values } = parseArgs({
    args: flags,
    options: { systems: { type: 'string' }, agents: { type: 'string' }, seconds: { type: 'string' } },
    strict: true,
    allowPositionals: false,
  });
  let { systems, points } = plan;
  if (values.systems !== undefined) {
    const wanted = values.systems.split(',').map((s) => s.trim());
    const unknown = wanted.filter((s) => !(SYSTEM_NAMES as readonly string[]).includes(s));
    if (unknown.length > 0) {
      throw new Error(`--systems: unknown ${unknown.join(', ')} (have: ${SYSTEM_NAMES.join(', ')})`);
    }
    systems = SYSTEM_NAMES.filter((s) => s === 'direct' || wanted.includes(s));
  }
  if (values.agents !== undefined) {
    const counts = values.agents.split(',').map(Number);
    if (counts.some((n) => !Number.isInteger(n) || n < 1)) {
      throw new Error(`--agents takes positive integers, e.g. 1,16 (got "${values.agents}")`);
    }
    const template = points[0];
    if (!template) throw new Error('the plan has no load point to copy');
    points = counts.map((agents) => ({ agents, load: template.load }));
  }
  if (values.seconds !== undefined) {
    const seconds = Number(values.seconds);
    if (!Number.isFinite(seconds) || seconds <= 0) {
      throw new Error(`--seconds takes a positive number (got "${values.seconds}")`);
    }
    points = points.map((p) => ({ ...p, load: { ...p.load, durationMs: seconds * 1000 } }));
  }
  return { ...plan, systems, points };
}

async function main(argv: string[]): Promise<number> {
  const [scenario = 'quick', ...flags] = argv;
  for (const { name, plan: full } of plansFor(scenario)) {
    const plan = narrowPlan(full, flags);
    const { markdown, files } = await runPlan(name, plan);
    process.stdout.write(`${markdown}\n\nwritten: ${files.join(', ')}\n\n`);
  }
  return 0;
}

runIfMain(import.meta.url, 'scenarios', main);
