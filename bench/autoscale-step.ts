import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runAgents } from '../test/support/mcp-clients.js';
import { lineChartSvg } from './load/plot.js';

/**
 * `npm run bench -- autoscale-step [--agents 64] [--hold 60] [--cli PATH ...]`: the step from an idle
 * pool to N agents calling `generate_text` back to back (each calls again as soon as its answer
 * came), on `mcp-cluster up --autoscale` (poll 2 s, the default; 16 slots per replica; min 0, max 8
 * replicas), then the same load for `--hold` seconds. It samples the autoscaler's `/status` every
 * 250 ms and reports when the pool first had the replicas the step needs (ceil(N / 16)) after the
 * first call, in seconds and in polls, and how many times the replica count changed after that
 * (flaps). `--cli` may name several builds of the CLI (e.g. one before a change): each runs in turn,
 * side by side in the table. Writes bench/results/autoscale-step.json and
 * bench/charts/autoscale-step.svg (replicas and queued calls over time).
 */

const { values } = parseArgs({
  options: {
    agents: { type: 'string', default: '64' },
    hold: { type: 'string', default: '60' },
    cli: { type: 'string', multiple: true },
  },
});
const AGENTS = Number(values.agents);
const HOLD_S = Number(values.hold);
const HERE = fileURLToPath(new URL('.', import.meta.url));
const THIS_CLI = fileURLToPath(new URL('../services/cli/main.js', import.meta.url));
const CLIS = values.cli?.length ? values.cli : [THIS_CLI];
const SLOTS = 16;
const NEEDED = Math.ceil(AGENTS / SLOTS);

interface Sample {
  /** Seconds since the first call was sent. */
  t: number;
  ticks: number;
  desired: number;
  queued: number;
  inFlight: number;
}

async function startUp(cli: string): Promise<{ child: ChildProcess; mcpUrl: string; statusUrl: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'mcp-bench-step-'));
  const config = join(dir, 'cluster.yaml');
  writeFileSync(
    config,
    `pools:\n  inference: { backend: openai-chat, scaling: { minReplicas: 0, maxReplicas: 8, idleToZero: 10m } }\ntools:\n  - { name: generate_text, template: generate_text, pool: inference, model: sim-llm }\n`,
  );
  const child = spawn(process.execPath, [cli, 'up', '--autoscale', '--port', '0', '--config', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, MCP_CLUSTER_LOG_LEVEL: 'warn' },
  });
  let stdout = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('up printed no banner in 30 s')), 30_000);
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString();
      const mcpUrl = /MCP endpoint \(Streamable HTTP\):\s+(\S+)/.exec(stdout)?.[1];
      const statusUrl = /autoscaler \(in-process workers\):\s+(\S+)/.exec(stdout)?.[1];
      if (mcpUrl && statusUrl && stdout.includes('Ctrl-C stops it.')) {
        clearTimeout(timer);
        resolve({ child, mcpUrl, statusUrl });
      }
    });
    child.once('exit', (code) => reject(new Error(`up exited (${code})`)));
  });
}

async function runStep(cli: string): Promise<{ cli: string; samples: Sample[] }> {
  const up = await startUp(cli);
  const status = async () =>
    (await (await fetch(up.statusUrl)).json()) as {
      ticks: number;
      pools: { desired: number | null; observation: { queueDepth: number; inFlight: number } | null }[];
    };
  // Idle first: two polls at zero.
  while ((await status()).ticks < 2) await new Promise((r) => setTimeout(r, 100));
  const stop = new AbortController();
  const start = performance.now();
  const agents = runAgents(
    up.mcpUrl,
    AGENTS,
    'generate_text',
    { prompt: 'step', max_tokens: 64 },
    stop.signal,
  );
  const samples: Sample[] = [];
  while (performance.now() - start < (HOLD_S + 10) * 1000) {
    const s = await status();
    const pool = s.pools[0];
    samples.push({
      t: (performance.now() - start) / 1000,
      ticks: s.ticks,
      desired: pool?.desired ?? 0,
      queued: pool?.observation?.queueDepth ?? 0,
      inFlight: pool?.observation?.inFlight ?? 0,
    });
    await new Promise((r) => setTimeout(r, 250));
  }
  stop.abort();
  await agents;
  up.child.kill('SIGTERM');
  await new Promise((r) => up.child.once('exit', r));
  return { cli, samples };
}

function summary(run: { cli: string; samples: Sample[] }) {
  const { samples } = run;
  const firstTick = samples[0]?.ticks ?? 0;
  const reached = samples.find((s) => s.desired >= NEEDED);
  const afterReach = reached ? samples.filter((s) => s.t >= reached.t && s.t <= reached.t + HOLD_S) : [];
  let changes = 0;
  for (let i = 1; i < afterReach.length; i++)
    if (afterReach[i]!.desired !== afterReach[i - 1]!.desired) changes++;
  const steps: number[] = [];
  for (const s of samples) if (steps[steps.length - 1] !== s.desired) steps.push(s.desired);
  return {
    cli: run.cli,
    reachedAfterS: reached ? reached.t : Number.NaN,
    reachedAfterPolls: reached ? reached.ticks - firstTick : Number.NaN,
    path: steps.join(' → '),
    maxReplicas: Math.max(...samples.map((s) => s.desired)),
    changesInHold: changes,
  };
}

async function main() {
  const runs = [];
  for (const cli of CLIS) runs.push(await runStep(cli));
  const rows = runs.map(summary);
  const lines = [
    `Step from idle to ${AGENTS} agents (needs ${NEEDED} replicas of ${SLOTS} slots), poll 2 s, then ${HOLD_S} s of the same load`,
    '',
    '| build | replicas path | reached the needed replicas after | polls | max replicas | changes in the next minute |',
    '|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.cli === THIS_CLI ? 'this build' : r.cli} | ${r.path} | ${r.reachedAfterS.toFixed(1)} s | ${r.reachedAfterPolls} | ${r.maxReplicas} | ${r.changesInHold} |`,
    ),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  mkdirSync(join(HERE, '../../bench/results'), { recursive: true });
  writeFileSync(
    join(HERE, '../../bench/results/autoscale-step.json'),
    JSON.stringify({ rows, runs }, null, 2),
  );
  const main = runs[0];
  if (main) {
    const svg = lineChartSvg({
      title: `Step to ${AGENTS} agents on up --autoscale: replicas and queued calls`,
      xLabel: 'seconds since the first call',
      yLabel: 'replicas / queued calls ÷ 16',
      xScale: 'linear',
      markers: false,
      series: [
        { name: 'replicas (desired)', points: main.samples.map((s) => [s.t, s.desired]) },
        { name: 'queued calls ÷ 16', points: main.samples.map((s) => [s.t, s.queued / SLOTS]) },
        { name: 'calls in flight ÷ 16', points: main.samples.map((s) => [s.t, s.inFlight / SLOTS]) },
      ],
    });
    writeFileSync(join(HERE, '../../bench/charts/autoscale-step.svg'), svg);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`autoscale-step: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
