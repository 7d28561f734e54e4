import {
  BrokenCircuitError,
  type CircuitBreakerPolicy,
  CircuitState,
  ConsecutiveBreaker,
  circuitBreaker,
  handleWhen,
} from 'cockatiel';
import { ClusterError, clusterMetrics, type Logger, toClusterError } from '../../services/core/index.js';
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
  /** How long an open breaker waits before letting one call through, in milliseconds. Default 5000. */
  breakerHalfOpenMs?: number;
}

/**
 * `mcp_cluster_backend_breaker_state` of each breaker state: 0 closed, 1 half-open, 2 open.
 * Isolated (held open by hand; nothing here isolates) counts as open.
 */
const BREAKER_GAUGE: Record<CircuitState, number> = {
  [CircuitState.Closed]: 0,
  [CircuitState.HalfOpen]: 1,
  [CircuitState.Open]: 2,
  [CircuitState.Isolated]: 2,
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
  /** When the breaker last opened (Date.now()). */
  private breakerOpenedAt = 0;
  private readonly halfOpenAfterMs: number;
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
      this.breakerOpenedAt = Date.now();
    });
    this.breaker.onStateChange((state) => {
      log.warn('backend breaker', { backend: options.url, state: CircuitState[state] });
      this.metrics.backendBreaker.set(this.labels, BREAKER_GAUGE[state]);
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

  get isHealthy(): boolean {
    return this.healthy;
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
      throw toClusterError(err);
    } finally {
      this.running -= 1;
      this.metrics.backendInFlight.set(this.labels, this.running);
    }
  }

  /** Starts the periodic health probe (`GET <url><healthPath>`). */
  startProbe(): void {
    const probe = async () => {
      let ok = false;
      try {
        const res = await fetch(new URL(this.options.healthPath ?? '/health', this.options.url), {
          signal: AbortSignal.timeout(Math.max(1000, this.options.healthIntervalMs)),
        });
        ok = res.ok;
        await res.body?.cancel();
      } catch {
        ok = false;
      }
      if (ok !== this.healthy)
        this.log.warn(ok ? 'backend healthy again' : 'backend unhealthy', { backend: this.options.url });
      this.healthy = ok;
      this.metrics.backendHealthy.set(this.labels, ok ? 1 : 0);
    };
    const loop = () => {
      void probe().finally(() => {
        if (this.probeTimer !== undefined) {
          this.probeTimer = setTimeout(loop, this.options.healthIntervalMs);
          this.probeTimer.unref();
        }
      });
    };
    this.probeTimer = setTimeout(loop, 0);
    this.probeTimer.unref();
  }

  stop(): void {
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
  }
}
