import { describe, expect, it } from 'vitest';
import {
  closedLoopWait,
  DEFAULT_GPU_TIERS,
  erlangB,
  erlangC,
  fitGpuTier,
  GIB,
  gpuMemoryPerReplica,
  mmcWait,
  replicasForClosedLoop,
  replicasForWait,
} from '../services/autoscaler/index.js';
import { mulberry32 } from './support/random.js';

describe('Erlang C', () => {
  it('reduces to M/M/1: P(wait) = ρ for one server', () => {
    for (const rho of [0, 0.1, 0.5, 0.9, 0.99]) expect(erlangC(1, rho)).toBeCloseTo(rho, 12);
  });

  it('matches textbook values for c = 2 and c = 3', () => {
    // a = 1 Erlang on 2 servers: B = 0.2, C = 1/3. a = 2 Erlangs on 3 servers: B = 4/19, C = 4/9.
    expect(erlangB(2, 1)).toBeCloseTo(0.2, 12);
    expect(erlangC(2, 1)).toBeCloseTo(1 / 3, 12);
    expect(erlangB(3, 2)).toBeCloseTo(4 / 19, 12);
    expect(erlangC(3, 2)).toBeCloseTo(4 / 9, 12);
  });

  it('is 1 when the system is unstable and 0 without load', () => {
    expect(erlangC(3, 3)).toBe(1);
    expect(erlangC(3, 10)).toBe(1);
    expect(erlangC(5, 0)).toBe(0);
  });

  it('stays finite and in [0, 1] for a thousand servers', () => {
    const c = erlangC(1000, 950);
    expect(Number.isFinite(c)).toBe(true);
    expect(c).toBeGreaterThan(0);
    expect(c).toBeLessThan(1);
    expect(erlangC(1000, 500)).toBeLessThan(1e-12);
  });

  it('falls as servers are added and rises with load', () => {
    let prev = 1;
    for (let c = 10; c <= 30; c++) {
      const p = erlangC(c, 9.5);
      expect(p).toBeLessThanOrEqual(prev);
      prev = p;
    }
    prev = 0;
    for (let a = 0; a < 20; a += 0.5) {
      const p = erlangC(20, a);
      expect(p).toBeGreaterThanOrEqual(prev);
      prev = p;
    }
  });
});

describe('M/M/c wait', () => {
  it('M/M/1 mean wait is ρ/(μ−λ)', () => {
    // λ = 0.5/s, S = 1 s: ρ = 0.5, mean wait = 0.5 / 0.5 = 1 s.
    const w = mmcWait(1, 0.5, 1000, 0.95);
    expect(w.utilization).toBeCloseTo(0.5, 12);
    expect(w.meanWaitMs).toBeCloseTo(1000, 6);
    // P(W > t) = ρ e^{−(μ−λ)t} = 0.05 → t = ln(10) / 0.5 s.
    expect(w.percentileWaitMs).toBeCloseTo((Math.log(10) / 0.5) * 1000, 6);
  });

  it('is zero at the percentile when fewer than (1 − p) of calls wait, infinite when unstable', () => {
    expect(mmcWait(10, 1, 1000, 0.95).percentileWaitMs).toBe(0);
    expect(mmcWait(2, 2, 1000, 0.95).percentileWaitMs).toBe(Number.POSITIVE_INFINITY);
    expect(mmcWait(0, 1, 1000, 0.95).meanWaitMs).toBe(Number.POSITIVE_INFINITY);
  });
});

describe('replicasForWait', () => {
  it('returns the fewest replicas that meet the target at the percentile', () => {
    const cases = [
      { lambda: 10, s: 500, k: 1, target: 200, p: 0.95 },
      { lambda: 100, s: 2000, k: 16, target: 100, p: 0.99 },
      { lambda: 3, s: 8000, k: 1, target: 1000, p: 0.5 },
      { lambda: 900, s: 1000, k: 1, target: 50, p: 0.95 },
    ];
    for (const { lambda, s, k, target, p } of cases) {
      const r = replicasForWait(lambda, s, k, target, p);
      expect(r).toBeGreaterThan((lambda * s) / 1000 / k - 1);
      expect(mmcWait(r * k, lambda, s, p).percentileWaitMs).toBeLessThanOrEqual(target);
      if (r > 1) expect(mmcWait((r - 1) * k, lambda, s, p).percentileWaitMs).toBeGreaterThan(target);
    }
  });

  it('needs more replicas for a tighter target or a higher percentile', () => {
    expect(replicasForWait(50, 1000, 1, 10, 0.95)).toBeGreaterThanOrEqual(
      replicasForWait(50, 1000, 1, 1000, 0.95),
    );
    expect(replicasForWait(50, 1000, 1, 100, 0.99)).toBeGreaterThanOrEqual(
      replicasForWait(50, 1000, 1, 100, 0.9),
    );
    expect(replicasForWait(100, 1000, 1, 100, 0.95)).toBeGreaterThan(replicasForWait(50, 1000, 1, 100, 0.95));
  });

  it('is 0 without load and rejects bad input', () => {
    expect(replicasForWait(0, 1000, 1, 100)).toBe(0);
    expect(replicasForWait(10, 0, 1, 100)).toBe(0);
    expect(() => replicasForWait(10, 100, 1, 100, 1)).toThrow(RangeError);
    expect(() => replicasForWait(10, 100, 0, 100)).toThrow(RangeError);
    expect(() => replicasForWait(Number.NaN, 100, 1, 100)).toThrow(RangeError);
  });
});

describe('GPU memory and tiers', () => {
  // Llama-3-8B-like: 32 layers × 8 KV heads × 128 head dim × 2 (K, V) × 2 bytes = 128 KiB per token.
  const kvPerToken = 2 * 32 * 8 * 128 * 2;

  it('is (weights + KV × tokens × sequences) × 1.15', () => {
    const m = gpuMemoryPerReplica({
      modelParamsBillions: 8,
      bytesPerParam: 2,
      kvCacheBytesPerToken: kvPerToken,
      contextTokens: 8192,
      concurrentSequences: 16,
    });
    expect(m.weightsBytes).toBe(16e9);
    expect(m.kvCacheBytes).toBe(16 * GIB);
    expect(m.totalBytes).toBeCloseTo((16e9 + 16 * GIB) * 1.15, 0);
    expect(m.totalBytes / GIB).toBeCloseTo(35.5, 1);
    expect(fitGpuTier(m.totalBytes)?.tier.name).toBe('L40S');
  });

  it('picks the smallest tier that fits, the cheaper one on a tie', () => {
    expect(fitGpuTier(10 * GIB)?.tier.name).toBe('L4');
    expect(fitGpuTier(24 * GIB)?.tier.name).toBe('L4');
    expect(fitGpuTier(60 * GIB)?.tier.name).toBe('A100-80GB');
    expect(fitGpuTier(100 * GIB)).toMatchObject({ gpusPerReplica: 1, tier: { name: 'H200' } });
  });

  it('falls back to tensor parallel when no single GPU fits, and to undefined past the limit', () => {
    // 70B fp16 ≈ 140 GB weights + overhead: too big for one H200.
    const m = gpuMemoryPerReplica({
      modelParamsBillions: 70,
      bytesPerParam: 2,
      kvCacheBytesPerToken: 0,
      contextTokens: 0,
      concurrentSequences: 0,
    });
    const fit = fitGpuTier(m.totalBytes);
    expect(fit?.gpusPerReplica).toBeGreaterThan(1);
    expect(fit!.gpusPerReplica * fit!.tier.memoryBytes).toBeGreaterThanOrEqual(m.totalBytes);
    expect(fitGpuTier(10_000 * GIB)).toBeUndefined();
    expect(DEFAULT_GPU_TIERS.map((t) => t.name)).toEqual(['L4', 'L40S', 'A100-80GB', 'H100-80GB', 'H200']);
  });
});

describe('M/G/c by Allen-Cunneen', () => {
  it('is M/M/c at Cs² = 1 and scales every wait by (1 + Cs²) / 2', () => {
    const mmc = mmcWait(8, 60, 118, 0.95);
    expect(mmcWait(8, 60, 118, 0.95, 1)).toEqual(mmc);
    const mdc = mmcWait(8, 60, 118, 0.95, 0);
    expect(mdc.percentileWaitMs).toBeCloseTo(mmc.percentileWaitMs / 2, 9);
    expect(mdc.meanWaitMs).toBeCloseTo(mmc.meanWaitMs / 2, 9);
    expect(mmcWait(8, 60, 118, 0.95, 3).percentileWaitMs).toBeCloseTo(mmc.percentileWaitMs * 2, 9);
    expect(mdc.probabilityOfWaiting).toBe(mmc.probabilityOfWaiting);
  });

  it('plans fewer replicas for steady calls than for exponential ones, never fewer than stability needs', () => {
    // 60 calls/s of 118 ms on 4 slots per replica: 7.08 Erlangs, so at least 2 replicas for ρ < 1.
    // On 3 replicas M/M/c's p95 is 7.1 ms, M/D/c's 3.6 ms; on 2, 331 and 166 ms.
    expect(replicasForWait(60, 118, 4, 5, 0.95, 1)).toBe(4);
    expect(replicasForWait(60, 118, 4, 5, 0.95, 0)).toBe(3);
    expect(replicasForWait(60, 118, 4, 300, 0.95, 1)).toBe(3);
    expect(replicasForWait(60, 118, 4, 300, 0.95, 0)).toBe(2);
    expect(replicasForWait(60, 118, 4, 1e6, 0.95, 0)).toBe(2);
    expect(replicasForWait(60, 118, 4, 5, 0.95, 4)).toBeGreaterThanOrEqual(4);
    expect(() => replicasForWait(60, 118, 4, 10, 0.95, -1)).toThrow(RangeError);
    expect(() => mmcWait(8, 60, 118, 0.95, Number.NaN)).toThrow(RangeError);
  });
});

/**
 * A discrete-event simulation of N agents on c FIFO slots, exponential service (mean S) and think
 * time (mean Z; 0: back to back): the queue wait of every call after a warm-up.
 */
function simulateClosedLoop(agents: number, servers: number, S: number, Z: number, calls: number): number[] {
  const random = mulberry32(agents * 1000 + servers);
  // 1 − u lies in (0, 1]: never log(0).
  const exp = (mean: number) => (mean === 0 ? 0 : -Math.log(1 - random()) * mean);
  // Events: [time, kind, agent]; kind 0 = the agent's call arrives, 1 = a slot finishes.
  const events: [number, number][] = [];
  for (let a = 0; a < agents; a++) events.push([exp(Z), 0]);
  const queue: number[] = [];
  let busy = 0;
  const waits: number[] = [];
  let served = 0;
  const push = (time: number, kind: number) => {
    events.push([time, kind]);
  };
  while (served < calls) {
    let at = 0;
    for (let i = 1; i < events.length; i++) if ((events[i]?.[0] ?? 0) < (events[at]?.[0] ?? 0)) at = i;
    const [now, kind] = events.splice(at, 1)[0] as [number, number];
    if (kind === 0) {
      if (busy < servers) {
        busy++;
        waits.push(0);
        push(now + exp(S), 1);
      } else queue.push(now);
    } else {
      served++;
      push(now + exp(Z), 0);
      const next = queue.shift();
      if (next === undefined) busy--;
      else {
        waits.push(now - next);
        push(now + exp(S), 1);
      }
    }
  }
  return waits.slice(Math.floor(waits.length / 10));
}

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] as number;
}

describe('closed loop (M/M/c//N)', () => {
  it('has no wait while every agent has a slot', () => {
    expect(closedLoopWait(16, 14, 118, 0, 0.95)).toMatchObject({ meanWaitMs: 0, percentileWaitMs: 0 });
    expect(closedLoopWait(14, 14, 118, 5, 0.95).probabilityOfWaiting).toBe(0);
  });

  it('one agent more than slots, back to back: every call waits one Exp(c/S) departure', () => {
    const w = closedLoopWait(12, 13, 120, 0, 0.95);
    expect(w.probabilityOfWaiting).toBeCloseTo(1, 12);
    expect(w.meanWaitMs).toBeCloseTo(10, 9);
    expect(w.percentileWaitMs).toBeCloseTo(Math.log(20) * 10, 4);
    expect(w.utilization).toBeCloseTo(1, 12);
  });

  it('matches a discrete-event simulation of agents, slots and think time', () => {
    for (const [agents, servers, Z] of [
      [14, 8, 0],
      [14, 12, 20],
      [40, 16, 300],
      [6, 2, 50],
    ] as const) {
      const waits = simulateClosedLoop(agents, servers, 100, Z, 40_000);
      const model = closedLoopWait(servers, agents, 100, Z, 0.95);
      const mean = waits.reduce((a, b) => a + b, 0) / waits.length;
      const label = `${agents} agents, ${servers} slots, Z ${Z} ms`;
      expect(Math.abs(model.meanWaitMs - mean), label).toBeLessThan(0.08 * mean + 0.5);
      const p95 = quantile(waits, 0.95);
      expect(Math.abs(model.percentileWaitMs - p95), label).toBeLessThan(0.08 * p95 + 0.5);
      const waited = waits.filter((w) => w > 0).length / waits.length;
      expect(Math.abs(model.probabilityOfWaiting - waited), label).toBeLessThan(0.03);
    }
  });

  it('plans the fewest replicas that hold the target, never more than a slot per agent', () => {
    // 14 agents back to back, 118 ms calls, 4 slots per replica: 2 replicas leave 6 calls waiting
    // (p95 ≈ 155 ms), 3 leave 2 (p95 ≈ 47 ms).
    expect(replicasForClosedLoop(14, 118, 0, 4, 100, 0.95)).toBe(3);
    expect(closedLoopWait(8, 14, 118, 0, 0.95).percentileWaitMs).toBeGreaterThan(100);
    expect(replicasForClosedLoop(14, 118, 0, 4, 0, 0.95)).toBe(4);
    expect(replicasForClosedLoop(0, 118, 0, 4, 100, 0.95)).toBe(0);
    // Long think times make the loop sparse: one replica serves 40 agents thinking 10 s.
    expect(replicasForClosedLoop(40, 100, 10_000, 4, 100, 0.95)).toBe(1);
    // A thousand agents stay quick and finite.
    const many = replicasForClosedLoop(1000, 100, 500, 16, 50, 0.99);
    expect(many).toBeGreaterThan(1);
    expect(many).toBeLessThanOrEqual(Math.ceil(1000 / 16));
  });

  it('refuses input that is no closed loop', () => {
    expect(() => closedLoopWait(4, -1, 100, 0)).toThrow(RangeError);
    expect(() => closedLoopWait(4, 1.5, 100, 0)).toThrow(RangeError);
    expect(() => closedLoopWait(4, 3, 100, -5)).toThrow(RangeError);
    expect(() => closedLoopWait(0, 3, 100, 0)).toThrow(/at least one server/);
    expect(() => closedLoopWait(4, 3, 100, 0, 1)).toThrow(RangeError);
    expect(() => replicasForClosedLoop(3, 100, 0, 0, 100)).toThrow(RangeError);
    expect(() => replicasForClosedLoop(200_000, 100, 0, 4, 100)).toThrow(RangeError);
  });
});
