/**
 * `npm run bench -- fairness [--system nats|bullmq|both] [--replicas 1,3] [--seconds 10]
 * [--cases isolation,isolation-uniform,weights,long-short,limit-cost,rate] [--fair-queue-size N]`: fair share
 * between tenants on a saturated inference pool, per broker and ingress replica count.
 *
 * - isolation: tenant B's steady small load alone, then with tenant A flooding (10x its fair
 *   share of agents): B's p50/p95 both ways and their ratio (target <= 1.2x), A's throughput.
 *   B calls replica 1 only; A is spread over every replica. A's calls ask for 32 ± 16 tokens.
 * - isolation-uniform: the same with every call of A asking for 32 tokens, like B's: the pool
 *   then frees its slots in waves, the worst case for a newly arrived call.
 * - weights: tenants of weight 2 and 1, both backlogged: served cost split (target 2:1 within 10%).
 * - long-short: 128-token against 16-token generations: decode-token split (target equal).
 * - limit-cost: one tenant's p50 with limits configured but not hit against none (target: no
 *   measurable difference).
 * - rate: a tenant limited to R calls/s offering 3R spread over every replica: calls admitted/s
 *   (target 0.9R..1.1R).
 *
 * Prints Markdown tables and writes JSON, Markdown and SVG charts under bench/results/fairness-<time>/.
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  CASE_NAMES,
  type CaseName,
  type ClusterResult,
  fairShareConfigured,
  runCases,
  SIM,
  SIM_FLAGS,
  TENANTS_YAML,
} from './fairness/cases.js';
import { groupedBarsSvg, shareOverTimeSvg } from './fairness/charts.js';
import { writeResults } from './load/report.js';
import { runIfMain } from './main.js';
import { startSim } from './scenarios.js';
import { startSystem } from './systems/index.js';

/**
 * The fair queue size of the inference pool, in cost units (estimated tokens); 0: the cluster's
 * default (16384 for openai-chat), the setting a user gets. The room the fair queue keeps follows
 * the pool's service rate (500 ms of work), so the size only caps it.
 */
const DEFAULT_FAIR_QUEUE_SIZE = 0;

interface Flags {
  systems: ('nats' | 'bullmq')[];
  replicas: number[];
  seconds: number;
  cases: CaseName[];
  fairQueueSize: number;
}

function parseFlags(argv: string[]): Flags {
  const { values } = parseArgs({
    args: argv,
    options: {
      system: { type: 'string', default: 'both' },
      replicas: { type: 'string', default: '1,3' },
      seconds: { type: 'string', default: '10' },
      cases: { type: 'string', default: CASE_NAMES.join(',') },
      'fair-queue-size': { type: 'string', default: String(DEFAULT_FAIR_QUEUE_SIZE) },
    },
    strict: true,
  });
  const system = values.system;
  if (!['nats', 'bullmq', 'both'].includes(system))
    throw new Error(`--system takes nats, bullmq or both, got "${system}"`);
  const replicas = values.replicas.split(',').map(Number);
  if (replicas.some((n) => !Number.isInteger(n) || n < 1 || n > 8))
    throw new Error(`--replicas takes a list of whole numbers 1..8, e.g. 1,3 (got "${values.replicas}")`);
  const seconds = Number(values.seconds);
  if (!(seconds >= 2)) throw new Error(`--seconds takes a number >= 2, got "${values.seconds}"`);
  const cases = values.cases.split(',').map((c) => c.trim()) as CaseName[];
  const unknown = cases.filter((c) => !CASE_NAMES.includes(c));
  if (unknown.length > 0)
    throw new Error(`--cases: unknown ${unknown.join(', ')} (have: ${CASE_NAMES.join(', ')})`);
  const fairQueueSize = Number(values['fair-queue-size']);
  if (!Number.isInteger(fairQueueSize) || fairQueueSize < 0)
    throw new Error(`--fair-queue-size takes a whole number of cost units (0: the cluster's default)`);
  return {
    systems: system === 'both' ? ['nats', 'bullmq'] : [system as 'nats' | 'bullmq'],
    replicas,
    seconds,
    cases,
    fairQueueSize,
  };
}

async function main(argv: string[]): Promise<number> {
  const flags = parseFlags(argv);
  const fairShare = fairShareConfigured();
  const log = (line: string) => process.stderr.write(`${line}\n`);
  if (!fairShare)
    log(
      'fairness: this build has no per-tenant config (tenants:): measuring the loads without it ("before")',
    );
  const sim = await startSim(SIM_FLAGS);
  const results: ClusterResult[] = [];
  try {
    for (const system of flags.systems) {
      for (const replicas of flags.replicas) {
        const sut = await startSystem(system === 'nats' ? 'cluster-nats' : 'cluster-bullmq', {
          backendUrl: sim.url,
          ingresses: replicas,
          // The worker holds as many calls as the backend has slots: the backlog stays in the queue.
          inferenceInFlight: SIM.slots,
          ...(fairShare ? { configYaml: TENANTS_YAML } : {}),
          ...(fairShare && flags.fairQueueSize > 0
            ? { inferencePoolYaml: [`fairQueue: { size: ${flags.fairQueueSize} }`] }
            : {}),
        });
        const result: ClusterResult = { system, replicas };
        try {
          await runCases(result, sut.urls, flags.cases, flags.seconds, log);
        } finally {
          await sut.stop();
        }
        results.push(result);
      }
    }
  } finally {
    await sim.stop();
  }
  const markdown = report(results, flags, fairShare);
  const charts = chartsOf(results);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const files = writeResults(join(process.cwd(), 'bench', 'results', `fairness-${stamp}`), 'fairness', {
    json: { scenario: 'fairness', node: process.version, fairShare, flags, sim: SIM_FLAGS, results },
    markdown,
    charts,
  });
  process.stdout.write(`${markdown}\nwritten: ${files.join(', ')}\n`);
  return 0;
}

const f0 = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(0));
const f2 = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(2));
const fails = (f: Record<string, number> | undefined) =>
  f && Object.keys(f).length > 0
    ? Object.entries(f)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')
    : '0';

function report(results: ClusterResult[], flags: Flags, fairShare: boolean): string {
  const lines = [
    `## Fair share (${fairShare ? `tenants configured, inference fairQueue size ${flags.fairQueueSize || 'default'}` : 'no per-tenant config in this build: before'})`,
    '',
    `Sim: ${SIM.slots} sequence slots, ${SIM.tokensPerSecond} tokens/s each, ttft ${SIM.ttftMs} ms, batching free; one inference worker holding ${SIM.slots} calls; windows of ${flags.seconds} s.`,
    '',
    '### B steady (4 agents, 1 s think, replica 1) alone and with A flooding (160 agents over every replica)',
    '',
    '| system | replicas | A tokens per call | B p50 alone ms | B p95 alone ms | B p50 with A ms | B p95 with A ms | p50 ratio | p95 ratio (target <= 1.2) | B queue wait p95 alone / with A ms | A calls/s | pool use | B failures | A failures |',
    '| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |',
  ];
  for (const r of results) {
    for (const i of [r.isolation, r.isolationUniform]) {
      if (!i) continue;
      const lengths = i.aSpread > 0 ? `32 ± ${i.aSpread}` : '32 (all alike)';
      lines.push(
        `| ${r.system} | ${r.replicas} | ${lengths} | ${f0(i.bAlone.p50)} | ${f0(i.bAlone.p95)} | ${f0(i.bWithA.p50)} | ${f0(i.bWithA.p95)} | ${f2(i.p50Ratio)}x | **${f2(i.p95Ratio)}x** | ${f0(i.bWaitAlone.p95)} / ${f0(i.bWaitWithA.p95)} | ${i.aCallsPerSec.toFixed(1)} | ${(i.poolUse * 100).toFixed(0)}% | ${fails(i.bFailures)} | ${fails(i.aFailures)} |`,
      );
    }
  }
  lines.push(
    '',
    '### Shares and limits',
    '',
    '| system | replicas | weights 2:1, served cost ratio (target 1.8..2.2) | long:short decode tokens (target 1.0) | p50 limits not hit / none ms | rate limit R/s: admitted/s (target 0.9R..1.1R) | per replica |',
    '| --- | ---: | ---: | ---: | ---: | ---: | --- |',
  );
  for (const r of results) {
    const w = r.weights;
    const ls = r.longShort;
    const lc = r.limitCost;
    const rate = r.rate;
    lines.push(
      `| ${r.system} | ${r.replicas} | ${w ? `**${f2(w.ratio)}** (${f0(w.heavyCost)} : ${f0(w.lightCost)})` : '–'} | ${ls ? `**${f2(ls.ratio)}** (${f0(ls.longTokens)} : ${f0(ls.shortTokens)})` : '–'} | ${lc ? `${f2(lc.limited.p50)} / ${f2(lc.free.p50)}` : '–'} | ${rate ? `${rate.limit}: **${f2(rate.admittedPerSec)}** (${f2(rate.ratio)}R), ${rate.refused} refused` : '–'} | ${rate ? rate.admittedPerReplica.join(' / ') : '–'} |`,
    );
  }
  return `${lines.join('\n')}\n`;
}

function chartsOf(results: ClusterResult[]): Record<string, string> {
  const charts: Record<string, string> = {};
  const isolated = results.filter((r) => r.isolation);
  if (isolated.length > 0) {
    charts['b-latency'] = groupedBarsSvg({
      title: "Tenant B's latency alone and with tenant A flooding",
      yLabel: 'latency (ms)',
      bars: ['p50 alone', 'p95 alone', 'p50 with A', 'p95 with A'],
      groups: isolated.map((r) => {
        const i = r.isolation as NonNullable<ClusterResult['isolation']>;
        return {
          label: `${r.system} x${r.replicas}`,
          values: [i.bAlone.p50, i.bAlone.p95, i.bWithA.p50, i.bWithA.p95],
        };
      }),
    });
  }
  const weighted = results.filter((r) => r.weights);
  if (weighted.length > 0) {
    charts.shares = shareOverTimeSvg(
      'Served cost share of the weight-2 tenant, both backlogged',
      weighted.map((r) => ({ name: `${r.system} x${r.replicas}`, points: r.weights?.shareOverTime ?? [] })),
      (100 * 2) / 3,
    );
  }
  return charts;
}

runIfMain(import.meta.url, 'fairness', main);
