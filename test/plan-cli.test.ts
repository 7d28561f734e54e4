import { type ChildProcess, spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  closedLoopWait,
  formatPlan,
  GIB,
  type PoolRates,
  planCapacity,
  planToJson,
  QUEUEING_MODEL,
  QUEUEING_MODEL_MGC,
  replicasForClosedLoop,
  replicasForWait,
} from '../services/autoscaler/index.js';
import { resolveConfig } from './support/families.js';
import { connectClient, type TestClient } from './support/mcp-clients.js';
import { CLI, type CliResult, cleanEnv, runCli, STACK_TRACE, writeConfig } from './support/processes.js';
import { waitFor } from './support/wait.js';

// ---------------------------------------------------------------------------------------------------
// planCapacity against hand-computed Erlang C
// ---------------------------------------------------------------------------------------------------

/**
 * Erlang C from the closed form with factorials, independent of the iterative recursion the planner
 * uses: C = (aᶜ/c! · c/(c−a)) / (Σₖ₌₀^{c−1} aᵏ/k! + aᶜ/c! · c/(c−a)).
 */
function erlangCClosedForm(c: number, a: number): number {
  let factorial = 1;
  let sum = 0;
  for (let k = 0; k < c; k++) {
    if (k > 0) factorial *= k;
    sum += a ** k / factorial;
  }
  factorial *= c;
  const top = (a ** c / factorial) * (c / (c - a));
  return top / (sum + top);
}

const PLAN_YAML = `
planner: { targetWait: 200ms, percentile: 0.95 }
pools:
  inference:
    backend: openai-chat
    scaling: { replicaConcurrency: 1, maxReplicas: 10 }
    gpu: { modelParamsBillions: 8, bytesPerParam: 2, kvCachePerToken: 128kb, contextTokens: 8192, concurrentSequences: 16 }
  embeddings:
    backend: openai-embeddings
    scaling: { replicaConcurrency: 4 }
`;

function rates(pool: string, r: Partial<PoolRates>): PoolRates {
  return {
    pool,
    arrivalPerSec: 0,
    lowArrivalPerSec: 0,
    completedPerSec: 0,
    meanServiceMs: Number.NaN,
    p95ServiceMs: Number.NaN,
    serviceCs2: Number.NaN,
    meanQueueWaitMs: Number.NaN,
    inFlight: 0,
    queueDepth: 0,
    heldCalls: 0,
    lowQueueDepth: 0,
    lowInFlight: 0,
    oldestWaitMs: 0,
    replicas: 0,
    windowMs: 10_000,
    ...r,
  };
}

describe('planCapacity', () => {
  const config = resolveConfig(PLAN_YAML);
  // λ = 10 calls/s, S = 500 ms: a = 5 Erlangs on both pools.
  const observed = new Map([
    [
      'inference',
      rates('inference', {
        arrivalPerSec: 10,
        completedPerSec: 10,
        meanServiceMs: 500,
        p95ServiceMs: 1400,
        replicas: 7,
      }),
    ],
    [
      'embeddings',
      rates('embeddings', { arrivalPerSec: 10, completedPerSec: 10, meanServiceMs: 500, replicas: 2 }),
    ],
  ]);

  it('matches Erlang C by hand: current wait, utilisation and the fewest replicas for the target', () => {
    const plan = planCapacity(observed, config);
    const inference = plan.pools.find((p) => p.pool === 'inference')!;
    // c = 7 replicas × 1: C(7, 5) = 0.324149949…, W95 = ln(C / 0.05) / (7/0.5 − 10) s = 467.2958 ms.
    expect(erlangCClosedForm(7, 5)).toBeCloseTo(0.324149949173288, 12);
    expect(inference.offeredLoad).toBeCloseTo(5, 12);
    expect(inference.utilization).toBeCloseTo(5 / 7, 12);
    expect(inference.waitMs).toBeCloseTo((Math.log(erlangCClosedForm(7, 5) / 0.05) / 4) * 1000, 6);
    expect(inference.waitMs).toBeCloseTo(467.2958, 3);
    expect(inference.meanWaitMs).toBeCloseTo((erlangCClosedForm(7, 5) / 4) * 1000, 6);
    // 8 slots give 201.26 ms (just over 200), 9 give 59.55 ms: 9 replicas.
    expect((Math.log(erlangCClosedForm(8, 5) / 0.05) / 6) * 1000).toBeCloseTo(201.2609, 3);
    expect(inference.neededReplicas).toBe(9);
    expect(inference.waitAtNeededMs).toBeCloseTo(59.5453, 3);
    expect(inference.utilizationAtNeeded).toBeCloseTo(5 / 9, 12);

    // Embeddings: 2 replicas × 4 slots = the same 8 servers (201.26 ms), so 3 replicas (12 slots).
    const embeddings = plan.pools.find((p) => p.pool === 'embeddings')!;
    expect(embeddings.replicaConcurrency).toBe(4);
    expect(embeddings.utilization).toBeCloseTo(5 / 8, 12);
    expect(embeddings.waitMs).toBeCloseTo(201.2609, 3);
    expect(embeddings.neededReplicas).toBe(3);

    // No worker exported Σ S²: the variability is unknown, so M/G/c falls back to M/M/c and says so.
    expect(plan.model).toBe(QUEUEING_MODEL_MGC);
    expect(inference.model).toBe('M/M/c');
    expect(inference.notes.join('\n')).toContain('service-time variability is unknown');
    expect(plan).toMatchObject({ targetWaitMs: 200, percentile: 0.95, whatIf: 1, windowMs: 10_000 });
  });

  it('says when the arrival rate is too uncertain for the plan: its upper 95% bound needs more', () => {
    // 10 calls/s over 1 s is 10 calls: λ is known to ±1.645·√10 / 10 = ±52%.
    const short = new Map([['inference', { ...(observed.get('inference') as PoolRates), windowMs: 1000 }]]);
    const inference = planCapacity(short, config).pools.find((p) => p.pool === 'inference')!;
    expect(inference.neededForWait).toBe(9);
    const upper = 10 + 1.645 * Math.sqrt(10);
    expect(inference.neededAtUpperRate).toBe(replicasForWait(upper, 500, 1, 200, 0.95));
    expect(inference.neededAtUpperRate).toBeGreaterThan(9);
    expect(inference.notes.join('\n')).toContain(
      `known to ±52%; at its upper bound (${upper.toFixed(1)}/s) the pool needs ${inference.neededAtUpperRate} replicas`,
    );
    // Ten minutes of the same rate: ±1.6%, and the bound needs no more.
    const long = new Map([['inference', { ...(observed.get('inference') as PoolRates), windowMs: 600_000 }]]);
    const steady = planCapacity(long, config).pools.find((p) => p.pool === 'inference')!;
    expect(steady.neededAtUpperRate).toBe(9);
    expect(steady.notes.join('\n')).not.toContain('upper bound');
  });

  it('M/G/c takes the measured Cs²: calls of one length wait half as long as M/M/c says', () => {
    const steady = new Map([
      ['inference', { ...(observed.get('inference') as PoolRates), serviceCs2: 0 }],
      ['embeddings', { ...(observed.get('embeddings') as PoolRates), serviceCs2: 3 }],
    ]);
    const plan = planCapacity(steady, config);
    const inference = plan.pools.find((p) => p.pool === 'inference')!;
    expect(inference.model).toBe('M/G/c');
    expect(inference.serviceCs2).toBe(0);
    // M/M/c: 467.30 ms on 7 slots, 201.26 on 8; halved, 8 slots (100.6 ms) hold 200 ms: 8 replicas.
    expect(inference.waitMs).toBeCloseTo(467.2958 / 2, 3);
    expect(inference.neededReplicas).toBe(8);
    expect(inference.waitAtNeededMs).toBeCloseTo(201.2609 / 2, 3);
    // Cs² = 3 doubles M/M/c's waits: 3 replicas × 4 slots give 2 × 59.55 ms, within 200 ms.
    const embeddings = plan.pools.find((p) => p.pool === 'embeddings')!;
    expect(embeddings.waitMs).toBeCloseTo(2 * 201.2609, 3);
    expect(embeddings.neededReplicas).toBe(3);
    // --model mmc ignores the measured Cs².
    const mmc = planCapacity(steady, config, { model: 'mmc' });
    expect(mmc.model).toBe(QUEUEING_MODEL);
    expect(mmc.pools.find((p) => p.pool === 'inference')).toMatchObject({
      model: 'M/M/c',
      neededReplicas: 9,
    });
    expect(formatPlan(plan)).toMatch(/^inference .* 0\.00 +M\/G\/c /m);
    expect(() => planCapacity(steady, config, { model: 'mdc' as 'mmc' })).toThrow(RangeError);
  });

  it("plans a closed loop of agents with M/M/c//N, its think time from Little's law", () => {
    // 14 agents keep 4 slots per replica busy with calls of 118 ms: observed λ = 100 calls/s, a
    // mean queue wait of 20 ms, so each agent is away 14/100 s − 20 ms − 118 ms = 2 ms per call.
    const k4 = resolveConfig(`
planner: { targetWait: 100ms, percentile: 0.95 }
pools:
  inference:
    backend: openai-chat
    scaling: { replicaConcurrency: 4, maxReplicas: 10 }
`);
    const loop = new Map([
      [
        'inference',
        rates('inference', {
          arrivalPerSec: 100,
          completedPerSec: 100,
          meanServiceMs: 118,
          serviceCs2: 0,
          meanQueueWaitMs: 20,
          replicas: 3,
          inFlight: 12,
          queueDepth: 2,
        }),
      ],
    ]);
    const plan = planCapacity(loop, k4, { agents: { '*': 14 } });
    const inference = plan.pools[0]!;
    expect(inference.model).toBe('M/M/c//N');
    expect(inference.agents).toBe(14);
    expect(inference.thinkTimeMs).toBeCloseTo(2, 9);
    expect(inference.neededForWait).toBe(replicasForClosedLoop(14, 118, 2, 4, 100, 0.95));
    expect(inference.neededForWait).toBe(3);
    expect(inference.waitMs).toBeCloseTo(closedLoopWait(12, 14, 118, 2, 0.95).percentileWaitMs, 9);
    // The 14 calls outstanding fill 4 replicas' slots, which the autoscaler keeps: the plan says 4, and why.
    expect(inference.outstandingReplicas).toBe(4);
    expect(inference.neededReplicas).toBe(4);
    expect(inference.notes.join('\n')).toContain('3 replicas would hold the wait target; it needs 4');
    expect(inference.notes.join('\n')).toContain('a closed loop of 14 agents, each away 2.0 ms');
    expect(plan.model).toContain('M/M/c//N');
    // Open loop, the same observation reads as 100 calls/s arriving whatever the wait: 4 replicas.
    expect(planCapacity(loop, k4).pools[0]!.neededForWait).toBe(4);
    // A given think time wins; what-if scales the agents.
    const given = planCapacity(loop, k4, { agents: { inference: 14 }, thinkTimeMs: 1000, whatIf: 2 });
    expect(given.pools[0]).toMatchObject({ agents: 28, thinkTimeMs: 1000 });
    expect(given.pools[0]!.neededForWait).toBe(replicasForClosedLoop(28, 118, 1000, 4, 100, 0.95));
    // Fewer agents than the observation needs: said, and planned back to back.
    const few = planCapacity(loop, k4, { agents: { '*': 5 } }).pools[0]!;
    expect(few.thinkTimeMs).toBe(0);
    expect(few.notes.join('\n')).toContain('more agents were calling than --agents says');
    // No calls observed: the think time is unknown unless given, and so is the plan.
    const quiet = new Map([['inference', rates('inference', { meanServiceMs: 118, replicas: 1 })]]);
    const unknown = planCapacity(quiet, k4, { agents: { inference: 14 } }).pools[0]!;
    expect(unknown.neededForWait).toBeUndefined();
    expect(unknown.notes.join('\n')).toContain('pass --think-time');
    const backToBack = planCapacity(quiet, k4, { agents: { inference: 14 }, thinkTimeMs: 0 }).pools[0]!;
    expect(backToBack.neededForWait).toBe(3);
    // A bare N is for pools with calls: an idle pool stays idle.
    expect(planCapacity(quiet, k4, { agents: { '*': 14 } }).pools[0]!.model).toBe('M/G/c');
    expect(planCapacity(loop, k4, { agents: { nowhere: 3 } }).notes.join('\n')).toContain(
      '--agents names pool nowhere',
    );
    expect(() => planCapacity(loop, k4, { agents: { inference: 0 } })).toThrow(RangeError);
    expect(() => planCapacity(loop, k4, { agents: { inference: 14 }, thinkTimeMs: -1 })).toThrow(RangeError);
  });

  it('sizes GPUs and cost from the gpu section and the price table', () => {
    const plan = planCapacity(observed, config);
    const inference = plan.pools.find((p) => p.pool === 'inference')!;
    // 8B fp16 = 16e9 bytes, KV 128 KiB × 8192 × 16 = 16 GiB; × 1.15 = 35.5 GiB: an L40S (48 GB) at 1.90/h.
    expect(inference.gpu).toMatchObject({
      weightsBytes: 16e9,
      kvCacheBytes: 16 * GIB,
      tier: 'L40S',
      gpusPerReplica: 1,
      pricePerGpuHour: 1.9,
      gpus: 9,
    });
    expect(inference.gpu?.memoryPerReplicaBytes).toBeCloseTo((16e9 + 16 * GIB) * 1.15, 0);
    expect(inference.gpu?.costPerHour).toBeCloseTo(9 * 1.9, 9);
    expect(plan.priceTable).toBe('built-in example');
    expect(plan.totalGpus).toBe(9);
    expect(plan.totalCostPerHour).toBeCloseTo(17.1, 9);
    // The pool without a gpu section says so.
    const embeddings = plan.pools.find((p) => p.pool === 'embeddings')!;
    expect(embeddings.gpu).toBeUndefined();
    expect(embeddings.notes.join('\n')).toContain('no gpu section for pool embeddings');

    // A configured price table replaces the examples. A 70B fp16 model (161 GB with overhead) fits on two
    // 80 GB GPUs (8/h per replica) or eight 24 GB ones (12/h): the cheaper set wins.
    const priced = resolveConfig(`
planner:
  gpuTiers:
    - { name: small, memory: 24gb, pricePerHour: 1.5 }
    - { name: big, memory: 80gb, pricePerHour: 4 }
pools:
  inference:
    backend: openai-chat
    scaling: { replicaConcurrency: 1, maxReplicas: 50 }
    gpu: { modelParamsBillions: 70, bytesPerParam: 2, kvCachePerToken: 0, contextTokens: 0, concurrentSequences: 0 }
`);
    const big = planCapacity(new Map([['inference', observed.get('inference')!]]), priced, {
      targetWaitMs: 200,
    });
    const p = big.pools[0]!;
    expect(big.priceTable).toBe('config');
    expect(p.gpu).toMatchObject({ tier: 'big', gpusPerReplica: 2, pricePerGpuHour: 4, gpus: 18 });
    expect(p.gpu?.costPerHour).toBe(72);
  });

  it("never plans fewer replicas than the interactive work outstanding needs, the autoscaler's and KEDA's signal", () => {
    // A closed loop read early: 40 interactive calls queued and 8 running, the rate still low, no
    // call finished yet (S unknown); batch calls do not count. k = 1 for inference here.
    const early = new Map([
      [
        'inference',
        rates('inference', {
          arrivalPerSec: 4,
          queueDepth: 40 + 30,
          lowQueueDepth: 30,
          inFlight: 8 + 5,
          lowInFlight: 5,
          replicas: 8,
        }),
      ],
    ]);
    const k = config.pools.inference?.scaling.replicaConcurrency ?? 1;
    const unknown = planCapacity(early, config).pools.find((p) => p.pool === 'inference')!;
    expect(unknown.neededReplicas).toBe(Math.ceil(48 / k));
    // Known service time and a low rate: M/M/c alone would ask for few; the outstanding work wins.
    const known = new Map([
      ['inference', { ...early.get('inference')!, meanServiceMs: 100, completedPerSec: 4 }],
    ]);
    const withS = planCapacity(known, config).pools.find((p) => p.pool === 'inference')!;
    expect(withS.neededReplicas).toBe(Math.ceil(48 / k));
    expect(planCapacity(known, config).assumptions.join('\n')).toContain('work outstanding');
  });

  it('--what-if 2 doubles the arrivals and needs more replicas (and says when past maxReplicas)', () => {
    const base = planCapacity(observed, config);
    const doubled = planCapacity(observed, config, { whatIf: 2 });
    const one = base.pools.find((p) => p.pool === 'inference')!;
    const two = doubled.pools.find((p) => p.pool === 'inference')!;
    expect(two.observedArrivalPerSec).toBe(10);
    expect(two.arrivalPerSec).toBe(20);
    // a = 10: 13 slots give 290.24 ms, 14 give 155.97 ms.
    expect((Math.log(erlangCClosedForm(13, 10) / 0.05) / (13 / 0.5 - 20)) * 1000).toBeCloseTo(290.2358, 3);
    expect((Math.log(erlangCClosedForm(14, 10) / 0.05) / (14 / 0.5 - 20)) * 1000).toBeCloseTo(155.9738, 3);
    expect(two.neededReplicas).toBe(14);
    expect(two.neededReplicas!).toBeGreaterThan(one.neededReplicas!);
    expect(two.notes.join('\n')).toContain('above scaling.maxReplicas 10');
    expect(doubled.assumptions.join('\n')).toContain('× 2');
    expect(() => planCapacity(observed, config, { whatIf: 0 })).toThrow(RangeError);
    expect(() => planCapacity(observed, config, { whatIf: -1 })).toThrow(RangeError);
    expect(() => planCapacity(observed, config, { whatIf: Number.NaN })).toThrow(RangeError);
    expect(() => planCapacity(observed, config, { percentile: 1 })).toThrow(RangeError);
    expect(() => planCapacity(observed, config, { targetWaitMs: -1 })).toThrow(RangeError);
  });

  it('is honest about what it cannot know: no replicas, no finished call, no arrivals counted, unknown pools', () => {
    const plan = planCapacity(
      new Map([
        // Load but no running replica: the queue grows without bound.
        [
          'inference',
          rates('inference', { arrivalPerSec: 4, completedPerSec: 0, meanServiceMs: 250, replicas: 0 }),
        ],
        // Calls finished but no arrivals counted: the ingress was not read.
        ['embeddings', rates('embeddings', { completedPerSec: 3, meanServiceMs: 20, replicas: 1 })],
        ['mystery', rates('mystery', { arrivalPerSec: 1 })],
      ]),
      config,
    );
    const inference = plan.pools.find((p) => p.pool === 'inference')!;
    expect(inference.utilization).toBe(Number.POSITIVE_INFINITY);
    expect(inference.waitMs).toBe(Number.POSITIVE_INFINITY);
    // a = 1 Erlang: 2 slots wait 474 ms at p95, 3 slots 75 ms.
    expect(inference.neededReplicas).toBe(3);
    expect(inference.notes.join('\n')).toContain('no running replica');
    const embeddings = plan.pools.find((p) => p.pool === 'embeddings')!;
    expect(embeddings.notes.join('\n')).toContain("read the ingress's /metrics too");
    expect(plan.notes.join('\n')).toContain('pool mystery appears in the metrics but not in the config');

    const json = planToJson(plan) as { pools: Record<string, unknown>[] };
    const inferenceJson = json.pools.find((p) => p.pool === 'inference')!;
    expect(inferenceJson).toMatchObject({
      utilization: null,
      waitMs: null,
      stableNow: false,
      neededReplicas: 3,
    });
    // No NaN or Infinity survives into JSON (they would silently turn into null or break parsers).
    expect(JSON.parse(JSON.stringify(json))).toEqual(json);

    // Arrivals but no finished call: the service time, and so the plan, is unknown.
    const unknown = planCapacity(
      new Map([['inference', rates('inference', { arrivalPerSec: 2, replicas: 1 })]]),
      config,
    );
    const p = unknown.pools.find((x) => x.pool === 'inference')!;
    expect(p.neededReplicas).toBeUndefined();
    expect(p.gpu?.gpus).toBeUndefined();
    expect(p.notes.join('\n')).toContain('service time is unknown');
    const idle = unknown.pools.find((x) => x.pool === 'embeddings')!;
    expect(idle.notes.join('\n')).toContain('no metrics for it, planned as idle');
    expect(idle.neededReplicas).toBe(0);
  });

  describe('a low-priority (batch) backlog', () => {
    // Embeddings: k = 4, S = 500 ms, so one replica kept full completes r = 8 calls/s; 2 running.
    const backlog = (r: Partial<PoolRates> = {}) =>
      new Map([
        [
          'embeddings',
          rates('embeddings', {
            completedPerSec: 16,
            meanServiceMs: 500,
            replicas: 2,
            lowQueueDepth: 28_000,
            lowInFlight: 800,
            ...r,
          }),
        ],
      ]);

    it('gives its ETA at the current replicas and the replicas that finish it by the deadline', () => {
      const plan = planCapacity(backlog(), config);
      const embeddings = plan.pools.find((p) => p.pool === 'embeddings')!;
      // 28 800 calls at 2 × 8 calls/s: 1800 s. The pool's batchDrainTarget (default 1 h) is the deadline:
      // ceil(28 800 / (8 × 3600)) = 1.
      expect(embeddings.batch).toEqual({
        queued: 28_000,
        inFlight: 800,
        backlog: 28_800,
        perReplicaPerSec: 8,
        etaMs: 1_800_000,
        deadlineMs: 3_600_000,
        neededReplicas: 1,
      });
      expect(plan.batchDeadlineMs).toBeUndefined();
      // A deadline of 10 min: ceil(28 800 / (8 × 600)) = 6; of 5 min: 12, above maxReplicas 10.
      expect(planCapacity(backlog(), config, { batchDeadlineMs: 600_000 }).pools[1]?.batch).toMatchObject({
        deadlineMs: 600_000,
        neededReplicas: 6,
        etaMs: 1_800_000,
      });
      const tight = planCapacity(backlog(), config, { batchDeadlineMs: 300_000 }).pools[1]!;
      expect(tight.batch?.neededReplicas).toBe(12);
      expect(tight.notes.join('\n')).toContain(
        'the batch backlog needs 12 replicas to finish within 5.0 min, above scaling.maxReplicas 10: at that ceiling it takes 6.0 min',
      );
      // The pool's own setting is the default deadline.
      const slow = resolveConfig(
        PLAN_YAML.replace('replicaConcurrency: 4 }', 'replicaConcurrency: 4, batchDrainTarget: 20m }'),
      );
      expect(planCapacity(backlog(), slow).pools[1]?.batch).toMatchObject({
        deadlineMs: 1_200_000,
        neededReplicas: 3,
      });
      expect(() => planCapacity(backlog(), config, { batchDeadlineMs: 0 })).toThrow(RangeError);
      expect(() => planCapacity(backlog(), config, { batchDeadlineMs: Number.NaN })).toThrow(RangeError);
    });

    it('keeps batch arrivals out of the queue-wait model, and says what it cannot know', () => {
      // A job's chunks arrived in a burst of 500/s, with 4 interactive calls/s beside them.
      const mixed = planCapacity(backlog({ arrivalPerSec: 504, lowArrivalPerSec: 500 }), config);
      const embeddings = mixed.pools.find((p) => p.pool === 'embeddings')!;
      expect(embeddings.observedArrivalPerSec).toBe(4);
      expect(embeddings.offeredLoad).toBeCloseTo(2, 12);
      // A pool working off a job submitted before the window: completions without arrivals are expected.
      const quiet = planCapacity(backlog(), config).pools.find((p) => p.pool === 'embeddings')!;
      expect(quiet.notes.join('\n')).not.toContain("read the ingress's /metrics");

      const stopped = planCapacity(backlog({ replicas: 0 }), config).pools[1]!;
      expect(stopped.batch?.etaMs).toBe(Number.POSITIVE_INFINITY);
      expect(stopped.batch?.neededReplicas).toBe(1);
      expect(stopped.notes.join('\n')).toContain('no running replica: it does not progress');
      const unknown = planCapacity(backlog({ meanServiceMs: Number.NaN, completedPerSec: 0 }), config)
        .pools[1]!;
      expect(unknown.batch?.etaMs).toBeNaN();
      expect(unknown.batch?.neededReplicas).toBeUndefined();
      expect(unknown.notes.join('\n')).toContain('a batch backlog of 28800 calls, but no call finished');

      const json = planToJson(planCapacity(backlog({ replicas: 0 }), config, { batchDeadlineMs: 7_200_000 }));
      expect(json.batchDeadlineMs).toBe(7_200_000);
      const pools = json.pools as Record<string, unknown>[];
      expect(pools.find((p) => p.pool === 'embeddings')?.batch).toEqual({
        queued: 28_000,
        inFlight: 800,
        backlog: 28_800,
        perReplicaPerSec: 8,
        etaMs: null,
        progressingNow: false,
        deadlineMs: 7_200_000,
        neededReplicas: 1,
      });
      // A pool without a backlog has no batch plan at all.
      expect(pools.find((p) => p.pool === 'inference')?.batch).toBeNull();
      expect(JSON.parse(JSON.stringify(json))).toEqual(json);
    });

    it('prints a batch table only when some pool has a backlog', () => {
      const text = formatPlan(planCapacity(backlog(), config, { batchDeadlineMs: 600_000 }));
      const lines = text.split('\n');
      const title = lines.indexOf('Batch backlog (priority low):');
      expect(title).toBeGreaterThan(0);
      const header = lines[title + 1]!;
      const row = lines[title + 2]!;
      expect(header).toMatch(
        /^pool\s+backlog\s+queued\s+in flight\s+calls\/s per replica\s+replicas\s+ETA now\s+deadline\s+needed by deadline$/,
      );
      expect(row).toMatch(/^embeddings\s+28800\s+28000\s+800\s+8\.00\s+2\s+30\.0 min\s+10\.0 min\s+6$/);
      // Right-aligned under its header.
      expect(row.length).toBe(header.length);
      expect(text).toContain('batch (priority low): arrivals are interactive only');
      expect(formatPlan(planCapacity(observed, config))).not.toContain('Batch backlog');
    });
  });

  it('formats an aligned table with the model, assumptions and notes', () => {
    const text = formatPlan(planCapacity(observed, config, { whatIf: 2 }));
    const lines = text.split('\n');
    expect(lines[0]).toContain('queue wait ≤ 200 ms for 95% of calls, arrivals × 2 (what-if)');
    expect(lines[1]).toBe(`Model: ${QUEUEING_MODEL_MGC}`);
    const header = lines.find((l) => l.startsWith('pool '))!;
    const row = lines.find((l) => l.startsWith('inference '))!;
    const total = lines.find((l) => l.startsWith('total '))!;
    expect(row).toContain('L40S (35.5 GiB)');
    // Right-aligned columns end where their header ends: "needed" holds 14 for inference.
    const neededEnd = header.indexOf('needed') + 'needed'.length;
    expect(row.slice(neededEnd - 2, neededEnd)).toBe('14');
    const costEnd = header.indexOf('cost/h') + 'cost/h'.length;
    expect(
      row
        .slice(0, costEnd)
        .trimEnd()
        .endsWith((14 * 1.9).toFixed(2)),
    ).toBe(true);
    expect(total.length).toBe(costEnd);
    expect(text).toContain('Assumptions:');
    expect(text).toContain('no gpu section for pool embeddings');
  });
});

// ---------------------------------------------------------------------------------------------------
// The command, as a real process
// ---------------------------------------------------------------------------------------------------

function expectFailure(result: CliResult, code: number, ...mentions: string[]): void {
  expect(result.code, `stderr: ${result.stderr}`).toBe(code);
  expect(result.stderr).toMatch(/^mcp-cluster: /m);
  for (const m of mentions) expect(result.stderr).toContain(m);
  expect(result.stderr).not.toMatch(STACK_TRACE);
  expect(result.stdout).toBe('');
}

/** A port nothing listens on (opened, then closed). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function serve(handler: Parameters<typeof createServer>[1]): Promise<{ url: string; server: Server }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

function stop(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

interface PlanJson {
  model: string;
  whatIf: number;
  targetWaitMs: number;
  percentile: number;
  windowMs: number;
  priceTable: string;
  pools: {
    pool: string;
    observedArrivalPerSec: number;
    arrivalPerSec: number;
    completedPerSec: number;
    meanServiceMs: number | null;
    p95ServiceMs: number | null;
    serviceCs2: number | null;
    model: string;
    replicas: number;
    replicaConcurrency: number;
    utilization: number | null;
    waitMs: number | null;
    neededReplicas: number | null;
    gpu: {
      tier: string | null;
      gpus: number | null;
      gpusPerReplica: number;
      costPerHour: number | null;
    } | null;
    notes: string[];
  }[];
  assumptions: string[];
}

describe('mcp-cluster plan (flags and failures)', () => {
  const anyTarget = ['--metrics', 'http://127.0.0.1:9/metrics'];

  it.each([
    [['--what-if', '0', ...anyTarget], '--what-if'],
    [['--what-if', '-1', ...anyTarget], '--what-if'],
    [['--what-if', 'NaN', ...anyTarget], '--what-if'],
    [['--what-if', 'Infinity', ...anyTarget], '--what-if'],
    [['--what-if', 'abc', ...anyTarget], '"abc"'],
    [['--what-if', '', ...anyTarget], '--what-if'],
    [['--what-if', '1e400', ...anyTarget], '--what-if'],
    [['--window', 'soon', ...anyTarget], '--window'],
    [['--window', '0ms', ...anyTarget], '--window'],
    [['--window', '48h', ...anyTarget], '24h'],
    [['--target-wait', 'fast', ...anyTarget], '--target-wait'],
    [['--percentile', '95', ...anyTarget], '95%'],
    [['--percentile', '1.5', ...anyTarget], '--percentile'],
    [['--percentile', 'p100', ...anyTarget], '--percentile'],
    [['--percentile', '0', ...anyTarget], '--percentile'],
    [['--batch-deadline', 'soon', ...anyTarget], '--batch-deadline'],
    [['--batch-deadline', '0s', ...anyTarget], '--batch-deadline'],
    [['--batch-deadline', '48h', ...anyTarget], '24h'],
    [['--model', 'mdc', ...anyTarget], '--model must be mgc'],
    [['--agents', '0', ...anyTarget], '--agents must be POOL=N'],
    [['--agents', 'inference=many', ...anyTarget], '"inference=many"'],
    [['--agents', 'inference=2000000', ...anyTarget], '1 to 100000'],
    [['--agents', 'inference=3,inference=4', ...anyTarget], 'pool inference twice'],
    [['--think-time', '5s', ...anyTarget], 'pass --agents too'],
    [['--agents', '8', '--think-time', 'soon', ...anyTarget], '--think-time'],
    [['--metrics', 'ftp://10.0.0.5/metrics'], 'http://'],
    [['--metrics', 'not a url'], '"not a url"'],
    [['--metrics', ''], '--metrics needs a URL'],
    [['--metrics', 'http://10.0.0.5:9464/metrics', '--prometheus', 'http://p:9090'], 'not both'],
    [['--prometheus', 'prometheus:9090'], '--prometheus'],
    [['--prometheus', 'http://p:9090', '--window', '500ms'], '1s or more'],
    [['--bogus', ...anyTarget], '--bogus'],
    [['stray', ...anyTarget], 'stray'],
  ])('plan %j exits 2 naming the problem', async (args, mention) => {
    expectFailure(await runCli(['plan', ...args]), 2, mention);
  });

  it('without any source says what to pass', async () => {
    expectFailure(await runCli(['plan']), 2, '--metrics', '--prometheus', 'autoscaler.metricsUrls');
  });

  it('--help prints the usage with the plan command and exits 0', async () => {
    const result = await runCli(['plan', '--help']);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('mcp-cluster plan');
  });

  it('an unreachable --metrics URL (or one from the config) exits 1 naming it', async () => {
    const port = await closedPort();
    const url = `http://127.0.0.1:${port}/metrics`;
    const ok = await serve((_req, res) => res.end('mcp_cluster_worker_inflight_calls{pool="inference"} 0\n'));
    try {
      expectFailure(
        await runCli(['plan', '--metrics', `${ok.url}/metrics,${url}`, '--window', '50ms']),
        1,
        url,
        'connection refused',
      );
      const config = writeConfig(`autoscaler: { metricsUrls: ["${url}"] }\n`);
      expectFailure(await runCli(['plan', '--config', config, '--window', '50ms']), 1, url);
      // A bare host:port gets /metrics appended.
      expectFailure(
        await runCli(['plan', '--metrics', `http://127.0.0.1:${port}`, '--window', '50ms']),
        1,
        url,
      );
    } finally {
      await stop(ok.server);
    }
  });

  it('a page that is not Prometheus text exits 1 naming the URL and the line', async () => {
    const page = await serve((_req, res) => res.end('<!doctype html>\n<html>nope</html>\n'));
    try {
      expectFailure(
        await runCli(['plan', '--metrics', `${page.url}/metrics`, '--window', '50ms']),
        1,
        `${page.url}/metrics`,
        'line 1',
      );
    } finally {
      await stop(page.server);
    }
  });

  it('--batch-deadline plans each batch backlog for it, in the table and in --json', async () => {
    // One worker of embeddings with a job's backlog: 28 000 chunks queued, 800 in flight, 2 replicas;
    // every scrape shows 100 more calls of exactly 500 ms each.
    let scrapes = 0;
    const page = await serve((_req, res) => {
      const n = 100 * ++scrapes;
      res.end(
        [
          'mcp_cluster_queue_depth{pool="embeddings",priority="low"} 28000',
          'mcp_cluster_queue_inflight{pool="embeddings",priority="low"} 800',
          `mcp_cluster_worker_calls_total{pool="embeddings",tool="embed",outcome="ok"} ${n}`,
          `mcp_cluster_backend_duration_seconds_bucket{pool="embeddings",tool="embed",le="1"} ${n}`,
          `mcp_cluster_backend_duration_seconds_bucket{pool="embeddings",tool="embed",le="+Inf"} ${n}`,
          `mcp_cluster_backend_duration_seconds_sum{pool="embeddings",tool="embed"} ${n / 2}`,
          `mcp_cluster_backend_duration_seconds_count{pool="embeddings",tool="embed"} ${n}`,
          'mcp_cluster_worker_replicas{pool="embeddings",state="running"} 2',
          '',
        ].join('\n'),
      );
    });
    const config = writeConfig(PLAN_YAML);
    const args = ['plan', '--config', config, '--metrics', `${page.url}/metrics`, '--window', '50ms'];
    try {
      const json = await runCli([...args, '--batch-deadline', '10m', '--json']);
      expect(json.code, json.stderr).toBe(0);
      const plan = JSON.parse(json.stdout) as PlanJson & { batchDeadlineMs: number };
      expect(plan.batchDeadlineMs).toBe(600_000);
      const embeddings = plan.pools.find((p) => p.pool === 'embeddings') as PlanJson['pools'][number] & {
        batch: Record<string, unknown>;
      };
      expect(embeddings.batch).toEqual({
        queued: 28_000,
        inFlight: 800,
        backlog: 28_800,
        perReplicaPerSec: 8,
        etaMs: 1_800_000,
        progressingNow: true,
        deadlineMs: 600_000,
        neededReplicas: 6,
      });
      const text = await runCli(args);
      expect(text.code, text.stderr).toBe(0);
      // Without the flag: the pool's batchDrainTarget, 1 h by default, which one replica meets.
      expect(text.stdout).toMatch(/^embeddings\s+28800\s+28000\s+800\s+8\.00\s+2\s+30\.0 min\s+1\.0 h\s+1$/m);
    } finally {
      await stop(page.server);
    }
  });

  // A real Prometheus answers `plan --prometheus` in test/prometheus.test.ts; this stand-in is for
  // what one cannot be made to do on cue: refuse a valid query.
  it('a Prometheus that answers an error exits 1 with its message', async () => {
    const prom = await serve((_req, res) => {
      res.writeHead(422, { 'content-type': 'application/json' });
      res.end(
        '{"status":"error","errorType":"execution","error":"query timed out in expression evaluation"}',
      );
    });
    try {
      expectFailure(
        await runCli(['plan', '--prometheus', prom.url]),
        1,
        `${prom.url}/api/v1/query`,
        'query timed out',
      );
    } finally {
      await stop(prom.server);
    }
  });
});

const CLUSTER_YAML = `
broker: { url: "memory:" }
pools:
  inference:
    backend: openai-chat
    scaling: { replicaConcurrency: 1 }
    gpu: { modelParamsBillions: 8, bytesPerParam: 2, kvCachePerToken: 128kb, contextTokens: 8192, concurrentSequences: 16 }
  embeddings:
    backend: openai-embeddings
  diffusion:
    backend: comfyui
`;

describe('mcp-cluster plan against a running embedded cluster', () => {
  let up: ChildProcess | undefined;
  let mcpUrl = '';
  let metricsUrl = '';
  let configPath = '';
  const clients: TestClient[] = [];
  let driving = false;
  let load: Promise<unknown> = Promise.resolve();

  beforeAll(async () => {
    configPath = writeConfig(CLUSTER_YAML);
    const child = spawn(process.execPath, [CLI, 'up', '--port', '0', '--config', configPath], {
      env: cleanEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    up = child;
    let stdout = '';
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    mcpUrl = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`up did not start; stderr:\n${stderr}`)), 30_000);
      child.once('exit', (code) => reject(new Error(`up exited with ${code}; stderr:\n${stderr}`)));
      child.stdout?.on('data', (d: Buffer) => {
        stdout += d.toString();
        const m = /MCP endpoint \(Streamable HTTP\):\s+(http:\/\/\S+)/.exec(stdout);
        if (m?.[1]) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
    });
    metricsUrl = mcpUrl.replace(/\/mcp$/, '/metrics');
    await waitFor('readyz', async () => (await fetch(mcpUrl.replace(/\/mcp$/, '/readyz'))).ok, 20_000);
    for (let i = 0; i < 8; i++) clients.push(await connectClient('v2', mcpUrl));
  }, 60_000);

  afterAll(async () => {
    driving = false;
    await load;
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    if (up && up.exitCode === null) {
      const exited = new Promise((resolve) => up?.once('exit', resolve));
      up.kill('SIGTERM');
      const force = setTimeout(() => up?.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(force);
    }
  }, 30_000);

  /** Agents calling one tool after another: 6 on generate_text, 2 on embed. */
  function drive(): void {
    driving = true;
    load = Promise.all(
      clients.map(async (client, i) => {
        while (driving) {
          await (i < 6
            ? client.callTool('generate_text', { prompt: `hello ${i}`, max_tokens: 16 })
            : client.callTool('embed', { texts: [`text ${i}`, 'another'] })
          ).catch(() => {});
        }
      }),
    );
  }

  async function planJson(...extra: string[]): Promise<PlanJson> {
    const result = await runCli([
      'plan',
      '--config',
      configPath,
      '--metrics',
      metricsUrl,
      '--json',
      ...extra,
    ]);
    expect(result.code, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as PlanJson;
  }

  it('reports arrivals, service times and replicas per pool, and plans them', async () => {
    drive();
    const plan = await planJson('--window', '200ms');
    expect(plan.model).toBe(QUEUEING_MODEL_MGC);
    expect(plan.whatIf).toBe(1);
    expect(plan.windowMs).toBeGreaterThan(0);
    expect(plan.priceTable).toBe('built-in example');
    expect(plan.pools.map((p) => p.pool).sort()).toEqual(['diffusion', 'embeddings', 'inference']);

    const inference = plan.pools.find((p) => p.pool === 'inference')!;
    expect(inference.observedArrivalPerSec).toBeGreaterThan(0);
    expect(inference.replicas).toBe(1);
    expect(inference.replicaConcurrency).toBe(1);
    expect(inference.gpu).toMatchObject({ tier: 'L40S', gpusPerReplica: 1 });

    const embeddings = plan.pools.find((p) => p.pool === 'embeddings')!;
    expect(embeddings.observedArrivalPerSec).toBeGreaterThan(0);
    expect(embeddings.completedPerSec).toBeGreaterThan(0);
    expect(embeddings.meanServiceMs).toBeGreaterThan(0);
    expect(embeddings.p95ServiceMs).toBeGreaterThan(0);
    expect(embeddings.replicas).toBe(1);
    expect(embeddings.replicaConcurrency).toBe(256);
    // The workers export Σ S², so the variability of the calls is measured, and M/G/c uses it.
    expect(embeddings.serviceCs2).toBeGreaterThanOrEqual(0);
    expect(embeddings.model).toBe('M/G/c');
    const k = embeddings.replicaConcurrency;
    expect(embeddings.utilization).toBeCloseTo(
      (embeddings.arrivalPerSec * (embeddings.meanServiceMs as number)) / 1000 / k,
      9,
    );
    expect(embeddings.neededReplicas).toBe(
      replicasForWait(
        embeddings.arrivalPerSec,
        embeddings.meanServiceMs as number,
        k,
        plan.targetWaitMs,
        plan.percentile,
        embeddings.serviceCs2 as number,
      ),
    );
    expect(embeddings.notes.join('\n')).toContain('no gpu section for pool embeddings');

    // Nobody called generate_image: exactly zero arrivals, nothing needed.
    const diffusion = plan.pools.find((p) => p.pool === 'diffusion')!;
    expect(diffusion.observedArrivalPerSec).toBe(0);
    expect(diffusion.neededReplicas).toBe(0);
  }, 60_000);

  it('--what-if 2 plans for twice the observed arrivals', async () => {
    if (!driving) drive();
    const plan = await planJson(
      '--window',
      '1s',
      '--what-if',
      '2',
      '--target-wait',
      '0ms',
      '--percentile',
      'p95',
    );
    expect(plan.whatIf).toBe(2);
    expect(plan.targetWaitMs).toBe(0);
    for (const p of plan.pools) expect(p.arrivalPerSec).toBe(2 * p.observedArrivalPerSec);
    const inference = plan.pools.find((p) => p.pool === 'inference')!;
    const S = inference.meanServiceMs as number;
    expect(S).toBeGreaterThan(0);
    // Six agents each keep one call in flight: well over one Erlang is offered.
    expect((inference.observedArrivalPerSec * S) / 1000, 'offered load too light to compare').toBeGreaterThan(
      2,
    );
    const atObserved = replicasForWait(inference.observedArrivalPerSec, S, 1, 0, 0.95);
    expect(inference.neededReplicas).toBe(replicasForWait(inference.arrivalPerSec, S, 1, 0, 0.95));
    expect(inference.neededReplicas!).toBeGreaterThan(atObserved);
    expect(inference.gpu?.gpus).toBe(inference.neededReplicas);
    driving = false;
    await load;
  }, 60_000);

  it('--agents plans the six generate_text agents as a closed loop', async () => {
    if (!driving) drive();
    const plan = await planJson('--window', '1s', '--agents', 'inference=6', '--target-wait', '50ms');
    const inference = plan.pools.find((p) => p.pool === 'inference') as PlanJson['pools'][number] & {
      agents: number;
      thinkTimeMs: number;
      neededForWait: number;
      outstandingReplicas: number;
    };
    expect(inference.model).toBe('M/M/c//N');
    expect(inference.agents).toBe(6);
    // Back to back: each agent is away only while its answer and next call travel (≥ 0, finite).
    expect(Number.isFinite(inference.thinkTimeMs)).toBe(true);
    expect(inference.thinkTimeMs).toBeGreaterThanOrEqual(0);
    const S = inference.meanServiceMs as number;
    expect(inference.neededForWait).toBe(replicasForClosedLoop(6, S, inference.thinkTimeMs, 1, 50, 0.95));
    // A closed loop never needs more than a slot per agent, which an open-loop model cannot know.
    expect(inference.neededForWait).toBeLessThanOrEqual(6);
    expect(inference.neededReplicas).toBe(Math.max(inference.neededForWait, inference.outstandingReplicas));
    // embeddings has its own agents, not named: still planned open loop.
    expect(plan.pools.find((p) => p.pool === 'embeddings')?.model).toBe('M/G/c');
    driving = false;
    await load;
  }, 60_000);

  it('prints the table for people', async () => {
    const result = await runCli([
      'plan',
      '--config',
      configPath,
      '--metrics',
      metricsUrl,
      '--window',
      '100ms',
    ]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(`Model: ${QUEUEING_MODEL_MGC}`);
    expect(result.stdout).toMatch(/^inference\s+/m);
    expect(result.stdout).toMatch(/^embeddings\s+/m);
    expect(result.stdout).toContain('Assumptions:');
  }, 30_000);
});
