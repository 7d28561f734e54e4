/**
 * The lifecycle every long-running role (ingress, worker) goes through.
 * `running` → `draining` (SIGTERM: no new work, in-flight calls finish or are handed back)
 * → `stopped`. The autoscaler's scale-down and spot preemption rely on the drain phase.
 */
export const LIFECYCLE_STATES = ['starting', 'running', 'draining', 'stopped'] as const;
export type LifecycleState = (typeof LIFECYCLE_STATES)[number];

/** A role that can be drained and stopped. */
export interface Stoppable {
  readonly state: LifecycleState;
  /** Stops taking work, waits up to the role's grace period for in-flight calls, then closes. */
  shutdown(): Promise<void>;
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
