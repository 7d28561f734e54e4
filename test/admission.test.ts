import { describe, expect, it } from 'vitest';
import { ClusterError, clusterMetrics, type Logger, type ShareLedger } from '../services/core/index.js';
import {
  Admission,
  COST_ESTIMATORS,
  fairQueueSizes,
  SPARSE_BURST_CALLS,
  startSharePublisher,
  TokenBucket,
} from '../services/ingress/index.js';
import { resolveConfig } from './support/families.js';

// The admission layer's decisions on a clock the test moves: no timers, no I/O. Several replicas
// are several Admission instances exchanging their entries as the ledger would carry them.

type Ticket = Exclude<ReturnType<Admission['admit']>, ClusterError>;

function clock(start = 1_000_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

type Tenants = ConstructorParameters<typeof Admission>[0]['tenants'];

function admission(
  time: { now: () => number },
  tenants: Tenants,
  fairQueueSize = 0,
  pool = 'inference',
): Admission {
  return new Admission({
    tenants: { default: { weight: 1, limits: {} }, ...tenants },
    fairQueueSizes: { [pool]: fairQueueSize },
    tenantLabel: (t) => t,
    now: time.now,
  });
}

const FAR = 10 * 60_000;
const call = (tenant: string, time: { now: () => number }, cost = 1, deadlineMs = FAR) => ({
  tenant,
  pool: 'inference',
  cost,
  deadlineUnixMs: time.now() + deadlineMs,
});

/** Exchanges the replicas' entries as one ledger round would (every replica publishes, then reads). */
function exchange(replicas: Admission[]): void {
  const entries = new Map(replicas.map((a, i) => [`r${i}`, a.entry() as unknown]));
  replicas.forEach((a, i) => {
    a.applyEntries(entries, `r${i}`);
  });
}

describe('token bucket', () => {
  it('gives a burst, then refills at its rate', () => {
    const t = clock();
    const bucket = new TokenBucket(10, 5, t.now());
    for (let i = 0; i < 5; i++) expect(bucket.take(t.now())).toBe(true);
    expect(bucket.take(t.now())).toBe(false);
    expect(bucket.msUntilToken(t.now())).toBeCloseTo(100);
    t.advance(100);
    expect(bucket.take(t.now())).toBe(true);
    t.advance(10_000);
    bucket.resize(10, 2, t.now());
    expect([bucket.take(t.now()), bucket.take(t.now()), bucket.take(t.now())]).toEqual([true, true, false]);
  });
});

describe('rate limit', () => {
  it('refuses past rate and burst with RATE_LIMITED naming the limit, tenant, pool and retry time', () => {
    const t = clock();
    const a = admission(t, { acme: { weight: 1, limits: { inference: { rate: 10, burst: 10 } } } });
    for (let i = 0; i < 10; i++) expect(a.admit(call('acme', t))).not.toBeInstanceOf(ClusterError);
    const refused = a.admit(call('acme', t)) as ClusterError;
    expect(refused).toBeInstanceOf(ClusterError);
    expect(refused.code).toBe('RATE_LIMITED');
    expect(refused.retryAfterMs).toBe(100);
    expect(refused.message).toMatch(
      /tenant "acme" is over its rate limit of 10 calls\/s.*pool "inference".*retry after 100 ms/,
    );
    // Another tenant, under `default` (no limits), is not affected.
    expect(a.admit(call('other', t))).not.toBeInstanceOf(ClusterError);
    t.advance(100);
    expect(a.admit(call('acme', t))).not.toBeInstanceOf(ClusterError);
  });

  it('holds across 3 replicas by demand share: even or skewed demand admits 0.9-1.1 x the rate', () => {
    for (const demand of [
      [40, 40, 40],
      [100, 10, 0],
    ]) {
      const t = clock();
      const limits = { acme: { weight: 1, limits: { inference: { rate: 30, burst: 30 } } } };
      const replicas = [admission(t, limits), admission(t, limits), admission(t, limits)];
      let admitted = 0;
      const seconds = 20;
      // Calls arrive every ms at each replica's rate; the ledger round runs every 250 ms.
      const next = demand.map((d) => (d > 0 ? 1000 / d : Number.POSITIVE_INFINITY));
      for (let ms = 1; ms <= seconds * 1000; ms++) {
        t.advance(1);
        replicas.forEach((a, i) => {
          while ((next[i] ?? Number.POSITIVE_INFINITY) <= ms) {
            next[i] = (next[i] ?? 0) + 1000 / (demand[i] ?? 1);
            const got = a.admit(call('acme', t));
            if (!(got instanceof ClusterError)) {
              admitted += 1;
              got.ended(true);
            }
          }
        });
        if (ms % 250 === 0) {
          for (const a of replicas) a.tick();
          exchange(replicas);
        }
      }
      // The first burst (30) comes on top of the rate.
      const perSecond = (admitted - 30) / seconds;
      expect(perSecond, `demand ${demand.join('/')}`).toBeGreaterThanOrEqual(27);
      expect(perSecond, `demand ${demand.join('/')}`).toBeLessThanOrEqual(33);
    }
  });
});

describe('concurrency cap', () => {
  it("counts this replica's calls in flight plus the other replicas' published ones", () => {
    const t = clock();
    const limits = { acme: { weight: 1, limits: { inference: { concurrency: 5 } } } };
    const [a, b] = [admission(t, limits), admission(t, limits)];
    if (!a || !b) throw new Error('two replicas');
    const onB = [0, 1, 2].map(() => b.admit(call('acme', t)) as Ticket);
    exchange([a, b]);
    const onA = [a.admit(call('acme', t)), a.admit(call('acme', t))];
    expect(onA.every((x) => !(x instanceof ClusterError))).toBe(true);
    const refused = a.admit(call('acme', t)) as ClusterError;
    expect(refused.code).toBe('RATE_LIMITED');
    expect(refused.message).toMatch(/concurrency limit of 5 calls in flight on pool "inference"/);
    expect(refused.retryAfterMs).toBe(1000);
    // A call ending on B frees a slot once B's figures reach A.
    onB[0]?.ended(true);
    exchange([a, b]);
    expect(a.admit(call('acme', t))).not.toBeInstanceOf(ClusterError);
  });
});

/**
 * A pool served by one broker FIFO: admitted calls go to its back, held ones when released; a
 * worker takes the head (its `accepted` chunk) and the call ends right after. Each tenant keeps
 * `backlog` calls held, so every tenant stays backlogged. Returns the cost served per tenant.
 */
function simulatePool(
  a: Admission,
  t: { now: () => number },
  tenants: Record<string, { cost: number }>,
  takes: number,
): Record<string, number> {
  const fifo: { tenant: string; ticket: Ticket }[] = [];
  const served: Record<string, number> = Object.fromEntries(Object.keys(tenants).map((n) => [n, 0]));
  const topUp = () => {
    for (const [tenant, { cost }] of Object.entries(tenants)) {
      while ((a.figures('inference', tenant)?.heldCalls ?? 0) < 3) {
        const ticket = a.admit(call(tenant, t, cost)) as Ticket;
        if (ticket.held) ticket.whenReleased(() => fifo.push({ tenant, ticket }));
        else fifo.push({ tenant, ticket });
      }
    }
  };
  topUp();
  for (let i = 0; i < takes; i++) {
    const head = fifo.shift();
    if (!head) throw new Error('the queue ran dry with tenants backlogged');
    head.ticket.accepted();
    head.ticket.ended(true);
    served[head.tenant] = (served[head.tenant] ?? 0) + head.ticket.cost;
    topUp();
  }
  return served;
}

describe('fair hold', () => {
  it('serves two backlogged tenants with weights 2:1 cost 2:1 within 10%', () => {
    const t = clock();
    const a = admission(t, { gold: { weight: 2, limits: {} }, bronze: { weight: 1, limits: {} } }, 3000);
    const served = simulatePool(a, t, { gold: { cost: 130 }, bronze: { cost: 70 } }, 3000);
    const ratio = (served.gold ?? 0) / (served.bronze ?? 1);
    expect(ratio).toBeGreaterThan(1.8);
    expect(ratio).toBeLessThan(2.2);
  });

  it('gives long and short calls of equal weights equal cost shares', () => {
    const t = clock();
    const a = admission(t, {}, 4096);
    // Generations of ~1000 tokens against generations of ~50.
    const served = simulatePool(a, t, { long: { cost: 1000 }, short: { cost: 50 } }, 5000);
    const ratio = (served.long ?? 0) / (served.short ?? 1);
    expect(ratio).toBeGreaterThan(0.9);
    expect(ratio).toBeLessThan(1.1);
  });

  it("lets a flooding tenant put no more than its quota ahead of another tenant's call", () => {
    const t = clock();
    const size = 1000;
    const a = admission(t, {}, size);
    const fifo: { tenant: string; cost: number; ticket: Ticket }[] = [];
    const submit = (tenant: string, cost: number) => {
      const ticket = a.admit(call(tenant, t, cost)) as Ticket;
      const entry = { tenant, cost, ticket };
      if (ticket.held) ticket.whenReleased(() => fifo.push(entry));
      else fifo.push(entry);
      return entry;
    };
    // The flood: 1000 calls at once. Only the fair queue's room (half its size) reaches the queue,
    // plus the calls it sent as sparse before its first held one (a burst at most each time).
    for (let i = 0; i < 1000; i++) submit('flood', 50);
    const floodQueued = () => fifo.filter((e) => e.tenant === 'flood').reduce((n, e) => n + e.cost, 0);
    const slack = SPARSE_BURST_CALLS * 50;
    expect(floodQueued()).toBeLessThanOrEqual(size / 2 + slack);
    expect(a.figures('inference', 'flood')?.heldCalls).toBe(1000 - floodQueued() / 50);
    // Another tenant's calls, one at a time: each waits behind at most the flood's quota.
    for (let round = 0; round < 20; round++) {
      const mine = submit('calm', 10);
      expect(mine.ticket.held).toBe(false);
      // Nothing of its own queued: it is sparse, and the registry queues it at high, ahead of the
      // whole flood. Even in plain arrival order (as here) the flood's share of the room is ahead.
      expect(mine.ticket.sparse).toBe(true);
      const ahead = fifo
        .slice(0, fifo.indexOf(mine))
        .filter((e) => e.tenant === 'flood')
        .reduce((n, e) => n + e.cost, 0);
      // At most the fair queue's room (half its size) and the flood's first sparse calls.
      expect(ahead, `round ${round}`).toBeLessThanOrEqual(size / 2 + slack);
      while (fifo[0] !== mine) {
        const head = fifo.shift();
        head?.ticket.accepted();
        head?.ticket.ended(true);
      }
      fifo.shift();
      mine.ticket.accepted();
      mine.ticket.ended(true);
    }
  });

  it('drops a held call that ends (deadline, cancel) from the hold: it is never released', () => {
    const t = clock();
    const a = admission(t, {}, 100);
    // Nothing is held yet (no contention), so no call is sparse: the first one fills the fair
    // queue's room (half of 100) and what comes after waits.
    const first = a.admit(call('acme', t, 80)) as Ticket;
    const held = a.admit(call('acme', t, 80)) as Ticket;
    const next = a.admit(call('acme', t, 30)) as Ticket;
    expect([first.sparse, first.held, held.held, next.held]).toEqual([false, false, true, true]);
    let released = 0;
    held.whenReleased(() => {
      released += 1;
    });
    let nextReleased = 0;
    next.whenReleased(() => {
      nextReleased += 1;
    });
    held.ended(false);
    expect(a.figures('inference', 'acme')).toMatchObject({ heldCalls: 1, inFlight: 2 });
    // The oldest call still held (the ended one no longer counts) has waited since it was admitted:
    // its age goes to the ledger, where the autoscaler reads it as the pool's oldest wait.
    t.advance(700);
    expect(a.figures('inference', 'acme')?.oldestHeldMs).toBe(700);
    expect(a.entry().pools.inference?.tenants.acme?.oldestHeldMs).toBe(700);
    first.accepted();
    expect([released, nextReleased]).toEqual([0, 1]);
    expect(a.figures('inference', 'acme')).toMatchObject({ heldCalls: 0, queuedCalls: 1, queuedCost: 30 });
  });
});

describe('load shedding', () => {
  it('refuses with OVERLOADED when the expected queue wait exceeds the remaining deadline', () => {
    const t = clock();
    const a = admission(t, {}, 0);
    // No service rate measured yet: nothing is shed, even with a 1 ms deadline.
    const queued = Array.from({ length: 10 }, () => a.admit(call('acme', t, 100)) as Ticket);
    expect(a.admit(call('acme', t, 100, 1))).not.toBeInstanceOf(ClusterError);
    t.advance(250);
    a.tick(); // calls queued: the next period measures the pool's service rate
    const finish = (ticket: Ticket | undefined) => {
      ticket?.accepted();
      ticket?.ended(true);
    };
    t.advance(1000);
    for (const ticket of queued.slice(0, 3)) finish(ticket);
    a.tick(); // 3 calls finished: too few for a rate, still nothing shed
    expect(a.admit(call('acme', t, 100, 1))).not.toBeInstanceOf(ClusterError);
    t.advance(1000);
    finish(queued[3]);
    a.tick(); // 4 calls (400 cost) finished over 2 s of backlog: 200 cost/s; 800 cost queued: 4 s.
    const refused = a.admit(call('acme', t, 100, 3000)) as ClusterError;
    expect(refused.code).toBe('OVERLOADED');
    expect(refused.message).toMatch(
      /pool "inference" is overloaded: the expected queue wait is 4000 ms, above the call's remaining deadline of 3000 ms/,
    );
    expect(refused.retryAfterMs).toBe(1000);
    expect(a.admit(call('acme', t, 100, 6000))).not.toBeInstanceOf(ClusterError);
  });
});

describe('ledger outage', () => {
  function logger() {
    const lines: { level: string; msg: string }[] = [];
    const log = {
      debug: () => undefined,
      info: (msg: string) => lines.push({ level: 'info', msg }),
      warn: (msg: string) => lines.push({ level: 'warn', msg }),
      error: (msg: string) => lines.push({ level: 'error', msg }),
      child: () => log,
    } as unknown as Logger;
    return { log, lines };
  }

  it("falls back to each replica's share of the limits, warns once, counts errors, and recovers", async () => {
    const t = clock();
    const limits = { acme: { weight: 1, limits: { inference: { rate: 30, burst: 30, concurrency: 9 } } } };
    const replicas = [admission(t, limits), admission(t, limits), admission(t, limits)];
    const [a, b] = replicas;
    if (!a || !b) throw new Error('replicas');
    // B runs 8 of the tenant's calls: A sees them and admits one more.
    for (let i = 0; i < 8; i++) b.admit(call('acme', t));
    exchange(replicas);
    let broken = true;
    const entries = new Map<string, unknown>();
    const ledger: ShareLedger = {
      publish: async (replica, value) => {
        if (broken) throw new ClusterError('QUEUE_UNAVAILABLE', 'broker down');
        entries.set(replica, value);
      },
      read: async () => new Map(entries),
      withdraw: async () => undefined,
      close: async () => undefined,
    };
    const { log, lines } = logger();
    const errors = async () => (await clusterMetrics().shareLedgerErrors.get()).values[0]?.value ?? 0;
    const before = await errors();
    const publisher = startSharePublisher({ admission: a, ledger, replica: 'r0', log, loop: false });
    await publisher.round();
    await publisher.round();
    expect(a.sharing).toBe(false);
    expect((await errors()) - before).toBe(2);
    expect(lines.filter((l) => l.level === 'warn')).toHaveLength(1);
    // Alone now: B's calls no longer count, and A enforces a third of the cap (3 calls)...
    const mine = [0, 1, 2].map(() => a.admit(call('acme', t)));
    expect(mine.every((x) => !(x instanceof ClusterError))).toBe(true);
    expect((a.admit(call('acme', t)) as ClusterError).message).toMatch(/concurrency/);
    for (const x of mine) (x as Ticket).ended(true);
    // ...and a third of the rate: a burst of 10, then 10 calls/s.
    let admitted = 0;
    for (let i = 0; i < 30; i++) if (!(a.admit(call('acme', t)) instanceof ClusterError)) admitted += 1;
    expect(admitted).toBeLessThanOrEqual(10);
    broken = false;
    await publisher.round();
    expect(a.sharing).toBe(true);
    expect(lines.filter((l) => l.level === 'info' && /reachable again/.test(l.msg))).toHaveLength(1);
    await publisher.stop();
  });
});

describe('cost estimates', () => {
  it('counts inference in tokens, embeddings in texts and diffusion in megapixel-steps', () => {
    expect(COST_ESTIMATORS.generate_text?.({ prompt: 'x'.repeat(401), max_tokens: 100 })).toBe(201);
    expect(
      COST_ESTIMATORS.chat?.({
        messages: [
          { role: 'system', content: 'x'.repeat(40) },
          { role: 'user', content: 'y'.repeat(40) },
        ],
        max_tokens: 256,
      }),
    ).toBe(276);
    expect(COST_ESTIMATORS.summarize?.({ text: 'z'.repeat(4000), max_words: 100 })).toBe(1208);
    expect(COST_ESTIMATORS.embed?.({ texts: ['a', 'b', 'c'] })).toBe(3);
    expect(COST_ESTIMATORS.generate_image?.({ steps: 20, width: 512, height: 512 })).toBeCloseTo(5.24288);
  });
});

describe('configuration', () => {
  const pools = `
pools:
  inference: { backend: openai-chat }
  embeddings: { backend: openai-embeddings }
`;
  it('resolves tenants, their limits and the fair queue sizes (defaults per backend kind)', () => {
    const config = resolveConfig(
      `${pools}
tenants:
  acme: { weight: 2, limits: { inference: { rate: 20, burst: 40, concurrency: 64 } } }
`,
      {},
    );
    expect(config.tenants.default).toEqual({ weight: 1, limits: {} });
    expect((config.tenants as Record<string, unknown>).acme).toEqual({
      weight: 2,
      limits: { inference: { rate: 20, burst: 40, concurrency: 64 } },
    });
    expect(fairQueueSizes(config)).toEqual({ inference: 16_384, embeddings: 2_048 });
    const off = resolveConfig(`pools:\n  inference: { backend: openai-chat, fairQueue: { size: 0 } }\n`, {});
    expect(fairQueueSizes(off)).toEqual({ inference: 0 });
  });

  it.each([
    [
      'negative rate',
      'acme: { limits: { inference: { rate: -1 } } }',
      /tenants\.acme\.limits\.inference\.rate: must be above 0/,
    ],
    [
      'zero burst',
      'acme: { limits: { inference: { rate: 5, burst: 0 } } }',
      /tenants\.acme\.limits\.inference\.burst: must be at least 1/,
    ],
    ['weight 0', 'acme: { weight: 0 }', /tenants\.acme\.weight: must be above 0/],
    ['huge weight', 'acme: { weight: 1e9 }', /tenants\.acme\.weight: must be at most 10000/],
    [
      'huge rate',
      'acme: { limits: { inference: { rate: 1e300 } } }',
      /tenants\.acme\.limits\.inference\.rate/,
    ],
    [
      'fractional concurrency',
      'acme: { limits: { inference: { concurrency: 1.5 } } }',
      /concurrency: must be a whole number/,
    ],
    [
      'unknown pool',
      'acme: { limits: { gpu: { rate: 1 } } }',
      /tenants\.acme\.limits\.gpu: no pool "gpu" under pools \(have: inference, embeddings\)/,
    ],
    ['burst without rate', 'acme: { limits: { inference: { burst: 5 } } }', /burst: a burst needs a rate/],
    [
      'unknown key',
      'acme: { limits: { inference: { rps: 5 } } }',
      /tenants\.acme\.limits\.inference: Unrecognized key: "rps"/,
    ],
    ['bad tenant name', '"a b": { weight: 1 }', /tenant names are 1-64/],
  ])('refuses %s with INVALID_CONFIG naming the setting', (_label, tenants, message) => {
    let thrown: unknown;
    try {
      resolveConfig(`${pools}\ntenants:\n  ${tenants}\n`, {});
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(ClusterError);
    expect((thrown as ClusterError).code).toBe('INVALID_CONFIG');
    expect((thrown as ClusterError).message).toMatch(message);
  });

  it('refuses a negative fair queue size', () => {
    expect(() =>
      resolveConfig(`pools:\n  inference: { backend: openai-chat, fairQueue: { size: -5 } }\n`, {}),
    ).toThrow(/pools\.inference\.fairQueue\.size: must be 0 \(off\) or more cost units/);
  });
});
