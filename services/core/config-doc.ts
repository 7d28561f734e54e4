import type { ConfigFamilies } from './config.js';
import { ClusterError } from './errors.js';

// Edits of the configuration document before it is validated: environment overrides and the
// switches of opt-in pools. Plain objects in, plain objects out; the schema checks the result.

/**
 * Environment variables that override the file, each naming the setting it replaces.
 * `MCP_CLUSTER_BACKENDS_<POOL>` takes a comma-separated list of endpoint URLs ({@link backendsVariable}).
 */
export const ENV_OVERRIDES: Record<string, string[]> = {
  MCP_CLUSTER_NAMESPACE: ['cluster', 'namespace'],
  MCP_CLUSTER_BROKER_URL: ['broker', 'url'],
  MCP_CLUSTER_CACHE_URL: ['cache', 'url'],
  MCP_CLUSTER_INGRESS_HOST: ['ingress', 'host'],
  MCP_CLUSTER_INGRESS_PORT: ['ingress', 'port'],
  MCP_CLUSTER_DELIVERY_HOST: ['ingress', 'delivery', 'host'],
  MCP_CLUSTER_DELIVERY_PORT: ['ingress', 'delivery', 'port'],
  MCP_CLUSTER_DELIVERY_ADVERTISE: ['ingress', 'delivery', 'advertise'],
  MCP_CLUSTER_SESSION_SECRET: ['ingress', 'sessionSecret'],
  MCP_CLUSTER_AUTH_MODE: ['auth', 'mode'],
  MCP_CLUSTER_AUTH_ALLOW_UNAUTHENTICATED: ['auth', 'allowUnauthenticated'],
  MCP_CLUSTER_AUTH_RESOURCE: ['auth', 'resource'],
  MCP_CLUSTER_OAUTH_ISSUER: ['auth', 'oauth', 'issuer'],
  MCP_CLUSTER_API_KEYS_FILE: ['auth', 'apiKeys', 'file'],
  MCP_CLUSTER_WORKER_HOST: ['worker', 'host'],
  MCP_CLUSTER_WORKER_PORT: ['worker', 'port'],
  MCP_CLUSTER_AUTOSCALER_PROVIDER: ['autoscaler', 'provider'],
  MCP_CLUSTER_AUTOSCALER_HOST: ['autoscaler', 'host'],
  MCP_CLUSTER_AUTOSCALER_PORT: ['autoscaler', 'port'],
  MCP_CLUSTER_PROMETHEUS_URL: ['autoscaler', 'prometheusUrl'],
  MCP_CLUSTER_ACK_WAIT: ['worker', 'ackWait'],
  /** `true` switches on the opt-in `conformance` pool and its fixture tools (`up --conformance`). */
  MCP_CLUSTER_CONFORMANCE: ['conformance', 'enabled'],
};

/**
 * The variable that sets the endpoints of `pool`: `MCP_CLUSTER_BACKENDS_` and the name upper-cased,
 * with `-` as `_` (environment variable names are C identifiers).
 */
export function backendsVariable(pool: string): string {
  return `MCP_CLUSTER_BACKENDS_${pool.toUpperCase().replace(/-/g, '_')}`;
}

/** The environment: variable name → value. */
export type ConfigEnv = Record<string, string | undefined>;

const NUMERIC_LEAVES = new Set(['port']);
/** Settings whose environment override is `true` or `false`. */
const BOOLEAN_LEAVES = new Set(['allowUnauthenticated', 'enabled']);

/** Writes the `ENV_OVERRIDES` and `MCP_CLUSTER_BACKENDS_<POOL>` variables set in `env` into `doc`. */
export function applyEnv(doc: Record<string, unknown>, env: ConfigEnv, families: ConfigFamilies): void {
  for (const [variable, path] of Object.entries(ENV_OVERRIDES)) {
    const value = env[variable];
    if (value === undefined || value === '') continue;
    const leaf = path[path.length - 1] ?? '';
    const typed =
      NUMERIC_LEAVES.has(leaf) && /^\d+$/.test(value)
        ? Number(value)
        : BOOLEAN_LEAVES.has(leaf) && /^(true|false)$/.test(value)
          ? value === 'true'
          : value;
    setAt(doc, path, typed);
  }
  for (const [variable, value] of Object.entries(env)) {
    const m = /^MCP_CLUSTER_BACKENDS_([A-Z0-9_]+)$/.exec(variable);
    if (!m?.[1] || !value) continue;
    const pools = (doc.pools ?? defaultPoolsDoc(families)) as Record<string, Record<string, unknown>>;
    // A declared pool whose name has a `-` (Deployment names cannot have `_`) is reached with `_`.
    const declared = isMapping(pools)
      ? Object.keys(pools).filter((name) => backendsVariable(name) === variable)
      : [];
    if (declared.length > 1) {
      throw new ClusterError(
        'INVALID_CONFIG',
        `${variable} matches pools ${declared.join(' and ')}; rename one of them (a "-" in a pool name reads as "_" here)`,
      );
    }
    const pool = declared[0] ?? m[1].toLowerCase();
    // Own keys only, so a pool named like `__proto__` is validated, not written onto Object.prototype.
    const found = isMapping(pools) && Object.hasOwn(pools, pool) ? pools[pool] : undefined;
    // A `pools` or pool entry that is not a mapping is left for validation to report by path.
    if (!isMapping(pools) || (found != null && !isMapping(found))) continue;
    doc.pools = pools;
    // A pool only the environment names runs on the first registered kind (openai-chat).
    const existing = found ?? {
      backend: families.defaultPools[pool] ?? families.optInPools?.[pool] ?? families.backendKinds[0],
    };
    existing.endpoints = value.split(',').map((url) => ({ url: url.trim() }));
    Object.defineProperty(pools, pool, {
      value: existing,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
}

/**
 * Opt-in pools (a family's `defaults.optIn`, e.g. `conformance`) switched on by a top-level
 * `<pool>: { enabled: true }`: the pool is added to the declared (or built-in) pools with its
 * backend kind, and when the file lists `tools`, the pool's tools it does not name are added.
 * The switch itself is removed before validation; anything but `{ enabled: boolean }` is refused.
 */
export function applyOptIn(doc: Record<string, unknown>, families: ConfigFamilies, origin: string): void {
  for (const [pool, backend] of Object.entries(families.optInPools ?? {})) {
    if (!Object.hasOwn(doc, pool)) continue;
    const value = doc[pool];
    const keys = isMapping(value) ? Object.keys(value) : [];
    if (!isMapping(value) || typeof value.enabled !== 'boolean' || keys.some((k) => k !== 'enabled')) {
      throw new ClusterError(
        'INVALID_CONFIG',
        `${origin} is invalid:\n  ${pool}: expected { enabled: true } or { enabled: false } (found ${show(value)})`,
      );
    }
    delete doc[pool];
    if (!value.enabled) continue;
    const pools = doc.pools ?? defaultPoolsDoc(families);
    // A `pools` that is not a mapping is left for validation to report by path.
    if (!isMapping(pools)) continue;
    if (!Object.hasOwn(pools, pool)) {
      Object.defineProperty(pools, pool, {
        value: { backend },
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    doc.pools = pools;
    if (Array.isArray(doc.tools)) {
      const named = new Set(doc.tools.map((t) => (isMapping(t) ? t.name : undefined)));
      for (const tool of families.defaultTools) {
        if (tool.pool === pool && !named.has(tool.name)) doc.tools.push({ ...tool });
      }
    }
  }
}

export function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * A found value for an error message; YAML aliases can make it circular (JSON.stringify throws). A
 * URL's user name and password are shown as `***`: errors reach logs.
 */
export function show(value: unknown): string {
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  if (typeof value === 'string') value = value.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#@\s]*@/i, '$1***@');
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/** The `pools` of the built-in configuration, as a file would write them. */
export function defaultPoolsDoc(families: ConfigFamilies): Record<string, { backend: string }> {
  return Object.fromEntries(
    Object.entries(families.defaultPools).map(([pool, backend]) => [pool, { backend }]),
  );
}

function setAt(doc: Record<string, unknown>, path: string[], value: unknown): void {
  let node = doc;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1] ?? ''] = value;
}
