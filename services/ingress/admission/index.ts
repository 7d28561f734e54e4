import { randomBytes } from 'node:crypto';
import type { ClusterError, Logger, ResolvedConfig, ShareLedger, ToolDefinition } from '../../core/index.js';
import { Admission } from './admission.js';
import {
  type CostEstimator,
  costEstimatorOf,
  DEFAULT_FAIR_QUEUE_CALLS,
  DEFAULT_FAIR_QUEUE_SIZE,
} from './cost.js';
import { type SharePublisher, startSharePublisher } from './publisher.js';

export type {
  AdmissionOptions,
  AdmitRequest,
  PoolLimits,
  TenantOverview,
  TenantSettings,
} from './admission.js';
export { Admission, CONCURRENCY_RETRY_MS, FAIR_ROOM_MS, SPARSE_BURST_CALLS } from './admission.js';
export type { CostEstimator } from './cost.js';
export {
  COST_ESTIMATORS,
  costEstimatorOf,
  DEFAULT_FAIR_QUEUE_CALLS,
  DEFAULT_FAIR_QUEUE_SIZE,
} from './cost.js';
export type { SharePublisher } from './publisher.js';
export { ENTRY_TTL_MS, PUBLISH_INTERVAL_MS, startSharePublisher } from './publisher.js';
export { Ticket } from './ticket.js';
export { TokenBucket } from './token-bucket.js';

/** The admission layer of one ingress replica, as the call path uses it. */
export interface IngressAdmission {
  /**
   * Estimates the call's cost from its (validated) arguments and admits or refuses it; see
   * `Admission.admit`. Synchronous: nothing on the call path waits for the ledger.
   */
  admit(
    tool: ToolDefinition,
    args: Record<string, unknown>,
    tenant: string,
    deadlineUnixMs: number,
  ): ClusterError | ReturnType<Admission['admit']>;
  /** The state, for tests and diagnostics. */
  readonly state: Admission;
  /** Stops publishing and withdraws this replica's entry. */
  stop(): Promise<void>;
}

/**
 * The fair queue size of each pool, in its cost units: `pools.<p>.fairQueue.size`, else the
 * default of its backend kind ({@link DEFAULT_FAIR_QUEUE_SIZE}).
 */
export function fairQueueSizes(config: Pick<ResolvedConfig, 'pools'>): Record<string, number> {
  return Object.fromEntries(
    Object.entries(config.pools).map(([name, pool]) => [
      name,
      pool.fairQueue.size ?? DEFAULT_FAIR_QUEUE_SIZE[pool.backend] ?? DEFAULT_FAIR_QUEUE_CALLS,
    ]),
  );
}

/**
 * Starts the admission layer of a replica from `config.tenants` and the pools' fair queue sizes,
 * publishing its figures to `ledger` and reading the other replicas' (see publisher.ts).
 */
export function startAdmission(options: {
  config: Pick<ResolvedConfig, 'pools' | 'tenants'>;
  tools: readonly ToolDefinition[];
  ledger: ShareLedger;
  tenantLabel: (tenant: string) => string;
  log: Logger;
  now?: () => number;
}): IngressAdmission {
  const { config } = options;
  const state = new Admission({
    tenants: config.tenants,
    fairQueueSizes: fairQueueSizes(config),
    tenantLabel: options.tenantLabel,
    ...(options.now ? { now: options.now } : {}),
  });
  const estimators = new Map<string, CostEstimator>(
    options.tools.map((tool) => [tool.name, costEstimatorOf(tool.template)]),
  );
  const publisher: SharePublisher = startSharePublisher({
    admission: state,
    ledger: options.ledger,
    replica: `ingress-${randomBytes(8).toString('hex')}`,
    log: options.log,
  });
  return {
    state,
    admit(tool, args, tenant, deadlineUnixMs) {
      const cost = (estimators.get(tool.name) ?? costEstimatorOf(tool.template))(args);
      return state.admit({ tenant, pool: tool.pool, cost, deadlineUnixMs });
    },
    stop: () => publisher.stop(),
  };
}
