import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * `npm run bench -- <scenario> [flags]`: runs one benchmark scenario as its own process so each
 * starts from a clean heap. Each scenario prints a Markdown table and writes JSON under
 * bench/results/.
 */
const SCENARIOS: Record<string, string> = {
  quick: 'overhead at 1/16/64 agents and 500 calls in flight, every system, in under 3 minutes',
  overhead:
    'zero-latency backend, 1/16/64/256 agents: mcp-cluster (memory, NATS, BullMQ) against direct and FastMCP',
  agents: '1,000 agents with think time for 2 minutes, realistic backend; errors and memory over time',
  inflight: '10,000 long calls in flight on one ingress replica: peak RSS per process and per call',
  embeddings: 'micro-batching against per-call forwarding and the simulated GPU batch capacity',
  affinity: 'time to first token of multi-turn sessions, session affinity against round-robin',
  cpu: 'CPU per call of every process of one system (default cluster-nats) under the overhead load',
  queue: 'the queue hop alone: enqueue to delivery on one broker (default nats://127.0.0.1:4222)',
  batch: 'a batch embedding job against the backend capacity; interactive p95 with and without a job',
  'share-ledger': 'what the shares ledger costs a replica: publish and read latency and CPU per broker',
  'autoscale-step':
    'up --autoscale from idle to 64 agents: polls to the needed replicas, changes in the next minute',
  plan: 'mcp-cluster plan against a replay: from the planned size down until the target fails, open and closed loop, M/M/c, M/G/c and M/M/c//N',
  fairness:
    'tenants on a saturated inference pool: isolation from a flood, weights, long vs short, limits (NATS, BullMQ; 1 and 3 ingress replicas)',
};

/** Scenarios that live in scenarios.ts; the others have their own script. */
const COMPARISONS = new Set(['quick', 'overhead', 'agents', 'inflight']);

const [scenario, ...rest] = process.argv.slice(2);
const usage = `usage: npm run bench -- <scenario> [flags]\n\nscenarios:\n${Object.entries(SCENARIOS)
  .map(([name, what]) => `  ${name.padEnd(12)} ${what}`)
  .join('\n')}\n`;

if (!scenario || scenario === '--help' || scenario === '-h') {
  process.stdout.write(usage);
  process.exit(scenario ? 0 : 2);
}
if (!(scenario in SCENARIOS)) {
  process.stderr.write(`bench: unknown scenario "${scenario}"\n\n${usage}`);
  process.exit(2);
}
const script = fileURLToPath(
  new URL(`./${COMPARISONS.has(scenario) ? 'scenarios' : scenario}.js`, import.meta.url),
);
if (!existsSync(script)) {
  process.stderr.write(`bench: ${script} is missing; run npm run build first\n`);
  process.exit(2);
}
const args = COMPARISONS.has(scenario) ? [scenario, ...rest] : rest;
// 10,000 agents in one process need more than the default heap.
const run = spawnSync(process.execPath, ['--max-old-space-size=8192', script, ...args], { stdio: 'inherit' });
process.exit(run.status ?? 1);
