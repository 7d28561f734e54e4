import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { closedLoopWait, mmcWait } from '../services/autoscaler/index.js';
import { startNatsServer, uniqueNamespace } from '../test/support/brokers.js';
import { callTool2025 } from '../test/support/mcp-clients.js';
import { type ChildRole, CLI, jsonLine, spawnRole } from './systems/process.js';

/**
 * `npm run bench -- plan [--seconds 30] [--target-wait 100]`: `mcp-cluster plan` proven against a
 * replay. A small cluster on NATS (one ingress; workers of the inference pool, each with its own
 * simulated vLLM of K = 4 sequences, as one GPU server per replica) takes a load on 3 replicas
 * while `plan --metrics --window 30s` observes it and sizes the pool for a p95 queue wait of
 * `--target-wait` ms;
 * then the same load runs again from the planned size down until the target fails (up until it holds,
 * if it fails there), and the queue wait each call met (`_meta["mcp-cluster/timing"].queueWaitMs`) is
 * measured: the fewest replicas that held it is what the replay shows is needed. Two loads: open loop
 * (Poisson arrivals at a fixed rate; plan's default M/G/c) and closed loop (agents calling back to
 * back; `plan --agents`, M/M/c//N). Beside the measured wait, each model's prediction for the run:
 * M/M/c, M/G/c (the M/M/c wait × (1 + Cs²) / 2, Cs² of the run's calls; the simulated backend's calls
 * are of one length, as steady LLM calls are) and the closed loop's. Writes bench/results/plan.json.
 */

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '30' },
    'target-wait': { type: 'string', default: '100' },
    rate: { type: 'string', default: '60' },
    agents: { type: 'string', default: '14' },
  },
});
const SECONDS = Number(values.seconds);
const TARGET_MS = Number(values['target-wait']);
const RATE = Number(values.rate);
const AGENTS = Number(values.agents);
const K = 4;
/** How long `plan` observes each load, s: long enough that the rate is known to a few percent. */
const OBSERVE_S = 30;
const HERE = fileURLToPath(new URL('.', import.meta.url));

interface Cluster {
  ingressUrl: string;
  /** The config file every role runs with (plan reads the pool's replicaConcurrency from it). */
  config: string;
  metricsUrls: string[];
  setReplicas(n: number): Promise<void>;
  stop(): Promise<void>;
}

async function startCluster(): Promise<Cluster> {
  const broker = await startNatsServer();
  const dir = mkdtempSync(join(tmpdir(), 'mcp-bench-plan-'));
  const config = join(dir, 'cluster.yaml');
  writeFileSync(
    config,
    `cluster: { namespace: ${uniqueNamespace('plan')} }
broker: { url: "${broker.url}" }
ingress: { port: 0, sessionSecret: "${randomBytes(16).toString('hex')}", maxDeadline: 10m }
worker: { drainGrace: 1s }
pools:
  inference:
    backend: openai-chat
    maxInFlight: ${K}
    scaling: { replicaConcurrency: ${K}, maxReplicas: 16 }
tools:
  - { name: generate_text, template: generate_text, pool: inference, model: sim-llm, deadline: 10m }
`,
  );
  const ingress = await spawnRole<Record<string, unknown>>({
    name: 'ingress',
    command: process.execPath,
    args: [CLI, 'ingress', '--config', config, '--port', '0'],
    ready: jsonLine,
  });
  const replicas: { sim: ChildRole<Record<string, unknown>>; worker: ChildRole<Record<string, unknown>> }[] =
    [];
  const add = async () => {
    // One GPU server per replica: its own simulated vLLM, K sequences at once, no batching penalty,
    // so a call takes the same ~ttft + tokens / rate whatever else runs.
    const sim = await spawnRole<Record<string, unknown>>({
      name: 'sim',
      command: process.execPath,
      args: [
        CLI,
        'sim',
        '--port',
        '0',
        '--max-num-seqs',
        String(K),
        '--batch-penalty',
        '0',
        '--ttft-ms',
        '20',
        '--tokens-per-second',
        '200',
      ],
      ready: jsonLine,
    });
    const worker = await spawnRole<Record<string, unknown>>({
      name: 'worker',
      command: process.execPath,
      args: [CLI, 'worker', '--pool', 'inference', '--config', config, '--port', '0'],
      env: { MCP_CLUSTER_BACKENDS_INFERENCE: String(sim.ready.url) },
      ready: jsonLine,
    });
    replicas.push({ sim, worker });
  };
  const remove = async () => {
    const last = replicas.pop();
    await last?.worker.stop(3000);
    await last?.sim.stop(3000);
  };
  const ingressUrl = String(ingress.ready.url);
  return {
    ingressUrl,
    config,
    get metricsUrls() {
      return [
        ingressUrl.replace(/\/mcp$/, '/metrics'),
        ...replicas.map((r) => `http://127.0.0.1:${Number(r.worker.ready.port)}/metrics`),
      ];
    },
    async setReplicas(n) {
      while (replicas.length < n) await add();
      while (replicas.length > n) await remove();
    },
    async stop() {
      while (replicas.length > 0) await remove();
      await ingress.stop(3000);
      await broker.dispose();
    },
  };
}

interface CallRecord {
  queueWaitMs: number;
  backendMs: number;
}

async function call(url: string): Promise<CallRecord | undefined> {
  const res = await callTool2025(url, 'generate_text', { prompt: 'plan', max_tokens: 20 }).catch(
    () => undefined,
  );
  const text = (await res?.text().catch(() => '')) ?? '';
  const m = /"mcp-cluster\/timing":(\{[^}]*\})/.exec(text);
  if (!m?.[1]) {
    if (process.env.PLAN_BENCH_DEBUG)
      process.stderr.write(`plan bench: a call failed: ${res?.status} ${text.slice(0, 300)}\n`);
    return undefined;
  }
  const timing = JSON.parse(m[1]) as { queueWaitMs: number; backendMs: number };
  return { queueWaitMs: timing.queueWaitMs, backendMs: timing.backendMs };
}

/** Runs `kind` load for `seconds` against `url`; every finished call's timing. */
async function load(kind: 'open' | 'closed', url: string, seconds: number): Promise<CallRecord[]> {
  const records: CallRecord[] = [];
  const until = performance.now() + seconds * 1000;
  const pending: Promise<void>[] = [];
  if (kind === 'open') {
    // Poisson arrivals: exponential gaps at RATE calls/s.
    let next = performance.now();
    while (next < until) {
      const wait = next - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      pending.push(call(url).then((r) => void (r && records.push(r))));
      next += (-Math.log(1 - Math.random()) / RATE) * 1000;
    }
  } else {
    for (let i = 0; i < AGENTS; i++)
      pending.push(
        (async () => {
          while (performance.now() < until) {
            const r = await call(url);
            if (r) records.push(r);
          }
        })(),
      );
  }
  await Promise.all(pending);
  return records;
}

function p95(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.95))] ?? Number.NaN;
}

/** What `mcp-cluster plan --json` said about the inference pool. */
interface Planned {
  neededReplicas: number;
  neededForWait: number;
  neededAtUpperRate: number | null;
  outstandingReplicas: number;
  model: string;
  arrivalPerSec: number;
  meanServiceMs: number;
  serviceCs2: number | null;
  agents: number | null;
  thinkTimeMs: number | null;
}

/** `mcp-cluster plan --json` over `metricsUrls` for the target (with `extra` flags): the inference pool. */
async function plan(metricsUrls: string[], config: string, extra: string[]): Promise<Planned> {
  // Asynchronously: the load must keep running in this process while plan observes it.
  const { stdout } = await promisify(execFile)(process.execPath, [
    CLI,
    'plan',
    '--config',
    config,
    '--metrics',
    metricsUrls.join(','),
    '--window',
    `${OBSERVE_S}s`,
    '--target-wait',
    `${TARGET_MS}ms`,
    '--percentile',
    '0.95',
    '--json',
    ...extra,
  ]);
  const json = JSON.parse(stdout) as { pools: (Planned & { pool: string })[] };
  const pool = json.pools.find((p) => p.pool === 'inference');
  if (!pool) throw new Error('plan has no inference pool');
  return pool;
}

/** One replay of a load at a size: what was measured and what each model predicts for it. */
interface Replay {
  replicas: number;
  calls: number;
  arrivalPerSec: number;
  serviceMs: number;
  serviceCs2: number;
  measuredP95Ms: number;
  mmcP95Ms: number;
  mgcP95Ms: number;
  closedP95Ms: number;
  held: boolean;
}

async function replay(
  cluster: Cluster,
  kind: 'open' | 'closed',
  replicas: number,
  thinkTimeMs: number,
): Promise<Replay> {
  await cluster.setReplicas(replicas);
  process.stderr.write(`plan bench: ${kind} loop on ${replicas} replicas for ${SECONDS} s\n`);
  const records = await load(kind, cluster.ingressUrl, SECONDS);
  const waits = records.map((r) => r.queueWaitMs);
  const service = records.map((r) => r.backendMs);
  const mean = service.reduce((a, b) => a + b, 0) / Math.max(1, service.length);
  const cs2 = service.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, service.length) / mean ** 2;
  const lambda = records.length / SECONDS;
  const measured = p95(waits);
  return {
    replicas,
    calls: records.length,
    arrivalPerSec: lambda,
    serviceMs: mean,
    serviceCs2: cs2,
    measuredP95Ms: measured,
    mmcP95Ms: mmcWait(replicas * K, lambda, mean, 0.95).percentileWaitMs,
    mgcP95Ms: mmcWait(replicas * K, lambda, mean, 0.95, cs2).percentileWaitMs,
    closedP95Ms: closedLoopWait(replicas * K, AGENTS, mean, thinkTimeMs, 0.95).percentileWaitMs,
    held: measured <= TARGET_MS,
  };
}

/**
 * Replays `kind` from the planned size down until the target fails (or up until it holds, when it
 * fails at the planned size): the fewest replicas that held it is what the replay shows is needed.
 */
async function replays(cluster: Cluster, kind: 'open' | 'closed', planned: Planned): Promise<Replay[]> {
  const z = planned.thinkTimeMs ?? 0;
  const runs: Replay[] = [];
  let size = Math.max(1, planned.neededReplicas);
  let run = await replay(cluster, kind, size, z);
  runs.push(run);
  if (run.held) {
    while (run.held && size > 1) {
      size -= 1;
      run = await replay(cluster, kind, size, z);
      runs.push(run);
    }
  } else {
    while (!run.held && size < planned.neededReplicas + 2) {
      size += 1;
      run = await replay(cluster, kind, size, z);
      runs.push(run);
    }
  }
  return runs.sort((a, b) => b.replicas - a.replicas);
}

async function main() {
  const cluster = await startCluster();
  const results: { kind: 'open' | 'closed'; planned: Planned; runs: Replay[] }[] = [];
  try {
    for (const kind of ['open', 'closed'] as const) {
      process.stderr.write(`plan bench: ${kind} loop, observing on 3 replicas\n`);
      await cluster.setReplicas(3);
      // Observe: the load runs while plan takes its two scrapes OBSERVE_S apart.
      const observing = load(kind, cluster.ingressUrl, OBSERVE_S + 4);
      await new Promise((r) => setTimeout(r, 2000));
      const planned = await plan(
        cluster.metricsUrls,
        cluster.config,
        kind === 'closed' ? ['--agents', `inference=${AGENTS}`] : [],
      );
      await observing;
      process.stderr.write(`plan bench: plan says ${JSON.stringify(planned)}\n`);
      results.push({ kind, planned, runs: await replays(cluster, kind, planned) });
    }
  } finally {
    await cluster.stop();
  }
  const f = (v: number) => (Number.isFinite(v) ? v.toFixed(v >= 100 ? 0 : 1) : '∞');
  const lines = [
    `mcp-cluster plan against a replay: p95 queue-wait target ${TARGET_MS} ms, ${K} slots per replica, ${SECONDS} s per run`,
    '',
    '| load | plan: needed (for the wait, model) | replicas run | calls/s | service ms (Cs²) | measured p95 wait | M/M/c p95 | M/G/c p95 | M/M/c//N p95 | target held |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  const summary: string[] = [];
  for (const { kind, planned, runs } of results) {
    const name = kind === 'open' ? `open loop, Poisson ${RATE}/s` : `closed loop, ${AGENTS} agents`;
    for (const r of runs) {
      lines.push(
        `| ${name} | ${planned.neededReplicas} (${planned.neededForWait}, ${planned.model}) | ${r.replicas} | ${f(r.arrivalPerSec)} | ${f(r.serviceMs)} (${r.serviceCs2.toFixed(3)}) | ${f(r.measuredP95Ms)} ms | ${f(r.mmcP95Ms)} ms | ${f(r.mgcP95Ms)} ms | ${f(r.closedP95Ms)} ms | ${r.held ? 'yes' : 'no'} |`,
      );
    }
    const held = runs.filter((r) => r.held).map((r) => r.replicas);
    const needed = held.length > 0 ? Math.min(...held) : Number.NaN;
    summary.push(
      `${name}: the replay needs ${needed} replicas; plan said ${planned.neededReplicas} (${planned.neededForWait} for the wait alone${planned.neededAtUpperRate === null ? '' : `, ${planned.neededAtUpperRate} at the rate's upper 95% bound`}, ${planned.outstandingReplicas} for the work outstanding): off by ${planned.neededReplicas - needed} (${planned.neededForWait - needed} for the wait)`,
    );
  }
  lines.push('', ...summary);
  process.stdout.write(`${lines.join('\n')}\n`);
  mkdirSync(join(HERE, '../../bench/results'), { recursive: true });
  writeFileSync(join(HERE, '../../bench/results/plan.json'), JSON.stringify(results, null, 2));
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`plan bench: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
