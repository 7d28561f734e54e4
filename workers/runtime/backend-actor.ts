import {
  BrokenCircuitError,
  type CircuitBreakerPolicy,
  CircuitState,
  ConsecutiveBreaker,
  circuitBreaker,
  handleWhen,
} from 'cockatiel';
import {
  type BackendStatus,
  type BreakerState,
  ClusterError,
  clusterMetrics,
  endpointOf,
  type Logger,
  toClusterError,
} from '../../services/core/index.js';
import { BackendRefusal } from './backend-http.js';
import type { BackendView } from './router.js';

/** Settings of one backend endpoint (one GPU server). */
export interface BackendActorOptions {
  pool: string;
  /** Index of the endpoint in the pool's list; the metrics label (URLs would be unbounded). */
  index: number;
  url: string;
  /** Requests it runs at once (vLLM `--max-num-seqs`, ComfyUI 1). */
  maxConcurrency: number;
  /** Health probe interval in milliseconds. */
  healthIntervalMs: number;
  /** Path the health probe GETs: `/health` on vLLM and TEI, `/system_stats` on ComfyUI. Default `/health`. */
  healthPath?: string;
  /** Consecutive backend failures that open the breaker. Default 5. */
  breakerFailures?: number;
  /**
   * How long an open breaker waits before letting one call through, in milliseconds, unless the
   * health probe sees the backend come back first. Default 5000.
   */
  breakerHalfOpenMs?: number;
  /**
   * Probe interval while the backend is unhealthy or its breaker is not closed, in milliseconds
   * (at most `healthIntervalMs`), so a recovered backend is noticed within about this long
   * rather than within a whole `healthIntervalMs`. Default 1000.
   */
  recoveryProbeIntervalMs?: number;
}

/** Default of `BackendActorOptions.recoveryProbeIntervalMs`. */
export const RECOVERY_PROBE_INTERVAL_MS = 1000;

/**
 * `mcp_cluster_backend_breaker_state` of each breaker state: 0 closed, 1 half-open, 2 open.
 * Isolated counts as open (the probe isolates a breaker only for an instant, to close it, unreported).
 */
const BREAKER_GAUGE: Record<CircuitState, number> = {
  [CircuitState.Closed]: 0,
  [CircuitState.HalfOpen]: 1,
  [CircuitState.Open]: 2,
  [CircuitState.Isolated]: 2,
};

/** The status page's name of each breaker state (isolated is open, as on the gauge). */
const BREAKER_STATE: Record<CircuitState, BreakerState> = {
  [CircuitState.Closed]: 'closed',
  [CircuitState.HalfOpen]: 'half-open',
  [CircuitState.Open]: 'open',
  [CircuitState.Isolated]: 'open',
};

/**
 * Whether an error says the backend is failing. A cancelled call or a request the backend
 * refused (a caller's bad input, e.g. an unknown model) says nothing about its health.
 */
function isBackendFailure(err: unknown): err is ClusterError {
  return (
    err instanceof ClusterError &&
    (err.code === 'BACKEND_UNAVAILABLE' ||
      (err.code === 'BACKEND_PROTOCOL' && !(err.cause instanceof BackendRefusal)))
  );
}

/** Whether `err` is a call an open breaker turned away without sending it to the backend. */
export function isBreakerRefusal(err: unknown): boolean {
  return err instanceof ClusterError && err.cause instanceof BrokenCircuitError;
}

/**
 * One backend endpoint as an actor: it owns the endpoint's concurrency limit, a health probe
 * and a circuit breaker. Calls reach the backend only through `run`, so the in-flight count the
 * router reads is exact. A backend whose probe fails or whose breaker is open gets no work.
 */
export class BackendActor {
  private running = 0;
  private healthy = true;
  private readonly breaker: CircuitBreakerPolicy;
  private probeTimer: NodeJS.Timeout | undefined;
  /** Whether the probe loop runs (between `startProbe` and `stop`). */
  private probing = false;
  /** Whether a probe request is out now; the loop schedules the next when it ends. */
  private probeOut = false;
  /** When the last probe started, `performance.now()` milliseconds. */
  private probeStartedAt = Number.NEGATIVE_INFINITY;
  /** When the breaker last opened (Date.now()). */
  private breakerOpenedAt = 0;
  /** Breaks so far: a probe that started before the latest break says nothing about it. */
  private breaks = 0;
  /** The probe saw the backend down since the latest break. */
  private downSinceBreak = false;
  /** Set while the probe closes the breaker (see `closeAfterRecovery`). */
  private closingAfterRecovery = false;
  private readonly halfOpenAfterMs: number;
  private readonly recoveryProbeMs: number;
  private readonly listeners = new Set<() => void>();
  private readonly metrics = clusterMetrics();
  private readonly labels: { pool: string; backend: string };
  /**
   * Backend failures the breaker has counted. The calls of one backend request (an embed
   * micro-batch) all fail with that request's one ClusterError object (MicroBatcher's
   * contract); counted per call, a single failed batch of 5 calls would open the breaker,
   * although the backend failed once. So an error object counts once: one failed request, one
   * failure, whatever number of calls it carried. (The calls of a good request each count as a
   * success; for a consecutive breaker that is one, since a success only restarts the count.)
   */
  private readonly countedFailures = new WeakSet<ClusterError>();

  constructor(
    readonly options: BackendActorOptions,
    private readonly log: Logger,
  ) {
    this.labels = { pool: options.pool, backend: String(options.index) };
    this.halfOpenAfterMs = options.breakerHalfOpenMs ?? 5000;
    this.recoveryProbeMs = Math.min(
      options.healthIntervalMs,
      options.recoveryProbeIntervalMs ?? RECOVERY_PROBE_INTERVAL_MS,
    );
    this.breaker = circuitBreaker(
      handleWhen((err) => {
        if (!isBackendFailure(err)) return false;
        // A repeat is not handled, which a closed breaker records as neither failure nor
        // success. Once it is not closed, counting again changes nothing, except that a
        // half-open trial call that shared an already counted request must reopen the breaker
        // (cockatiel closes a half-open breaker on an error it does not handle).
        if (this.countedFailures.has(err) && this.breaker.state === CircuitState.Closed) return false;
        this.countedFailures.add(err);
        return true;
      }),
      {
        halfOpenAfter: this.halfOpenAfterMs,
        breaker: new ConsecutiveBreaker(options.breakerFailures ?? 5),
      },
    );
    this.breaker.onBreak(() => {
      if (this.closingAfterRecovery) return;
      this.breakerOpenedAt = Date.now();
      this.breaks += 1;
      this.downSinceBreak = !this.healthy;
      // Once the wait is over the breaker admits a trial call: tell the calls waiting for a backend.
      setTimeout(() => this.changed(), this.halfOpenAfterMs).unref();
      // Look at the backend soon rather than at the next routine probe.
      this.probeSoon();
    });
    this.breaker.onStateChange((state) => {
      if (this.closingAfterRecovery && state === CircuitState.Isolated) return;
      log.warn('backend breaker', { backend: options.url, state: CircuitState[state] });
      this.metrics.backendBreaker.set(this.labels, BREAKER_GAUGE[state]);
      this.changed();
    });
    this.metrics.backendBreaker.set(this.labels, BREAKER_GAUGE[this.breaker.state]);
    this.metrics.backendHealthy.set(this.labels, 1);
    this.metrics.backendInFlight.set(this.labels, 0);
  }

  /** The router's view of this actor. */
  view(): BackendView {
    return {
      id: this.options.url,
      inFlight: this.running,
      maxConcurrency: this.options.maxConcurrency,
      available: this.healthy && this.breakerAdmits(),
    };
  }

  /**
   * Whether the breaker would let a call through. The breaker only moves from open to
   * half-open when a call is attempted, so an open breaker whose delay has passed must count
   * as available, or the router would never send the trial call and the backend would stay
   * cut off for good. While the trial call runs (half-open), no other call is routed here.
   */
  private breakerAdmits(): boolean {
    switch (this.breaker.state) {
      case CircuitState.Closed:
        return true;
      case CircuitState.Open:
        return Date.now() - this.breakerOpenedAt >= this.halfOpenAfterMs;
      default:
        return false;
    }
  }

  /**
   * Calls `listener` whenever this backend may have become available or got room: the probe's
   * verdict changed, the breaker changed state or its wait ran out, a request ended. Returns
   * the function that removes it.
   */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const listener of [...this.listeners]) listener();
  }

  get isHealthy(): boolean {
    return this.healthy;
  }

  /** What the worker publishes of this endpoint to the roles ledger (its URL only as `host:port`). */
  status(): BackendStatus {
    return {
      index: this.options.index,
      endpoint: endpointOf(this.options.url),
      healthy: this.healthy,
      breaker: BREAKER_STATE[this.breaker.state],
      inFlight: this.running,
      maxConcurrency: this.options.maxConcurrency,
    };
  }

  /**
   * Runs one backend request through the breaker, counting it against the concurrency limit.
   * Rejects with BACKEND_UNAVAILABLE when the breaker is open.
   */
  async run<T>(work: (url: string) => Promise<T>): Promise<T> {
    this.running += 1;
    this.metrics.backendInFlight.set(this.labels, this.running);
    try {
      return await this.breaker.execute(() => work(this.options.url));
    } catch (err) {
      if (err instanceof BrokenCircuitError) {
        throw new ClusterError(
          'BACKEND_UNAVAILABLE',
          `backend ${this.options.url} is failing; its circuit breaker is open`,
          { cause: err },
        );
      }
      // A failing backend may be down: look at it soon rather than at the next routine probe.
      if (isBackendFailure(err)) this.probeSoon();
      throw toClusterError(err);
    } finally {
      this.running -= 1;
      this.metrics.backendInFlight.set(this.labels, this.running);
      this.changed();
    }
  }

  /**
   * Starts the health probe (`GET <url><healthPath>`): every `healthIntervalMs` while the backend
   * is healthy and its breaker closed, every `recoveryProbeIntervalMs` otherwise. A probe that
   * saw the backend down since its breaker opened and then sees it answer closes the breaker
   * (`closeAfterRecovery`); a probe that never saw it down (its health endpoint answers while its
   * requests fail) proves nothing, and the breaker waits `breakerHalfOpenMs` for a trial call.
   */
  startProbe(): void {
    this.probing = true;
    this.scheduleProbe(0);
  }

  /** Whether the probe runs at its recovery pace. */
  private get recovering(): boolean {
    return !this.healthy || this.breaker.state !== CircuitState.Closed;
  }

  private scheduleProbe(delayMs: number): void {
    if (!this.probing || this.probeOut) return;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = setTimeout(() => void this.probe(), delayMs);
    this.probeTimer.unref();
  }

  /** Brings the next probe forward to at most `recoveryProbeIntervalMs` after the last one. */
  private probeSoon(): void {
    const sinceLast = performance.now() - this.probeStartedAt;
    this.scheduleProbe(Math.max(0, this.recoveryProbeMs - sinceLast));
  }

  private async probe(): Promise<void> {
    this.probeOut = true;
    this.probeStartedAt = performance.now();
    const breaksAtStart = this.breaks;
    const intervalMs = this.recovering ? this.recoveryProbeMs : this.options.healthIntervalMs;
    let ok = false;
    try {
      const res = await fetch(new URL(this.options.healthPath ?? '/health', this.options.url), {
        signal: AbortSignal.timeout(Math.max(1000, intervalMs)),
      });
      ok = res.ok;
      await res.body?.cancel();
    } catch {
      ok = false;
    }
    this.probeOut = false;
    if (!this.probing) return;
    if (ok !== this.healthy)
      this.log.warn(ok ? 'backend healthy again' : 'backend unhealthy', { backend: this.options.url });
    const wasAvailable = this.view().available;
    this.healthy = ok;
    this.metrics.backendHealthy.set(this.labels, ok ? 1 : 0);
    const broken = this.breaker.state === CircuitState.Open || this.breaker.state === CircuitState.HalfOpen;
    if (broken) {
      // A failed probe counts even when it was already out as the breaker opened (the failing
      // call that opened it brings a probe forward, so one usually is): the backend was down
      // around the break. Missing it would leave the breaker to its half-open wait although the
      // probe watched the backend come back. Only a probe that started after the latest break
      // may say the backend is back.
      if (!ok) this.downSinceBreak = true;
      else if (breaksAtStart === this.breaks && this.downSinceBreak) this.closeAfterRecovery();
    }
    if (this.view().available !== wasAvailable) this.changed();
    this.scheduleProbe(this.recovering ? this.recoveryProbeMs : this.options.healthIntervalMs);
  }

  /**
   * Closes the open breaker at once, with the probe that saw the backend go down and come back
   * as its trial. A half-open trial call would do the same, but only once it ended: every other
   * call would wait out one whole call (a long generation, an image) before the backend got
   * work again. The breaker's failure count stays at its threshold until a call succeeds, so if
   * the backend still fails its requests, the first failure opens the breaker again, as a failed
   * trial would. (cockatiel closes a breaker only through a trial or by ending an isolation, so
   * this isolates it and ends the isolation at once, without reporting the isolation.)
   */
  private closeAfterRecovery(): void {
    this.closingAfterRecovery = true;
    try {
      this.breaker.isolate().dispose();
    } finally {
      this.closingAfterRecovery = false;
    }
    this.log.warn('backend back: breaker closed by the health probe', { backend: this.options.url });
  }

  stop(): void {
    this.probing = false;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
  }
}
