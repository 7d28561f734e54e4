import {
  autoscalerRoleKey,
  type Broker,
  ClusterError,
  type ClusterErrorCode,
  clusterMetrics,
  createLogger,
  type HeldFigures,
  heldByPool,
  Lifecycle,
  MAX_ROLE_POOLS,
  MAX_ROLE_TEXT,
  type PoolConfig,
  type PoolDecision,
  processId,
  type ResolvedConfig,
  ROLE_ENTRY_VERSION,
  type RolePublisher,
  type RoleServer,
  type Stoppable,
  startRolePublisher,
  startRoleServer,
  toClusterError,
} from '../core/index.js';
import {
  decideReplicas,
  initialScalerState,
  type PoolObservation,
  type ScalerState,
  type ScalingPolicy,
  type ScalingReason,
  scalingPolicy,
} from './control-law.js';
import { interactiveArrivalPerSec, type MetricsSource, type PoolRates } from './metrics-source.js';
import type { ScalingProvider } from './provider.js';

/** Options of {@link startAutoscaler}. */
export interface AutoscalerOptions {
  /** `autoscaler.*` (interval, HTTP address) and every pool's `scaling` section are read from it. */
  config: ResolvedConfig;
  /**
   * The broker of the pools' queues: queue depth, in-flight calls and the oldest wait come from
   * `queue.stats` (exact and cheap), per priority: low is batch work, high and normal interactive.
   * With `shares` (the ingress replicas' shares ledger), the calls the ingresses hold for their
   * tenant's fair-queue quota count as interactive queue depth too: fair queueing keeps a flood at
   * the ingresses, and the broker's queue alone never shows more than the pools' fair-queue size.
   * Without it, or while the ledger cannot be read (logged once per outage), no held calls are
   * counted. With `roles` (the roles ledger), the last decision of every pool is published there
   * every second, for the ingress's status page. Not closed by `shutdown()`.
   */
  broker: Pick<Broker, 'queue'> & Partial<Pick<Broker, 'shares' | 'roles'>>;
  /** Where decisions land. Owned by the autoscaler: `shutdown()` closes it (the local provider drains its workers). */
  provider: ScalingProvider;
  /**
   * Arrival rate and mean service time per pool (`scrapeSource` or `prometheusSource`; the queue
   * figures come from the broker, which is exact, so only these two are used; the arrival rate without
   * its low-priority part, see {@link interactiveArrivalPerSec}). A read that fails or
   * takes over half an interval leaves the previous rates in use for up to three intervals. Absent:
   * arrival 0 and service time unknown, so the law sizes pools from queued and in-flight calls only (any
   * queued call wakes a pool; a call waiting longer than the target adds a replica).
   */
  source?: Pick<MetricsSource, 'read'>;
  /** Monotonic clock in ms for the control law. Default `performance.now`. */
  clock?: () => number;
  /** Serve `/healthz`, `/readyz`, `/metrics` and `/status` on `autoscaler.host:port`. Default true. */
  serveHttp?: boolean;
  /** Pools to size. Default every pool in the configuration. */
  pools?: readonly string[];
  /** The provider's replicas as `/status` shows them (the local provider's `list()`). */
  describeReplicas?: () => readonly unknown[];
}

/** What the autoscaler last saw and decided for one pool (`GET /status`). */
export interface PoolStatus {
  readonly pool: string;
  /** The pool's policy, as the control law uses it. */
  readonly policy: ScalingPolicy;
  /** The last observation, or null before the first one succeeded. */
  readonly observation: PoolObservation | null;
  /** Replicas the law wants (last decision); null before the first decision. */
  readonly desired: number | null;
  /** Why (the law's reason of the last decision). */
  readonly reason: ScalingReason | null;
  /** The raw requirement of the load before caps and windows. */
  readonly required: number | null;
  /** The last error observing or scaling this pool, cleared by the next success; null when none. */
  readonly error: string | null;
  /** Decisions that changed the pool's replicas since the start. */
  readonly changes: number;
}

/** A running autoscaler. */
export interface Autoscaler extends Stoppable {
  /** `http://host:port` of its health and metrics server; empty when not serving. */
  readonly url: string;
  /** Completed ticks (observe and decide every pool once) since the start. */
  readonly ticks: number;
  /** The last observation and decision of every pool. */
  status(): PoolStatus[];
}

/**
 * Longest wait for one pool's observation (queue stats and the provider's replica count), in ms: a
 * broker or orchestrator that hangs fails that pool's observation instead of holding it. Also the
 * longest `shutdown()` waits for pool steps still running before it closes the provider.
 */
export const OBSERVE_TIMEOUT_MS = 10_000;

/** Rates older than this many intervals (the source keeps failing) are dropped rather than reused. */
const STALE_RATES_INTERVALS = 3;

/**
 * The control law's policy of one pool from its `scaling` section.
 * @throws ClusterError('INVALID_CONFIG') naming the setting when a value is out of the law's range.
 */
export function policyFromConfig(pool: Pick<PoolConfig, 'name' | 'scaling'>): ScalingPolicy {
  const s = pool.scaling;
  try {
    return scalingPolicy({
      minReplicas: s.minReplicas,
      maxReplicas: s.maxReplicas,
      targetQueueWaitMs: s.targetQueueWaitMs,
      batchDrainTargetMs: s.batchDrainTargetMs,
      scaleDownStabilizationMs: s.scaleDownStabilizationMs,
      idleToZeroMs: s.idleToZeroMs,
      maxScaleUpPerStep: { factor: s.maxScaleUpFactor, absolute: s.maxScaleUpStep },
      perReplicaConcurrency: s.replicaConcurrency,
    });
  } catch (err) {
    throw new ClusterError('INVALID_CONFIG', `pools.${pool.name}.scaling: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/**
 * Starts the autoscaler loop: every `autoscaler.interval`, each pool is observed (queue figures from
 * the broker and the calls held at the ingresses from its shares ledger, rates from the source,
 * replicas from the provider), `decideReplicas` decides, and a
 * changed count goes to `provider.scale`. A queued call is therefore seen, and acted on, within one
 * interval.
 *
 * Ticks never overlap, and pools are independent within a tick: a pool whose previous observation or
 * scale is still running (a slow orchestrator, a worker process starting) is skipped until it is done,
 * while the other pools go on being decided on time. An error observing or scaling a pool is logged and
 * retried on the next interval; nothing stops the loop but `shutdown()`.
 */
export async function startAutoscaler(options: AutoscalerOptions): Promise<Autoscaler> {
  const { config, broker, provider, source } = options;
  const clock = options.clock ?? (() => performance.now());
  const intervalMs = config.autoscaler.intervalMs;
  const log = createLogger('autoscaler', { provider: provider.kind });
  const metrics = clusterMetrics();
  const pools = [...(options.pools ?? Object.keys(config.pools))];
  const policies = new Map<string, ScalingPolicy>();
  for (const pool of pools) {
    const poolConfig = config.pools[pool];
    if (!poolConfig) {
      throw new ClusterError(
        'INVALID_CONFIG',
        `no pool "${pool}" in the configuration (have: ${Object.keys(config.pools).join(', ')})`,
      );
    }
    policies.set(pool, policyFromConfig(poolConfig));
  }

  const life = new Lifecycle();
  let ticks = 0;
  let timer: NodeJS.Timeout | undefined;
  let ticking: Promise<void> | undefined;
  /** Pool → its observe-decide-scale step still running. */
  const busy = new Map<string, Promise<void>>();
  const scalerStates = new Map<string, ScalerState>();
  const statuses = new Map<string, PoolStatus>(
    pools.map((pool) => [
      pool,
      {
        pool,
        policy: policies.get(pool) as ScalingPolicy,
        observation: null,
        desired: null,
        reason: null,
        required: null,
        error: null,
        changes: 0,
      },
    ]),
  );
  const update = (pool: string, patch: Partial<PoolStatus>) => {
    statuses.set(pool, { ...(statuses.get(pool) as PoolStatus), ...patch });
  };

  let rates: ReadonlyMap<string, PoolRates> = new Map();
  let ratesAtMs = Number.NEGATIVE_INFINITY;
  let reading: Promise<void> | undefined;
  let sourceFailing = false;
  const refreshRates = async (budgetMs: number) => {
    if (!source) return;
    // A read still running from an earlier tick is waited on again, never doubled.
    reading ??= source
      .read()
      .then(
        (next) => {
          rates = next;
          ratesAtMs = clock();
          if (sourceFailing) log.info('reading rates works again');
          sourceFailing = false;
        },
        (err: unknown) => {
          // Once per outage, not once per interval.
          if (!sourceFailing) log.warn('reading rates failed; using the last ones for now', { err });
          sourceFailing = true;
        },
      )
      .finally(() => {
        reading = undefined;
      });
    await within(reading, budgetMs);
  };
  const ratesOf = (pool: string): PoolRates | undefined =>
    clock() - ratesAtMs <= STALE_RATES_INTERVALS * intervalMs ? rates.get(pool) : undefined;

  // Calls held at the ingress replicas per pool, read from the shares ledger once per tick (one read
  // covers every pool). The entries live ~1.5 s, so a dead ingress's held calls drop out on their own.
  let held: ReadonlyMap<string, HeldFigures> = new Map();
  let readingHeld: Promise<void> | undefined;
  let ledgerFailing = false;
  const refreshHeld = async (budgetMs: number) => {
    const ledger = broker.shares;
    if (!ledger) return;
    readingHeld ??= ledger
      .read()
      .then(heldByPool)
      .then(
        (next) => {
          held = next;
          if (ledgerFailing) log.info('reading the shares ledger works again');
          ledgerFailing = false;
        },
        (err: unknown) => {
          // Scaling goes on from the broker's queue alone: better under-sized for an outage than stopped.
          held = new Map();
          metrics.shareLedgerErrors.inc();
          if (!ledgerFailing) {
            log.warn('reading the shares ledger failed; counting no calls held at the ingresses for now', {
              err,
            });
          }
          ledgerFailing = true;
        },
      )
      .finally(() => {
        readingHeld = undefined;
      });
    await within(readingHeld, budgetMs);
  };

  const observe = async (pool: string, held: HeldFigures): Promise<PoolObservation> => {
    const [stats, current] = await Promise.all([
      deadline(broker.queue.stats(pool), 'QUEUE_UNAVAILABLE', `queue figures of pool ${pool}`),
      deadline(
        provider.replicas(pool),
        'INTERNAL',
        `the ${provider.kind} provider's replicas of pool ${pool}`,
      ),
    ]);
    // Low priority is batch work, sized on its own drain target; high and normal are interactive.
    const interactive = { depth: 0, inFlight: 0, oldestMs: 0 };
    const batch = { depth: 0, inFlight: 0, oldestMs: 0 };
    for (const s of stats) {
      const into = s.priority === 'low' ? batch : interactive;
      into.depth += s.depth;
      into.inFlight += s.inFlight;
      into.oldestMs = Math.max(into.oldestMs, s.oldestAgeMs);
    }
    const r = ratesOf(pool);
    return {
      atMs: clock(),
      // Held calls are interactive: batch chunks (priority low) are never held at the ingress. A
      // held call waits as a queued one does, so its age counts in the oldest wait too.
      queueDepth: interactive.depth + held.calls,
      oldestWaitMs: Math.max(interactive.oldestMs, held.oldestMs),
      arrivalRatePerSec: r ? interactiveArrivalPerSec(r) : 0,
      serviceTimeMs: r ? r.meanServiceMs : Number.NaN,
      inFlight: interactive.inFlight,
      batchQueueDepth: batch.depth,
      batchInFlight: batch.inFlight,
      batchOldestWaitMs: batch.oldestMs,
      currentReplicas: current,
    };
  };

  const step = async (pool: string) => {
    const policy = policies.get(pool) as ScalingPolicy;
    let obs: PoolObservation;
    const heldFigures = held.get(pool) ?? { calls: 0, oldestMs: 0 };
    const heldCalls = heldFigures.calls;
    try {
      obs = await observe(pool, heldFigures);
    } catch (err) {
      const error = toClusterError(err);
      log.warn('observing the pool failed; trying again next interval', { pool, err: error });
      update(pool, { error: `${error.code}: ${error.message}` });
      return;
    }
    const decision = decideReplicas(policy, scalerStates.get(pool) ?? initialScalerState(), obs);
    scalerStates.set(pool, decision.state);
    const current = obs.currentReplicas;
    metrics.autoscalerCurrent.set({ pool }, current);
    metrics.autoscalerDesired.set({ pool }, decision.replicas);
    update(pool, {
      observation: obs,
      desired: decision.replicas,
      reason: decision.reason,
      required: decision.required,
      error: null,
    });
    if (decision.replicas === current) return;
    const direction = decision.replicas > current ? 'up' : 'down';
    const fields = {
      pool,
      // When the law decided: a scale-up is logged once its replicas have started, which can be later.
      decidedAt: new Date().toISOString(),
      from: current,
      to: decision.replicas,
      reason: decision.reason,
      required: decision.required,
      queueDepth: obs.queueDepth,
      heldCalls,
      oldestWaitMs: Math.round(obs.oldestWaitMs),
      inFlight: obs.inFlight,
      batchQueueDepth: obs.batchQueueDepth ?? 0,
      batchInFlight: obs.batchInFlight ?? 0,
      arrivalPerSec: obs.arrivalRatePerSec,
      serviceTimeMs: Number.isFinite(obs.serviceTimeMs) ? Math.round(obs.serviceTimeMs) : null,
    };
    try {
      await provider.scale(pool, decision.replicas);
    } catch (err) {
      const error = toClusterError(err);
      log.error('scaling failed; trying again next interval', { ...fields, err: error });
      update(pool, { error: `${error.code}: ${error.message}` });
      return;
    }
    metrics.autoscalerScaled.inc({ pool, direction, reason: decision.reason });
    metrics.autoscalerCurrent.set({ pool }, decision.replicas);
    const changes = (statuses.get(pool)?.changes ?? 0) + 1;
    update(pool, { changes });
    log.info(direction === 'up' ? 'scaled up' : 'scaled down', fields);
  };

  const tick = async () => {
    const startedAt = clock();
    await Promise.all([refreshRates(intervalMs / 2), refreshHeld(intervalMs / 2)]);
    const started: Promise<void>[] = [];
    for (const pool of pools) {
      if (busy.has(pool)) {
        log.debug('previous decision still running; skipping the pool this interval', { pool });
        continue;
      }
      const work = step(pool)
        .catch((err: unknown) => log.error('pool step failed', { pool, err }))
        .finally(() => busy.delete(pool));
      busy.set(pool, work);
      started.push(work);
    }
    // Wait for this tick's pools, but no longer than an interval: a slow one finishes in the background.
    await within(Promise.all(started), Math.max(0, intervalMs - (clock() - startedAt)));
    ticks++;
    schedule(Math.max(0, intervalMs - (clock() - startedAt)));
  };
  const schedule = (delayMs: number) => {
    if (!life.running) return;
    timer = setTimeout(() => {
      timer = undefined;
      ticking = tick().finally(() => {
        ticking = undefined;
      });
    }, delayMs);
  };

  let http: RoleServer | undefined;
  if (options.serveHttp !== false) {
    http = await startRoleServer({
      host: config.autoscaler.host,
      port: config.autoscaler.port,
      portSetting: '--port or autoscaler.port',
      lifecycle: life,
      readiness: async () => {
        const brokerReady = await broker.queue.ready().catch(() => false);
        return { ready: brokerReady, broker: brokerReady, provider: provider.kind };
      },
      routes: {
        '/status': (_req, res) => {
          const body = JSON.stringify({
            provider: provider.kind,
            intervalMs,
            ticks,
            pools: [...statuses.values()].map(jsonSafe),
            ...(options.describeReplicas ? { replicas: options.describeReplicas() } : {}),
          });
          res.writeHead(200, { 'content-type': 'application/json' }).end(body);
        },
      },
      notFoundHint: 'try /healthz, /readyz, /metrics or /status',
      onError: (err) => log.error('http request failed', { err }),
    });
  }
  const url = http?.url ?? '';

  life.started();
  // The last decisions, for the status page of any ingress (decisions change once per interval;
  // the entry is republished every second so that it outlives no autoscaler by more than its TTL).
  const id = processId();
  const roleStatus: RolePublisher | undefined = broker.roles
    ? startRolePublisher({
        ledger: broker.roles,
        key: autoscalerRoleKey(id),
        log,
        entry: () => ({
          v: ROLE_ENTRY_VERSION,
          role: 'autoscaler',
          autoscaler: id,
          provider: provider.kind,
          pools: [...statuses.values()].slice(0, MAX_ROLE_POOLS).map(decisionOf),
        }),
      })
    : undefined;
  log.info('autoscaler started', { pools, intervalMs, url, rates: source ? 'source' : 'none' });
  // The first look happens at once, so a backlog that is already there is acted on without a wait.
  schedule(0);

  return {
    url,
    get state() {
      return life.state;
    },
    get ticks() {
      return ticks;
    },
    status: () => [...statuses.values()],
    shutdown: () =>
      life.shutdown({
        drain: async () => {
          if (timer) clearTimeout(timer);
          timer = undefined;
          await ticking;
          // A pool step still running (a worker starting) may end before the provider closes, but a
          // hung orchestrator call must not hold the shutdown: the provider's close() deals with what
          // is left. Closing the provider drains the replicas it started (the local provider's workers).
          await within(Promise.allSettled([...busy.values()]), OBSERVE_TIMEOUT_MS);
          await provider.close();
        },
        close: async () => {
          await roleStatus?.stop();
          await http?.close();
          log.info('autoscaler stopped');
        },
      }),
  };
}

/** A pool's last decision as the roles ledger carries it. */
function decisionOf(status: PoolStatus): PoolDecision {
  return {
    pool: status.pool,
    desired: status.desired,
    current: status.observation?.currentReplicas ?? null,
    reason: status.reason,
    error: status.error === null ? null : status.error.slice(0, MAX_ROLE_TEXT),
    changes: status.changes,
  };
}

/** NaN and Infinity are not JSON: a status with an unknown service time says null. */
function jsonSafe(status: PoolStatus): unknown {
  return JSON.parse(
    JSON.stringify(status, (_key, value: unknown) =>
      typeof value === 'number' && !Number.isFinite(value) ? null : value,
    ),
  );
}

/** Resolves when `work` settles or after `ms`, whichever comes first; never rejects. */
async function within(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      work.then(
        () => undefined,
        () => undefined,
      ),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** `work`, or a rejection with ClusterError(`code`) naming `what` after {@link OBSERVE_TIMEOUT_MS}. */
async function deadline<T>(work: Promise<T>, code: ClusterErrorCode, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new ClusterError(code, `${what} took over ${OBSERVE_TIMEOUT_MS} ms`)),
          OBSERVE_TIMEOUT_MS,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
