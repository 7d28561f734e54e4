import {
  type LifecycleState,
  type Logger,
  MAX_ROLE_BACKENDS,
  ROLE_ENTRY_VERSION,
  type RolePublisher,
  type ShareLedger,
  startRolePublisher,
  workerRoleKey,
} from '../../services/core/index.js';
import type { BackendActor } from './backend-actor.js';

/**
 * Publishes a worker's status to the roles ledger (`Broker.roles`) every second, for the ingress's
 * status page: its state, the calls it holds and each backend endpoint as it sees it (health, breaker,
 * requests in flight; the URL only as `host:port`). See `role-entry.ts` for the entry and its TTL.
 */
export function publishWorkerStatus(options: {
  ledger: Pick<ShareLedger, 'publish' | 'withdraw'>;
  worker: string;
  pool: string;
  actors: readonly BackendActor[];
  maxInFlight: number;
  state: () => LifecycleState;
  inFlight: () => number;
  log: Logger;
}): RolePublisher {
  const { worker, pool, actors, maxInFlight } = options;
  return startRolePublisher({
    ledger: options.ledger,
    key: workerRoleKey(worker),
    log: options.log,
    entry: () => ({
      v: ROLE_ENTRY_VERSION,
      role: 'worker',
      worker,
      pool,
      state: options.state(),
      inFlight: options.inFlight(),
      maxInFlight,
      backends: actors.slice(0, MAX_ROLE_BACKENDS).map((actor) => actor.status()),
      backendsOmitted: Math.max(0, actors.length - MAX_ROLE_BACKENDS),
    }),
  });
}
