import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { selfCheck } from './load/self-check.js';
import { MIX, narrowPlan, plansFor, runPlan, ZERO_LATENCY } from './scenarios.js';

// The benchmark harness runs and writes well-formed results. No timing is asserted: benchmarks
// measure speed, tests only check that the harness works.
describe('benchmark harness', () => {
  it('the load generator and report writers pass their self-check', async () => {
    await selfCheck();
  }, 60_000);

  it('a tiny comparison of direct and the embedded cluster writes JSON, Markdown and charts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mcp-cluster-bench-smoke-'));
    const { runs, files, markdown } = await runPlan(
      'smoke',
      {
        title: 'smoke',
        sim: ZERO_LATENCY,
        systems: ['direct', 'cluster-memory'],
        memory: true,
        points: [1, 2].map((agents) => ({
          agents,
          load: {
            client: 'v2',
            mode: 'closed',
            toolMix: MIX,
            durationMs: 800,
            warmupMs: 200,
            maxCalls: 2000,
          },
        })),
      },
      dir,
    );
    expect(runs.map((r) => `${r.system}@${r.agents}`)).toEqual([
      'direct@1',
      'direct@2',
      'cluster-memory@1',
      'cluster-memory@2',
    ]);
    for (const run of runs) {
      expect(run.result.ok).toBeGreaterThan(0);
      expect(run.result.errors).toEqual({});
    }
    const clusterRun = runs.find((r) => r.system === 'cluster-memory');
    expect(Object.keys(clusterRun?.result.breakdown ?? {}).sort()).toEqual([
      'backendMs',
      'batchWaitMs',
      'deliveryMs',
      'queueWaitMs',
    ]);
    expect(markdown).toContain('cluster-memory');
    for (const file of files) expect(existsSync(file)).toBe(true);
    const json = files.find((f) => f.endsWith('.json')) as string;
    expect((JSON.parse(readFileSync(json, 'utf8')) as { runs: unknown[] }).runs).toHaveLength(4);
    const svg = files.find((f) => f.endsWith('.svg')) as string;
    expect(readFileSync(svg, 'utf8').startsWith('<svg')).toBe(true);
  }, 120_000);
});

describe('narrowing a scenario from the command line', () => {
  const overhead = () => {
    const plan = plansFor('overhead')[0]?.plan;
    if (!plan) throw new Error('no overhead plan');
    return plan;
  };

  it('keeps direct as the baseline and takes the agents and seconds asked for', () => {
    const plan = narrowPlan(overhead(), ['--systems', 'cluster-nats', '--agents', '1,16', '--seconds', '2']);
    expect(plan.systems).toEqual(['direct', 'cluster-nats']);
    expect(plan.points.map((p) => p.agents)).toEqual([1, 16]);
    expect(plan.points.every((p) => p.load.durationMs === 2000)).toBe(true);
    expect(narrowPlan(overhead(), [])).toEqual(overhead());
  });

  it('refuses unknown systems, bad counts and unknown flags with a message naming them', () => {
    expect(() => narrowPlan(overhead(), ['--systems', 'nope'])).toThrow(
      /--systems: unknown nope \(have: direct/,
    );
    expect(() => narrowPlan(overhead(), ['--agents', '0,x'])).toThrow(/--agents takes positive integers/);
    expect(() => narrowPlan(overhead(), ['--seconds', 'soon'])).toThrow(/--seconds takes a positive number/);
    expect(() => narrowPlan(overhead(), ['--bogus'])).toThrow(/bogus/);
  });
});
