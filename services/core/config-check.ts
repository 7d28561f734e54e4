import type { ConfigFamilies, ResolvedConfig } from './config.js';
import { ClusterError } from './errors.js';

/** Checks across settings (a tool's pool, its backend kind, scaling bounds) that the schema cannot. */
export function check(families: ConfigFamilies, c: ResolvedConfig, origin: string): void {
  const problems: string[] = [];
  if (Object.keys(c.pools).length === 0) problems.push('  pools: declare at least one pool');
  if (c.tools.length === 0) {
    problems.push(
      `  tools: no tool to serve; declare tools, or pools named like the defaults (${Object.keys(families.defaultPools).join(', ')})`,
    );
  }
  const toolNames = new Set<string>();
  c.tools.forEach((tool, i) => {
    if (toolNames.has(tool.name)) problems.push(`  tools.${i}.name: tool "${tool.name}" is declared twice`);
    toolNames.add(tool.name);
    const pool = c.pools[tool.pool];
    if (!pool) {
      problems.push(
        `  tools.${i}.pool: no pool "${tool.pool}" under pools (have: ${Object.keys(c.pools).join(', ') || 'none'})`,
      );
    } else {
      const backends = families.template(tool.template)?.backends ?? [];
      if (!backends.includes(pool.backend)) {
        problems.push(
          `  tools.${i}.template: template "${tool.template}" needs a pool with backend ${backends.join(' or ')}, but pool "${tool.pool}" has backend ${pool.backend}`,
        );
      }
    }
  });
  const { auth } = c;
  if (auth.mode === 'oauth' || auth.mode === 'oauth+api-keys') {
    if (auth.resource === '')
      problems.push(
        `  auth.resource: mode ${auth.mode} needs this server's canonical URL, e.g. https://mcp.example.com/mcp (tokens are checked to be issued for it)`,
      );
    if (auth.oauth.issuer === '')
      problems.push(`  auth.oauth.issuer: mode ${auth.mode} needs the authorization server's issuer URL`);
  }
  if ((auth.mode === 'api-keys' || auth.mode === 'oauth+api-keys') && auth.apiKeys.file === '') {
    problems.push(
      `  auth.apiKeys.file: mode ${auth.mode} needs the keys file (create keys with \`mcp-cluster keys create\`)`,
    );
  }
  if (c.cacheUrl !== '' && !/^rediss?:\/\//.test(c.cacheUrl)) {
    problems.push(`  cache.url: "${c.cacheUrl}" must be a redis:// URL, or empty for an in-process cache`);
  }
  // Checked here so a bad URL is reported with the other settings, not at first connect.
  if (!/^(memory:|nats:\/\/|tls:\/\/|redis:\/\/|rediss:\/\/)/.test(c.brokerUrl)) {
    problems.push(
      `  broker.url: "${c.brokerUrl}" has an unknown scheme; use nats://host:port, redis://host:port or memory:`,
    );
  }
  for (const [poolName, p] of Object.entries(c.pools)) {
    if (p.scaling.targetQueueWaitMs <= 0) {
      problems.push(`  pools.${poolName}.scaling.targetQueueWait: must be above 0 (e.g. 500ms)`);
    }
    if (p.scaling.batchDrainTargetMs <= 0) {
      problems.push(`  pools.${poolName}.scaling.batchDrainTarget: must be above 0 (e.g. 1h)`);
    }
    if (p.scaling.minReplicas > p.scaling.maxReplicas) {
      problems.push(
        `  pools.${poolName}.scaling.minReplicas: ${p.scaling.minReplicas} is above maxReplicas ${p.scaling.maxReplicas}`,
      );
    }
  }
  for (const [tenant, t] of Object.entries(c.tenants)) {
    for (const [poolName, limits] of Object.entries(t.limits)) {
      if (!c.pools[poolName]) {
        problems.push(
          `  tenants.${tenant}.limits.${poolName}: no pool "${poolName}" under pools (have: ${Object.keys(c.pools).join(', ') || 'none'})`,
        );
      } else if (limits.burst !== undefined && limits.rate === undefined) {
        problems.push(
          `  tenants.${tenant}.limits.${poolName}.burst: a burst needs a rate (calls/s) to refill it; set rate too`,
        );
      }
    }
  }
  // 0 would turn Node's timeout off, and Node refuses a headers timeout above the request timeout.
  const { headersTimeoutMs, requestTimeoutMs } = c.ingress;
  for (const [key, ms] of [
    ['headersTimeout', headersTimeoutMs],
    ['requestTimeout', requestTimeoutMs],
  ] as const) {
    if (ms <= 0)
      problems.push(
        `  ingress.${key}: must be above 0 (e.g. 10s), or a slow client holds its socket forever`,
      );
  }
  if (headersTimeoutMs > requestTimeoutMs && requestTimeoutMs > 0) {
    problems.push(
      `  ingress.headersTimeout: ${headersTimeoutMs}ms is above ingress.requestTimeout (${requestTimeoutMs}ms), which includes the headers; lower headersTimeout or raise requestTimeout`,
    );
  }
  // Each refresh reads the broker's queue figures once: faster than this only loads the broker.
  if (c.ingress.statusPage.refreshIntervalMs < 250) {
    problems.push(
      `  ingress.statusPage.refreshInterval: ${c.ingress.statusPage.refreshIntervalMs}ms is too short; use 250ms or more (e.g. 2s)`,
    );
  }
  // A shorter interval would only re-read the same broker figures; at 0 the loop would spin.
  if (c.autoscaler.intervalMs < 100) {
    problems.push(
      `  autoscaler.interval: ${c.autoscaler.intervalMs}ms is too short; use 100ms or more (e.g. 2s)`,
    );
  }
  if (problems.length > 0)
    throw new ClusterError('INVALID_CONFIG', `${origin} is invalid:\n${problems.join('\n')}`);
}
