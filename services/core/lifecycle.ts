/**
 * The lifecycle every long-running role (ingress, worker, autoscaler) goes through:
 * `starting` → `running` → `draining` (SIGTERM: no new work; in-flight calls finish within the
 * role's grace period or are handed back) → `drained` (no work held any more; connections and
 * servers still open) → `stopped` (everything closed). The autoscaler's scale-down and spot
 * preemption rely on the drain phase; `/readyz` answers 503 in every state but `running`.
 */
export const LIFECYCLE_STATES = ['starting', 'running', 'draining', 'drained', 'stopped'] as const;
export type LifecycleState = (typeof LIFECYCLE_STATES)[number];

/** A role that can be drained and stopped. */
export interface Stoppable {
  readonly state: LifecycleState;
  /** Stops taking work, waits up to the role's grace period for in-flight calls, then closes. */
  shutdown(): Promise<void>;
}

/** The two phases of a role's shutdown, run once by {@link Lifecycle.shutdown}. */
export interface ShutdownSteps {
  /** Stops taking work and finishes (or hands back) what is held; the role is `draining` meanwhile. */
  drain(): Promise<void>;
  /** Closes what the role opened (servers, connections, timers); the role is `drained` meanwhile. */
  close(): Promise<void>;
}

/**
 * The state of one role and the one guard against a double shutdown: `shutdown` runs its steps
 * once, and every later call (a second SIGTERM, a test's cleanup, a provider's drain) waits for
 * that same run instead of starting another or returning before the role is stopped.
 */
export class Lifecycle {
  #state: LifecycleState = 'starting';
  #stopping: Promise<void> | undefined;
  readonly #onChange: ((from: LifecycleState | undefined, to: LifecycleState) => void) | undefined;

  /**
   * @param onChange told of every move, first `(undefined, 'starting')` from the constructor
   *   (the worker counts its replicas by state in `mcp_cluster_worker_replicas` this way).
   */
  constructor(onChange?: (from: LifecycleState | undefined, to: LifecycleState) => void) {
    this.#onChange = onChange;
    onChange?.(undefined, 'starting');
  }

  get state(): LifecycleState {
    return this.#state;
  }

  /** True while the role takes new work. */
  get running(): boolean {
    return this.#state === 'running';
  }

  /** `starting` → `running`, once the role is ready for work; ignored once a shutdown began. */
  started(): void {
    if (this.#state === 'starting') this.#enter('running');
  }

  /**
   * Runs `steps.drain` (state `draining`), then `steps.close` (state `drained`), then enters
   * `stopped`, once. `close` runs even when `drain` failed, and the role ends `stopped` either
   * way; the failure is rethrown to every caller.
   */
  shutdown(steps: ShutdownSteps): Promise<void> {
    this.#stopping ??= this.#stop(steps);
    return this.#stopping;
  }

  async #stop(steps: ShutdownSteps): Promise<void> {
    this.#enter('draining');
    try {
      await steps.drain();
      this.#enter('drained');
    } finally {
      try {
        await steps.close();
      } finally {
        this.#enter('stopped');
      }
    }
  }

  #enter(next: LifecycleState): void {
    const from = this.#state;
    this.#state = next;
    this.#onChange?.(from, next);
  }
}

/**
 * Runs `shutdown` of every role once on SIGTERM or SIGINT, then exits with 0
 * (or 1 when a shutdown failed). A second signal exits at once.
 */
export function exitOnSignals(roles: Stoppable[], onError: (err: unknown) => void): void {
  let stopping = false;
  const stop = () => {
    if (stopping) process.exit(1);
    stopping = true;
    Promise.all(roles.map((r) => r.shutdown())).then(
      () => process.exit(0),
      (err) => {
        onError(err);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
