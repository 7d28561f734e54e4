/**
 * The cases of the fairness bench, run one after another on one cluster (a broker, N ingress
 * replicas, one inference worker and one embeddings worker, each its own process) against one
 * simulated vLLM whose few sequence slots the load saturates. Tenants differ by name only, so one
 * config (weights and limits per tenant) serves every case.
 */
import { families } from '../../services/cli/families.js';
import {
  type CallRecord,
  callCost,
  endedIn,
  failuresOf,
  isRateRefusal,
  latencyOf,
  queueWaitOf,
  type RunningTenant,
  sleep,
  startedIn,
  startTenant,
  type TenantLoad,
  tokensIn,
} from './driver.js';

/** The simulated GPU: 32 sequence slots, 50 tokens/s each, batching free (batch penalty 0). */
export const SIM = {
  slots: 32,
  ttftMs: 10,
  tokensPerSecond: 50,
} as const;

/** Flags of `mcp-cluster sim` for {@link SIM}. */
export const SIM_FLAGS: Record<string, number> = {
  'ttft-ms': SIM.ttftMs,
  'per-prompt-token-ms': 0,
  'tokens-per-second': SIM.tokensPerSecond,
  'batch-penalty': 0,
  'max-num-seqs': SIM.slots,
};

/** How long the sim holds a slot for a call of `maxTokens` (first token, then one per step). */
export function serviceMs(maxTokens: number): number {
  return SIM.ttftMs + ((maxTokens - 1) * 1000) / SIM.tokensPerSecond;
}

/** Decode tokens the sim can generate per second with every slot busy. */
export const TOKEN_CAPACITY = SIM.slots * SIM.tokensPerSecond;

/** A short prompt (40 chars, 10 tokens of cost) for the latency cases. */
const PROMPT = 'Name one property of a fair work queue.';
/** A tiny prompt (4 chars, 1 token) where cost must be decode tokens, nearly. */
const TINY = 'Why?';

/** The rate limit of the `metered` tenant, calls/s (burst the same). */
export const METERED_RATE = 10;

/** Tenant names of the cases. */
export const TENANTS = {
  b: 'b-steady',
  a: 'a-flood',
  heavy: 'w2-heavy',
  light: 'w1-light',
  long: 'long-gen',
  short: 'short-gen',
  free: 'solo-free',
  unhit: 'solo-limited',
  metered: 'metered',
} as const;

/**
 * The tenants section of the config: `w2-heavy` weighs 2, `solo-limited` has limits far above
 * its load, `metered` is limited to {@link METERED_RATE} calls/s.
 */
export const TENANTS_YAML = [
  'tenants:',
  '  default: { weight: 1 }',
  `  ${TENANTS.heavy}: { weight: 2 }`,
  `  ${TENANTS.unhit}:`,
  '    limits:',
  '      inference: { rate: 100000, burst: 100000, concurrency: 100000 }',
  `  ${TENANTS.metered}:`,
  '    limits:',
  `      inference: { rate: ${METERED_RATE}, burst: ${METERED_RATE} }`,
].join('\n');

/**
 * Whether this build's config knows per-tenant weights and limits (`tenants:`); without them the
 * bench runs the same loads on a config without those sections: the "before" figures.
 */
export function fairShareConfigured(): boolean {
  try {
    families.resolveConfig(`${TENANTS_YAML}\n`, {}, 'fairness probe');
    return true;
  } catch {
    return false;
  }
}

/** B's latency alone and with A flooding, for one length mix of A's calls. */
export interface Isolation {
  /** A's calls ask for 32 ± this many tokens. */
  aSpread: number;
  bAlone: ReturnType<typeof latencyOf>;
  bWithA: ReturnType<typeof latencyOf>;
  /** B's queue wait (the cluster's own figure, worker took the call minus enqueue), alone and with A. */
  bWaitAlone: ReturnType<typeof queueWaitOf>;
  bWaitWithA: ReturnType<typeof queueWaitOf>;
  p50Ratio: number;
  p95Ratio: number;
  aCallsPerSec: number;
  /** Decode tokens/s served (A and B) over the pool's capacity with every slot busy. */
  poolUse: number;
  bFailures: Record<string, number>;
  aFailures: Record<string, number>;
}

/** What one cluster (system, replicas) measured. */
export interface ClusterResult {
  system: string;
  replicas: number;
  /** A's calls of varied length ({@link A_SPREAD}). */
  isolation?: Isolation;
  /** Every call of the same length: the pool finishes calls in waves (see docs/fair-share.md). */
  isolationUniform?: Isolation;
  weights?: { heavyCost: number; lightCost: number; ratio: number; shareOverTime: [number, number][] };
  longShort?: { longTokens: number; shortTokens: number; ratio: number; longCost: number; shortCost: number };
  limitCost?: {
    free: ReturnType<typeof latencyOf>;
    limited: ReturnType<typeof latencyOf>;
    p50DeltaMs: number;
    failures: Record<string, number>;
  };
  rate?: {
    limit: number;
    offeredPerSec: number;
    admittedPerSec: number;
    ratio: number;
    refused: number;
    admittedPerReplica: number[];
    failures: Record<string, number>;
  };
}

export type CaseName = 'isolation' | 'isolation-uniform' | 'weights' | 'long-short' | 'limit-cost' | 'rate';
export const CASE_NAMES: readonly CaseName[] = [
  'isolation',
  'isolation-uniform',
  'weights',
  'long-short',
  'limit-cost',
  'rate',
];

/**
 * A's calls in the isolation case ask for 32 ± A_SPREAD tokens, as agents' generations differ in
 * length. With every call the same length (`isolation-uniform`) the pool's slots free in waves:
 * calls that start together end together, so a call arriving between waves waits for the next.
 */
export const A_SPREAD = 16;

/** Runs the chosen cases on a started cluster; `seconds` is each measured window. */
export async function runCases(
  result: ClusterResult,
  urls: string[],
  cases: readonly CaseName[],
  seconds: number,
  log: (line: string) => void,
): Promise<void> {
  const W = seconds * 1000;
  const tenant = (load: Omit<TenantLoad, 'urls'> & { urls?: string[] }) =>
    startTenant({ urls, ...load } as TenantLoad);
  const stopAll = (tenants: RunningTenant[]) => Promise.all(tenants.map((t) => t.stop()));
  const label = `${result.system} x${result.replicas}`;

  /**
   * B: 4 agents on replica 1, 1 s think time (~10% of the pool), 32-token calls. A: 160 agents (10x
   * its fair half of the 32 slots) spread over every replica, no think time, calls of 32 tokens on
   * average, `±spread`.
   */
  const isolation = async (spread: number): Promise<Isolation> => {
    const b = await tenant({
      tenant: TENANTS.b,
      urls: urls.slice(0, 1),
      agents: 4,
      thinkMs: 1000,
      maxTokens: 32,
      prompt: PROMPT,
    });
    await sleep(2000);
    const t0 = performance.now();
    await sleep(W);
    const t1 = performance.now();
    const a = await tenant({
      tenant: TENANTS.a,
      agents: 160,
      maxTokens: 32,
      maxTokensSpread: spread,
      prompt: PROMPT,
    });
    await sleep(4000);
    const t2 = performance.now();
    await sleep(W);
    const t3 = performance.now();
    await stopAll([a, b]);
    const bAlone = latencyOf(endedIn(b.records, t0, t1));
    const bWithA = latencyOf(endedIn(b.records, t2, t3));
    const aDone = endedIn(a.records, t2, t3);
    const tokens = [...a.records, ...b.records].reduce((n, r) => n + tokensIn(r, t2, t3, serviceMs), 0);
    const found: Isolation = {
      aSpread: spread,
      bAlone,
      bWithA,
      bWaitAlone: queueWaitOf(endedIn(b.records, t0, t1)),
      bWaitWithA: queueWaitOf(endedIn(b.records, t2, t3)),
      p50Ratio: bWithA.p50 / bAlone.p50,
      p95Ratio: bWithA.p95 / bAlone.p95,
      aCallsPerSec: aDone.filter((r) => r.outcome === 'ok').length / ((t3 - t2) / 1000),
      poolUse: tokens / ((TOKEN_CAPACITY * (t3 - t2)) / 1000),
      bFailures: failuresOf(endedIn(b.records, t0, t3)),
      aFailures: failuresOf(aDone),
    };
    log(
      `${label} isolation (A ${spread > 0 ? `32±${spread}` : '32'} tokens): B p50/p95 alone ${bAlone.p50.toFixed(0)}/${bAlone.p95.toFixed(0)} ms, with A ${bWithA.p50.toFixed(0)}/${bWithA.p95.toFixed(0)} ms; A ${found.aCallsPerSec.toFixed(1)} calls/s; pool use ${(found.poolUse * 100).toFixed(0)}%`,
    );
    return found;
  };
  if (cases.includes('isolation')) result.isolation = await isolation(A_SPREAD);
  if (cases.includes('isolation-uniform')) result.isolationUniform = await isolation(0);

  if (cases.includes('weights')) {
    // Both backlogged (48 agents each, more than either's share of 32 slots), both spread.
    const heavy = await tenant({ tenant: TENANTS.heavy, agents: 48, maxTokens: 32, prompt: PROMPT });
    const light = await tenant({ tenant: TENANTS.light, agents: 48, maxTokens: 32, prompt: PROMPT });
    await sleep(4000);
    const t0 = performance.now();
    await sleep(W);
    const t1 = performance.now();
    await stopAll([heavy, light]);
    const cost = (records: CallRecord[], from: number, to: number) =>
      records.reduce((n, r) => n + (tokensIn(r, from, to, serviceMs) * callCost(r)) / r.maxTokens, 0);
    const heavyCost = cost(heavy.records, t0, t1);
    const lightCost = cost(light.records, t0, t1);
    const shareOverTime: [number, number][] = [];
    for (let s = 0; s < Math.floor((t1 - t0) / 1000); s++) {
      const from = t0 + s * 1000;
      const h = cost(heavy.records, from, from + 1000);
      const l = cost(light.records, from, from + 1000);
      if (h + l > 0) shareOverTime.push([s + 0.5, (100 * h) / (h + l)]);
    }
    result.weights = { heavyCost, lightCost, ratio: heavyCost / lightCost, shareOverTime };
    log(
      `${label} weights 2:1: served cost ${heavyCost.toFixed(0)} : ${lightCost.toFixed(0)} = ${result.weights.ratio.toFixed(2)}`,
    );
  }

  if (cases.includes('long-short')) {
    // 128-token generations against 16-token ones, equal weights, both backlogged and spread. The
    // window opens after 10 s: until the pool's service rate is measured (the first calls of a
    // backlog finished), the fair queue's room is half its size and the first backlog goes in
    // arrival order; the target is the steady state after that.
    const long = await tenant({ tenant: TENANTS.long, agents: 48, maxTokens: 128, prompt: TINY });
    const short = await tenant({ tenant: TENANTS.short, agents: 48, maxTokens: 16, prompt: TINY });
    await sleep(10_000);
    const t0 = performance.now();
    await sleep(W);
    const t1 = performance.now();
    await stopAll([long, short]);
    const tokens = (records: CallRecord[]) => records.reduce((n, r) => n + tokensIn(r, t0, t1, serviceMs), 0);
    const costOf = (records: CallRecord[]) =>
      records.reduce((n, r) => n + (tokensIn(r, t0, t1, serviceMs) * callCost(r)) / r.maxTokens, 0);
    const longTokens = tokens(long.records);
    const shortTokens = tokens(short.records);
    result.longShort = {
      longTokens,
      shortTokens,
      ratio: longTokens / shortTokens,
      longCost: costOf(long.records),
      shortCost: costOf(short.records),
    };
    log(
      `${label} long vs short: decode tokens ${longTokens.toFixed(0)} : ${shortTokens.toFixed(0)} = ${result.longShort.ratio.toFixed(2)}`,
    );
  }

  if (cases.includes('limit-cost')) {
    // One tenant at a time, nothing saturated: 4 agents, 50 ms think, 1-token calls; rounds
    // alternate between a tenant without limits and one whose limits are far above its load.
    const windows: Record<string, CallRecord[]> = { free: [], limited: [] };
    for (const round of ['free', 'limited', 'free', 'limited'] as const) {
      const t = await tenant({
        tenant: round === 'free' ? TENANTS.free : TENANTS.unhit,
        agents: 4,
        thinkMs: 50,
        maxTokens: 1,
        prompt: TINY,
      });
      await sleep(1500);
      const t0 = performance.now();
      await sleep(W / 2);
      const t1 = performance.now();
      await t.stop();
      windows[round]?.push(...endedIn(t.records, t0, t1));
    }
    const free = latencyOf(windows.free ?? []);
    const limited = latencyOf(windows.limited ?? []);
    result.limitCost = {
      free,
      limited,
      p50DeltaMs: limited.p50 - free.p50,
      failures: failuresOf([...(windows.free ?? []), ...(windows.limited ?? [])]),
    };
    log(
      `${label} limits not hit: p50 ${limited.p50.toFixed(2)} ms vs ${free.p50.toFixed(2)} ms without limits`,
    );
  }

  if (cases.includes('rate')) {
    // Three times the limit, open loop, spread evenly over every replica (2 agents per replica).
    const offered = 3 * METERED_RATE;
    const t = await tenant({
      tenant: TENANTS.metered,
      agents: 2 * urls.length,
      mode: 'open',
      ratePerSec: offered,
      maxTokens: 1,
      prompt: TINY,
      callTimeoutMs: 30_000,
    });
    // The burst is spent in the first seconds; the window measures the sustained rate.
    await sleep(3000);
    const t0 = performance.now();
    await sleep(W);
    const t1 = performance.now();
    await t.stop();
    const started = startedIn(t.records, t0, t1);
    const admitted = started.filter((r) => !isRateRefusal(r.outcome));
    const admittedPerSec = admitted.length / ((t1 - t0) / 1000);
    result.rate = {
      limit: METERED_RATE,
      offeredPerSec: offered,
      admittedPerSec,
      ratio: admittedPerSec / METERED_RATE,
      refused: started.length - admitted.length,
      admittedPerReplica: urls.map((_, i) => admitted.filter((r) => r.replica === i).length),
      failures: failuresOf(started),
    };
    log(
      `${label} rate limit ${METERED_RATE}/s: admitted ${admittedPerSec.toFixed(2)}/s of ${offered}/s offered`,
    );
  }
}
