import { describe, expect, it } from 'vitest';
import {
  decideReplicas,
  growthLimit,
  initialScalerState,
  type PoolObservation,
  type ScalerState,
  type ScalingPolicy,
  scalingPolicy,
} from '../services/autoscaler/index.js';

/** One tick of the simulated pool. */
interface Tick {
  t: number;
  lambda: number;
  replicas: number;
  prevReplicas: number;
  required: number;
  reason: string;
  depth: number;
}

/** Feeds one observation to the law and records its tick; the law's state and replicas for the next. */
function decideTick(
  policy: ScalingPolicy,
  state: ScalerState,
  obs: PoolObservation,
  ticks: Tick[],
  at: { t: number; lambda: number; depth: number },
): { state: ScalerState; replicas: number } {
  const d = decideReplicas(policy, state, obs);
  ticks.push({
    ...at,
    replicas: d.replicas,
    prevReplicas: obs.currentReplicas,
    required: d.required,
    reason: d.reason,
  });
  return { state: d.state, replicas: d.replicas };
}

/**
 * A fluid FIFO queue advanced in 1 s ticks: arrivals at `trace(t)` per second join the queue, the pool
 * serves up to replicas × concurrency × 1000/S calls per second, in-flight follows Little's law. The law
 * sees each tick's observation and its decision takes effect on the next tick.
 */
function simulate(
  policy: ScalingPolicy,
  trace: (t: number) => number,
  seconds: number,
  serviceTimeMs = 500,
  startReplicas = policy.minReplicas,
): Tick[] {
  let state = initialScalerState();
  let replicas = startReplicas;
  const queue: { at: number; n: number }[] = [];
  const ticks: Tick[] = [];
  for (let t = 0; t < seconds; t++) {
    const lambda = trace(t);
    if (lambda > 0) queue.push({ at: t, n: lambda });
    let capacity = (replicas * policy.perReplicaConcurrency * 1000) / serviceTimeMs;
    let served = 0;
    while (capacity > 1e-9 && queue.length > 0) {
      const head = queue[0]!;
      const take = Math.min(head.n, capacity);
      head.n -= take;
      capacity -= take;
      served += take;
      if (head.n <= 1e-9) queue.shift();
    }
    const depth = queue.reduce((s, c) => s + c.n, 0);
    const obs: PoolObservation = {
      atMs: t * 1000,
      queueDepth: Math.ceil(depth - 1e-9),
      oldestWaitMs: queue.length > 0 ? (t - queue[0]!.at) * 1000 : 0,
      arrivalRatePerSec: lambda,
      serviceTimeMs,
      inFlight: (served * serviceTimeMs) / 1000,
      currentReplicas: replicas,
    };
    ({ state, replicas } = decideTick(policy, state, obs, ticks, { t, lambda, depth }));
  }
  return ticks;
}

/** Number of times the direction of change reverses (up then down or down then up). */
function reversals(ticks: readonly Tick[]): number {
  let last = 0;
  let n = 0;
  for (const k of ticks) {
    const dir = Math.sign(k.replicas - k.prevReplicas);
    if (dir !== 0) {
      if (last !== 0 && dir !== last) n++;
      last = dir;
    }
  }
  return n;
}

const WINDOW = 300_000;
const base = scalingPolicy({ minReplicas: 1, maxReplicas: 50, targetQueueWaitMs: 1000 });

function expectWithinCaps(policy: ScalingPolicy, ticks: readonly Tick[]) {
  for (const k of ticks) {
    expect(k.replicas).toBeLessThanOrEqual(policy.maxReplicas);
    expect(k.replicas).toBeGreaterThanOrEqual(policy.minReplicas);
    expect(Number.isInteger(k.replicas)).toBe(true);
    if (k.replicas > k.prevReplicas) {
      expect(k.replicas).toBeLessThanOrEqual(growthLimit(k.prevReplicas, policy.maxScaleUpPerStep));
    }
  }
}

describe('control law over synthetic load', () => {
  it('step up: reacts on the tick of the step, within the growth cap and max', () => {
    const ticks = simulate(base, (t) => (t < 60 ? 2 : 40), 240);
    expectWithinCaps(base, ticks);
    const step = ticks[60]!;
    expect(step.replicas).toBeGreaterThan(step.prevReplicas);
    // λS = 20 busy slots; reached within a few capped steps and never exceeded max.
    const settled = ticks[240 - 1]!;
    expect(settled.replicas).toBeGreaterThanOrEqual(20);
    expect(settled.depth).toBe(0);
  });

  it('never exceeds max on a huge step, and grows by at most the cap per tick', () => {
    const policy = scalingPolicy({
      minReplicas: 1,
      maxReplicas: 30,
      maxScaleUpPerStep: { factor: 1.5, absolute: 2 },
    });
    const ticks = simulate(policy, (t) => (t < 5 ? 1 : 10_000), 60);
    expectWithinCaps(policy, ticks);
    expect(ticks.at(-1)!.replicas).toBe(30);
    expect(ticks.some((k) => k.reason === 'scale-up-capped')).toBe(true);
  });

  it('ramp: follows a rising load without ever scaling down', () => {
    const ticks = simulate(base, (t) => t / 10, 400);
    expectWithinCaps(base, ticks);
    for (const k of ticks) expect(k.replicas).toBeGreaterThanOrEqual(k.prevReplicas);
    expect(ticks.at(-1)!.replicas).toBeGreaterThanOrEqual(Math.ceil((39.9 * 500) / 1000));
  });

  it('short spike: up at once, down only after the stabilisation window', () => {
    const ticks = simulate(base, (t) => (t >= 100 && t < 110 ? 60 : 4), 900, 500, 2);
    expectWithinCaps(base, ticks);
    const ups = ticks.filter((k) => k.replicas > k.prevReplicas);
    const downs = ticks.filter((k) => k.replicas < k.prevReplicas);
    expect(ups[0]!.t).toBe(100);
    expect(downs.length).toBeGreaterThan(0);
    const lastUp = ups.at(-1)!.t;
    expect(downs[0]!.t * 1000 - lastUp * 1000).toBeGreaterThanOrEqual(WINDOW);
    // Each decrease is to the window's highest recommendation: no sample in the trailing window exceeds it.
    for (const d of downs) {
      const inWindow = ticks.filter((k) => k.t * 1000 > d.t * 1000 - WINDOW && k.t <= d.t);
      expect(Math.max(...inWindow.map((k) => Math.max(k.required, 1)))).toBeLessThanOrEqual(d.replicas);
    }
    // Back at the baseline need (λS = 2) at the end, and never flapped back up.
    expect(ticks.at(-1)!.replicas).toBe(2);
    expect(reversals(ticks)).toBe(1);
  });

  it('periodic load shorter than the window: holds the peak instead of oscillating', () => {
    const trace = (t: number) => 10 + 8 * Math.sin((2 * Math.PI * t) / 120);
    const ticks = simulate(base, trace, 1200);
    expectWithinCaps(base, ticks);
    // No increase after the first period; at most one decrease (shedding the start-up backlog's extra
    // replica one window later); then constant at the peak need λmax·S = 18 × 0.5 = 9 through every trough.
    expect(ticks.filter((k) => k.t >= 120 && k.replicas > k.prevReplicas)).toHaveLength(0);
    expect(ticks.filter((k) => k.replicas < k.prevReplicas).length).toBeLessThanOrEqual(1);
    const after = ticks.slice(WINDOW / 1000 + 120);
    expect(new Set(after.map((k) => k.replicas))).toEqual(new Set([9]));
    expect(reversals(ticks)).toBeLessThanOrEqual(1);
  });

  it('steady load for 10 minutes: no change at all (no flapping)', () => {
    for (const lambda of [0.3, 7, 10, 33.3]) {
      const ticks = simulate(base, () => lambda, WINDOW / 1000 + 60 + 600);
      expectWithinCaps(base, ticks);
      const steady = ticks.slice(-600);
      expect(steady.every((k) => k.replicas === k.prevReplicas)).toBe(true);
      expect(steady[0]!.replicas).toBe(Math.max(1, Math.ceil((lambda * 500) / 1000 - 1e-9)));
      expect(reversals(ticks)).toBeLessThanOrEqual(1);
    }
  });

  it('long idle: zero only after idleToZeroMs, back to one on the first call', () => {
    const policy = scalingPolicy({ minReplicas: 0, maxReplicas: 20, idleToZeroMs: 600_000 });
    const stopAt = 60;
    const wakeAt = stopAt + 900;
    const trace = (t: number) => (t < stopAt ? 8 : t === wakeAt ? 1 : 0);
    const ticks = simulate(policy, trace, wakeAt + 5, 500, 0);
    expectWithinCaps(policy, ticks);
    const firstZero = ticks.find((k) => k.t > 0 && k.replicas === 0 && k.prevReplicas > 0)!;
    expect(firstZero.reason).toBe('idle-to-zero');
    // The last activity is the last tick with arrivals (the queue drains within it).
    expect(firstZero.t - (stopAt - 1)).toBe(600);
    for (const k of ticks.filter((x) => x.t > 0 && x.t < firstZero.t))
      expect(k.replicas).toBeGreaterThanOrEqual(1);
    for (const k of ticks.filter((x) => x.t >= firstZero.t && x.t < wakeAt)) expect(k.replicas).toBe(0);
    const wake = ticks[wakeAt]!;
    expect(wake.reason).toBe('wake-from-zero');
    expect(wake.replicas).toBe(1);
  });

  it('with minReplicas ≥ 1 never goes to zero', () => {
    const ticks = simulate(base, (t) => (t < 30 ? 5 : 0), 2000, 500, 1);
    for (const k of ticks) expect(k.replicas).toBeGreaterThanOrEqual(1);
  });
});

describe('control law edge cases', () => {
  const obs = (o: Partial<PoolObservation>): PoolObservation => ({
    atMs: 0,
    queueDepth: 0,
    oldestWaitMs: 0,
    arrivalRatePerSec: 0,
    serviceTimeMs: 100,
    inFlight: 0,
    currentReplicas: 0,
    ...o,
  });
  const policy = scalingPolicy({ maxReplicas: 8 });

  it('computes ceil((λS + Q·S/T) / k)', () => {
    const p = scalingPolicy({ maxReplicas: 100, perReplicaConcurrency: 4, targetQueueWaitMs: 2000 });
    // λS = 10/s × 2 s = 20 slots; drain 8 × 2 s / 2 s = 8 slots; 28 / 4 = 7.
    const d = decideReplicas(
      p,
      initialScalerState(),
      obs({ arrivalRatePerSec: 10, serviceTimeMs: 2000, queueDepth: 8, currentReplicas: 7 }),
    );
    expect(d.required).toBe(7);
    expect(d.replicas).toBe(7);
    expect(d.reason).toBe('hold');
  });

  it('zero or unknown service time: a slot for each call outstanding, one replica for an arrival alone, no NaN', () => {
    const k = policy.perReplicaConcurrency;
    for (const serviceTimeMs of [0, Number.NaN, -5, Number.POSITIVE_INFINITY]) {
      const queued = decideReplicas(
        policy,
        initialScalerState(),
        obs({ serviceTimeMs, arrivalRatePerSec: 100, queueDepth: 3 }),
      );
      expect(queued.required).toBe(Math.ceil(3 / k));
      expect(Number.isNaN(queued.required)).toBe(false);
      const arriving = decideReplicas(
        policy,
        initialScalerState(),
        obs({ serviceTimeMs, arrivalRatePerSec: 100 }),
      );
      expect(arriving.replicas).toBe(1);
    }
  });

  it('huge arrival rate: capped by growth and max, finite', () => {
    const d = decideReplicas(
      policy,
      initialScalerState(),
      obs({ arrivalRatePerSec: 1e300, queueDepth: 1e300, currentReplicas: 2 }),
    );
    expect(d.replicas).toBe(Math.min(8, growthLimit(2, policy.maxScaleUpPerStep)));
    expect(d.required).toBe(8);
  });

  it('NaN-free at zero replicas with garbage input', () => {
    const d = decideReplicas(
      policy,
      initialScalerState(),
      obs({
        atMs: Number.NaN,
        queueDepth: Number.NaN,
        oldestWaitMs: Number.NaN,
        arrivalRatePerSec: Number.NaN,
        serviceTimeMs: Number.NaN,
        inFlight: Number.NaN,
        currentReplicas: Number.NaN,
      }),
    );
    expect(d.replicas).toBe(0);
    expect(Number.isFinite(d.required)).toBe(true);
    expect(d.state.lastActiveAtMs).toBe(0);
    for (const r of d.state.window) expect(Number.isFinite(r.atMs) && Number.isFinite(r.replicas)).toBe(true);
  });

  it('an old queued call adds a replica even when the rate model says enough', () => {
    const d = decideReplicas(
      policy,
      initialScalerState(),
      obs({
        arrivalRatePerSec: 1,
        serviceTimeMs: 100,
        queueDepth: 1,
        oldestWaitMs: 5000,
        currentReplicas: 1,
      }),
    );
    expect(d.replicas).toBe(2);
  });

  it('is pure: the same inputs give the same decision and the input state is untouched', () => {
    const s0 = initialScalerState();
    const o = obs({ arrivalRatePerSec: 30, currentReplicas: 1 });
    const a = decideReplicas(policy, s0, o);
    const b = decideReplicas(policy, s0, o);
    expect(a).toEqual(b);
    expect(s0).toEqual(initialScalerState());
  });

  it('growth cap from zero and with only a factor still allows at least one more', () => {
    expect(growthLimit(0, { factor: 2 })).toBe(1);
    expect(growthLimit(0, { factor: 2, absolute: 4 })).toBe(4);
    expect(growthLimit(10, { factor: 2, absolute: 4 })).toBe(20);
    expect(growthLimit(10, {})).toBe(11);
  });

  it('rejects invalid policies', () => {
    expect(() => scalingPolicy({ minReplicas: 5, maxReplicas: 2 })).toThrow(RangeError);
    expect(() => scalingPolicy({ perReplicaConcurrency: 0 })).toThrow(RangeError);
    expect(() => scalingPolicy({ targetQueueWaitMs: 0 })).toThrow(RangeError);
    expect(() => scalingPolicy({ maxScaleUpPerStep: { factor: 0.5 } })).toThrow(RangeError);
  });
});

describe('batch backlog (priority low)', () => {
  /** k = 4 calls at once, S = 1 s: one replica completes r = 4 calls/s; D = 10 min: 2400 calls per replica. */
  const policy = scalingPolicy({
    minReplicas: 0,
    maxReplicas: 20,
    perReplicaConcurrency: 4,
    targetQueueWaitMs: 1000,
    batchDrainTargetMs: 600_000,
    scaleDownStabilizationMs: WINDOW,
  });
  const PER_REPLICA = 4 * 600;
  const obs = (o: Partial<PoolObservation>): PoolObservation => ({
    atMs: 0,
    queueDepth: 0,
    oldestWaitMs: 0,
    arrivalRatePerSec: 0,
    serviceTimeMs: 1000,
    inFlight: 0,
    currentReplicas: 1,
    ...o,
  });

  it('a backlog of N calls and no interactive load sizes to ceil(N / (r × D)), capped by maxReplicas', () => {
    for (const [queued, inFlight] of [
      [2400, 0],
      [2390, 11],
      [9_000, 1_000],
      [1, 0],
    ] as const) {
      const d = decideReplicas(
        policy,
        initialScalerState(),
        obs({ batchQueueDepth: queued, batchInFlight: inFlight, currentReplicas: 20 }),
      );
      // Queued and in flight both count: the backlog is every call not yet done.
      expect(d.required, `${queued} + ${inFlight}`).toBe(Math.ceil((queued + inFlight) / PER_REPLICA));
    }
    // Sized like interactive calls (Q·S/T with T = 1 s) the same 10 000 calls would want 2500 replicas.
    const big = decideReplicas(
      policy,
      initialScalerState(),
      obs({ batchQueueDepth: 1_000_000, currentReplicas: 5 }),
    );
    expect(big.required).toBe(policy.maxReplicas);
    expect(big.replicas).toBe(growthLimit(5, policy.maxScaleUpPerStep));
    expect(big.reason).toBe('scale-up-capped');
  });

  it('counts D from the oldest queued call: half of it gone needs twice the replicas, past it one more', () => {
    const backlog = { batchQueueDepth: 4_800, currentReplicas: 2 };
    expect(decideReplicas(policy, initialScalerState(), obs(backlog)).required).toBe(2);
    expect(
      decideReplicas(policy, initialScalerState(), obs({ ...backlog, batchOldestWaitMs: 300_000 })).required,
    ).toBe(4);
    // Behind plan: at least what a whole D would take, and one more than now.
    const late = decideReplicas(
      policy,
      initialScalerState(),
      obs({ ...backlog, batchOldestWaitMs: 700_000, currentReplicas: 6 }),
    );
    expect(late.required).toBe(7);
    // Calls in flight have no age in the queue figures: with none queued, the backlog is finishing.
    expect(
      decideReplicas(policy, initialScalerState(), obs({ batchInFlight: 4, batchOldestWaitMs: 900_000 }))
        .required,
    ).toBe(1);
  });

  it('interactive load on top takes the max of the two, not the sum', () => {
    const batch = { batchQueueDepth: 5 * PER_REPLICA, currentReplicas: 5 };
    // λ·S = 12 busy slots / k 4 = 3 interactive replicas < 5 for the backlog.
    const light = decideReplicas(
      policy,
      initialScalerState(),
      obs({ ...batch, arrivalRatePerSec: 12, inFlight: 12 }),
    );
    expect(light.required).toBe(5);
    // λ·S = 40 busy slots = 10 interactive replicas > 5.
    const heavy = decideReplicas(
      policy,
      initialScalerState(),
      obs({ ...batch, arrivalRatePerSec: 40, inFlight: 40, currentReplicas: 10 }),
    );
    expect(heavy.required).toBe(10);
    // Batch arrivals are not in λ: the same backlog with no interactive calls is 5, whatever its burst.
    expect(decideReplicas(policy, initialScalerState(), obs(batch)).required).toBe(5);
  });

  it('an emptied backlog returns to the interactive size after the stabilisation window', () => {
    let state = initialScalerState();
    let replicas = 3;
    const interactive = { arrivalRatePerSec: 12, inFlight: 12 };
    const step = (t: number, o: Partial<PoolObservation>) => {
      const d = decideReplicas(
        policy,
        state,
        obs({ ...interactive, ...o, atMs: t, currentReplicas: replicas }),
      );
      state = d.state;
      replicas = d.replicas;
      return d;
    };
    expect(step(0, {}).replicas).toBe(3);
    // A job of 6 replicas' worth arrives: up at once.
    expect(step(2_000, { batchQueueDepth: 6 * PER_REPLICA })).toMatchObject({
      replicas: 6,
      reason: 'scale-up',
    });
    // It is done 60 s later; the window holds 6 until 5 min after the last batch recommendation.
    expect(step(60_000, {})).toMatchObject({ replicas: 6, reason: 'stabilizing', required: 3 });
    expect(step(2_000 + WINDOW - 1_000, {}).replicas).toBe(6);
    expect(step(2_000 + WINDOW + 1_000, {})).toMatchObject({ replicas: 3, reason: 'scale-down' });
  });

  it('wakes a pool at zero for a backlog, even with no service time yet, and keeps it from idling to zero', () => {
    const d = decideReplicas(
      policy,
      initialScalerState(),
      obs({ batchQueueDepth: 10, serviceTimeMs: Number.NaN, currentReplicas: 0 }),
    );
    expect(d).toMatchObject({ replicas: 1, reason: 'wake-from-zero', required: 1 });
    // No arrival for longer than idleToZero, but calls are in flight: the pool stays.
    let state = initialScalerState();
    for (let t = 0; t <= policy.idleToZeroMs + 60_000; t += 30_000) {
      const step = decideReplicas(policy, state, obs({ atMs: t, batchInFlight: 4, currentReplicas: 1 }));
      state = step.state;
      expect(step.replicas, `at ${t} ms`).toBe(1);
    }
  });

  it('over a simulated job, finishes within D, where sizing from now would take about D · (1 + ln R)', () => {
    /** Runs a job of `calls` on a pool decided every 2 s, replicas effective one tick later; seconds to finish. */
    const finish = (law: (o: PoolObservation) => PoolObservation) => {
      let state = initialScalerState();
      let replicas = 0;
      let queued = 8 * PER_REPLICA;
      let peak = 0;
      for (let t = 0; t < 4 * 600; t += 2) {
        const capacity = replicas * 4 * 2; // calls served in this 2 s tick
        const inFlight = Math.min(queued, replicas * 4);
        queued = Math.max(0, queued - capacity);
        if (queued === 0) return { seconds: t, peak };
        const d = decideReplicas(
          policy,
          state,
          law(
            obs({
              atMs: t * 1000,
              batchQueueDepth: queued - inFlight,
              batchInFlight: inFlight,
              batchOldestWaitMs: t * 1000,
              currentReplicas: replicas,
            }),
          ),
        );
        state = d.state;
        replicas = d.replicas;
        peak = Math.max(peak, replicas);
      }
      return { seconds: Number.POSITIVE_INFINITY, peak };
    };
    const anchored = finish((o) => o);
    expect(anchored.seconds).toBeLessThanOrEqual(600);
    expect(anchored.peak).toBeLessThanOrEqual(9);
    // The same law blind to the backlog's age (as if every call had just been queued) runs late.
    const rolling = finish((o) => ({ ...o, batchOldestWaitMs: 0 }));
    expect(rolling.seconds).toBeGreaterThan(600);
  });
});

/**
 * A closed loop of `agents(t)` agents polled every `intervalS`: each agent has one call outstanding
 * at all times (it calls again as soon as its answer comes), so a pool of r replicas serves
 * min(agents, r · k) of them and the rest wait queued; calls complete, and so arrive, at
 * inFlight / S per second. On the tick agents first appear they arrive as a burst (agents /
 * interval per second), and the service time is unknown until calls have completed.
 */
function simulateClosedLoop(
  policy: ScalingPolicy,
  agents: (t: number) => number,
  polls: number,
  serviceTimeMs: number,
  intervalS = 2,
): Tick[] {
  let state = initialScalerState();
  let replicas = policy.minReplicas;
  let completed = 0;
  let previousAgents = 0;
  const ticks: Tick[] = [];
  for (let i = 0; i < polls; i++) {
    const t = i * intervalS;
    const n = agents(t);
    const inFlight = Math.min(n, replicas * policy.perReplicaConcurrency);
    const queued = n - inFlight;
    const lambda =
      n > previousAgents
        ? (n - previousAgents) / intervalS + (inFlight * 1000) / serviceTimeMs
        : (inFlight * 1000) / serviceTimeMs;
    const obs: PoolObservation = {
      atMs: t * 1000,
      queueDepth: queued,
      oldestWaitMs: queued > 0 ? intervalS * 1000 : 0,
      arrivalRatePerSec: lambda,
      serviceTimeMs: completed > 0 ? serviceTimeMs : 0,
      inFlight,
      currentReplicas: replicas,
    };
    ({ state, replicas } = decideTick(policy, state, obs, ticks, { t, lambda, depth: queued }));
    completed += inFlight;
    previousAgents = n;
  }
  return ticks;
}

describe('control law in the closed loop of agents waiting for their answers', () => {
  // 16 slots per replica, 150 ms calls, the defaults' growth cap (x2 or +4), a 2 s poll.
  const policy = scalingPolicy({
    minReplicas: 0,
    maxReplicas: 10,
    perReplicaConcurrency: 16,
    targetQueueWaitMs: 1000,
    idleToZeroMs: 600_000,
    maxScaleUpPerStep: { factor: 2, absolute: 4 },
  });

  it('meets a step from idle to 64 agents at the first poll, then holds for a minute without a flap', () => {
    const ticks = simulateClosedLoop(policy, (t) => (t < 10 ? 0 : 64), 5 + 1 + 30, 150);
    const step = ticks.findIndex((k) => k.t >= 10);
    // 64 calls outstanding over 16 slots: 4 replicas on the first observation of the step, although
    // no call has completed yet (no service time) and the rate reads only the first burst.
    expect(ticks[step]).toMatchObject({ prevReplicas: 0, replicas: 4, required: 4 });
    const after = ticks.slice(step + 1);
    expect(after.length).toBeGreaterThanOrEqual(30);
    for (const k of after) expect(k.replicas).toBe(4);
    expect(reversals(ticks)).toBe(0);
  });

  it('meets a step from 16 to 64 agents on a warm pool in one poll, the growth cap allowing', () => {
    const ticks = simulateClosedLoop({ ...policy, minReplicas: 1 }, (t) => (t < 20 ? 16 : 64), 40, 150);
    const step = ticks.findIndex((k) => k.t >= 20);
    expect(ticks[step - 1]?.replicas).toBe(1);
    expect(ticks[step]?.replicas).toBe(4);
    for (const k of ticks.slice(step + 1)) expect(k.replicas).toBe(4);
  });

  it('adds nothing for a λ·S over the calls in service when nothing waits and they fit', () => {
    // 64 agents on 4 replicas of 16 slots: every slot busy, nobody waiting; λ and S averaged over
    // windows that do not line up read 69 calls in service.
    const steady = (over: Partial<PoolObservation>): PoolObservation => ({
      atMs: 0,
      queueDepth: 0,
      oldestWaitMs: 0,
      arrivalRatePerSec: 30,
      serviceTimeMs: 2300,
      inFlight: 64,
      currentReplicas: 4,
      ...over,
    });
    expect(decideReplicas(policy, initialScalerState(), steady({})).required).toBe(4);
    // A call waiting, or more in flight than the slots hold (replicas gone), and λ·S counts again.
    expect(
      decideReplicas(policy, initialScalerState(), steady({ queueDepth: 1, oldestWaitMs: 10 })).required,
    ).toBe(5);
    expect(decideReplicas(policy, initialScalerState(), steady({ currentReplicas: 3 })).required).toBe(5);
  });

  it('is held to the growth cap on a step larger than one step may grow', () => {
    const ticks = simulateClosedLoop({ ...policy, maxReplicas: 20 }, (t) => (t < 4 ? 0 : 256), 12, 150);
    expectWithinCaps({ ...policy, maxReplicas: 20 }, ticks);
    // 256 / 16 = 16 replicas: 0 → 4 → 8 → 16, one capped step per poll.
    expect(ticks.map((k) => k.replicas).slice(2, 6)).toEqual([4, 8, 16, 16]);
  });

  it('scales down only after the stabilisation window when the agents go', () => {
    const ticks = simulateClosedLoop({ ...policy, minReplicas: 1 }, (t) => (t < 60 ? 64 : 16), 400, 150);
    const drop = ticks.findIndex((k) => k.t >= 60);
    const firstDown = ticks.findIndex((k, i) => i > drop && k.replicas < k.prevReplicas);
    expect(firstDown).toBeGreaterThan(drop);
    expect((ticks[firstDown]!.t - ticks[drop]!.t) * 1000).toBeGreaterThanOrEqual(
      policy.scaleDownStabilizationMs - 2000,
    );
    expect(ticks[ticks.length - 1]?.replicas).toBe(1);
    expect(reversals(ticks)).toBeLessThanOrEqual(1);
  });
});
