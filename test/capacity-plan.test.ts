import { describe, expect, it } from 'vitest';
import {
  DEFAULT_GPU_TIERS,
  erlangB,
  erlangC,
  fitGpuTier,
  GIB,
  gpuMemoryPerReplica,
  mmcWait,
  replicasForWait,
} from '../services/autoscaler/index.js';

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
