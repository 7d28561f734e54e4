// What the roles of a cluster publish about themselves to the roles ledger (`Broker.roles`, the
// share-ledger contract in a bucket of its own): each worker its state, the calls it holds and its
// backend endpoints; the autoscaler its last decision per pool. One JSON entry per role process,
// replaced every ~1 s and expiring with its TTL, so a role that dies drops off on its own. Written
// by workers/runtime and services/autoscaler, read by the ingress's status page; kept in the kernel
// so that writers and the reader share one shape and one decoder.

import { LIFECYCLE_STATES, type LifecycleState } from '../lifecycle.js';

/** Version of the entries' shape; entries of another version are ignored (a rolling upgrade). */
export const ROLE_ENTRY_VERSION = 1;

/** How often a role publishes its entry, in ms. */
export const ROLE_PUBLISH_INTERVAL_MS = 1_000;
/** How long an entry lives without being published again, in ms: three periods, so one slow publish drops nothing. */
export const ROLE_ENTRY_TTL_MS = 3_000;

/** Most backend endpoints one worker entry lists (the rest are counted in `backendsOmitted`). */
export const MAX_ROLE_BACKENDS = 128;
/** Most pools one autoscaler entry lists. */
export const MAX_ROLE_POOLS = 128;
/** Longest text (an endpoint, a reason, an error) an entry carries, in characters; longer is cut. */
export const MAX_ROLE_TEXT = 300;

/** A circuit breaker's state as the page shows it. */
export type BreakerState = 'closed' | 'half-open' | 'open';
const BREAKER_STATES: readonly BreakerState[] = ['closed', 'half-open', 'open'];

/** One backend endpoint as one worker sees it. */
export interface BackendStatus {
  /** The endpoint's index in the pool's `endpoints` (the `backend` label of the metrics). */
  index: number;
  /** `host:port` of the endpoint's URL: never its path, query or credentials. */
  endpoint: string;
  /** The worker's health probe's last verdict. */
  healthy: boolean;
  breaker: BreakerState;
  /** Requests this worker has at the endpoint now. */
  inFlight: number;
  /** `maxConcurrency` of the endpoint. */
  maxConcurrency: number;
}

/** A worker's entry (ledger key `worker:<worker id>`). */
export interface WorkerRoleEntry {
  v: typeof ROLE_ENTRY_VERSION;
  role: 'worker';
  /** The worker's id (`<host>-<pid>-<pool>` for the CLI's workers). */
  worker: string;
  pool: string;
  state: LifecycleState;
  /** Calls the worker holds now (running, or waiting for a backend or for delivery). */
  inFlight: number;
  /** Most calls it takes at once (interactive consumer). */
  maxInFlight: number;
  backends: BackendStatus[];
  /** Endpoints past {@link MAX_ROLE_BACKENDS}, not listed. */
  backendsOmitted: number;
}

/** The autoscaler's last decision for one pool. */
export interface PoolDecision {
  pool: string;
  /** Replicas the law wants; null before its first decision. */
  desired: number | null;
  /** Replicas the pool had at the last observation; null before the first one. */
  current: number | null;
  /** The law's reason for the last decision (e.g. `backlog`, `idle`, `steady`). */
  reason: string | null;
  /** The last error observing or scaling the pool; null when none. */
  error: string | null;
  /** Decisions that changed the pool's replicas since the autoscaler started. */
  changes: number;
}

/** An autoscaler's entry (ledger key `autoscaler:<process id>`). */
export interface AutoscalerRoleEntry {
  v: typeof ROLE_ENTRY_VERSION;
  role: 'autoscaler';
  /** The autoscaler's id (`<host>-<pid>`). */
  autoscaler: string;
  /** Where its decisions land: `kubernetes`, `local` or `metrics`. */
  provider: string;
  pools: PoolDecision[];
}

export type RoleEntry = WorkerRoleEntry | AutoscalerRoleEntry;

/** The ledger key of a worker's entry. */
export const workerRoleKey = (worker: string): string => `worker:${worker}`;
/** The ledger key of an autoscaler's entry. */
export const autoscalerRoleKey = (autoscaler: string): string => `autoscaler:${autoscaler}`;

/**
 * `host:port` of a backend URL for an entry: what tells endpoints apart without what may be secret
 * (userinfo, a token in the path or query). `unparsable URL` when it is not one.
 */
export function endpointOf(url: string): string {
  try {
    return new URL(url).host.slice(0, MAX_ROLE_TEXT);
  } catch {
    return 'unparsable URL';
  }
}

/**
 * Reads another role's entry; undefined when it is not an entry of this version (a role of another
 * release, or garbage). Bad counts read as 0, bad states and texts as their safest value, and lists
 * are cut at their bounds: an entry is read, never trusted.
 */
export function readRoleEntry(value: unknown): RoleEntry | undefined {
  if (!isObject(value) || value.v !== ROLE_ENTRY_VERSION) return undefined;
  if (value.role === 'worker') {
    if (typeof value.worker !== 'string' || typeof value.pool !== 'string') return undefined;
    const backends: BackendStatus[] = [];
    const listed = Array.isArray(value.backends) ? value.backends : [];
    for (const raw of listed.slice(0, MAX_ROLE_BACKENDS)) {
      if (!isObject(raw)) continue;
      backends.push({
        index: count(raw.index),
        endpoint: text(raw.endpoint) ?? '',
        healthy: raw.healthy === true,
        breaker: BREAKER_STATES.includes(raw.breaker as BreakerState)
          ? (raw.breaker as BreakerState)
          : 'open',
        inFlight: count(raw.inFlight),
        maxConcurrency: count(raw.maxConcurrency),
      });
    }
    return {
      v: ROLE_ENTRY_VERSION,
      role: 'worker',
      worker: value.worker.slice(0, MAX_ROLE_TEXT),
      pool: value.pool.slice(0, MAX_ROLE_TEXT),
      state: LIFECYCLE_STATES.includes(value.state as LifecycleState)
        ? (value.state as LifecycleState)
        : 'stopped',
      inFlight: count(value.inFlight),
      maxInFlight: count(value.maxInFlight),
      backends,
      backendsOmitted: count(value.backendsOmitted) + Math.max(0, listed.length - MAX_ROLE_BACKENDS),
    };
  }
  if (value.role === 'autoscaler') {
    if (typeof value.autoscaler !== 'string' || !Array.isArray(value.pools)) return undefined;
    const pools: PoolDecision[] = [];
    for (const raw of value.pools.slice(0, MAX_ROLE_POOLS)) {
      if (!isObject(raw) || typeof raw.pool !== 'string') continue;
      pools.push({
        pool: raw.pool.slice(0, MAX_ROLE_TEXT),
        desired: raw.desired === null ? null : count(raw.desired),
        current: raw.current === null ? null : count(raw.current),
        reason: text(raw.reason),
        error: text(raw.error),
        changes: count(raw.changes),
      });
    }
    return {
      v: ROLE_ENTRY_VERSION,
      role: 'autoscaler',
      autoscaler: value.autoscaler.slice(0, MAX_ROLE_TEXT),
      provider: text(value.provider) ?? '',
      pools,
    };
  }
  return undefined;
}

/** A whole number at least 0, else 0. */
function count(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? Math.floor(value) : 0;
}

/** A string cut at {@link MAX_ROLE_TEXT}, else null. */
function text(value: unknown): string | null {
  return typeof value === 'string' ? value.slice(0, MAX_ROLE_TEXT) : null;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
